"""The one flow of `doctor check`, the Python gate and `doctor bench`: resolve the profiles, probe (or load a
snapshot), judge each check once, run the bench phase where it is wanted, report. Nothing else sequences it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .facts import SCHEMA_VERSION
from .model import Report

DEFAULT_PROFILE = "base"


@dataclass(frozen=True)
class Request:
    """What to judge and how: the same fields for the command line and the Python API."""

    profiles: tuple[str, ...] = ()                 # names or files; none: the machine profile matching the GPUs
    facts: str | dict[str, Any] | None = None      # a saved snapshot (path or dict) instead of probing
    python: str | None = None                      # the job's interpreter (or environment)
    timeout_s: float = 60.0                        # the torch/CUDA-init probe; the others get less (timeouts())
    offline: bool = False
    strict: bool = False
    bench: bool = True                             # the bench phase after the passive checks (probing only)
    bench_timeout_s: float = 180.0
    progress: bool = False                         # show the bench phase's progress on the terminal
    verbose: bool = False
    notes: tuple[str, ...] = field(default=())


def timeouts(timeout_s: float) -> dict[str, float]:
    """Per-probe limits: torch gets the whole `timeout_s`; the others what they need at most."""
    t = timeout_s
    return {"torch": t, "python": min(t, 30.0), "gpu": min(t, 15.0), "host": min(t, 10.0), "hf": min(t, 20.0),
            "disk": min(t, 10.0), "resources": min(t, 10.0), "toolchain": min(t, 10.0), "network": min(t, 8.0),
            "kernel": min(t, 5.0), "env": min(t, 5.0)}


def start_torch(target: Any, timeout_s: float, offline: bool) -> Any:
    """The torch probe (the long pole: a subprocess importing torch) started alone, now."""
    from . import facts as facts_mod

    return facts_mod.start(target, timeouts(timeout_s), names=["torch"], offline=offline)


def probe(target: Any, refs: list[str], timeout_s: float, offline: bool, registry: Any,
          run: Any = None) -> tuple[Any, Any]:
    """Start torch first (the long pole; or adopt `run`, where start_torch already did), then load the profiles
    (validated before anything is judged), then the probes that need their paths. Returns (the running
    ProbeRun, the profile or None)."""
    from . import facts as facts_mod
    from .probing import BUILTIN
    from .profile import load

    run = run if run is not None else start_torch(target, timeout_s, offline)
    profile = load(refs, registry, offline=offline) if refs else None
    rest = sorted(n for n in BUILTIN if n != "torch")
    run.start(facts_mod.context(target, profile.storage_paths() if profile else {}, offline), rest)
    return run, profile


# The reference tables the checks read, loaded while the probes run (the torch import takes seconds) rather
# than after them, on the check's critical path.
JUDGING_DATA = ("known_issues", "cuda", "gpus", "torch_wheels", "bench", "xid")


def prepare() -> None:
    """Load what judging and the console report will need while the probes run (refdata is cached)."""
    import rich.console  # noqa: F401  (the console report's; imported once per process)

    from . import refdata

    for name in JUDGING_DATA:
        refdata.load(name)


def snapshot(req: Request, target: Any, refs: list[str], registry: Any, run: Any = None) -> tuple[dict[str, Any], Any]:
    """(facts, profile or None): probed now (adopting the torch probe `run` started), or the saved snapshot the
    request names."""
    from . import facts as facts_mod
    from .profile import load

    if req.facts is None:
        run, profile = probe(target, refs, req.timeout_s, req.offline, registry, run)
        prepare()
        return facts_mod.assemble(target, *run.collect()), profile
    profile = load(refs, registry, offline=req.offline) if refs else None
    if isinstance(req.facts, str):
        return facts_mod.load(req.facts), profile
    facts_mod.validate(req.facts, "facts")
    return dict(req.facts), profile


def _default_profile(facts: dict[str, Any]) -> tuple[str, str]:
    """(profile name, the note saying why): the machine profile matching the GPUs, else the generic one."""
    from .profile import pick_machine_profile

    names = [d.get("name") or "" for d in (facts.get("gpu") or {}).get("devices", [])]
    picked = pick_machine_profile(names)
    ref = picked or DEFAULT_PROFILE
    why = (f"the machine profile matching {names[0]}" if picked else
           "the generic profile (no shipped machine profile matches this machine)")
    return ref, f"no --profile given: using '{ref}', {why}"


def _probe_line(name: str, rec: Any) -> str:
    """'torch ok in 1.23 s' from a probe record; a saved snapshot may lack or mistype any field."""
    rec = rec if isinstance(rec, dict) else {}
    took = rec.get("duration_s")
    took = f" in {took:.2f} s" if isinstance(took, (int, float)) and not isinstance(took, bool) and 0 <= took < 1e9 else ""
    return f"{name} {rec.get('status', '?')}{took}"


def inspected(facts: dict[str, Any]) -> str:
    info = (facts.get("provenance") or {}).get("inspected_python") or {}
    return f"inspected Python: {info.get('executable', '?')} ({info.get('reason', 'unknown')})"


def check(req: Request) -> Report:
    """Judge this machine (or the snapshot) against the profiles: every check once, the bench checks after the
    bench phase that the passive checks gate."""
    from .interpreter import select

    if req.facts is not None and req.python:
        raise InputError("--python", None, "has no effect with --facts (the snapshot names the Python it inspected)")
    target = select(req.python) if req.facts is None else None
    run = start_torch(target, req.timeout_s, req.offline) if target is not None else None  # before the imports below
    from .bench.phase import bench_section, wanted
    from .profile import load
    from .registry import discover
    from .runner import judge, report

    registry = discover()
    refs = list(req.profiles)
    facts, profile = snapshot(req, target, refs, registry, run)
    notes = [inspected(facts), *req.notes]
    if profile is None:
        ref, note = _default_profile(facts)
        profile = load([ref], registry, offline=req.offline)
        notes.append(note)
    if not profile.checks:   # "Ready" would say nothing was judged
        raise InputError(" + ".join(refs), "checks", "the profile runs no check; expected `extends: [base]` (doctor's "
                         "checks) or a checks list")
    found, job_notes = profile.value("job.notes")
    notes.extend(job_notes if found else [])
    if req.verbose:
        notes.append("probes: " + ", ".join(_probe_line(name, rec) for name, rec in (facts.get("probes") or {}).items()))

    def is_bench(cid: str) -> bool:
        return cid.startswith("bench.")

    judged = judge(facts, profile, registry, keep=lambda cid: not is_bench(cid))
    if target is not None and wanted(profile):   # after the passive checks, which gate it
        facts["bench"] = bench_section(facts, list(judged.values()), target.executable, enabled=req.bench,
                                       timeout_s=req.bench_timeout_s, show_progress=req.progress)
    judged.update(judge(facts, profile, registry, keep=is_bench))
    return report(facts, profile, registry, judged, req.strict, notes)


def health(req: Request) -> Report:
    """`doctor check --health`: judge this node (or the snapshot `req.facts`) with the health checks of
    `req.profiles` (default: as check()), from the probes doctor.health names under its one budget. Never
    imports torch, never starts the torch probe."""
    from . import facts as facts_mod
    from .health import BUDGET_S, HEALTH_CHECKS, PROBES, timeouts
    from .interpreter import select
    from .profile import load
    from .registry import discover
    from .runner import judge, report

    registry = discover()
    refs = list(req.profiles)
    profile = load(refs, registry, offline=True) if refs else None
    budget = min(req.timeout_s, BUDGET_S)
    if req.facts is None:
        paths = profile.storage_paths() if profile else {}
        facts = facts_mod.collect(select(req.python), timeouts(budget), names=list(PROBES), paths=paths, offline=True)
    elif isinstance(req.facts, str):
        facts = facts_mod.load(req.facts)
    else:
        raise InputError("--health", None, "judges a snapshot file (--facts FILE) or this node")
    notes = [f"--health: probes {', '.join(PROBES)} within {budget:g} s; checks judged where the profile enables "
             "them: " + ", ".join(HEALTH_CHECKS)]
    if profile is None:
        ref, note = _default_profile(facts)
        profile = load([ref], registry, offline=True)
        notes.append(note)
    judged = judge(facts, profile, registry, keep=lambda cid: cid in HEALTH_CHECKS)
    return report(facts, profile, registry, judged, req.strict, notes)


def check_distributed(req: Request, timeout_s: float) -> Any:
    """`doctor check --distributed`: check() on this rank, then every rank's report compared on rank 0
    (doctor.distributed.driver: gloo control group, timed barrier, all-reduce, cross-rank checks)."""
    from .distributed.driver import run

    return run(req, check, timeout_s)


@dataclass
class BenchOutcome:
    """`doctor bench`: the report of the bench checks, the bench section, or why nothing could be decided."""

    report: Report | None
    section: dict[str, Any]
    undecided: str | None = None   # the GPU gate could not be decided (a probe hung or failed)
    refused: str | None = None     # --device cuda where no GPU can be benchmarked


def bench(req: Request, device: str, stages: tuple[str, ...]) -> BenchOutcome:
    """Benchmark every GPU the job sees (device "cuda"/"auto"), or the CPU path (device "cpu"), and judge the
    figures with the bench checks of the profiles (default: base)."""
    from . import facts as facts_mod
    from .bench import runner
    from .bench.display import progress
    from .interpreter import select
    from .profile import load
    from .registry import discover
    from .runner import judge, report

    target = select(req.python)
    registry = discover()
    profile = load(list(req.profiles) or [DEFAULT_PROFILE], registry, offline=req.offline)
    notes = [f"inspected Python: {target.executable} ({target.reason})", *req.notes]
    facts: dict[str, Any] = {}
    if device == "cpu":
        targets = [runner.cpu_target()]
        with progress(targets, req.progress) as on_event:
            section = runner.run(target.executable, targets, "cpu", req.bench_timeout_s, on_event, stages=stages)
        notes.append("--device cpu: the CPU path at small sizes; its figures say nothing about a GPU")
    else:
        facts = facts_mod.collect(target, {"torch": min(req.bench_timeout_s, req.timeout_s), "gpu": 15.0},
                                  names=["torch", "gpu", "host"])
        gate_results = list(judge(facts, _gates(profile, registry), registry).values())
        reason = runner.gate(facts, gate_results)
        undecided = [r for r in gate_results if r.status.value == "error"]
        if reason is not None and undecided:   # whether there is a GPU is not known
            return BenchOutcome(None, {}, undecided=f"{undecided[0].check_id}: {undecided[0].summary}")
        if reason is None:
            targets = runner.gpu_targets(facts)
            with progress(targets, req.progress) as on_event:
                section = runner.run(target.executable, targets, "cuda", req.bench_timeout_s, on_event, stages=stages)
        elif device == "cuda":
            why = next((f": {r.summary}" for r in gate_results if r.status.value in ("fail", "error")), "")
            return BenchOutcome(None, {}, refused=f"{reason}{why}")
        else:
            section = runner.skipped(f"{reason}; `doctor bench --device cpu` exercises the CPU path")
    facts["bench"] = section
    facts.setdefault("schema_version", SCHEMA_VERSION)
    bench_profile = profile.only(lambda cid: cid.startswith("bench."))
    judged = judge(facts, bench_profile, registry)
    return BenchOutcome(report(facts, bench_profile, registry, judged, req.strict, notes), section)


def _gates(profile: Any, registry: Any) -> Any:
    """`profile` judging only the checks that gate the bench phase, each with the profile's parameters where
    it sets them (judged even where the profile disabled it or lowered its severity: the gate is not optional)."""
    from dataclasses import replace

    from .bench.runner import GATE_CHECKS

    own = {c.get("id"): c for c in profile.data.get("checks", [])}
    entries = [{k: v for k, v in own.get(cid, {"id": cid}).items() if k not in ("enabled", "severity")}
               for cid in GATE_CHECKS if cid in registry.checks]
    return replace(profile, data=dict(profile.data, checks=entries))
