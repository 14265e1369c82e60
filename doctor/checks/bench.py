"""Judges of the bench phase: measured matmul, bandwidth and HVP figures against sourced references,
correctness of every product, and GPUs against their identical siblings."""
from __future__ import annotations

import statistics
from typing import Any, Callable

from doctor.bench.reference import gpu_reference, level, tolerance
from doctor.model import NO_GPU, Remediation, Result, Status, errored, failed, fold, passed, skipped, warned
from doctor.registry import check

Outcome = tuple[Status, str, "Remediation | None"]
GIB = 2**30


def _index(dev: dict[str, Any]) -> str:
    return str(dev["nvml_index"]) if dev.get("nvml_index") is not None else "<index>"


def broken_gpu(dev: dict[str, Any], what: str) -> Remediation:
    """A hang, a CUDA error or a wrong result: the GPU or its node is faulty, not the job."""
    i = _index(dev)
    return Remediation(
        f"{what} Do not start the job on this GPU. Look for Xid errors in the kernel log and for ECC errors; "
        f"reset the GPU when no process uses it, or ask the provider to replace the node.",
        ("sudo dmesg -T | grep -i xid", f"nvidia-smi -q -d ECC -i {i}", f"sudo nvidia-smi --gpu-reset -i {i}"))


def slow_gpu(dev: dict[str, Any], what: str) -> Remediation:
    i = _index(dev)
    return Remediation(
        f"{what} Look at its clocks and throttle reasons (power cap, temperature), other processes on it and "
        f"its PCIe link; if it stays slow, ask the provider for another node. (doctor never changes clocks "
        f"or power limits.)",
        (f"nvidia-smi -q -d PERFORMANCE,CLOCK,POWER,TEMPERATURE -i {i}", "nvidia-smi"))


def _devices(facts: dict[str, Any]) -> tuple[list[dict[str, Any]], Result | None]:
    """The benchmarked devices, or the skip every bench check reports (one cause: the phase's reason)."""
    bench = facts["bench"]
    if bench.get("status") == "skipped":
        reason = str(bench.get("reason"))
        return [], skipped(f"benchmarks skipped: {reason}", cause=reason if reason == NO_GPU else f"benchmarks skipped: {reason}")
    devs = list(bench.get("devices") or [])
    return devs, None if devs else skipped("the bench section lists no device")


def _stage(dev: dict[str, Any], stage: str, first: bool) -> tuple[dict[str, Any] | None, Outcome | None]:
    """The stage's figures, or the outcome that replaces judging them (hang, crash, error, not run)."""
    label = dev.get("label") or dev.get("key")
    setup = dev.get("setup") or {}
    if setup.get("error"):
        if setup.get("kind") == "missing_dependency":
            return None, (Status.SKIP, f"{label}: cannot run the benchmark: {setup['error']}", None)
        if not first:
            return None, (Status.SKIP, f"{label}: not run (see bench.matmul)", None)
        return None, (Status.FAIL, f"{label}: the benchmark could not start on it: {setup['error']}",
                      broken_gpu(dev, "CUDA failed on this GPU before any benchmark ran."))
    data = dev.get(stage)
    if data is None:
        if dev.get("status") in ("timeout", "crashed"):
            if dev.get("failed_stage") == stage or (first and dev.get("failed_stage") == "setup"):
                verb = "hung" if dev["status"] == "timeout" else "crashed"
                return None, (Status.FAIL, f"{label}: {dev.get('message')}",
                              broken_gpu(dev, f"The benchmark {verb} on this GPU."))
            return None, (Status.SKIP, f"{label}: not run: the worker stopped during {dev.get('failed_stage')}", None)
        return None, (Status.SKIP, f"{label}: {stage} not measured", None)
    if "error" in data:
        kind = data.get("kind")
        if kind == "missing_dependency":
            return None, (Status.SKIP, f"{label}: {data['error']}", None)
        if kind == "oom":
            return None, (Status.WARN, f"{label}: out of GPU memory during the {stage} benchmark: {data['error']}",
                          Remediation("Another process probably holds memory on this GPU; the job will have less "
                                      "than the card's total.", ("nvidia-smi",)))
        return None, (Status.FAIL, f"{label}: {stage} failed: {data['error']}",
                      broken_gpu(dev, f"The {stage} benchmark raised an error on this GPU."))
    return data, None


