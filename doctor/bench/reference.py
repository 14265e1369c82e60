"""Reference figures for judging benchmarks: a GPU's datasheet peaks (doctor/data/gpus.yaml, found by exact NVML
name) and the judging levels and tolerances (doctor/data/bench.yaml)."""
from __future__ import annotations

from typing import Any

from .. import refdata

PEAK_KEYS = ("fp16_tflops", "bf16_tflops", "bandwidth_gbs")


def data() -> dict[str, Any]:
    """bench.yaml: `levels` (warn / fail fractions of the peak) and `tolerances` (correctness checks)."""
    return refdata.load("bench")


def gpu_reference(device_name: str | None) -> dict[str, Any] | None:
    """The datasheet peaks of the GPU whose row lists exactly this NVML name, or None (then no speed verdict).

    Returns {"name": the row's display name, "fp16_tflops", "bf16_tflops", "bandwidth_gbs" (those the row has),
    "source", and "unconfirmed" where the row says its peaks could not be confirmed}. A name in no row, or a
    row without peaks, gives None: never the nearest pattern ("NVIDIA GH200 480GB" is not an H200).
    """
    row = refdata.gpu_spec(device_name)
    peaks = (row or {}).get("peaks") or {}
    figures = {k: peaks[k] for k in PEAK_KEYS if peaks.get(k) is not None}
    if not figures:
        return None
    out: dict[str, Any] = {"name": row["name"], **figures, "source": peaks.get("source", "")}
    if peaks.get("unconfirmed"):
        out["unconfirmed"] = peaks["unconfirmed"]
    return out


def level(kind: str, name: str) -> float:
    """A judging fraction, e.g. level("matmul", "warn_fraction")."""
    return float(data()["levels"][kind][name])


def tolerance(key: str) -> Any:
    """A correctness tolerance, e.g. tolerance("fp16") -> {"rel_error": ..., "max_error_rms": ...}."""
    return data()["tolerances"][key]
