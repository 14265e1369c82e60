"""The bench phase of `doctor check` and of the Python gate: run it only where a usable GPU passed."""
from __future__ import annotations

from typing import Any

from ..model import Result
from ..profile import Profile
from . import runner
from .display import progress


def wanted(profile: Profile) -> bool:
    """Does the profile judge any benchmark? (No bench.* check: no reason to spend the seconds.)"""
    return any(str(entry.get("id", "")).startswith("bench.") for entry in profile.checks)


def bench_section(facts: dict[str, Any], results: list[Result], python: str, *, enabled: bool = True,
                  timeout_s: float = runner.DEFAULT_TIMEOUT_S, show_progress: bool = True) -> dict[str, Any]:
    """Benchmark every GPU the job will use, or say why not (no GPU, --no-bench, a failed passive check)."""
    if not enabled:
        return runner.skipped("benchmarks not requested (--no-bench)")
    reason = runner.gate(facts, results)
    if reason:
        return runner.skipped(reason)
    targets = runner.gpu_targets(facts)
    with progress(targets, show_progress) as on_event:
        return runner.run(python, targets, "cuda", timeout_s, on_event)
