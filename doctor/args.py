"""Command-line parsing shared by every subcommand: one-line errors (exit 2) and value types that refuse what
argparse lets through (nan, inf, zero or negative durations, absurd counts)."""
from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn

MAX_COUNT = 10**9   # the most a whole-number flag takes unless it says otherwise


class Parser(argparse.ArgumentParser):
    """argparse with its error as one line naming the command and the flag (exit 2), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(f"{message}".split())
        sys.stderr.write(f"{self.prog}: {text} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def seconds(text: str) -> float:
    """A duration in seconds: a finite number above zero (at most a week)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0 (at most a week)")
    return value


def whole(low: int, high: int = MAX_COUNT):
    """An integer from `low` to `high`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value}: expected a whole number from {low} to {high:,}")
        return value

    parse.__name__ = "whole number"
    return parse
