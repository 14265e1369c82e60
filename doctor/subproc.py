"""The one place doctor starts subprocesses: own process group, killed on timeout."""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable

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
    """A started subprocess; `wait` kills its whole process group on timeout.

    With `on_line`, each stdout line is passed to it as it arrives (progress), from a reader thread.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 on_line: Callable[[str], None] | None = None):
        self._start = time.monotonic()
        self._proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env, start_new_session=True,
        )
        self._readers: list[tuple[threading.Thread, list[str]]] = []
        if on_line is not None:
            for stream, callback in ((self._proc.stdout, on_line), (self._proc.stderr, None)):
                lines: list[str] = []
                thread = threading.Thread(target=_pump, args=(stream, lines, callback), daemon=True)
                thread.start()
                self._readers.append((thread, lines))
        with _LOCK:
            _LIVE.add(self)

    def wait(self, timeout_s: float) -> Completed:
        remaining = max(0.0, timeout_s - (time.monotonic() - self._start))
        if self._readers:
            return self._wait_streaming(remaining)
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

    def _wait_streaming(self, remaining: float) -> Completed:
        timed_out = False
        try:
            self._proc.wait(timeout=remaining)
            self._forget()
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        for thread, _ in self._readers:
            thread.join(timeout=1.0)
        (_, out), (_, err) = self._readers
        return Completed(None if timed_out else self._proc.returncode, "".join(out), "".join(err), timed_out,
                         time.monotonic() - self._start)

    def _forget(self) -> None:
        with _LOCK:
            _LIVE.discard(self)

    def kill(self) -> None:
        self._forget()
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _pump(stream: IO[str], lines: list[str], callback: Callable[[str], None] | None) -> None:
    for line in stream:
        lines.append(line)
        if callback is not None:
            try:
                callback(line)
            except Exception:  # a display problem must not lose the output
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
