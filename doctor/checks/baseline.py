"""Judges against a site's own known-good node (`doctor baseline capture`): the NVIDIA driver no older than the
baseline's, and every GPU's bench figures no lower than the baseline's thresholds."""
from __future__ import annotations

from typing import Any

from doctor.fleet.baseline import FIGURES, driver_tuple, figure
from doctor.model import NO_GPU, Remediation, Result, errored, failed, passed, skipped
from doctor.registry import check


@check("driver.minimum", needs=("gpu",), needs_gpu=True)
def driver_minimum(facts: dict[str, Any], *, minimum: str) -> Result:
    """The NVIDIA driver is no older than `minimum` (e.g. the driver of the site's known-good node, written by
    `doctor baseline capture`).

    Why: nodes of one fleet drift apart; a node left on an older driver branch runs another CUDA feature set
    than the node the job was validated on, or cannot run its CUDA build at all.
    Fix: install the driver the known-good node runs (or a newer one), or re-capture the baseline if the site
    moved on.
    """
    want = driver_tuple(minimum)
    if want is None:
        return errored(f"could not decide: the profile's minimum {minimum!r} is not a driver version such as "
                       "'570.124.06'")
    drv = (facts.get("gpu") or {}).get("driver_version")
    have = driver_tuple(drv)
    if have is None:
        return errored(f"could not decide: the facts record no NVIDIA driver version ({drv!r}); see gpu.present")
    if have < want:
        return failed(f"driver {drv} is older than the minimum {minimum}",
                      Remediation(f"Install NVIDIA driver {minimum} or newer (the known-good node's), then reboot; "
                                  "or, where the site moved to this driver on purpose, capture the baseline again "
                                  "on a known-good node (doctor baseline capture).", ("nvidia-smi",)))
    return passed(f"driver {drv}; minimum {minimum}" + (" (newer)" if have > want else ""))


@check("bench.baseline", needs=("bench",))
def bench_baseline(facts: dict[str, Any], *, figures: dict[str, Any]) -> Result:
    """Every benchmarked GPU reaches the profile's floor for each figure it sets (fp16/bf16 matmul TFLOPS,
    memory bandwidth GB/s, HVP/s): the known-good node's median less a tolerance, written by `doctor baseline
    capture`. Needs no datasheet figure, so it judges GPUs doctor's reference table lacks.

    Why: a GPU that computes correctly but slower than its identical twins on the known-good node (power cap,
    thermal throttling, a degraded part) slows every step of a data-parallel job.
    Fix: look at the slow GPU's clocks, throttle reasons, temperature and other processes (nvidia-smi -q -d
    PERFORMANCE); if it stays slow, take the node out of service. Re-capture the baseline only on a node known
    to be healthy.
    """
    unknown_keys = [k for k in figures if k not in FIGURES]
    bad = [k for k, v in figures.items() if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0)]
    if unknown_keys or bad or not figures:
        what = (f"unknown figure {unknown_keys[0]!r}" if unknown_keys else f"{bad[0]} is {figures[bad[0]]!r}, not "
                "a positive number" if bad else "no figure")
        return errored(f"could not decide: the profile's figures has {what}; expected "
                       + ", ".join(FIGURES) + " with positive numbers")
    bench = facts["bench"]
    if bench.get("status") == "skipped":
        reason = str(bench.get("reason"))
        return skipped(f"benchmarks skipped: {reason}",
                       cause=reason if reason == NO_GPU else f"benchmarks skipped: {reason}")
    devs = [d for d in bench.get("devices") or [] if isinstance(d, dict) and d.get("key") != "cpu"]
    if not devs:
        return skipped("the bench section lists no GPU")
    fails, unknown, lines = [], [], []
    for dev in devs:
        label = str(dev.get("label") or dev.get("key"))
        for key, floor in figures.items():
            what, unit = FIGURES[key]
            value = figure(dev, key) if dev.get("status") == "ok" else None
            if value is None:
                why = f"its benchmark stopped ({dev.get('status')})" if dev.get("status") != "ok" else "not measured"
                unknown.append(f"{label}: {what}: {why}")
                continue
            line = f"{label}: {what} {value:.4g} {unit} (floor {floor:g})"
            lines.append(line)
            if value < floor:
                fails.append(f"{label}: {what} {value:.4g} {unit} is below the baseline floor {floor:g} "
                             f"({value / floor:.0%})")
    if fails:
        return failed(fails[0] + (f" (and {len(fails) - 1} more; all in details)" if len(fails) > 1 else ""),
                      Remediation("Look at the slow GPU's clocks, throttle reasons, temperature and other "
                                  "processes; if it stays slow, drain the node.",
                                  ("nvidia-smi -q -d PERFORMANCE,CLOCK,POWER,TEMPERATURE",)),
                      *fails, *unknown)
    if unknown:
        return errored(f"could not decide: {unknown[0]}", *unknown, *lines)
    return passed(f"{len(devs)} GPU(s) at or above the baseline floors: "
                  + ", ".join(f"{FIGURES[k][0]} {v:g} {FIGURES[k][1]}" for k, v in figures.items()), *lines)
