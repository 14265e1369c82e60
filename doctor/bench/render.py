"""The bench figures as a table (rich on a terminal, plain text otherwise)."""
from __future__ import annotations

from typing import IO, Any

from .figures import figures


def _pct(frac: float | None) -> str:
    return f" ({frac:.0%})" if frac is not None else ""


def rows(section: dict[str, Any]) -> list[list[str]]:
    out = []
    for f in figures(section):
        mm = " / ".join(f"{d} {v:.4g}{_pct(f['matmul_fraction_of_peak'].get(d))}" for d, v in f["matmul_tflops"].items())
        bw = f"{f['bandwidth_gbps']:.4g}{_pct(f['bandwidth_fraction_of_spec'])}" if f["bandwidth_gbps"] else "-"
        hvp = " / ".join(f"{v:.3g}/s ({f['hvp_grad_ratio'][m]:.1f}x grad)" for m, v in f["hvp_per_s"].items()) or "-"
        dis = f"{f['hvp_rel_disagreement']:.1e}" if f["hvp_rel_disagreement"] is not None else "-"
        out.append([f["label"] or f["key"], f["status"] or "?", mm or "-", bw, hvp, dis])
    return out


HEADER = ["device", "run", "matmul TFLOPS (of peak)", "copy GB/s (of spec)",
          "HVP: double bwd / fwd-over-rev", "HVP methods differ"]


def table(section: dict[str, Any], stream: IO[str], color: bool | None = None) -> None:
    if section.get("status") == "skipped":
        from ..output import printable

        stream.write(f"benchmarks skipped: {printable(str(section.get('reason')))}\n\n")
        return
    from rich.console import Console
    from rich.table import Table

    isatty = getattr(stream, "isatty", lambda: False)()
    grid = Table(*HEADER, title=f"doctor bench ({section.get('device_type')}, {section.get('duration_s', 0):.1f} s)")
    from rich.text import Text

    from ..output import printable

    for row in rows(section):   # device names come from the driver: plain text, control characters escaped
        grid.add_row(*(Text(printable(str(cell))) for cell in row))
    Console(file=stream, force_terminal=isatty if color is None else color, width=160 if not isatty else None,
            highlight=False).print(grid)
