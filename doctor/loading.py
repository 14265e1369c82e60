"""Reading what users hand doctor (profiles, facts, configs) with bounds: size, YAML aliases, nesting depth,
string length. A file past a bound is bad input (exit 2) with one short line, never minutes of work, gigabytes
of memory or a megabyte-long message."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import InputError

PROFILE_BYTES = 1 << 20          # a profile is a few KiB; 1 MiB is generous
CONFIG_BYTES = 8 << 20           # model configs, DeepSpeed configs
FACTS_BYTES = 64 << 20           # a snapshot with a large HF cache inventory stays far below
MAX_DEPTH = 64
MAX_VALUES = 200_000             # strings, numbers and containers after alias expansion
MAX_STRING = 100_000
MAX_ALIASES = 200
MAX_INT = 2**63                  # every count and byte size doctor reads fits in 64 bits


def excerpt(value: Any, limit: int = 60) -> str:
    """A value as an error message may quote it: repr, cut to `limit` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= MAX_INT:
        return f"an integer of {value.bit_length()} bits"   # repr of a 5000-digit int raises
    text = repr(value[: limit + 1] if isinstance(value, (str, bytes)) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text(path: str | os.PathLike[str], limit: int, what: str) -> str:
    """The file's text, refusing more than `limit` bytes, anything but a regular file (a FIFO would block,
    /dev/zero never ends) and non-UTF-8."""
    import stat

    label = excerpt(str(path), 200)[1:-1]
    try:   # O_NONBLOCK: opening a FIFO with no writer returns at once instead of waiting for one
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(label, None, f"cannot read {what} ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):   # before fdopen, which refuses a directory with IsADirectoryError
        os.close(fd)
        raise InputError(label, None, f"is a directory; expected a {what} file")
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
            raise InputError(label, None, f"is {kind}; expected a {what} file")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputError(label, None, f"cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise InputError(label, None, f"is larger than {limit >> 20} MiB; expected a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(label, None, f"is not UTF-8 text (byte {exc.start}); expected a {what}") from None


def check_shape(value: Any, source: str) -> None:
    """Bounded walk: depth, number of values (aliases counted as often as they are used), string length,
    and no NaN / infinity (YAML's .nan and .inf, JSON's NaN)."""
    seen = 0
    stack: list[tuple[Any, int, str]] = [(value, 0, "(top level)")]
    while stack:
        node, depth, where = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise InputError(source, None, f"expands to more than {MAX_VALUES:,} values (YAML aliases?); "
                                           "expected a plain document")
        if depth > MAX_DEPTH:
            raise InputError(source, where, f"is nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            for k, v in node.items():
                key = str(k)[:30]
                stack.append((v, depth + 1, f"{where}.{key}" if depth else key))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, str) and len(node) > MAX_STRING:
            raise InputError(source, where, f"is a string of {len(node):,} characters; expected at most "
                                            f"{MAX_STRING:,}")
        elif isinstance(node, float) and not math.isfinite(node):
            raise InputError(source, where, f"is {node!r}; expected a finite number")
        elif isinstance(node, int) and not isinstance(node, bool) and abs(node) >= MAX_INT:
            raise InputError(source, where, f"is {excerpt(node)}; expected a number below 2**63")


def load_yaml(text: str, source: str) -> Any:
    """yaml.safe_load with at most MAX_ALIASES aliases, then the bounded shape check."""
    import yaml

    class Loader(yaml.SafeLoader):  # the pure-Python loader: its composer can count aliases
        aliases = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                Loader.aliases += 1
                if Loader.aliases > MAX_ALIASES:
                    raise InputError(source, None, f"uses more than {MAX_ALIASES} YAML aliases; expected a plain "
                                                   "document")
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:   # a key given twice: YAML keeps the last silently, a typo's result
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue   # a merge key (<<) is the merge's, an unhashable key SafeLoader refuses itself
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise InputError(source, str(key), f"is given twice (lines {seen[key]} and {line}); expected "
                                                       "each key once")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    try:
        data = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(source, None, f"invalid YAML ({where}{excerpt(problem, 120)[1:-1]})") from None
    except RecursionError:
        raise InputError(source, None, f"invalid YAML (nested more than {MAX_DEPTH} levels)") from None
    except ValueError as exc:   # e.g. an integer of more digits than Python converts (4300)
        raise InputError(source, None, f"invalid YAML ({excerpt(str(exc), 120)[1:-1]})") from None
    check_shape(data, source)
    return data


def load_json(text: str, source: str) -> Any:
    """json.loads without NaN / Infinity, then the bounded shape check."""
    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        data = json.loads(text, parse_constant=constant)
    except RecursionError:
        raise InputError(source, None, f"invalid JSON (nested more than {MAX_DEPTH} levels)") from None
    except json.JSONDecodeError as exc:
        line = text.splitlines()[exc.lineno - 1] if 0 < exc.lineno <= len(text.splitlines()) else ""
        hint = "; JSON has no comments: remove the # or // notes" if ("#" in line or "//" in line) else ""
        raise InputError(source, None, f"invalid JSON at line {exc.lineno}, column {exc.colno} "
                                       f"({excerpt(exc.msg, 80)[1:-1]}){hint}") from None
    except ValueError as exc:
        raise InputError(source, None, f"invalid JSON ({excerpt(str(exc), 120)[1:-1]})") from None
    check_shape(data, source)
    return data


def read_yaml(path: Path, limit: int, what: str) -> Any:
    return load_yaml(read_text(path, limit, what), str(path))


def read_json(path: str | os.PathLike[str], limit: int, what: str) -> Any:
    return load_json(read_text(path, limit, what), str(path))
