"""The profile job's estimated peak GPU memory against the GPU's free memory."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from doctor.errors import InputError
from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

from .common import devices

GIB = 2**30


@check("vram.budget", needs_gpu=True, binds={"workload": "job.workload", "deepspeed": "job.deepspeed"})
def vram_budget(facts: dict[str, Any], *, workload: dict[str, Any], headroom_pct: float = 10.0,
                deepspeed: dict[str, Any] | None = None) -> Result:
    """The job's estimated peak GPU memory (doctor estimate's model: weights, gradients, optimizer state,
    activations, logits, KV cache, CUDA context) fits the smallest GPU's memory minus what is already in use.

    Why: an out-of-memory error arrives minutes or hours into a run, after loading a 60 GB checkpoint;
    the arithmetic that predicts it takes milliseconds.
    Fix: apply one of the what-ifs listed (each is re-estimated by the model), or run on a larger GPU.
    """
    from doctor.vram.arch import from_config
    from doctor.vram.estimator import OPTIMIZERS, Workload, estimate, fits, gib
    from doctor.vram.versions import resolve, with_facts
    from doctor.vram.whatif import what_ifs
    from doctor.vram.workload import (
        OPTIMIZER_NAMES,
        PROFILE_KEYS,
        describe,
        estimate_command,
        model_problems,
        shown_model,
        unknown_optimizer,
        workload_from_job,
    )

    model, fields = workload_from_job({"workload": workload,
                                       "deepspeed": deepspeed if isinstance(deepspeed, dict) else {}})
    if not model:
        return skipped("the profile's job names no model (job.workload.model)")
    if unknown_optimizer(workload):
        return errored(f"could not decide: optimizer {unknown_optimizer(workload)!r} (job.workload.optimizer) is not "
                       f"one doctor models its state for; expected one of {', '.join(OPTIMIZERS)} or a Trainer name "
                       f"({', '.join(OPTIMIZER_NAMES)})")
    resolved = workload.get("resolved_config") or {}
    if resolved.get("error") or not isinstance(resolved.get("config"), dict):
        why = resolved.get("error") or "the profile was loaded without the model's config.json"
        return errored(f"could not decide: no config.json for {model}: {why}")
    try:
        arch = from_config(resolved["config"], name=model, source=str(resolved.get("source")))
        # the installed transformers / peft / bitsandbytes of the inspected interpreter, where they change memory
        fields = resolve(with_facts(fields, facts))
        wl = Workload(**fields)
    except (InputError, TypeError) as exc:
        return errored(f"could not decide: cannot estimate {model}: {exc}")
    devs = [d for d in devices(facts.get("gpu") or {}) if (d.get("memory") or {}).get("total_bytes")]
    if not devs:
        return errored(f"could not decide: NVML reported no memory size for the GPUs, so {model}'s peak cannot be "
                       "compared")
    cc = devs[0].get("compute_capability")
    wl = replace(wl, sm=float(cc) if cc else None)
    est = estimate(arch, wl)
    for flag, value, problem in model_problems(arch, wl, est, model):   # what `doctor estimate` refuses
        where = f"job.workload.{PROFILE_KEYS.get(flag, flag)}: {value}: {problem}"
        if flag == "--lora-targets":   # the job itself stops there
            return failed(f"{where}; peft's get_peft_model raises (target modules not found) before training starts")
        return errored(f"could not decide: {where}")
    details = [f"workload: {describe(wl)}"] + [f"{k}: {gib(v)}" for k, v in est.breakdown.items()] + [
        f"range {gib(est.low_bytes)} .. {gib(est.high_bytes)}"] + est.notes + (
        [f"CPU RAM per node: {gib(est.cpu['per_node_bytes'])} at the {est.cpu['peak_moment']} (judged by memory.ram)"]
        if est.cpu else [])
    dev = min(devs, key=lambda d: d["memory"]["total_bytes"] - (d["memory"].get("used_mib") or 0) * 2**20)
    used = (dev["memory"].get("used_mib") or 0) * 2**20
    free = dev["memory"]["total_bytes"] - used
    where = f"{dev.get('name') or 'an unnamed GPU'} ({gib(dev['memory']['total_bytes'])}, {gib(used)} in use)"
    summary = f"{model}: estimated peak {gib(est.peak_bytes)} ({est.phase}) vs {gib(free)} free on {where}"
    verdict = fits(est, free, headroom_pct)   # the same verdict `doctor estimate` prints
    if verdict == "fits":
        return passed(summary, *details)
    if verdict == "does not fit" and est.paged_bytes and est.peak_bytes - est.paged_bytes <= free:
        return warned(summary + f" - fits only by paging {gib(est.peak_bytes - free)} of the paged optimizer's state "
                      "to CPU RAM (slower steps)", Remediation("Expect slower steps while bitsandbytes pages optimizer "
                                                               "state, or lower the peak (see doctor estimate's "
                                                               "what-ifs)."), *details)
    options = what_ifs(arch, wl, free, est)
    fixes = [f"{w.change} -> {gib(w.estimate.peak_bytes)}" + (" (fits)" if w.estimate.peak_bytes <= free else "")
             for w in options[:5]]
    remedy = Remediation(("Make it fit: " if verdict == "does not fit" else "Gain headroom: ") + "; ".join(fixes)
                         if fixes else "No single change fits; use a larger GPU or shard the model (FSDP/ZeRO-3).",
                         tuple(estimate_command(shown_model(workload, model), fields, w.flag) for w in options[:5]))
    if verdict == "does not fit":
        return failed(summary + " - does not fit", remedy, *details)
    return warned(summary + f" - under {headroom_pct:g}% headroom", remedy, *details)
