"""Errors that end a command with exit code 2 (bad usage or input)."""
from __future__ import annotations

import difflib
from typing import Iterable


class InputError(Exception):
    """Bad input: one line naming the file, the key path and what is expected."""

    def __init__(self, source: str, key: str | None, expected: str):
        self.source, self.key, self.expected = source, key, expected
        where = f"{_cut(source, 200)}: {_cut(key, 120)}" if key else _cut(source, 200)
        # one line, always: keys and values from YAML may carry newlines or control characters
        super().__init__(" ".join(_printable(f"{where}: {_cut(expected, 800)}").splitlines()))


def _cut(text: str, limit: int) -> str:
    """A user's value as a message quotes it: at most `limit` characters (a 3000-character name is not repeated)."""
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """"did you mean 'x'? " for the closest option, or ""."""
    near = difflib.get_close_matches(str(word), list(options), n=1)
    return f"did you mean '{near[0]}'? " if near else ""