def _judge(facts: dict[str, Any], stage: str, first: bool,
           judge_one: Callable[[dict[str, Any], dict[str, Any]], list[Outcome]]) -> Result:
    devs, skip = _devices(facts)
    if skip:
        return skip
    outcomes: list[Outcome] = []
    for dev in devs:
        data, blocked = _stage(dev, stage, first)
        label = dev.get("label") or dev.get("key")
        try:
            outcomes.append(blocked or merge(judge_one(dev, data or {}), label))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:   # a figure the bench did not record
            outcomes.append((Status.ERROR, f"{label}: could not decide: the {stage} figures are incomplete "
                             f"({type(exc).__name__}: {exc})", None))
    return combine(outcomes, "devices")


def _worst(outcomes: list[Outcome]) -> Outcome:
    """The first outcome with the status that stands for them all (model.fold)."""
    status = fold(o[0] for o in outcomes)
    return next(o for o in outcomes if o[0] is status)


def merge(parts: list[Outcome], label: str) -> Outcome:
    """One device's outcomes as one line: the worst status, every part, the worst part's remedy."""
    worst = _worst(parts)
    prefix = f"{label}: "
    text = "; ".join(p[1][len(prefix):] if p[1].startswith(prefix) else p[1] for p in parts)
    return worst[0], prefix + text, worst[2]


def combine(outcomes: list[Outcome], what: str) -> Result:
    """The worst line as the summary, every line in the details, the worst line's remedy."""
    worst = _worst(outcomes)
    lines = tuple(o[1] for o in outcomes)
    extra = f" (worst of {len(outcomes)} {what}; all in details)" if len(outcomes) > 1 else ""
    status, summary, remedy = worst
    if status is Status.SKIP:
        return skipped(summary + extra, *lines)
    if status is Status.PASS:
        return passed(summary + extra, *lines)
    if status is Status.ERROR:
        return errored(summary + extra, *lines)
    return (failed if status is Status.FAIL else warned)(summary + extra, remedy, *lines)


def _fractions(kind: str, warn: float | None, fail: float | None) -> tuple[float, float]:
    return (level(kind, "warn_fraction") if warn is None else warn,
            level(kind, "fail_fraction") if fail is None else fail)


def _unjudged(dev: dict[str, Any]) -> str:
    return f"no sourced reference for {dev.get('name') or 'this device'}, speed not judged"


def _speed(dev: dict[str, Any], label: str, value: float, peak: float | None, ref_name: str, what: str,
           warn: float, fail: float) -> Outcome:
    if not peak:
        return Status.PASS, f"{label}: {what}", None
    frac = value / peak
    line = f"{label}: {what} = {frac:.0%} of {ref_name}'s {peak:g}"
    if frac < fail:
        return Status.FAIL, line + f" (below {fail:.0%})", slow_gpu(dev, f"{label} runs at {frac:.0%} of its datasheet figure.")
    if frac < warn:
        return Status.WARN, line + f" (below {warn:.0%})", slow_gpu(dev, f"{label} runs at {frac:.0%} of its datasheet figure.")
    return Status.PASS, line, None


@check("bench.matmul", needs=("bench",))
def bench_matmul(facts: dict[str, Any], *, warn_fraction: float | None = None,
                 fail_fraction: float | None = None) -> Result:
    """Dense fp16 (and bf16) matmul throughput of every GPU, as a fraction of its datasheet peak for the
    mode PyTorch uses (tensor cores, FP32 accumulate, dense), and the product checked against float64.

    Why: a rented GPU can be throttled, power-capped, shared or broken; a card that computes garbage fast
    ruins a run silently. The passive checks cannot see either.
    Fix: a wrong product or a hang means a faulty GPU (Xid / ECC, reset or replace); a slow one, check its
    clocks, throttle reasons and other processes (nvidia-smi -q -d PERFORMANCE).
    """
    warn, fail = _fractions("matmul", warn_fraction, fail_fraction)

    def judge(dev: dict[str, Any], data: dict[str, Any]) -> list[Outcome]:
        label = dev.get("label") or dev.get("key")
        ref = gpu_reference(dev.get("name")) if dev.get("key") != "cpu" else None
        out: list[Outcome] = []
        for dtype, fig in data.items():
            if not isinstance(fig, dict) or "tflops" not in fig:
                continue
            tol = tolerance(dtype)
            if fig["rel_error"] > tol["rel_error"] or fig["max_error_rms"] > tol["max_error_rms"]:
                out.append((Status.FAIL, f"{label}: {dtype} matmul returned wrong results: relative error "
                            f"{fig['rel_error']:.2g} (limit {tol['rel_error']:g}), largest {fig['max_error_rms']:.2g} "
                            f"of the RMS (limit {tol['max_error_rms']:g})",
                            broken_gpu(dev, "The GPU's matrix products disagree with a float64 reference.")))
                continue
            m, n, k = fig["shape"]
            what = f"{dtype} {fig['tflops']:.4g} TFLOPS at {m}x{n}x{k}"
            out.append(_speed(dev, label, fig["tflops"], (ref or {}).get(f"{dtype}_tflops"),
                              (ref or {}).get("name", ""), what, warn, fail))
        if out and not ref:
            out.append((Status.PASS, f"{label}: {_unjudged(dev)}", None))
        return out or [(Status.SKIP, f"{label}: no matmul figure", None)]

    return _judge(facts, "matmul", True, judge)


