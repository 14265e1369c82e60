"""The arithmetic of a validation run: medians, run-to-run spread, estimate errors (pure; tested)."""
from __future__ import annotations

import statistics
from typing import Iterable, Sequence


def median(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def spread(values: Sequence[float | None]) -> float | None:
    """(max - min) / median over the runs that produced a figure; None with fewer than two."""
    vals = [float(v) for v in values if v is not None]
    if len(vals) < 2:
        return None
    mid = statistics.median(vals)
    return (max(vals) - min(vals)) / mid if mid else None


def relative_error(estimate: float | None, measured: float | None) -> float | None:
    """(estimate - measured) / measured: positive when doctor over-estimates."""
    if estimate is None or not measured:
        return None
    return (float(estimate) - float(measured)) / float(measured)


def error_summary(errors: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean and largest absolute error over the rows that were measured."""
    vals = [abs(e) for e in errors if e is not None]
    return {"rows": len(vals), "mean_abs": statistics.fmean(vals) if vals else None,
            "max_abs": max(vals) if vals else None}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)
