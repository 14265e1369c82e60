"""`doctor estimate --simulate`: run the model's own code for one step on fake CPU tensors (a child process, under a
timeout) and set its peak live bytes, plus doctor's reference CUDA overheads, beside the analytic estimate.

The child is doctor/vram/simulate_script.py (torch, transformers and peft are imported there only). A hang, a crash
or code that cannot run on fake tensors is a finding, reported in one line; never a traceback.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import subproc
from ..errors import InputError
from .arch import Arch
from .estimator import Estimate, Workload, lora_targets

SCRIPT = Path(__file__).with_name("simulate_script.py")
OPTIMIZERS = ("adamw", "adamw_loop", "adamw_fused", "sgd", "adafactor")
DECODE_STEPS = 4
# process terms of the analytic breakdown that no tensor of the simulation holds
PROCESS_TERMS = ("cuda_context", "cublas_workspace", "allocator_rounding")
OVERHEAD_SOURCE = "doctor/data/vram.yaml (reference measurement; not measured by the simulation)"


@dataclass
class Simulation:
    """What the child reported, with the overheads added and the analytic figure beside it."""

    ok: bool
    reason: str | None = None                  # why it did not run (ok False)
    stage: str | None = None
    timed_out: bool = False
    peak_bytes: int = 0                        # peak live tensor bytes of the step
    by_category: dict[str, int] = field(default_factory=dict)
    phase: str | None = None
    overheads: dict[str, int] = field(default_factory=dict)
    overhead_sources: dict[str, str] = field(default_factory=dict)
    analytic: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)   # model class, params, versions, seconds, notes
    wall_s: float = 0.0

    @property
    def total_bytes(self) -> int:
        return self.peak_bytes + sum(self.overheads.values())

    def to_dict(self) -> dict[str, Any]:
        if not self.ok:
            return {"ok": False, "reason": self.reason, "stage": self.stage, "timed_out": self.timed_out,
                    "wall_s": round(self.wall_s, 2)}
        a = self.analytic
        compare = {"analytic": dict(a), "difference": {
            "tensor_bytes": self.peak_bytes - a["tensor_bytes"], "tensor_pct": _pct(self.peak_bytes, a["tensor_bytes"]),
            "total_bytes": self.total_bytes - a["peak_bytes"], "total_pct": _pct(self.total_bytes, a["peak_bytes"])},
            "not_simulated": "allocator rounding / fragmentation (the analytic figure counts "
                             f"{a.get('allocator_rounding', 0)} B for it) and kernel-internal scratch buffers",
        } if a else {"analytic": None, "not_simulated": "allocator rounding / fragmentation and kernel-internal "
                                                        "scratch buffers"}
        return {"ok": True, "device": "cpu (FakeTensorMode)", "peak_live_bytes": self.peak_bytes,
                "peak_phase": self.phase, "by_category": dict(self.by_category),
                "overheads": {k: {"bytes": v, "source": self.overhead_sources.get(k, OVERHEAD_SOURCE)}
                              for k, v in self.overheads.items()},
                "total_bytes": self.total_bytes, **compare, **self.detail, "wall_s": round(self.wall_s, 2)}


def _pct(value: int, ref: int) -> float | None:
    return round(100.0 * (value - ref) / ref, 2) if ref else None


def unsupported(wl: Workload) -> tuple[str, str, str] | None:
    """(flag, value, why) for a workload the simulation does not model; None when it can run."""
    if wl.method == "qlora" or wl.quant != "none":
        why = ("--simulate runs no bitsandbytes / AWQ / GPTQ kernels on fake tensors; expected unquantised weights "
               "(--method full, lora or inference)")
        return ("--quant", wl.quant, why) if wl.quant != "none" else ("--method", wl.method, why)
    if wl.method == "hessian":
        return ("--method", "hessian", ("--simulate runs a training step (forward, backward, optimizer) or a "
                                        "generation, not a second-order method (an HVP's double backward, "
                                        "Hutchinson's probes, GPTQ's layer Hessians); expected full, lora or "
                                        "inference"))
    if wl.zero is not None or wl.fsdp is not None or wl.world_size > 1:
        return ("--simulate", "distributed", ("--simulate runs one process; expected no --zero / --fsdp / "
                                              "--world-size above 1"))
    if wl.images:
        return ("--images", str(wl.images), "--simulate feeds text tokens only; expected --images 0")
    if getattr(wl, "chunked_ce", False):
        return ("--chunked-ce", "on", ("--simulate runs the model's own loss (Liger's fused cross-entropy is not "
                                       "in transformers); expected no --chunked-ce"))
    if getattr(wl, "kv_cache_heads", "kv") != "kv":
        return ("--kv-cache-heads", str(wl.kv_cache_heads), ("--simulate runs the installed transformers' cache, "
                                                             "which keeps the k/v heads; expected kv"))
    if wl.method != "inference" and wl.optimizer not in OPTIMIZERS:
        return ("--optimizer", wl.optimizer, ("--simulate steps torch.optim's AdamW and SGD and transformers' "
                                              f"Adafactor only; expected one of {', '.join(OPTIMIZERS)}"))
    return None


def request(config: dict[str, Any], arch: Arch | None, wl: Workload) -> dict[str, Any]:
    """The child's request: the config, and the workload knobs it runs (LoRA's default targets: doctor's where it
    models the architecture, else PEFT's own for the model type)."""
    return {"config": config, "method": wl.method, "dtype": wl.dtype, "amp": bool(wl.amp and wl.method != "inference"),
            "batch": wl.batch, "seq": wl.seq, "grad_accum": wl.grad_accum, "checkpointing": bool(wl.checkpointing),
            "attention": wl.attention, "optimizer": wl.optimizer, "lora_rank": wl.lora_rank,
            "lora_targets": wl.lora_targets, "lora_target_names": sorted(lora_targets(arch, wl)) if arch else
            [n.strip() for n in wl.lora_targets.split(",") if n.strip()] if wl.lora_targets not in (
                "default", "all-linear") else [],
            "adapter_dtype": wl.adapter_dtype, "context": wl.context or wl.seq, "decode_steps": DECODE_STEPS}


