"""Which Python environment is inspected: the job's, which need not be doctor's own.

Light to import (os, sys, collections; not typing, dataclasses, pathlib or another doctor module): the launcher
(doctor.launch) selects the interpreter before anything else is imported, to start the torch probe at once."""
from __future__ import annotations

import os
import sys
from collections import namedtuple


class Interpreter(namedtuple("Interpreter", ("executable", "reason"))):
    """The interpreter whose packages and torch doctor inspects (`executable`), and why that one (`reason`)."""

    __slots__ = ()
    executable: str
    reason: str

    @property
    def is_own(self) -> bool:
        return _same(self.executable, sys.executable)

    def to_dict(self) -> dict[str, str]:
        return {"executable": self.executable, "reason": self.reason}


def _same(a: str, b: str) -> bool:
    """Same environment? Venv interpreters are symlinks to one binary, so compare their bin folders."""
    try:
        return os.path.samefile(os.path.dirname(a), os.path.dirname(b))
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _env_python(prefix: str) -> str | None:
    for rel in ("bin/python", "bin/python3", "python.exe", "Scripts/python.exe"):
        candidate = os.path.join(prefix, rel)
        if os.path.isfile(candidate):
            return candidate
    return None


def _prefix_is_own(prefix: str) -> bool:
    try:
        return os.path.samefile(prefix, sys.prefix)
    except OSError:
        return False


def select(python: str | None = None, environ: dict[str, str] | None = None) -> Interpreter:
    """`--python PATH`, else an activated venv/conda env other than doctor's, else doctor's own."""
    env = os.environ if environ is None else environ
    if python:
        from .errors import InputError

        path = os.path.expanduser(python)
        if not os.path.exists(path):
            raise InputError("--python", None, f"{python} does not exist; expected a Python interpreter")
        if os.path.isdir(path):
            found = _env_python(path)
            if not found:
                raise InputError("--python", None, f"{python} is a directory with no bin/python")
            path = found
        if not os.access(path, os.X_OK):
            raise InputError("--python", None, f"{python} is not executable; expected a Python interpreter")
        return Interpreter(path, "named with --python")
    for var in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = env.get(var)
        if prefix and not _prefix_is_own(prefix):
            found = _env_python(prefix)
            if found:
                return Interpreter(found, f"the activated environment (${var}={prefix})")
    return Interpreter(sys.executable, "doctor's own interpreter")
