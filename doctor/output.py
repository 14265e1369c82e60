"""Where a command's output goes: stdout or a file named with -o; secrets scrubbed on the way out."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import InputError
from .secrets import scrub


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters (ESC sequences, carriage returns, bells, C1 codes, the
    bidirectional overrides) shown escaped, so text from profiles, facts or remote sources cannot move the
    cursor, recolour or rewrite what doctor printed."""
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0 or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069 \
                or 0xD800 <= code <= 0xDFFF:   # a lone surrogate (from JSON's \ud800) cannot be written as UTF-8
            out.append(repr(ch)[1:-1] if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def expand_path(path: str) -> str:
    """`%h` in an output path becomes this host's short name (`reports/%h.json` -> `reports/gpu01.json`: srun
    expands patterns only in its own -o/-e); in such a path `%%` is a literal `%`. A path without `%h` is used
    exactly as given."""
    if "%h" not in path:
        return path
    import re
    import socket

    host = socket.gethostname().split(".")[0].replace(os.sep, "_") or "localhost"
    return re.sub(r"%([%h])", lambda m: host if m.group(1) == "h" else "%", path)


def write(text: str, path: str | None) -> None:
    """Write `text` to `path` (or stdout; `%h` in it is the short hostname: expand_path); an unwritable path is bad
    input (exit 2)."""
    text = scrub(text)
    if path is None:
        sys.stdout.write(text)
        return
    path = expand_path(path)
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(path, None, f"cannot write output ({exc.strerror or exc})") from None
