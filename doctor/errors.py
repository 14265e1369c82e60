"""Errors that end a command with exit code 2 (bad usage or input)."""
from __future__ import annotations


class InputError(Exception):
    """Bad input: one line naming the file, the key path and what is expected."""

    def __init__(self, source: str, key: str | None, expected: str):
        self.source, self.key, self.expected = source, key, expected
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {expected}")
