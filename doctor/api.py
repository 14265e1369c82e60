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
              strict: bool = False, timeout_s: float = 60.0, offline: bool = False, bench: bool = True,
              bench_timeout_s: float = 180.0) -> Report:
    """Judge this machine (or `facts`, a snapshot path or dict) against `profiles`, exactly as `doctor check`
    does with the same arguments (doctor.session runs both): without profiles, the machine profile matching
    the detected GPUs, else `base`.

    When probing, usable GPUs are then benchmarked (matmul, bandwidth, HVP) unless `bench=False`;
    a saved snapshot is judged as it is.

    Returns the Report when ready; raises NotReady(report) otherwise (exit code 1 or 3 on the CLI),
    and doctor.errors.InputError for a bad profile or facts file.
    """
    from .session import Request, check

    report = check(Request(tuple(profiles), facts, python, timeout_s, offline, strict, bench, bench_timeout_s))
    if report.exit_code is not ExitCode.READY:
        raise NotReady(report)
    return report
