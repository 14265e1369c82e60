"""`doctor check --health`: the fast mode for Slurm's HealthCheckProgram (run as root outside any job, every
HealthCheckInterval, killed after 60 s). Only the probes that need neither torch nor the job's Python (NVML,
the kernel log, host, RAM and disk) run, under one budget; only the checks that read nothing else are judged;
no benchmark. One line per failure, beginning with the check id. doctor.session.health runs it."""
from __future__ import annotations

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


def lines(report: Report) -> list[str]:
    """`<check id>: <summary>` on one line each: the failures (and warnings under --strict) first, then what
    could not be decided."""
    bad = [Status.FAIL, *([Status.WARN] if report.strict else []), Status.ERROR]
    out = []
    for status in bad:
        out += [" ".join(f"{r.check_id}: {r.summary}".split()) for r in report.results if r.status is status]
    return out
