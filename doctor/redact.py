"""Remove hostnames, user names in paths, IP addresses and GPU identifiers (UUIDs, serials, PCI bus ids)."""
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
UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
PCI_BUS_ID = re.compile(r"\b(?:[0-9a-fA-F]{4}|[0-9a-fA-F]{8}):[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]\b")
SECRET_KEYS = ("hostname", "serial")


class Ids:
    """Stand-ins for GPU identifiers, the same one for the same identifier across every document redacted
    with this instance, so that a redacted report still pairs NVML devices with torch devices and benchmarks."""

    def __init__(self) -> None:
        self.uuids: dict[str, str] = {}
        self.buses: dict[str, str] = {}

    def uuid(self, match: re.Match[str]) -> str:
        key = match.group(0).lower()
        return self.uuids.setdefault(key, f"<uuid-{len(self.uuids) + 1}>")

    def bus(self, match: re.Match[str]) -> str:
        key = match.group(0).lower()
        return self.buses.setdefault(key, f"<pci-{len(self.buses) + 1}>")


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


def redact_text(text: str, names: list[str], ids: Ids | None = None) -> str:
    text = HOME.sub(lambda m: m.group(1) + "<user>", text)
    for name in names:   # whole words only: a user named "gpu" must not mangle "gpu.memory"
        text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)", "<redacted>", text)
    if ids is not None:  # before the IP patterns: a UUID's groups must not read as an IPv6 address
        text = PCI_BUS_ID.sub(ids.bus, UUID.sub(ids.uuid, text))
    text = IPV4.sub("<ip>", text)
    return IPV6.sub("<ip>", text)


def redact(value: Any, names: list[str] | None = None, ids: Ids | None = None) -> Any:
    """A copy of `value` with identifying strings replaced; GPU identifiers too when `ids` is given."""
    names = _names() if names is None else names
    if isinstance(value, dict):   # keys too: benchmark results are keyed by GPU UUID
        return {(redact_text(k, names, ids) if isinstance(k, str) else k):
                ("<redacted>" if k in SECRET_KEYS and v is not None else redact(v, names, ids))
                for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, names, ids) for v in value]
    if isinstance(value, str):
        return redact_text(value, names, ids)
    return value
