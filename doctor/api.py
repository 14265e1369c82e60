"""Python API: the same gate as `doctor check`, for launch scripts."""
from __future__ import annotations

from typing import Any

from .model import ExitCode, Report


class NotReady(RuntimeError):
    """Raised by `preflight` when the machine is not ready; carries the report."""

    def __init__(self, report: Report):
        self.report = report
        failing = [f"{r.check_id}: {r.summary}" for r in report.results if r.status.value in ("fail", "error")]
        super().__init__(report.verdict() + ("\n  " + "\n  ".join(failing) if failing else ""))


def preflight(*profiles: str, facts: str | dict[str, Any] | None = None, python: str | None = None,
              strict: bool = False, timeout_s: float = 60.0, bench: bool = True,
              bench_timeout_s: float = 180.0) -> Report:
    """Judge this machine (or `facts`, a snapshot path or dict) against `profiles`.

    When probing, usable GPUs are then benchmarked (matmul, bandwidth, HVP) unless `bench=False`;
    a saved snapshot is judged as it is.

    Returns the Report when ready; raises NotReady(report) otherwise (exit code 1 or 3 on the CLI),
    and doctor.errors.InputError for a bad profile or facts file.
    """
    from . import facts as facts_mod
    from .bench.phase import bench_section, wanted
    from .interpreter import select
    from .profile import load
    from .registry import discover
    from .runner import evaluate

    registry = discover()
    profile = load(list(profiles) or ["base"], registry)
    target = select(python) if facts is None else None
    if target is not None:
        data = facts_mod.collect(target, {"torch": timeout_s}, paths=profile.storage_paths())
    elif isinstance(facts, str):
        data = facts_mod.load(facts)
    else:
        facts_mod.validate(facts, "facts")
        data = facts
    report = evaluate(data, profile, registry, strict=strict)
    if target is not None and wanted(profile):
        data["bench"] = bench_section(data, report.results, target.executable, enabled=bench,
                                      timeout_s=bench_timeout_s)
        report = evaluate(data, profile, registry, strict=strict)
    if report.exit_code is not ExitCode.READY:
        raise NotReady(report)
    return report
