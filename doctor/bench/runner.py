"""The bench phase: one worker subprocess per GPU, in parallel, each killed (process group) on timeout.
Its output is the `bench` section of the facts, so a saved report can be judged again."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import subproc
from ..model import Result, Status

WORKER = Path(__file__).with_name("worker") / "bench_main.py"
OPT_CONFIG = Path(__file__).parents[1] / "data" / "models" / "opt-125m.json"
STAGES = ("matmul", "bandwidth", "hvp")
DEFAULT_TIMEOUT_S = 180.0
# The passive checks a GPU must not fail (or leave undecided) before it is benchmarked.
GATE_CHECKS = ("gpu.present", "torch.installed", "torch.cuda_build", "driver.torch_cuda", "torch.arch_coverage",
               "torch.cuda_available")

OnEvent = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class Target:
    """One device to benchmark. `visible` pins a GPU by UUID, so the worker's cuda:0 is exactly that GPU."""

    key: str
    label: str
    name: str | None = None
    nvml_index: int | None = None
    ordinal: int = 0
    visible: str | None = None


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "devices": []}


def gate(facts: dict[str, Any], results: list[Result]) -> str | None:
    """Why the GPUs must not be benchmarked (a passive check failed, or CUDA is unusable), or None."""
    from ..facts import gpu_absence
    from ..model import NO_GPU

    absent = gpu_absence(facts)
    if absent is not None and absent[0]:
        return NO_GPU
    bad = [r for r in results if r.check_id in GATE_CHECKS and r.status in (Status.FAIL, Status.ERROR)]
    if bad:
        return f"no usable GPU: {bad[0].check_id} {bad[0].status.value}ed"
    runtime = (facts.get("torch") or {}).get("runtime") or {}
    if not (facts.get("gpu") or {}).get("devices"):
        return "no NVIDIA GPU found"
    if not runtime.get("is_available") or not runtime.get("devices"):
        return "torch cannot use CUDA here (torch.cuda.is_available() is False)"
    return None


def _uuid(raw: str | None) -> str | None:
    if not raw:
        return None
    return raw if raw.startswith(("GPU-", "MIG-")) else f"GPU-{raw}"


def gpu_targets(facts: dict[str, Any]) -> list[Target]:
    """Every GPU the job's torch sees (CUDA_VISIBLE_DEVICES applied), matched to NVML by UUID."""
    nvml = {d.get("uuid"): d for d in (facts.get("gpu") or {}).get("devices") or [] if d.get("uuid")}
    out = []
    for dev in ((facts.get("torch") or {}).get("runtime") or {}).get("devices") or []:
        uuid = _uuid(dev.get("uuid"))
        index = (nvml.get(uuid) or {}).get("nvml_index")
        label = f"GPU {index if index is not None else dev.get('ordinal')} ({dev.get('name')})"
        if uuid:
            out.append(Target(uuid, label, dev.get("name"), index, 0, uuid))
        else:  # no UUID from this torch: keep the environment's numbering
            out.append(Target(f"cuda:{dev.get('ordinal')}", label, dev.get("name"), index, int(dev.get("ordinal", 0))))
    return out


def cpu_target() -> Target:
    return Target("cpu", "CPU", "CPU")


def parse_events(stdout: str) -> list[dict[str, Any]]:
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"event"' in line:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def device_record(target: Target, done: subproc.Completed, timeout_s: float) -> dict[str, Any]:
    """What one worker left: its stages' figures or errors, and why it stopped if it did not finish."""
    record: dict[str, Any] = {"key": target.key, "label": target.label, "name": target.name,
                              "nvml_index": target.nvml_index, "duration_s": round(done.duration_s, 3)}
    current, label, finished = "setup", "starting", False
    for ev in parse_events(done.stdout):
        kind = ev.get("event")
        if kind == "progress":
            current, label = ev.get("stage", current), ev.get("label", "")
        elif kind == "stage":
            stage = ev.get("stage")
            record[stage] = ev["data"] if "data" in ev else {"error": ev.get("error"), "kind": ev.get("kind")}
        elif kind == "done":
            finished = True
    setup = record.get("setup") or {}
    if "name" in setup and setup.get("type") == "cuda":
        record["name"] = setup["name"]
    if finished:
        record["status"] = "ok"
    elif done.timed_out:
        record.update(status="timeout", failed_stage=current,
                      message=f"no result within {timeout_s:g} s, during {current} ({label}); "
                              f"the process group was killed")
    else:
        tail = [ln for ln in (done.stderr or "").strip().splitlines() if ln.strip()][-2:]
        record.update(status="crashed", failed_stage=current,
                      message=f"the worker exited with code {done.returncode} during {current} ({label})"
                              + (f": {' | '.join(tail)}" if tail else ""))
    return record


def run(python: str, targets: list[Target], device_type: str, timeout_s: float = DEFAULT_TIMEOUT_S,
        on_event: OnEvent | None = None, size: str = "auto", stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Benchmark every target at once (one process each) and return the facts' bench section."""
    t0 = time.monotonic()
    started = []
    for target in targets:
        argv = [python, str(WORKER), "--device", device_type, "--ordinal", str(target.ordinal),
                "--stages", ",".join(stages), "--size", size, "--opt-config", str(OPT_CONFIG)]
        env = dict(os.environ)
        if target.visible:
            env["CUDA_VISIBLE_DEVICES"] = target.visible
        env["PYTHONUNBUFFERED"] = "1"
        callback = None
        if on_event is not None:
            callback = (lambda key: lambda line: _forward(key, line, on_event))(target.key)
        try:
            started.append((target, subproc.Running(argv, env, on_line=callback or _ignore)))
        except OSError as exc:
            started.append((target, subproc.Completed(127, "", f"{type(exc).__name__}: {exc}", False, 0.0)))
    devices = []
    for target, proc in started:
        done = proc if isinstance(proc, subproc.Completed) else proc.wait(timeout_s)
        devices.append(device_record(target, done, timeout_s))
    return {"status": "ok", "device_type": device_type, "timeout_s": timeout_s, "python": python,
            "duration_s": round(time.monotonic() - t0, 3), "devices": devices}


def _ignore(_: str) -> None:
    return None


def _forward(key: str, line: str, on_event: OnEvent) -> None:
    line = line.strip()
    if line.startswith("{"):
        on_event(key, json.loads(line))
