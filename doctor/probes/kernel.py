"""Kernel-log facts: NVIDIA Xid events (NVRM) since boot, read from /dev/kmsg or a syslog file
where this user may read them. Unreadable is recorded as such, never guessed."""
from __future__ import annotations

import errno
import os
import re
from typing import Any, Iterable

from ..probing import ProbeContext, probe

XID = re.compile(r"NVRM: Xid \((?P<where>[^)]*)\): (?P<code>\d+),?\s*(?P<text>.*)")
PCI = re.compile(r"PCI:([0-9a-fA-F]{4}:)?([0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.\d)?)")
LOG_FILES = ("/var/log/kern.log", "/var/log/syslog", "/var/log/messages")
MAX_EVENTS = 200
MAX_BYTES = 8 * 2**20


def parse_xid(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Xid events in kernel-log lines: code, PCI bus id (normalised to bus:dev.fn), message."""
    events = []
    for line in lines:
        m = XID.search(line)
        if not m:
            continue
        pci = PCI.search(m.group("where"))
        events.append({"code": int(m.group("code")), "pci": pci.group(2).lower() if pci else None,
                       "text": m.group("text").strip()[:200]})
    return events[-MAX_EVENTS:]


def read_kmsg(path: str = "/dev/kmsg") -> list[str]:
    """Every record in the kernel ring buffer, non-blocking; raises OSError when not permitted."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    lines, total = [], 0
    try:
        while total < MAX_BYTES:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # a record was overwritten while reading: go on
                    continue
                raise
            if not chunk:
                break
            total += len(chunk)
            lines.append(chunk.decode("utf-8", "replace").split(";", 1)[-1])
    finally:
        os.close(fd)
    return lines


def collect(kmsg: str = "/dev/kmsg", files: tuple[str, ...] = LOG_FILES) -> dict[str, Any]:
    tried = []
    try:
        lines = read_kmsg(kmsg)
        return {"readable": True, "source": kmsg, "xid_events": parse_xid(lines), "lines_read": len(lines)}
    except OSError as exc:
        tried.append(f"{kmsg}: {exc.strerror or exc}")
    for f in files:
        try:
            with open(f, "rb") as fh:
                fh.seek(max(0, os.path.getsize(f) - MAX_BYTES))
                text = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            tried.append(f"{f}: {exc.strerror or exc}")
            continue
        lines = text.splitlines()
        return {"readable": True, "source": f, "xid_events": parse_xid(lines), "lines_read": len(lines),
                "note": "a syslog file also holds events from before the last boot"}
    return {"readable": False, "source": None, "xid_events": [], "reason": "; ".join(tried)}


@probe("kernel", timeout_s=5)
def probe_kernel(_: ProbeContext, __: float) -> dict[str, Any]:
    return collect()
