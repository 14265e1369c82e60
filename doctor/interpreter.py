"""Which Python environment is inspected: the job's, which need not be doctor's own.

Imports nothing but os and sys: the launcher (doctor.launch) selects the interpreter before anything else is
imported, to start the torch probe at once."""
from __future__ import annotations

import os
import sys


class Interpreter:
    """The interpreter whose packages and torch doctor inspects, and why that one (immutable)."""

    __slots__ = ("executable", "reason")
    executable: str
    reason: str

    def __init__(self, executable: str, reason: str) -> None:
        object.__setattr__(self, "executable", executable)
        object.__setattr__(self, "reason", reason)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Interpreter is immutable: cannot set {name}")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Interpreter) and (self.executable, self.reason) == (other.executable, other.reason))

    def __hash__(self) -> int:
        return hash((self.executable, self.reason))

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return Interpreter, (self.executable, self.reason)

    def __repr__(self) -> str:
        return f"Interpreter(executable={self.executable!r}, reason={self.reason!r})"

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
