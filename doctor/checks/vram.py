"""The profile job's estimated peak GPU memory against the GPU's free memory."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from doctor.errors import InputError
from doctor.model import Remediation, Result, failed, passed, skipped, warned
from doctor.registry import check

from .common import devices

GIB = 2**30


@check("vram.budget", needs=("gpu",), binds={"workload": "job.workload"})
def vram_budget(facts: dict[str, Any], *, workload: dict[str, Any], headroom_pct: float = 10.0) -> Result:
    """The job's estimated peak GPU memory (doctor estimate's model: weights, gradients, optimizer state,
    activations, logits, KV cache, CUDA context) fits the smallest GPU's memory minus what is already in use.

    Why: an out-of-memory error arrives minutes or hours into a run, after loading a 60 GB checkpoint;
    the arithmetic that predicts it takes milliseconds.
    Fix: apply one of the what-ifs listed (each is re-estimated by the model), or run on a larger GPU.
    """
    from doctor.vram.catalogue import resolve
    from doctor.vram.workload import to_flags, workload_from_job
    from doctor.vram.estimator import Workload, estimate, gib
    from doctor.vram.render import describe
    from doctor.vram.whatif import what_ifs

    model, fields = workload_from_job({"workload": workload})
    if not model:
        return skipped("the profile's job names no model (job.workload.model)")
    try:
        arch = resolve(model, offline=True)
        wl = Workload(**fields)
    except (InputError, TypeError) as exc:
        return skipped(f"cannot estimate {model}: {exc}")
    devs = [d for d in devices(facts.get("gpu") or {}) if (d.get("memory") or {}).get("total_bytes")]
    cc = devs[0].get("compute_capability") if devs else None
    wl = replace(wl, sm=float(cc) if cc else None)
    est = estimate(arch, wl)
    details = [f"workload: {describe(wl)}"] + [f"{k}: {gib(v)}" for k, v in est.breakdown.items()] + [
        f"range {gib(est.low_bytes)} .. {gib(est.high_bytes)}"] + est.notes
    if not devs:
        return skipped(f"{model} needs ~{gib(est.peak_bytes)} at peak; no NVIDIA GPU to compare (see gpu.present)",
                       *details)
    dev = min(devs, key=lambda d: d["memory"]["total_bytes"] - (d["memory"].get("used_mib") or 0) * 2**20)
    used = (dev["memory"].get("used_mib") or 0) * 2**20
    free = dev["memory"]["total_bytes"] - used
    where = f"{dev.get('name')} ({gib(dev['memory']['total_bytes'])}, {gib(used)} in use)"
    summary = f"{model}: estimated peak {gib(est.peak_bytes)} ({est.phase}) vs {gib(free)} free on {where}"
    if est.peak_bytes <= free and free - est.peak_bytes >= free * headroom_pct / 100:
        return passed(summary, *details)
    options = what_ifs(arch, wl, free, est)
    fixes = [f"{w.change} -> {gib(w.estimate.peak_bytes)}" + (" (fits)" if w.estimate.peak_bytes <= free else "")
             for w in options[:5]]
    remedy = Remediation(("Make it fit: " if est.peak_bytes > free else "Gain headroom: ") + "; ".join(fixes)
                         if fixes else "No single change fits; use a larger GPU or shard the model (FSDP/ZeRO-3).",
                         tuple(f"doctor estimate {to_flags(model, fields)} {w.flag}" for w in options[:3]))
    if est.peak_bytes > free:
        return failed(summary + " - does not fit", remedy, *details)
    return warned(summary + f" - under {headroom_pct:g}% headroom", remedy, *details)
