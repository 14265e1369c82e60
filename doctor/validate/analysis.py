"""What a validation run's figures say: medians and spreads over the bench runs, the quick bench against the
sweep, each VRAM estimate against its measurement, probes against NVML and torch, and the goals each meets.
Pure: works on the documents the phases wrote, so a committed results folder can be analysed again."""
from __future__ import annotations

from typing import Any

from .. import refdata
from ..bench.reference import level, tolerance
from .stats import error_summary, median, ratio, relative_error, spread

# The goals a run is held to (issue 14): what a short benchmark and the memory model must achieve on a GPU.
GOALS = {"quick_over_sweep": 0.95, "bench_spread": 0.03, "vram_mean_abs": 0.05, "vram_max_abs": 0.10}
SPREAD_METRICS = ("matmul_tflops.fp16", "matmul_tflops.bf16", "bandwidth_gbps")


def flatten(row: dict[str, Any]) -> dict[str, float]:
    """One bench figures row as metric -> number ('matmul_tflops.fp16', 'bandwidth_gbps', ...)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def bench_figures(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per device: every metric's values over the runs, their median and spread; per run: wall and stage times."""
    devices: dict[str, dict[str, Any]] = {}
    for doc in docs:
        stages = {d.get("key"): d for d in (doc.get("bench") or {}).get("devices") or []}
        for row in doc.get("figures") or []:
            dev = devices.setdefault(row.get("key"), {"label": row.get("label"), "name": row.get("name"),
                                                      "reference": row.get("reference"), "metrics": {}})
            metrics = flatten(row)
            matmul = (stages.get(row.get("key")) or {}).get("matmul") or {}
            if isinstance(matmul.get("duration_s"), (int, float)):
                metrics["matmul_stage_s"] = matmul["duration_s"]
            for name, value in metrics.items():
                dev["metrics"].setdefault(name, []).append(value)
    for dev in devices.values():
        dev["metrics"] = {k: {"runs": v, "median": median(v), "spread": spread(v)} for k, v in dev["metrics"].items()}
    walls = [d.get("wall_s") for d in docs]
    return {"runs": len(docs), "wall_s": {"runs": walls, "median": median(walls)},
            "exit_codes": [d.get("exit_code") for d in docs], "devices": devices}


def pick_device(bench: dict[str, Any], uuid: str | None) -> tuple[str | None, dict[str, Any]]:
    """The bench device that is GPU 0 (by UUID), else the first one."""
    devices = bench.get("devices") or {}
    for key, dev in devices.items():
        if uuid and key and str(key).endswith(str(uuid).removeprefix("GPU-")):
            return key, dev
    return next(iter(devices.items()), (None, {}))


def sweep_vs_quick(sweep: list[dict[str, Any]], device: dict[str, Any]) -> dict[str, Any]:
    """Per dtype: the quick bench's median over runs against the sweep's best shape (median and best call)."""
    metrics = device.get("metrics") or {}
    out = {}
    for row in sweep:
        dtype = row.get("dtype")
        quick = (metrics.get(f"matmul_tflops.{dtype}") or {}).get("median")
        best = (row.get("best_median") or {}).get("tflops")
        best_call = (row.get("best_call") or {}).get("tflops")
        paired = row.get("confirm") or {}
        out[dtype] = {"quick_tflops": quick, "sweep_best_tflops": best,
                      "paired_quick_over_sweep": paired.get("quick_over_sweep"),
                      "paired": {k: paired.get(k) for k in ("sweep_best", "quick_best")},
                      "sweep_best_shape": (row.get("best_median") or {}).get("shape"),
                      "sweep_best_call_tflops": best_call, "quick_over_sweep": ratio(quick, best),
                      "quick_over_best_call": ratio(quick, best_call), "sweep_shapes": row.get("shapes"),
                      "sweep_s": row.get("duration_s"), "sweep_stopped_by_budget": row.get("stopped_by_budget"),
                      "quick_matmul_stage_s": (metrics.get("matmul_stage_s") or {}).get("median")}
    return out


def vram_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each set-up: doctor's estimate against the allocator's peak and against NVML's peak for the process."""
    out = []
    for row in rows:
        spec, est, m = row["spec"], row["estimate"], row.get("measured") or {}
        ctx = (est.get("breakdown") or {}).get("cuda_context", 0)
        line = {"id": spec["id"], "model": spec["model"], "method": spec["method"], "estimate_bytes": est["peak_bytes"],
                "estimate_reserved_bytes": est["peak_bytes"] - ctx, "estimate_context_bytes": ctx,
                "estimate_phase": est.get("peak_phase"),
                "reserved_peak_bytes": m.get("reserved_peak_bytes"), "nvml_peak_bytes": m.get("nvml_peak_bytes"),
                "outside_allocator_bytes": m.get("outside_allocator_bytes"),
                "error_reserved": relative_error(est["peak_bytes"] - ctx, m.get("reserved_peak_bytes")),
                "error_nvml": relative_error(est["peak_bytes"], m.get("nvml_peak_bytes")),
                "status": "measured" if m else ("skipped" if row.get("skipped") else
                                                ("error" if row.get("error") else "ran (not measured)")),
                "note": row.get("skipped") or row.get("error")}
        out.append(line)
    return out


