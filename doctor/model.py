"""Core result types: Status, Remediation, Result, Report."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Iterable


class Status(str, enum.Enum):
    """Outcome of one check. ERROR means doctor could not decide. Ordered by how much it matters to the
    user: `severity` ranks FAIL > ERROR > WARN > PASS > SKIP (a skip decides nothing)."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.ERROR: 3, Status.FAIL: 4}


def fold(statuses: Iterable[Status], empty: Status = Status.SKIP) -> Status:
    """The status that stands for several: the most severe (`empty` when there are none)."""
    return max(statuses, key=lambda s: s.severity, default=empty)


NO_GPU = "no NVIDIA GPU"   # the cause of every skip that comes from the machine having no GPU
NOT_ASKED = "nothing for them to judge in this profile"   # a profile key it does not set, a job that needs none
OFFLINE = "offline mode (--offline or HF_HUB_OFFLINE=1): nothing was contacted"   # the network checks' skip


class ExitCode(enum.IntEnum):
    """Process exit codes, the same for every command."""

    READY = 0
    NOT_READY = 1
    BAD_INPUT = 2
    UNDECIDED = 3


@dataclass(frozen=True)
class Remediation:
    """What to do about a non-pass: prose plus the exact commands."""

    text: str
    commands: tuple[str, ...] = ()
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "commands": list(self.commands), "url": self.url}


@dataclass(frozen=True)
class Result:
    """One check's verdict. `summary` states measured vs expected."""

    check_id: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()
    remediation: Remediation | None = None
    duration_s: float = 0.0
    cause: str | None = None   # a skip's shared reason ("no NVIDIA GPU"): the report folds skips by it

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.check_id,
            "status": self.status.value,
            "summary": self.summary,
            "details": list(self.details),
            "remediation": self.remediation.to_dict() if self.remediation else None,
            "duration_s": round(self.duration_s, 6),
        }
        if self.cause:
            out["cause"] = self.cause
        return out


def passed(summary: str, *details: str) -> Result:
    """Shorthand for checks; the runner fills in check_id and timing."""
    return Result("", Status.PASS, summary, tuple(details))


def warned(summary: str, remedy: Remediation | None = None, *details: str) -> Result:
    return Result("", Status.WARN, summary, tuple(details), remedy)


def failed(summary: str, remedy: Remediation | None = None, *details: str) -> Result:
    return Result("", Status.FAIL, summary, tuple(details), remedy)


def skipped(summary: str, *details: str, cause: str | None = None) -> Result:
    """A skip; `cause` names a reason shared by other skips (the report folds them into one line)."""
    return Result("", Status.SKIP, summary, tuple(details), cause=cause)


def errored(summary: str, *details: str) -> Result:
    return Result("", Status.ERROR, summary, tuple(details))


@dataclass
class Report:
    """Everything one `doctor check` decided, plus the facts it judged."""

    target: str
    profiles: list[str]
    results: list[Result]
    facts: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    strict: bool = False

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def exit_code(self) -> ExitCode:
        if self.count(Status.FAIL) or (self.strict and self.count(Status.WARN)):
            return ExitCode.NOT_READY
        if self.count(Status.ERROR):
            return ExitCode.UNDECIDED
        return ExitCode.READY

    @property
    def ready(self) -> bool:
        return self.exit_code is ExitCode.READY

    def verdict(self) -> str:
        """One line: 'Ready for X.' or '2 failed, 1 warning — not ready for X.'"""
        parts = []
        for status, word in ((Status.FAIL, "failed"), (Status.ERROR, "could not be decided"),
                             (Status.WARN, "warning")):
            n = self.count(status)
            if n:
                plural = "s" if status is Status.WARN and n != 1 else ""
                parts.append(f"{n} {word}{plural}")
        code = self.exit_code
        if code is ExitCode.READY:
            head = f"Ready for {self.target}."
            return f"{head} ({', '.join(parts)})" if parts else head
        tail = {ExitCode.NOT_READY: f"not ready for {self.target}.",
                ExitCode.UNDECIDED: f"doctor could not decide whether this machine is ready for {self.target}."}[code]
        return f"{', '.join(parts)} — {tail}"
