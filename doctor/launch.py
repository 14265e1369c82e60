"""The `doctor` command (console script and `python -m doctor`): doctor.cli, started early and left fast.

`doctor check` and `doctor facts` wait on one subprocess, the one importing torch, so it starts here, before
the command line is parsed or doctor's modules are imported: only a plain invocation (the command, then flags
from FLAGS, none of them --python) speculates, with the interpreter doctor.interpreter.select picks, and the
torch probe adopts the process only where the parsed command selected that same interpreter (otherwise it is
killed at exit). Once the command has returned and its output is flushed, the process leaves with os._exit
after the atexit handlers: tearing the interpreter down costs tens of milliseconds the user would wait for.
The Python API (doctor.cli.main, doctor.preflight) does neither.
"""
from __future__ import annotations

import os
import sys

# the flags of each probing command that cannot change which interpreter is inspected or whether it is probed
# (exact spellings: an abbreviation or anything else means no speculation); True: the flag takes a value
FLAGS = {
    "check": {"--profile": True, "-p": True, "--format": True, "--output": True, "-o": True, "--strict": False,
              "--verbose": False, "-v": False, "--no-bench": False, "--bench-timeout": True, "--timeout": True,
              "--offline": False},
    "facts": {"--output": True, "-o": True, "--redact": False, "--profile": True, "-p": True, "--timeout": True,
              "--offline": False},
}


def plain_probing_command(argv: list[str]) -> bool:
    """Whether `argv` runs `doctor check` or `doctor facts` probing this machine with the selected interpreter."""
    if not argv or argv[0] not in FLAGS:
        return False
    flags = FLAGS[argv[0]]
    rest = iter(argv[1:])
    for token in rest:
        name, eq, _ = token.partition("=")
        if name not in flags or (eq and not flags[name]):
            return False
        if flags[name] and not eq and next(rest, None) is None:
            return False
    return True


def speculate(argv: list[str]) -> None:
    """Start the torch probe now where `argv` will need it (see the module's docstring)."""
    if not plain_probing_command(argv):
        return
    from .interpreter import select
    from .probes import torch_early

    torch_early.start(select().executable)


def leave(code: int) -> None:
    """Flush the output, run the atexit handlers (doctor.subproc kills any probe left running), and exit."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a reader that left (EPIPE) or a closed stream: nothing more can be said
            pass
    import atexit

    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None:   # not CPython: the usual exit
        sys.exit(code)
    run_exitfuncs()
    os._exit(code)


def main() -> None:
    argv = sys.argv[1:]
    speculate(argv)
    from .cli import main as cli_main

    leave(cli_main(argv))