def consistency(facts: dict[str, Any] | None, nvml_doc: dict[str, Any] | None,
                bench_docs: list[dict[str, Any]]) -> list[str]:
    """Where the facts, the raw NVML dump and torch (in the probe and in the bench worker) disagree."""
    problems: list[str] = []
    facts = facts or {}
    probe = (nvml_doc or {}).get("probe") or {}
    f_devs = (facts.get("gpu") or {}).get("devices") or []
    n_devs = probe.get("devices") or []
    if nvml_doc and len(f_devs) != len(n_devs):
        problems.append(f"the facts list {len(f_devs)} GPU(s), the NVML dump {len(n_devs)}")
    for f, n in zip(f_devs, n_devs):
        for key in ("name", "compute_capability", "uuid"):
            if f.get(key) != n.get(key):
                problems.append(f"GPU {f.get('nvml_index')}: facts {key} {f.get(key)!r}, NVML dump {n.get(key)!r}")
        if (f.get("memory") or {}).get("total_bytes") != (n.get("memory") or {}).get("total_bytes"):
            problems.append(f"GPU {f.get('nvml_index')}: memory totals differ between the facts and the NVML dump")
    by_uuid = {d.get("uuid"): d for d in f_devs if d.get("uuid")}
    for t in ((facts.get("torch") or {}).get("runtime") or {}).get("devices") or []:
        uuid = t.get("uuid")
        uuid = uuid if not uuid or uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        n = by_uuid.get(uuid)
        if n is None:
            problems.append(f"torch device {t.get('ordinal')} ({t.get('name')}, UUID {uuid}) matches no NVML GPU")
            continue
        if t.get("compute_capability") and t.get("compute_capability") != n.get("compute_capability"):
            problems.append(f"torch device {t.get('ordinal')}: compute capability {t.get('compute_capability')} "
                            f"but NVML says {n.get('compute_capability')}")
    for doc in bench_docs[:1]:
        for dev in (doc.get("bench") or {}).get("devices") or []:
            setup = dev.get("setup") or {}
            if setup.get("type") != "cuda":
                continue
            if setup.get("uuid") and dev.get("key") and setup["uuid"] != dev["key"]:
                problems.append(f"bench worker pinned to {dev['key']} ran on {setup['uuid']}")
            n = by_uuid.get(dev.get("key"))
            if n and setup.get("compute_capability") != n.get("compute_capability"):
                problems.append(f"bench worker on {dev.get('label')}: compute capability "
                                f"{setup.get('compute_capability')}, NVML {n.get('compute_capability')}")
    return problems


