"""The torch probe's process started before doctor imports anything else.

`doctor check` and `doctor facts` wait on one thing: the subprocess that imports torch. The launcher
(doctor.launch) starts it first, while doctor's own modules are still loading; `probe_torch` adopts it if it
runs the interpreter that the command selected, and anything not adopted is killed at exit. Imports only
what starting a process needs.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_script.py")

_started: dict[str, tuple[subprocess.Popen, float]] = {}   # executable -> (process, monotonic start)


def start(executable: str) -> None:
    """Start the torch probe script under `executable` now (as doctor.subproc.Running starts a process: own
    session, text pipes, no stdin). A failure to start is left for the probe to meet and report."""
    if executable in _started:
        return
    began = time.monotonic()
    try:
        proc = subprocess.Popen([executable, SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    except OSError:
        return
    if not _started:
        atexit.register(discard)
    _started[executable] = (proc, began)


def take(executable: str) -> tuple[subprocess.Popen, float] | None:
    """The process started for `executable` and when it started, handed over once; None if there is none."""
    return _started.pop(executable, None)


def discard() -> None:
    """Kill what was started and never adopted (the command selected another interpreter, or never probed)."""
    while _started:
        _, (proc, _) = _started.popitem()
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the script starts no session of its own
        except (AttributeError, OSError):           # no process groups (Windows), or it has gone
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
