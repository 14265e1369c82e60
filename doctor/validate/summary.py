"""summary.md of a validation run: what did not match, then the tables of figures, each with its unit."""
from __future__ import annotations

from typing import Any

GIB = 2**30


def _num(value: Any, fmt: str = ".1f") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _gib(value: Any) -> str:
    return "-" if value is None else f"{value / GIB:.2f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return []
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def render(rec: dict[str, Any]) -> str:
    env = rec.get("environment") or {}
    lines = [f"# doctor validate: {rec.get('title')}", "",
             f"- command: `{rec.get('command')}`",
             f"- when: {rec.get('created')} (UTC); doctor {rec.get('doctor_version')}, source {rec.get('source')}",
             f"- device: {rec.get('device')} ({rec.get('device_reason')})",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env.items() if v is not None),
             f"- wall time: {_num(rec.get('wall_s'))} s of a {_num(rec.get('budget_s'), '.0f')} s budget", ""]
    found = rec.get("findings") or []
    bad = [f for f in found if f["ok"] is False]
    unjudged = [f for f in found if f["ok"] is None]
    lines += ["## Did not match expectations", ""]
    lines += [f"- {f['what']}: **{f['figure']}**" for f in bad] or ["- nothing: every judged figure met its goal"]
    lines += [""] + [f"- not judged: {f['what']} ({f['figure']})" for f in unjudged] + ([""] if unjudged else [])
    met = [f for f in found if f["ok"] is True]
    if met:
        lines += ["Met:", ""] + [f"- {f['what']}: {f['figure']}" for f in met] + [""]
    lines += ["## Phases", ""]
    lines += _table(["phase", "status", "seconds", "note"],
                    [[n, p["status"], _num(p.get("duration_s")), str(p.get("message") or "")[:160]]
                     for n, p in (rec.get("phases") or {}).items()])
    bench = rec.get("bench") or {}
    if bench.get("devices"):
        lines += [f"## Bench: {bench['runs']} runs of `doctor bench` (wall median {_num(bench['wall_s']['median'])} s)", ""]
        rows = []
        for dev in bench["devices"].values():
            for metric, m in sorted(dev["metrics"].items()):
                fmt = ".2e" if "error" in metric or "disagreement" in metric else ".3g"
                rows.append([str(dev.get("label")), metric, _num(m["median"], fmt),
                             "-" if m["spread"] is None else f"{m['spread']:.1%}", ", ".join(_num(v, fmt) for v in m["runs"])])
        lines += _table(["device", "metric", "median", "spread", "runs"], rows)
    sq = rec.get("sweep_vs_quick") or {}
    if sq:
        lines += ["## Quick bench against the matmul sweep (GPU 0)", ""]
        lines += _table(["dtype", "quick TFLOPS", "sweep best TFLOPS", "at m x n x k", "quick / best",
                         "paired re-measure", "best single call", "shapes", "sweep s", "quick matmul s"],
                        [[d, _num(r["quick_tflops"]), _num(r["sweep_best_tflops"]),
                          "x".join(map(str, r.get("sweep_best_shape") or [])), _num(r["quick_over_sweep"], ".1%"),
                          _num(r.get("paired_quick_over_sweep"), ".1%"),
                          _num(r["sweep_best_call_tflops"]), str(r.get("sweep_shapes")), _num(r.get("sweep_s")),
                          _num(r.get("quick_matmul_stage_s"))] for d, r in sq.items()])
    vram = rec.get("vram") or []
    if vram:
        errs = rec.get("vram_errors") or {}
        lines += ["## VRAM: `doctor estimate` against the measured peak", "",
                  "GiB = 2^30 bytes. reserved = `torch.cuda.max_memory_reserved`; NVML peak = what NVML shows for the "
                  "process (CUDA context + the allocator's peak); error = estimate / measured - 1.", ""]
        lines += _table(["set-up", "estimate", "est. reserved", "reserved", "error", "NVML peak", "error",
                         "outside allocator (MiB)", "status"],
                        [[r["id"], _gib(r["estimate_bytes"]), _gib(r["estimate_reserved_bytes"]),
                          _gib(r["reserved_peak_bytes"]), _pct(r["error_reserved"]), _gib(r["nvml_peak_bytes"]),
                          _pct(r["error_nvml"]),
                          _num(None if r["outside_allocator_bytes"] is None else r["outside_allocator_bytes"] / 2**20, ".0f"),
                          r["status"] + (f": {str(r['note'])[:80]}" if r.get("note") else "")] for r in vram])
        for basis, e in errs.items():
            if e.get("rows"):
                lines.append(f"- against {basis}: mean |error| {e['mean_abs']:.1%}, max {e['max_abs']:.1%} "
                             f"over {e['rows']} set-ups")
        lines.append("")
    checks = rec.get("checks") or {}
    if checks:
        lines += ["## `doctor check` verdicts", ""]
        rows = [[name, str(c.get("exit_code")), str(c.get("summary"))] for name, c in checks.items()]
        lines += _table(["profiles", "exit", "verdict"], rows)
        seen: set[tuple[str, str, str]] = set()   # a machine-level result repeats in every job: say it once
        for name, c in checks.items():
            for r in c.get("not_passed") or []:
                key = (r["id"], r["status"], r["summary"])
                if key not in seen:
                    seen.add(key)
                    lines.append(f"- {name}: {r['id']} {r['status']}: {r['summary'][:200]}")
        lines.append("")
    nvml = rec.get("nvml") or {}
    if nvml.get("per_gpu") or nvml.get("not_supported"):
        lines += ["## NVML", "", f"- not supported on this GPU: {', '.join(nvml.get('not_supported') or []) or 'none'}",
                  f"- errors: {'; '.join(nvml.get('errors') or []) or 'none'}", ""]
        for i, gpu in enumerate(nvml.get("per_gpu") or []):
            lines += [f"GPU {i}, before and after the run (read only):", ""]
            lines += _table(["field", "before", "after"],
                            [[k, str(v.get("before")), str(v.get("after"))] for k, v in gpu.items()])
    return "\n".join(lines).rstrip() + "\n"