def run_child(req: dict[str, Any], timeout_s: float, script: Path = SCRIPT,
              python: str = sys.executable) -> tuple[dict[str, Any], float]:
    """(the child's JSON answer, or an {"ok": False, ...} saying why there is none; its wall seconds)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               CUDA_VISIBLE_DEVICES="", PYTHONWARNINGS="ignore")
    with tempfile.TemporaryDirectory(prefix="doctor-simulate-") as tmp:   # a config can outgrow one argv string
        path = Path(tmp, "request.json")
        path.write_text(json.dumps(req), encoding="utf-8")
        try:
            running = subproc.Running([python, str(script), str(path)], env)
        except OSError as exc:
            return {"ok": False, "stage": "child", "error": f"cannot start {python}: {exc}"}, 0.0
        try:
            done = running.wait(timeout_s)
        except BaseException:   # Ctrl-C or an alarm while waiting: the child goes too, not at exit
            running.kill()
            raise
    if done.timed_out:
        return {"ok": False, "stage": "timeout", "timed_out": True,
                "error": f"did not finish in {timeout_s:g} s (killed); raise --simulate-timeout"}, done.duration_s
    for line in reversed(done.stdout.splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and "ok" in answer:
            return answer, done.duration_s
    last = next((ln.strip() for ln in reversed(done.stderr.splitlines()) if ln.strip()), "no output")
    return {"ok": False, "stage": "child", "error": f"the simulation process exited with {done.returncode} and no "
                                                   f"answer ({last[:300]})"}, done.duration_s


def simulate(config: dict[str, Any], arch: Arch | None, wl: Workload, est: Estimate | None, timeout_s: float,
             script: Path = SCRIPT) -> Simulation:
    """Run the step in a child; the answer with the estimate's CUDA overheads added and its figures beside it
    (without an estimate, for an architecture doctor has no formula for: the reference overheads alone)."""
    answer, wall = run_child(request(config, arch, wl), timeout_s, script)
    if not answer.get("ok"):
        stage = answer.get("stage")
        kind = "not simulated" if answer.get("refused") or stage in ("import", "request", "timeout", "child") \
            else f"cannot be traced ({stage})"
        error = answer.get("error")
        if stage == "import":
            error = f"torch / transformers cannot be imported by {sys.executable} ({error})"
        return Simulation(False, reason=f"{kind}: {error}", stage=stage,
                          timed_out=bool(answer.get("timed_out")), wall_s=wall)
    bad = malformed(answer)
    if bad:   # a child of another doctor version or a broken install: a finding, not a traceback
        return Simulation(False, reason=f"not simulated: the simulation process answered {bad}", stage="child",
                          wall_s=wall)
    if est is not None:
        process = {k: int(est.breakdown.get(k, 0)) for k in PROCESS_TERMS}
        analytic: dict[str, Any] = {"peak_bytes": est.peak_bytes, "tensor_bytes": est.peak_bytes - sum(
            process.values()), "peak_phase": est.phase, **process}
    else:
        process, analytic = reference_overheads(wl), {}
    sources = {k: OVERHEAD_SOURCE for k in PROCESS_TERMS[:2]}
    if wl.cuda_context_mib is not None:
        sources["cuda_context"] = f"measured on the job's machine ({wl.cuda_context_mib:g} MiB), as the estimate uses it"
    detail = {k: answer[k] for k in ("model_class", "params", "trainable_params", "versions", "notes", "seconds")
              if k in answer}
    flagged = {lib: getattr(wl, f"{lib}_version", None) for lib in ("transformers", "peft")}
    ran = detail.get("versions") or {}
    differ = [f"{lib} {v} (the estimate's) vs {ran[lib]} (run)" for lib, v in flagged.items()
              if v and ran.get(lib) and v != ran[lib]]
    if differ:
        detail["notes"] = [*detail.get("notes", []), "the simulation runs the installed libraries, not the versions "
                           "the estimate assumes: " + "; ".join(differ)]
    return Simulation(True, peak_bytes=int(answer["peak_bytes"]), by_category=dict(answer.get("by_category") or {}),
                      phase=answer.get("peak_phase"), overheads={k: process[k] for k in PROCESS_TERMS[:2]},
                      analytic=analytic, detail=detail, wall_s=wall, overhead_sources=sources)


def malformed(answer: dict[str, Any]) -> str | None:
    """What in an ok answer is not of the shape simulate_script.py writes; None when all of it is."""
    from ..loading import excerpt

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not whole(answer.get("peak_bytes")):
        return f"peak_bytes {excerpt(answer.get('peak_bytes'))}; expected a whole number of bytes"
    cats = answer.get("by_category")
    if cats is not None and not (isinstance(cats, dict) and all(whole(v) for v in cats.values())):
        return f"by_category {excerpt(cats)}; expected an object of byte counts"
    for key, kind in (("peak_phase", str), ("model_class", str), ("seconds", dict), ("versions", dict),
                      ("notes", list)):
        if answer.get(key) is not None and not isinstance(answer[key], kind):
            return f"{key} {excerpt(answer[key])}; expected a JSON {'string' if kind is str else kind.__name__}"
    if not all(isinstance(n, str) for n in answer.get("notes") or []):
        return f"notes {excerpt(answer['notes'])}; expected a list of strings"
    return None


def reference_overheads(wl: Workload) -> dict[str, int]:
    """The CUDA context and cuBLAS workspace as the estimator counts them (doctor/data/vram.yaml)."""
    from .estimator import MIB, overheads

    data = overheads()
    ctx = wl.cuda_context_mib if wl.cuda_context_mib is not None else data["cuda_context"]["mib"]
    return {"cuda_context": int(ctx * MIB),
            "cublas_workspace": int(data["cublas_workspace"]["hopper_bytes" if (wl.sm or 0) >= 9.0 else "bytes"])}


def unmodelled(model: str, offline: bool) -> tuple[dict[str, Any], str, str] | None:
    """(config, where it came from, why) when doctor has no formula for the model's architecture; None when it has
    one. Other problems with the name or the config stay bad input."""
    from .arch import from_config
    from .catalogue import load_config

    config, source = load_config(model, offline)
    try:
        from_config(config, name=model, source=source)
    except InputError as exc:
        if exc.key != "model_type":
            raise
        return config, source, str(exc)
    return None


def simulate_unmodelled(model: str, offline: bool, workload: Callable[[], Workload], timeout_s: float
                        ) -> tuple[Simulation, str, str, Workload] | None:
    """(simulation, config source, why there is no analytic figure, workload) for an architecture doctor has no
    formula for; None when it has one."""
    found = unmodelled(model, offline)
    if found is None:
        return None
    config, source, why = found
    wl = workload()
    problem = unsupported(wl)
    if problem:
        raise InputError(*problem)
    return simulate(config, None, wl, None, timeout_s), source, why, wl


def report_alone(model: str, source: str, why: str, wl: Workload, sim: Simulation, as_json: bool) -> int:
    """The simulation without an analytic figure: exit 0, or 2 with its one-line finding (as the estimate alone
    would have refused the architecture)."""
    if as_json:
        sys.stdout.write(json.dumps({"schema": "doctor.estimate/1", "model": model, "model_source": source,
                                     "workload": {k: v for k, v in wl.__dict__.items() if k != "cuda_context_mib"},
                                     "peak_bytes": None, "analytic_error": why, "simulation": sim.to_dict()},
                                    indent=2) + "\n")
    else:
        from rich.console import Console
        from rich.markup import escape

        from ..output import printable

        Console(highlight=False).print(f"no analytic estimate: {escape(printable(why))}")
        render(sim)
    if not sim.ok:   # exit 2 names the model and why on one stderr line, as all bad input does
        from ..output import printable as line

        print(line(f"doctor: {why}; and no simulation: {sim.reason}"[:1000]), file=sys.stderr)
    return 0 if sim.ok else 2


def alone(model: str, offline: bool, workload: Callable[[], Workload], timeout_s: float, as_json: bool) -> int | None:
    """`--simulate` for an architecture doctor has no formula for; None when doctor models it."""
    found = simulate_unmodelled(model, offline, workload, timeout_s)
    return None if found is None else report_alone(model, *found[1:3], found[3], found[0], as_json)


def for_command(model: str, resolved: dict[str, Any], arch: Arch, wl: Workload, est: Estimate, timeout_s: float,
                offline: bool) -> Simulation:
    """`doctor estimate --simulate`: refuse unsupported workloads (InputError, exit 2), else simulate."""
    from .catalogue import NANOCHAT, load_config

    problem = unsupported(wl)
    if problem:
        raise InputError(*problem)
    if NANOCHAT.match(model.lower()):
        raise InputError("--model", model, "nanochat-d<depth> is doctor's formula of nanochat's shape, not a "
                                           "transformers config; expected a config.json to --simulate")
    config = resolved["config"] if isinstance(resolved.get("config"), dict) and not resolved.get("error") \
        else load_config(model, offline)[0]
    return simulate(config, arch, wl, est, timeout_s)


def render(sim: Simulation) -> None:
    """The simulated figure under the analytic breakdown: by category, the overheads, and the difference."""
    from rich.console import Console
    from rich.markup import escape

    from ..output import printable

    con = Console(highlight=False)
    if not sim.ok:
        con.print(f"[yellow]simulation: {escape(printable(sim.reason or ''))}[/]")
        return
    d = sim.to_dict()
    cats = ", ".join(f"{k.replace('_', ' ')} {_size(v)}" for k, v in sim.by_category.items() if v)
    sec = d.get("seconds") or {}
    con.print(f"[bold]simulated[/] ({d.get('model_class')} on fake CPU tensors, {sim.wall_s:.1f} s, of which the "
              f"step {sec.get('step', '?')} s): peak live tensors {_size(sim.peak_bytes)} at the {sim.phase} "
              f"({cats})")
    over = " + ".join(f"{k.replace('_', ' ')} {_size(v)}" for k, v in sim.overheads.items())
    where = "reference figures, doctor/data/vram.yaml; not measured on the CPU" if all(
        v == OVERHEAD_SOURCE for v in sim.overhead_sources.values()) else "; ".join(
        f"{k.replace('_', ' ')}: {v}" for k, v in sim.overhead_sources.items())
    con.print(f"  + {over} ({where}) = "
              f"[bold]{_size(sim.total_bytes)}[/]")
    if sim.analytic:
        diff, a = d["difference"], sim.analytic
        con.print(f"  analytic: {_size(a['peak_bytes'])} ({_size(a['tensor_bytes'])} of tensors); simulated "
                  f"{_signed(diff['total_pct'])} in all, {_signed(diff['tensor_pct'])} on tensors (allocator "
                  f"rounding, {_size(a['allocator_rounding'])} in the analytic figure, and kernel scratch are not "
                  "simulated)")
    for note in d.get("notes") or []:
        con.print(f"  - {escape(printable(note))}")


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _signed(pct: float | None) -> str:
    return "n/a" if pct is None else f"{pct:+.1f}%"
