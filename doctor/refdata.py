"""Versioned reference data (GPU specs, CUDA driver table, torch wheels), loaded once from doctor/data."""
from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict[str, Any]:
    import yaml

    text = resources.files("doctor").joinpath("data", f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def gpu_spec(device_name: str | None) -> dict[str, Any] | None:
    """The reference row whose pattern matches an NVML device name, if any."""
    if not device_name:
        return None
    for row in load("gpus")["gpus"]:
        if re.search(row["pattern"], device_name, re.I):
            return row
    return None


def architecture(cc: str | None) -> str | None:
    """Architecture name for a compute capability such as "8.0"."""
    return load("gpus")["architectures"].get(cc) if cc else None


def minor_version_floor(cuda_major: str) -> str | None:
    return load("cuda")["minor_version_floor"].get(cuda_major)


def toolkit_driver(cuda: str) -> str | None:
    return load("cuda")["toolkit_driver"].get(cuda)


def torch_wheels() -> dict[str, Any]:
    return load("torch_wheels")
