"""Slurm hostlist expressions (`gpu[01-04,07],login1`): expand them the way Slurm does, and fold names back.

Slurm's rules (src/common/hostlist.c): names are separated by commas, spaces or tabs outside brackets; a
bracket holds comma-separated numbers or `lo-hi` ranges; the width of a range is the length of its lower
bound as written, so `[08-10]` gives 08 09 10 and `[8-10]` gives 8 9 10; several brackets in one name
expand as their product, the last bracket varying fastest; at most 64K hosts in one range."""
from __future__ import annotations

import itertools
import re

from ..errors import InputError

MAX_RANGE = 64 * 1024      # Slurm's own bound on one range
MAX_HOSTS = 1 << 20        # no fleet has a million nodes; a typo like [0-99999999] must not eat memory
_SEPARATORS = ", \t"
_TRAILING_DIGITS = re.compile(r"^(.*?)(\d+)$")


def expand(spec: str, source: str = "--expect-nodes") -> list[str]:
    """Every host `spec` names, in order, each once. Bad syntax is an InputError naming `source`."""
    hosts: dict[str, None] = {}
    for token in _tokens(spec, source):
        for name in _expand_token(token, source):
            hosts.setdefault(name, None)
            if len(hosts) > MAX_HOSTS:
                raise InputError(source, None, f"names more than {MAX_HOSTS:,} hosts; expected a node list")
    return list(hosts)


def _tokens(spec: str, source: str) -> list[str]:
    """Split at separators outside brackets; empty tokens are dropped (Slurm skips them too)."""
    out, cur, depth = [], [], 0
    for ch in spec:
        if ch == "[":
            if depth:
                raise InputError(source, None, f"nested '[' in {spec!r}; expected e.g. gpu[01-04,07]")
            depth = 1
        elif ch == "]":
            if not depth:
                raise InputError(source, None, f"']' without '[' in {spec!r}; expected e.g. gpu[01-04,07]")
            depth = 0
        elif ch in _SEPARATORS and not depth:
            out.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth:
        raise InputError(source, None, f"unclosed '[' in {spec!r}; expected e.g. gpu[01-04,07]")
    out.append("".join(cur))
    return [t for t in out if t]


def _expand_token(token: str, source: str) -> list[str]:
    parts = re.split(r"(\[[^\]]*\])", token)   # literal, [group], literal, [group], ..., literal
    choices: list[list[str]] = []
    total = 1
    for part in parts:
        if part.startswith("["):
            values = _group(part[1:-1], token, source)
            total *= len(values)
            if total > MAX_HOSTS:
                raise InputError(source, None, f"{token!r} names more than {MAX_HOSTS:,} hosts")
            choices.append(values)
        elif part:
            choices.append([part])
    return ["".join(combo) for combo in itertools.product(*choices)]


def _group(body: str, token: str, source: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise InputError(source, None, f"{item!r} in {token!r} is not a number or a lo-hi range")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if lo > hi:
            raise InputError(source, None, f"range {item!r} in {token!r} runs backwards")
        if hi - lo + 1 > MAX_RANGE:
            raise InputError(source, None, f"range {item!r} in {token!r} has more than {MAX_RANGE:,} hosts")
        width = len(m.group(1))
        values.extend(str(n).zfill(width) for n in range(lo, hi + 1))
    return values


def natural_key(name: str) -> tuple:
    """Sort key that puts gpu2 before gpu10."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p)


def compress(names: list[str]) -> str:
    """The shortest-ish hostlist expression that expands to exactly `names` (order: natural). Names Slurm could
    not parse back (with brackets, commas or spaces) are kept as they are."""
    groups: dict[tuple[str, int], list[int]] = {}
    singles: list[str] = []
    pads: dict[str, set[int]] = {}
    parsed: list[tuple[str, str]] = []
    for name in dict.fromkeys(names):
        m = _TRAILING_DIGITS.match(name)
        if not m or any(c in name for c in "[], \t"):
            singles.append(name)
            continue
        prefix, digits = m.groups()
        parsed.append((prefix, digits))
        if digits.startswith("0") and len(digits) > 1:
            pads.setdefault(prefix, set()).add(len(digits))
    for prefix, digits in parsed:
        padded = digits.startswith("0") and len(digits) > 1
        # an unpadded number as long as a padded width of its prefix prints the same in that width
        width = len(digits) if padded or len(digits) in pads.get(prefix, ()) else 0
        groups.setdefault((prefix, width), []).append(int(digits))
    parts: list[tuple[str, str]] = [(s, s) for s in singles]
    for (prefix, width), nums in groups.items():
        nums = sorted(set(nums))
        runs: list[str] = []
        start = prev = nums[0]
        for n in [*nums[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            a, b = str(start).zfill(width), str(prev).zfill(width)
            runs.append(a if start == prev else f"{a}-{b}")
            if n is not None:
                start = prev = n
        text = prefix + runs[0] if len(nums) == 1 else f"{prefix}[{','.join(runs)}]"
        parts.append((prefix + str(nums[0]).zfill(width), text))
    return ",".join(text for _, text in sorted(parts, key=lambda p: natural_key(p[0])))
