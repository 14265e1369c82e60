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
MAX_OUTPUT = 16 << 20   # characters kept per stream: a child that floods its output is read to the end, not kept


@dataclass(frozen=True)
class Completed:
    """What a subprocess left behind. `timed_out` means it was killed; a `returncode` of None without it, that
    the process had printed its last line (Running's `last_line`) and was left to exit on its own."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    cpu_s: float | None = None    # CPU seconds the process tree had used when it was killed (busy, or blocked?)


class Running:
    """A started subprocess; `wait` kills its whole process group on timeout.

    Both streams are read by threads as they arrive; `on_line` gets each stdout line (progress). At most
    MAX_OUTPUT characters of each stream are kept: the rest is read and dropped, and the result says so.
    """

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 on_line: Callable[[str], None] | None = None,
                 adopt: tuple[subprocess.Popen, float] | None = None, last_line: str | None = None):
        """Start `argv`, or take over `adopt`: a process already started the same way (text pipes, no stdin,
        own session) and its time.monotonic() start, from which its timeout counts. `last_line`: the stdout
        line (stripped) after which the process has nothing more to say: `wait` returns when it arrives rather
        than when the process has exited (unmapping torch, let alone tearing down a CUDA context, takes tens
        to hundreds of milliseconds); the process is reaped in the background, and killed at doctor's exit if it
        is still there."""
        self.cpu_s: float | None = None
        self._last_line = last_line
        self._said_all = threading.Event()   # the last line arrived, or stdout closed
        self._last_seen = False
        if adopt is not None:
            self._proc, self._start = adopt
        else:
            self._start = time.monotonic()
            self._proc = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                text=True, env=env, start_new_session=True,
            )
        self._readers: list[tuple[threading.Thread, list[str]]] = []

        def on_stdout(line: str) -> None:
            if last_line is not None and line.strip() == last_line:
                self._last_seen = True
                self._said_all.set()
            if on_line is not None:
                on_line(line)

        for stream, callback, at_eof in ((self._proc.stdout, on_stdout, self._said_all.set),
                                         (self._proc.stderr, None, None)):
            lines: list[str] = []
            thread = threading.Thread(target=_pump, args=(stream, lines, callback, at_eof), daemon=True)
            thread.start()
            self._readers.append((thread, lines))
        with _LOCK:
            _LIVE.add(self)

    def wait(self, timeout_s: float) -> Completed:
        """Wait up to `timeout_s` from the start; past it the process (and its descendants) are killed and
        what it printed before is kept."""
        return self._wait_streaming(max(0.0, timeout_s - (time.monotonic() - self._start)))

    def _wait_streaming(self, remaining: float) -> Completed:
        timed_out = False
        deadline = time.monotonic() + remaining
        if self._last_line is not None:
            self._said_all.wait(remaining)   # the last line, stdout closed (an exit), or the deadline
            if self._last_seen and self._proc.poll() is None:
                return self._left_to_exit()
            remaining = max(0.0, deadline - time.monotonic())
        try:
            self._proc.wait(timeout=remaining)
            self._forget()
        except subprocess.TimeoutExpired:
            timed_out = True
            self.cpu_s = cpu_seconds(self._proc.pid)
            self.kill()
            try:
                self._proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                pass
        for thread, _ in self._readers:   # after an exit the pipes drain fast; after a kill, keep what came
            thread.join(timeout=1.0 if timed_out else 10.0)
        (_, out), (_, err) = self._readers
        return Completed(None if timed_out else self._proc.returncode, "".join(out), "".join(err), timed_out,
                         time.monotonic() - self._start, self.cpu_s if timed_out else None)

    def _left_to_exit(self) -> Completed:
        """The output is complete: return it now and reap the process once it has exited."""
        def reap() -> None:
            self._proc.wait()
            self._forget()

        threading.Thread(target=reap, name="reap", daemon=True).start()
        (_, out), (_, err) = self._readers   # stderr: what came before the last line
        return Completed(None, "".join(out), "".join(err), False, time.monotonic() - self._start)

    def _forget(self) -> None:
        with _LOCK:
            _LIVE.discard(self)

    def kill(self) -> None:
        """SIGKILL the process group, and every descendant that started a session of its own (a `doctor bench`
        run by `doctor validate` starts its workers in new sessions): found before the kill, while they are
        still linked to their parent."""
        self._forget()
        for pid in descendants(self._proc.pid):
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError, OSError):
                    pass
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its descendants (psutil), or None if it cannot be read."""
    try:
        import psutil

        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
        total = 0.0
        for p in procs:
            t = p.cpu_times()
            total += t.user + t.system
        return round(total, 2)
    except Exception:
        return None


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (psutil), deepest last; empty if it has gone."""
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:   # psutil.NoSuchProcess / AccessDenied: nothing more to find
        return []


def _pump(stream: IO[str], lines: list[str], callback: Callable[[str], None] | None,
          at_eof: Callable[[], None] | None = None) -> None:
    kept = 0
    while True:
        line = stream.readline(1 << 20)   # a newline-free flood arrives in bounded pieces too
        if not line:
            if at_eof is not None:
                at_eof()
            return
        if kept < MAX_OUTPUT:
            lines.append(line[: MAX_OUTPUT - kept])
            kept += len(line)
            if kept >= MAX_OUTPUT:
                lines.append("\n[doctor: output truncated at %d MiB]\n" % (MAX_OUTPUT >> 20))
        if callback is not None:
            try:
                callback(line)
            except Exception:  # a display problem must not lose the output
                pass


def run(argv: list[str], timeout_s: float, env: dict[str, str] | None = None,
        adopt: tuple[subprocess.Popen, float] | None = None, last_line: str | None = None) -> Completed:
    """Run `argv` (or wait on `adopt`; `last_line`: see Running) to completion or until `timeout_s` from its
    start, whichever comes first."""
    try:
        return Running(argv, env, adopt=adopt, last_line=last_line).wait(timeout_s)
    except OSError as exc:
        return Completed(127, "", f"{type(exc).__name__}: {exc}", False, 0.0)


@atexit.register
def kill_all() -> None:
    """Leave no probe behind: a hung CUDA init must not outlive doctor."""
    with _LOCK:
        live = list(_LIVE)
    for running in live:
        running.kill()
