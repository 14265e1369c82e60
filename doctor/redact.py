"""Remove hostnames, user names in paths and IP addresses from a facts snapshot."""
from __future__ import annotations

import getpass
import re
import socket
from typing import Any

IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
IPV6 = re.compile(  # full eight groups, or a compressed form with '::' (times like 12:30:45 do not match)
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    r"|(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?|::[0-9A-Fa-f]{1,4})(?![\w:])")
HOME = re.compile(r"(/home/|/Users/|C:\\Users\\)([^/\\\s\"']+)")


def _names() -> list[str]:
    names = set()
    for get in (socket.gethostname, socket.getfqdn, getpass.getuser):
        try:
            value = get()
        except Exception:
            continue
        if value and len(value) >= 3 and value not in ("root", "localhost"):
            names.add(value)
    return sorted(names, key=len, reverse=True)


def redact_text(text: str, names: list[str]) -> str:
    text = HOME.sub(lambda m: m.group(1) + "<user>", text)
    for name in names:
        text = text.replace(name, "<redacted>")
    text = IPV4.sub("<ip>", text)
    return IPV6.sub("<ip>", text)


def redact(value: Any, names: list[str] | None = None) -> Any:
    """A copy of `value` with identifying strings replaced."""
    names = _names() if names is None else names
    if isinstance(value, dict):
        return {k: ("<redacted>" if k == "hostname" else redact(v, names)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, names) for v in value]
    if isinstance(value, str):
        return redact_text(value, names)
    return value