@check("bench.bandwidth", needs=("bench",))
def bench_bandwidth(facts: dict[str, Any], *, warn_fraction: float | None = None,
                    fail_fraction: float | None = None) -> Result:
    """Device memory bandwidth of every GPU (a large device-to-device copy, bytes read plus written)
    against its datasheet bandwidth, and the copy's content checked.

    Why: degraded or throttled memory slows every memory-bound step (optimizer, norms, attention,
    inference decode) and shows in nothing the driver reports.
    Fix: a wrong copy means faulty memory (ECC, replace the node); a slow one, check clocks and throttling.
    """
    warn, fail = _fractions("bandwidth", warn_fraction, fail_fraction)

    def judge(dev: dict[str, Any], data: dict[str, Any]) -> list[Outcome]:
        label = dev.get("label") or dev.get("key")
        if not data.get("verified"):
            return [(Status.FAIL, f"{label}: the copied buffer differs from its source",
                     broken_gpu(dev, "A device-to-device copy corrupted data."))]
        ref = gpu_reference(dev.get("name")) if dev.get("key") != "cpu" else None
        what = f"{data['gbps']:.4g} GB/s copying {data['bytes'] / GIB:.3g} GiB"
        out = [_speed(dev, label, data["gbps"], (ref or {}).get("bandwidth_gbs"), (ref or {}).get("name", ""),
                      what, warn, fail)]
        return out if ref else out + [(Status.PASS, f"{label}: {_unjudged(dev)}", None)]

    return _judge(facts, "bandwidth", False, judge)


@check("bench.hvp", needs=("bench",))
def bench_hvp(facts: dict[str, Any], *, max_disagreement: float | None = None) -> Result:
    """Hessian-vector products: both methods (double backward, forward-over-reverse) exact on a quadratic
    with a known Hessian and in agreement on a transformer (OPT-125m architecture); reports HVPs per second,
    the time ratio to a gradient, peak memory and the Hutchinson diagonal-estimate rate.

    Why: second-order work (Hessian diagonals, influence functions) depends on double backward through
    every kernel; a kernel without it, or a GPU returning wrong values, fails late or silently.
    Fix: a disagreement or an error on the quadratic means wrong arithmetic on this GPU (treat it as faulty);
    a missing transformers package: pip install transformers in the job's environment.
    """
    limit = tolerance("hvp_methods") if max_disagreement is None else max_disagreement
    exact = tolerance("hvp_known_hessian")

    def judge(dev: dict[str, Any], data: dict[str, Any]) -> list[Outcome]:
        label = dev.get("label") or dev.get("key")
        errors = data.get("known_hessian_rel_error") or {}
        wrong = {m: e for m, e in errors.items() if not e <= exact}
        if wrong:
            return [(Status.FAIL, f"{label}: HVP wrong on a quadratic with a known Hessian: "
                     + ", ".join(f"{m} relative error {e:.2g}" for m, e in wrong.items()) + f" (limit {exact:g})",
                     broken_gpu(dev, "Hessian-vector products disagree with the exact Hessian in float64."))]
        tr = data.get("transformer") or {}
        if "error" in tr:
            return [(Status.SKIP, f"{label}: HVP exact on the quadratic; transformer part not run: {tr['error']}",
                     None)]
        dis = tr["methods_rel_disagreement"]
        if not dis <= limit:
            return [(Status.FAIL, f"{label}: the two HVP methods disagree by {dis:.2g} on {tr['model']} "
                     f"(limit {limit:g} in fp32)",
                     broken_gpu(dev, "Two exact methods for the same Hessian-vector product disagree."))]
        fast = min(("double_backward", "forward_over_reverse"), key=lambda m: tr[m]["median_s"])
        other = "forward_over_reverse" if fast == "double_backward" else "double_backward"
        peak = tr[fast].get("peak_bytes")
        line = (f"{label}: {tr[fast]['per_s']:.3g} HVP/s by {fast.replace('_', ' ')} ({tr[fast]['grad_ratio']:.1f}x a "
                f"gradient), {tr[other]['per_s']:.3g}/s by {other.replace('_', ' ')} ({tr[other]['grad_ratio']:.1f}x); "
                f"methods agree to {dis:.1e}; Hutchinson {tr['hutchinson']['samples_per_s']:.3g} samples/s"
                + (f"; peak {peak / GIB:.2f} GiB" if peak else "")
                + f"; {tr['batch']}x{tr['sequence']} tokens, {tr['attention']} attention; no sourced reference, "
                  f"speed not judged")
        return [(Status.PASS, line, None)]

    return _judge(facts, "hvp", False, judge)


