"""Versioned reference data (GPU specs, CUDA driver table, torch wheels), loaded once from doctor/data."""
from __future__ import annotations

import functools
from importlib import resources
from typing import Any


@functools.lru_cache(maxsize=None)
def load(name: str) -> dict[str, Any]:
    import yaml

    text = resources.files("doctor").joinpath("data", f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def gpu_key(name: str) -> str:
    """A GPU name compared exactly, but for case and runs of white space ("NVIDIA  h100 80GB HBM3")."""
    return " ".join(name.casefold().split())


@functools.lru_cache(maxsize=None)
def _by_nvml_name() -> dict[str, dict[str, Any]]:
    return {gpu_key(n): row for row in load("gpus")["gpus"] for n in row.get("nvml_names") or ()}


def gpu_spec(device_name: str | None) -> dict[str, Any] | None:
    """The reference row listing this exact NVML device name, or None: never a prefix or a pattern, so
    "NVIDIA GH200 480GB" is not an H200 and "NVIDIA GeForce RTX 4090 Laptop GPU" is not an RTX 4090."""
    return _by_nvml_name().get(gpu_key(device_name)) if device_name else None


def architecture(cc: str | None) -> str | None:
    """Architecture name for a compute capability such as "8.0", or None when doctor's table lacks it."""
    row = load("gpus")["architectures"].get(cc) if cc else None
    return row.get("name") if isinstance(row, dict) else row


def torch_wheels() -> dict[str, Any]:
    return load("torch_wheels")
