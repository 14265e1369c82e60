"""`doctor check --distributed` on rank 0: the per-rank table, then the merged report (the cross-rank checks)
as console text; or, as JSON, the merged report (schema 1.x, so `doctor merge` reads it too) with every rank's
own report under `facts.distributed.reports`. Everything taken from a rank passes through doctor.output.printable."""
from __future__ import annotations

import json
from typing import Any

from ..model import Report
from ..output import printable

WORDS = {0: "ready", 1: "not ready", 3: "undecided"}


def table(merged: Report) -> str:
    """One row per rank: host, the GPU it uses (CUDA ordinal and UUID), its own verdict, its first finding."""
    d = merged.facts.get("distributed") or {}
    entries = [e for e in d.get("ranks") or [] if isinstance(e, dict)]
    rows = [("rank", "host", "device", "verdict", "first finding")]
    for e in entries:
        if e.get("missing"):
            rows.append((str(e.get("rank")), "?", "?", "no report", "see distributed.barrier"))
            continue
        dev = e.get("device") or {}
        where = (f"cuda:{dev['ordinal']} {str(dev.get('uuid') or '')[:13]}".strip() if dev.get("ordinal") is not None
                 else "none" if dev.get("known") else "unknown")
        first = next(iter(e.get("findings") or []), None)
        rows.append((str(e.get("rank")), str(e.get("hostname") or "?"), where,
                     WORDS.get(e.get("exit_code"), "?"), f"{first['id']}: {first['summary']}" if first else ""))
    widths = [max(len(printable(r[i])) for r in rows) for i in range(4)]
    lines = [f"doctor check --distributed: {sum(1 for e in entries if not e.get('missing'))} of "
             f"{d.get('world_size')} ranks reported ({d.get('backend')} control group, launched by "
             f"{d.get('launcher')}, timeout {d.get('timeout_s')} s)", ""]
    for r in rows:
        cells = [printable(c).ljust(w) for c, w in zip(r[:4], widths)]
        lines.append(("  ".join(cells) + "  " + printable(r[4][:120])).rstrip())
    return "\n".join(lines) + "\n\n"


def to_dict(merged: Report, ranks: list[Report | None]) -> dict[str, Any]:
    from ..render.json_report import to_dict as report_dict

    out = report_dict(merged)
    out["facts"]["distributed"] = dict(out["facts"]["distributed"],
                                       reports=[report_dict(r) if r is not None else None for r in ranks])
    return out


def as_json(merged: Report, ranks: list[Report | None]) -> str:
    return json.dumps(to_dict(merged, ranks), indent=1) + "\n"