def nvml_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Clocks, power limits and P-states read before and after the load (doctor never sets them)."""
    rows = []
    b_rows = (before or {}).get("clocks_power") or []
    a_rows = (after or {}).get("clocks_power") or []
    for b, a in zip(b_rows, a_rows):
        rows.append({k: {"before": b.get(k), "after": a.get(k)} for k in sorted(set(b) | set(a)) if k != "nvml_index"})
    limits_same = all(r.get("enforced_power_limit_mw", {}).get("before") == r.get("enforced_power_limit_mw", {}).get("after")
                      for r in rows)
    return {"per_gpu": rows, "power_limit_unchanged": limits_same if rows else None,
            "not_supported": (before or {}).get("not_supported"),
            "errors": [f"{e['call']}: {e['error']}" for e in (before or {}).get("errors") or []]}


def findings(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Each expectation with its figure and whether it held (None: not judged here, and why)."""
    out: list[dict[str, Any]] = []
    gpu = record.get("device") == "cuda"

    def add(what: str, ok: bool | None, figure: str) -> None:
        out.append({"what": what, "ok": ok, "figure": figure})

    for name, phase in (record.get("phases") or {}).items():
        if phase.get("status") in ("error", "timeout"):
            add(f"phase {name} ran", False, f"{phase['status']}: {phase.get('message')}")
    budget, wall = record.get("budget_s"), record.get("wall_s")
    if budget and wall:
        add("the run finished within its time budget", wall <= budget, f"{wall:.0f} s of {budget:.0f} s")
    if not gpu:
        add("GPU figures judged", None, "CPU run: the figures exercise the code path and are not judged")
    bench = record.get("bench") or {}
    for dev in (bench.get("devices") or {}).values():
        metrics, label = dev.get("metrics") or {}, dev.get("label")
        for method in ("double_backward", "forward_over_reverse"):
            exact = (metrics.get(f"hvp_known_hessian_rel_error.{method}") or {}).get("median")
            if exact is not None:
                limit = tolerance("hvp_known_hessian")
                add(f"{label}: {method} HVP equals the exact Hessian product (<= {limit:g})", exact <= limit,
                    f"{exact:.2e}")
        dis = (metrics.get("hvp_rel_disagreement") or {}).get("median")
        if dis is not None:
            limit = tolerance("hvp_methods")
            add(f"{label}: the two HVP methods agree (<= {limit:g})", dis <= limit, f"{dis:.2e}")
        if not gpu:   # speed and spread on a shared CPU at toy sizes say nothing
            continue
        if not dev.get("reference"):
            add(f"{label}: a sourced datasheet row to judge its speed against", None,
                f"none for {dev.get('name')}: matmul and bandwidth reported, not judged")
        for metric in SPREAD_METRICS:
            s = (metrics.get(metric) or {}).get("spread")
            if s is not None:
                add(f"{label}: {metric} spread over {bench.get('runs')} runs <= {GOALS['bench_spread']:.0%}",
                    s <= GOALS["bench_spread"], f"{s:.1%}")
        for dtype in ("fp16", "bf16"):
            frac = (metrics.get(f"matmul_fraction_of_peak.{dtype}") or {}).get("median")
            if frac is not None:
                warn = level("matmul", "warn_fraction")
                add(f"{label}: {dtype} matmul >= {warn:.0%} of the datasheet peak ({dev.get('reference')})",
                    frac >= warn, f"{frac:.1%}")
        bw = (metrics.get("bandwidth_fraction_of_spec") or {}).get("median")
        if bw is not None:
            warn = level("bandwidth", "warn_fraction")
            add(f"{label}: copy bandwidth >= {warn:.0%} of the datasheet ({dev.get('reference')})", bw >= warn,
                f"{bw:.1%}")
    for dtype, row in (record.get("sweep_vs_quick") or {}).items():
        r = row.get("quick_over_sweep")
        if gpu and r is not None:
            add(f"{dtype}: quick bench >= {GOALS['quick_over_sweep']:.0%} of the sweep's best",
                r >= GOALS["quick_over_sweep"],
                f"{r:.1%} ({row['quick_tflops']:.1f} of {row['sweep_best_tflops']:.1f} TFLOPS at "
                f"{'x'.join(map(str, row['sweep_best_shape'] or []))})")
        p = row.get("paired_quick_over_sweep")
        if gpu and p is not None:
            add(f"{dtype}: the quick bench's shapes >= {GOALS['quick_over_sweep']:.0%} of the sweep's best shapes, "
                "re-measured in pairs with the same timing", p >= GOALS["quick_over_sweep"], f"{p:.1%}")
    errors = record.get("vram_errors") or {}
    nv = errors.get("nvml") or {}
    if nv.get("rows"):
        add(f"VRAM estimate vs NVML peak: mean |error| <= {GOALS['vram_mean_abs']:.0%}",
            nv["mean_abs"] <= GOALS["vram_mean_abs"], f"{nv['mean_abs']:.1%} over {nv['rows']} set-ups")
        add(f"VRAM estimate vs NVML peak: max |error| <= {GOALS['vram_max_abs']:.0%}",
            nv["max_abs"] <= GOALS["vram_max_abs"], f"{nv['max_abs']:.1%}")
    ctx = refdata.load("vram")["cuda_context"]
    for row in record.get("vram") or []:
        outside = row.get("outside_allocator_bytes")
        if outside is not None and not ctx["low_mib"] * 2**20 <= outside <= ctx["high_mib"] * 2**20:
            add(f"{row['id']}: CUDA context within the reference range {ctx['low_mib']}-{ctx['high_mib']} MiB", False,
                f"{outside / 2**20:.0f} MiB")
        if row["status"] == "error":
            add(f"{row['id']}: set-up ran", False, str(row.get("note"))[:300])
    for problem in record.get("consistency") or []:
        add("facts, NVML and torch agree", False, problem)
    nvml = record.get("nvml") or {}
    for err in nvml.get("errors") or []:
        add("every NVML field the probe reads answers (or is 'not supported')", False, err)
    if nvml.get("power_limit_unchanged") is False:
        add("the enforced power limit stayed the same through the run", False, "changed (doctor never sets it)")
    return out


def analyse(record: dict[str, Any], docs: dict[str, Any]) -> dict[str, Any]:
    """Fill the record's figures from the phase documents, then its findings."""
    bench = bench_figures(docs.get("bench_runs") or [])
    record["bench"] = bench
    _, gpu0 = pick_device(bench, record.get("gpu0_uuid"))
    record["sweep_vs_quick"] = sweep_vs_quick(docs.get("sweep") or [], gpu0)
    rows = vram_rows(docs.get("vram") or [])
    record["vram"] = rows
    record["vram_errors"] = {"nvml": error_summary(r["error_nvml"] for r in rows),
                             "reserved": error_summary(r["error_reserved"] for r in rows)}
    record["consistency"] = consistency(docs.get("facts"), docs.get("nvml_before"), docs.get("bench_runs") or [])
    record["nvml"] = nvml_changes(docs.get("nvml_before"), docs.get("nvml_after"))
    record["findings"] = findings(record)
    return record
