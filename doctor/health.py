"""`doctor check --health`: the fast mode for Slurm's HealthCheckProgram (run as root outside any job, every
HealthCheckInterval, killed after 60 s). Only the probes that need neither torch nor the job's Python (NVML,
the kernel log, host, RAM and disk) run, under one budget; only the checks that read nothing else are judged;
no benchmark. One line per failure, beginning with the check id."""
from __future__ import annotations

from typing import Any

from .errors import InputError
from .model import Report, Status

BUDGET_S = 15.0   # the whole probing phase; slurmd kills the program at 60 s
PROBES = ("gpu", "kernel", "host", "resources", "disk")
# The checks a health run judges, where the profile enables them. Left out: everything that needs torch, the
# job's Python, the network, the Hub cache or a benchmark; and the checks a running job trips by design
# (HealthCheckProgram also runs while jobs do): gpu.processes (the job's own processes), gpu.clocks (its load
# hits the power cap), shm.size (its workers fill /dev/shm), env.cuda_visible_devices (slurmd's environment
# is not a job's).
HEALTH_CHECKS = ("gpu.present", "gpu.count", "gpu.model", "gpu.memory", "gpu.compute_capability", "gpu.arch",
                 "driver.minimum", "gpu.ecc", "gpu.memory_remap", "gpu.pcie", "gpu.nvlink", "gpu.fabric", "gpu.xid",
                 "gpu.persistence", "memory.ram", "disk.space", "disk.inodes")


def timeouts(budget_s: float) -> dict[str, float]:
    """Each probe's limit within the budget (they run at once, so the budget bounds the whole phase)."""
    return {"gpu": min(budget_s, 10.0), "kernel": min(budget_s, 5.0), "host": min(budget_s, 5.0),
            "resources": min(budget_s, 5.0), "disk": min(budget_s, 5.0)}


def check(req: Any) -> Report:
    """Judge this node (or the snapshot `req.facts`) with the health checks of `req.profiles` (default: as
    doctor check). Never imports torch, never starts the torch probe."""
    from . import facts as facts_mod
    from .interpreter import select
    from .profile import load
    from .registry import discover
    from .runner import judge, report
    from .session import _default_profile

    registry = discover()
    refs = list(req.profiles)
    profile = load(refs, registry, offline=True) if refs else None
    budget = min(req.timeout_s, BUDGET_S)
    if req.facts is None:
        target = select(req.python)
        paths = profile.storage_paths() if profile else {}
        facts = facts_mod.collect(target, timeouts(budget), names=list(PROBES), paths=paths, offline=True)
    elif isinstance(req.facts, str):
        facts = facts_mod.load(req.facts)
    else:
        raise InputError("--health", None, "judges a snapshot file (--facts FILE) or this node")
    notes = [f"--health: probes {', '.join(PROBES)} within {budget:g} s; checks judged where the profile enables "
             "them: " + ", ".join(HEALTH_CHECKS)]
    if profile is None:
        ref, note = _default_profile(facts)
        profile = load([ref], registry, offline=True)
        notes.append(note)
    judged = judge(facts, profile, registry, keep=lambda cid: cid in HEALTH_CHECKS)
    return report(facts, profile, registry, judged, req.strict, notes)


def lines(report: Report) -> list[str]:
    """`<check id>: <summary>` on one line each: the failures (and warnings under --strict) first, then what
    could not be decided."""
    bad = [Status.FAIL, *([Status.WARN] if report.strict else []), Status.ERROR]
    out = []
    for status in bad:
        out += [" ".join(f"{r.check_id}: {r.summary}".split()) for r in report.results if r.status is status]
    return out
