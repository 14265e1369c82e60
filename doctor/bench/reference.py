"""Reference figures for judging benchmarks (doctor/data/bench.yaml): datasheet peaks, levels, tolerances."""
from __future__ import annotations

import re
from typing import Any

from ..refdata import load


def data() -> dict[str, Any]:
    return load("bench")


def gpu_reference(device_name: str | None) -> dict[str, Any] | None:
    """The datasheet row whose pattern matches a GPU name, or None (then no speed verdict)."""
    if not device_name:
        return None
    for row in data()["gpus"]:
        if re.search(row["pattern"], device_name, re.I):
            return row
    return None


def level(kind: str, name: str) -> float:
    return float(data()["levels"][kind][name])


def tolerance(key: str) -> Any:
    return data()["tolerances"][key]
