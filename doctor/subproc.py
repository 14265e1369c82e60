"""The one place doctor starts subprocesses: own process group, killed on timeout."""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

_LIVE: set["Running"] = set()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Completed:
    """What a subprocess left behind. `timed_out` means it was killed."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float


class Running:
    """A started subprocess; `wait` kills its whole process group on timeout."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self._start = time.monotonic()
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True,
        )
        with _LOCK:
            _LIVE.add(self)

    def wait(self, timeout_s: float) -> Completed:
        remaining = max(0.0, timeout_s - (time.monotonic() - self._start))
        try:
            out, err = self._proc.communicate(timeout=remaining)
            self._forget()
            return Completed(self._proc.returncode, out, err, False, time.monotonic() - self._start)
        except subprocess.TimeoutExpired:
            self.kill()
            try:  # what it printed before it hung (its pipes close with the killed group)
                out, err = self._proc.communicate(timeout=1.0)
            except (subprocess.TimeoutExpired, ValueError, OSError):
                out, err = "", ""
            return Completed(None, out or "", err or "", True, time.monotonic() - self._start)

    def _forget(self) -> None:
        with _LOCK:
            _LIVE.discard(self)

    def kill(self) -> None:
        self._forget()
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def run(argv: list[str], timeout_s: float, env: dict[str, str] | None = None) -> Completed:
    """Run `argv` to completion or until `timeout_s`, whichever comes first."""
    try:
        return Running(argv, env).wait(timeout_s)
    except OSError as exc:
        return Completed(127, "", f"{type(exc).__name__}: {exc}", False, 0.0)


@atexit.register
def kill_all() -> None:
    """Leave no probe behind: a hung CUDA init must not outlive doctor."""
    with _LOCK:
        live = list(_LIVE)
    for running in live:
        running.kill()