def _metrics(dev: dict[str, Any]) -> dict[str, float]:
    out = {}
    fig = (dev.get("matmul") or {}).get("fp16") or {}
    if "tflops" in fig:
        out["fp16 matmul TFLOPS"] = fig["tflops"]
    if "gbps" in (dev.get("bandwidth") or {}):
        out["bandwidth GB/s"] = dev["bandwidth"]["gbps"]
    tr = (dev.get("hvp") or {}).get("transformer") or {}
    rates = [tr[m]["per_s"] for m in ("double_backward", "forward_over_reverse") if "per_s" in (tr.get(m) or {})]
    if rates:
        out["HVP/s"] = max(rates)
    return out


@check("bench.siblings", needs=("bench",))
def bench_siblings(facts: dict[str, Any], *, warn_fraction: float | None = None,
                   fail_fraction: float | None = None) -> Result:
    """Among identical GPUs in this machine, no GPU's matmul, bandwidth or HVP figure falls well below
    the median of its siblings. Needs no reference figure.

    Why: one slow GPU sets the pace of every data-parallel step: 7 healthy cards wait for the eighth.
    Fix: check the slow GPU's clocks, throttle reasons, temperature and PCIe link; ask for another node.
    """
    warn, fail = _fractions("siblings", warn_fraction, fail_fraction)
    devs, skip = _devices(facts)
    if skip:
        return skip
    groups: dict[str, list[dict[str, Any]]] = {}
    for dev in devs:
        if dev.get("key") != "cpu" and dev.get("status") == "ok":
            groups.setdefault(dev.get("name") or "?", []).append(dev)
    outcomes: list[Outcome] = []
    for name, members in groups.items():
        if len(members) < 2:
            continue
        figures = [_metrics(d) for d in members]
        for dev, own in zip(members, figures):
            label = dev.get("label") or dev.get("key")
            for metric, value in own.items():
                others = [f[metric] for f in figures if f is not own and metric in f]
                if not others:
                    continue
                ratio = value / statistics.median(others)
                line = f"{label}: {metric} {value:.4g} = {ratio:.0%} of its {len(others)} sibling(s)' median"
                if ratio < fail:
                    outcomes.append((Status.FAIL, line, slow_gpu(dev, f"{label} is {1 - ratio:.0%} slower than identical GPUs.")))
                elif ratio < warn:
                    outcomes.append((Status.WARN, line, slow_gpu(dev, f"{label} is {1 - ratio:.0%} slower than identical GPUs.")))
                else:
                    outcomes.append((Status.PASS, line, None))
    if not outcomes:
        return skipped(f"no two identical GPUs benchmarked to compare ({len(devs)} device(s))")
    result = combine(outcomes, "comparisons")
    if result.status is Status.PASS:
        n = sum(len(m) for m in groups.values() if len(m) > 1)
        return passed(f"{n} identical GPUs: every figure at least {warn:.0%} of its siblings' median", *result.details)
    return result
