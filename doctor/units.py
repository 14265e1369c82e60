"""Sizes and durations as users type them ('80GiB', '100GB', '30d') and as doctor prints them."""
from __future__ import annotations

import re

from .errors import InputError

SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(GiB|GB|MiB|MB|TiB|TB|KiB|KB)\s*$", re.I)
UNITS = {"kib": 2**10, "kb": 10**3, "gib": 2**30, "gb": 10**9, "mib": 2**20, "mb": 10**6, "tib": 2**40, "tb": 10**12}
DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d|w)\s*$", re.I)
SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, what: str = "--gpu-memory") -> int:
    """'80GiB' (2**30) or '80GB' (10**9) -> bytes; a bare number is ambiguous and rejected."""
    m = SIZE.match(text)
    if not m:
        raise InputError(what, text, "expected a size with its unit, e.g. 80GiB (binary) or 85.9GB (decimal)")
    value = float(m.group(1)) * UNITS[m.group(2).lower()]
    if not value < 2**63:   # 400 digits parse as a float of infinity
        raise InputError(what, text[:40] + ("..." if len(text) > 40 else ""), "expected a size below 8 EiB")
    return int(value)


def parse_duration(text: str, what: str) -> float:
    """'30d', '12h', '90min', '2w' -> seconds; a bare number is ambiguous and rejected."""
    m = DURATION.match(text)
    if not m:
        raise InputError(what, text, "expected a duration with its unit, e.g. 30d, 12h, 90min or 2w")
    value = float(m.group(1)) * SECONDS[m.group(2).lower()]
    if not value < 1e12:
        raise InputError(what, text[:40] + ("..." if len(text) > 40 else ""), "expected a duration below 30,000 years")
    return value


def human_bytes(n: float) -> str:
    """Binary units, as the disk checks print them: '1.5 GiB', '300.0 MiB', '12 B'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_age(seconds: float) -> str:
    """'3 min', '5 h', '12 days'."""
    if seconds < 3600:
        return f"{max(seconds, 0) / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
