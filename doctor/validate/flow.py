"""The machinery of a validation run: one time budget, phases each under its own timeout, progress lines,
and a results folder where every file is written redacted as soon as its phase ends."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from .. import subproc
from ..redact import Ids, redact

MIN_PHASE_S = 5.0


class PhaseError(Exception):
    """A phase could not produce its figures; `timed_out` when it was killed at its deadline."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


@dataclass
class Clock:
    """The run's time budget: what is left, and how long the next phase may take."""

    budget_s: float
    now: Callable[[], float] = time.monotonic
    start: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.start = self.now()

    def elapsed(self) -> float:
        return self.now() - self.start

    def remaining(self) -> float:
        return self.budget_s - self.elapsed()

    def allow(self, cap: float, reserve: float = 0.0) -> float:
        """Seconds the next phase may take: its cap, or what is left after `reserve` for later phases."""
        return max(0.0, min(cap, self.remaining() - reserve))


@dataclass
class Command:
    argv: list[str]
    returncode: int | None
    timed_out: bool
    duration_s: float
    stderr_tail: str


class Run:
    """One validation run: its folder, its clock, its log, and the commands it ran."""

    def __init__(self, clock: Clock, redacted: bool = True, stream: TextIO | None = None):
        self.clock, self.redacted = clock, redacted
        self.folder: Path | None = None          # opened once the GPU's name is known
        self.stream = stream if stream is not None else sys.stderr
        self.scratch = Path(tempfile.mkdtemp(prefix="doctor-validate-"))   # raw outputs, removed at the end
        self.ids = Ids()
        self.raw: dict[str, Any] = {}             # each document as written, before redaction (for the analysis)
        self.commands: list[Command] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.log_lines: list[str] = []

    def open(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=False)
        self.folder = folder

    # -- output ----------------------------------------------------------------------------------------------
    def clean(self, value: Any) -> Any:
        return redact(value, ids=self.ids) if self.redacted else value

    def _path(self, name: str) -> Path:
        if self.folder is None:
            raise RuntimeError(f"{name}: the results folder is not open yet")
        return self.folder / name

    def write_json(self, name: str, doc: Any) -> Path:
        path = self._path(name)
        self.raw[name] = doc
        path.write_text(json.dumps(self.clean(doc), indent=1) + "\n", encoding="utf-8")
        return path

    def write_text(self, name: str, text: str) -> Path:
        path = self._path(name)
        path.write_text(self.clean(text), encoding="utf-8")
        return path

    def say(self, message: str) -> None:
        line = f"[validate {self.clock.elapsed():6.1f}s] {message}"
        self.log_lines.append(line)
        print(self.clean(line), file=self.stream, flush=True)

    def close(self) -> None:
        self.write_text("log.txt", "\n".join(self.log_lines) + "\n")
        shutil.rmtree(self.scratch, ignore_errors=True)

    # -- subprocesses ----------------------------------------------------------------------------------------
    def execute(self, argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> subproc.Completed:
        """Run a command under a timeout (its process group is killed at the deadline) and record it."""
        done = subproc.run(argv, timeout_s, env)
        tail = "\n".join(line for line in (done.stderr or "").strip().splitlines()[-6:])
        self.commands.append(Command(argv, done.returncode, done.timed_out, round(done.duration_s, 3), tail))
        if done.timed_out:
            self.say(f"  killed after {timeout_s:.0f} s: {' '.join(argv[:6])} ...")
        return done

    def doctor(self, args: list[str], timeout_s: float) -> subproc.Completed:
        return self.execute([sys.executable, "-m", "doctor", *args], timeout_s, env=doctor_env())

    # -- phases ----------------------------------------------------------------------------------------------
    def phase(self, name: str, body: Callable[[float], Any], cap: float, reserve: float = 0.0) -> Any:
        """Run `body(timeout_s)`; record ok / error / timeout / skipped with its duration. Never raises."""
        timeout = self.clock.allow(cap, reserve)
        record: dict[str, Any] = {"status": "skipped", "duration_s": 0.0, "timeout_s": round(timeout, 1)}
        self.phases[name] = record
        if timeout < MIN_PHASE_S:
            record["message"] = f"the time budget ran out ({self.clock.remaining():.0f} s left)"
            self.say(f"{name}: skipped, {record['message']}")
            return None
        self.say(f"{name}: started (up to {timeout:.0f} s)")
        t0 = time.monotonic()
        result = None
        try:
            result = body(timeout)
            record["status"] = "ok"
        except PhaseError as exc:
            record.update(status="timeout" if exc.timed_out else "error", message=one_line(str(exc)))
        except Exception as exc:  # a bug in a phase must not lose the others' results
            record.update(status="error", message=one_line(f"{type(exc).__name__}: {exc}"))
        record["duration_s"] = round(time.monotonic() - t0, 3)
        tail = f": {record['message']}" if record.get("message") else ""
        self.say(f"{name}: {record['status']} in {record['duration_s']:.1f} s{tail}")
        return result


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def last_line(stderr: str | None) -> str:
    """The last non-empty line a process wrote to stderr (an exception's message, not its traceback)."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def doctor_env() -> dict[str, str]:
    """The environment for `python -m doctor ...`: this doctor importable also from a clone that was never
    installed (its folder first on PYTHONPATH)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects a worker printed, one a line (other lines ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PhaseError(f"no readable output at {path.name}: {exc}") from None
