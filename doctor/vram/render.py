"""Console rendering of an estimate: breakdown table, a bar against the GPU, verdict and what-ifs."""
from __future__ import annotations

from typing import Any

from .arch import Arch
from .estimator import Estimate, Workload, gib
from .workload import describe

LABELS = {
    "weights": "weights", "lora_adapters": "LoRA adapters", "gradients": "gradients",
    "optimizer_states": "optimizer states", "activations": "activations (saved for backward)",
    "logits": "logits + loss (fp32 upcast, gradient)", "kv_cache": "KV cache", "transient": "transient working set",
    "allocator_rounding": "allocator rounding (2 MiB blocks)", "cuda_context": "CUDA context",
    "cublas_workspace": "cuBLAS workspace",
}


def render(model: str, arch: Arch, wl: Workload, est: Estimate, capacity: int | None, label: str,
           verdict: str | None, options: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    from ..output import printable

    model = escape(printable(model))   # a path or a Hub id the user typed: no markup, no control characters
    con = Console(highlight=False)
    con.print(f"[bold]{model}[/]: {arch.params / 1e9:.2f}B parameters ({arch.family}), "
              f"{est.trainable / 1e6:,.1f}M trainable")
    con.print(f"workload: {describe(wl)}")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("share", justify="right")
    for key, value in est.breakdown.items():
        table.add_row(LABELS.get(key, key), f"{value / 2**30:.2f}", f"{100 * value / est.peak_bytes:.0f}%")
    table.add_row("[bold]peak[/] (" + est.phase + ")", f"[bold]{est.peak_bytes / 2**30:.2f}[/]", "")
    con.print(table)
    con.print(f"range {gib(est.low_bytes)} .. {gib(est.high_bytes)} (CUDA context and allocator rounding measured "
              "elsewhere; see doctor/data/vram.yaml)")
    for note in est.notes:
        con.print(f"  - {escape(printable(note))}")
    if capacity:
        width = 50
        used = min(width, round(width * est.peak_bytes / capacity))
        colour = {"fits": "green", "tight": "yellow"}.get(verdict or "", "red")
        con.print(f"[{colour}]{'#' * used}[/]{'.' * (width - used)} {gib(est.peak_bytes)} of {label}")
        con.print(f"[bold {colour}]{verdict}[/]" + (f": {100 * est.peak_bytes / capacity:.0f}% of the GPU" if verdict else ""))
    if options:
        con.print("[bold]what-ifs[/] (each re-estimated):")
        for w in options:
            ok = "" if capacity is None else (" [green]fits[/]" if w.estimate.peak_bytes <= capacity else " still too big")
            con.print(f"  {w.change}: {gib(w.estimate.peak_bytes)}{ok}  [dim]{w.flag}; cost: {w.cost}[/]")
