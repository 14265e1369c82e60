"""Probe marker and the concurrent probe runner (daemon threads, one timeout each).

Not ThreadPoolExecutor: its workers are joined at interpreter exit, so one hung
NVML call would hang the CLI. A daemon thread that overruns is abandoned.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .interpreter import Interpreter


@dataclass(frozen=True)
class ProbeContext:
    """What a probe may know besides the machine: the inspected Python, the job's paths, offline mode."""

    target: Interpreter
    paths: dict[str, str] = field(default_factory=dict)  # label -> path from the job's storage plan
    offline: bool = False


ProbeFunc = Callable[[ProbeContext, float], dict[str, Any]]


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    func: ProbeFunc
    timeout_s: float


PROBES: dict[str, ProbeSpec] = {}


def probe(name: str, timeout_s: float) -> Callable[[ProbeFunc], ProbeFunc]:
    """Mark `func` as the probe that fills facts section `name`."""

    def mark(func: ProbeFunc) -> ProbeFunc:
        PROBES[name] = ProbeSpec(name, func, timeout_s)
        return func

    return mark


# facts section -> the module under doctor.probes that registers its probe (imported on demand, so the
# torch subprocess starts before psutil, NVML or huggingface_hub are even imported)
BUILTIN = {"torch": "torch_env", "python": "python_env", "gpu": "gpu", "host": "host", "resources": "resources",
           "disk": "disk", "hf": "hf", "toolchain": "toolchain", "network": "network", "kernel": "kernel",
           "env": "env"}


def builtin_probes(names: list[str] | None = None) -> dict[str, ProbeSpec]:
    """The probes for `names` (all built-ins by default), importing only their modules."""
    from importlib import import_module

    for name in names or BUILTIN:
        if name not in PROBES and name in BUILTIN:
            import_module(f"doctor.probes.{BUILTIN[name]}")
    return {n: PROBES[n] for n in (names or BUILTIN)}


# Probes that only wait on the network and need no job paths: when the torch probe is started alone ahead of
# the others (`doctor check` starts torch, reads the profiles, then starts the rest), these start with it,
# so their waits (up to their timeouts when the network drops packets) overlap the torch import instead of
# following the profile read; a later `start` that names them adopts the running thread.
EARLY = ("network",)


class ProbeRun:
    """Probes started together, each in a daemon thread; `collect` joins each with its own deadline."""

    def __init__(self, ctx: ProbeContext, names: list[str] | None = None,
                 timeouts: dict[str, float] | None = None):
        self._threads: dict[str, tuple[ProbeSpec, threading.Thread, float, float, dict[str, Any], bool]] = {}
        self._wanted: list[str] = []
        self.timeouts = dict(timeouts or {})
        first = names or sorted(BUILTIN, key=_start_order)
        self.start(ctx, first)
        if first == ["torch"]:
            self._launch(ctx, [n for n in EARLY if n in BUILTIN], wanted=False)

    def start(self, ctx: ProbeContext, names: list[str]) -> None:
        """Start more probes (e.g. those that need the job's paths, once the profile is read)."""
        for name in names:
            running = self._threads.get(name)
            if running is not None and running[5] != ctx.offline:  # started early under another offline mode
                del self._threads[name]
        self._launch(ctx, [n for n in names if n not in self._threads], wanted=True)
        self._wanted += [n for n in names if n not in self._wanted]

    def _launch(self, ctx: ProbeContext, names: list[str], wanted: bool) -> None:
        specs = builtin_probes(names)
        for spec in (specs[n] for n in names):
            box: dict[str, Any] = {}
            limit = self.timeouts.get(spec.name, spec.timeout_s)
            thread = threading.Thread(target=_run_one, args=(spec, ctx, limit, box),
                                      name=f"probe-{spec.name}", daemon=True)
            started = time.monotonic()
            thread.start()
            self._threads[spec.name] = (spec, thread, started, limit, box, ctx.offline)

    def collect(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(sections, probe records) of the probes asked for. A probe that overruns is recorded as a timeout
        and abandoned."""
        sections: dict[str, Any] = {}
        records: dict[str, Any] = {}
        for name in self._wanted:
            spec, thread, started, limit, box, _ = self._threads[name]
            thread.join(max(0.0, started + limit - time.monotonic()))
            if thread.is_alive():
                records[spec.name] = {"status": "timeout", "duration_s": round(time.monotonic() - started, 3),
                                      "message": f"probe '{spec.name}' did not finish within {limit:g} s"}
            elif "error" in box:
                records[spec.name] = {"status": "error", "duration_s": box["duration_s"], "message": box["error"]}
            else:
                sections[spec.name] = box["data"]
                records[spec.name] = {"status": "ok", "duration_s": box["duration_s"]}
        return sections, records


def _start_order(name: str) -> tuple[int, str]:
    # The torch probe is the slowest (a subprocess imports torch): start it first.
    return (0 if name == "torch" else 1, name)


def _run_one(spec: ProbeSpec, ctx: ProbeContext, limit: float, box: dict[str, Any]) -> None:
    t0 = time.monotonic()
    try:
        box["data"] = spec.func(ctx, limit)
    except Exception as exc:  # a probe bug is recorded, never raised
        box["error"] = f"{type(exc).__name__}: {exc}"
    box["duration_s"] = round(time.monotonic() - t0, 3)
