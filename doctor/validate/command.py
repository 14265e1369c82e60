"""`doctor validate`: check doctor itself against this machine's GPU in one command, under a time budget, and
leave one folder with everything it saw (redacted): facts, check reports, bench runs, a matmul sweep, the VRAM
matrix (estimate against measured), NVML before and after, a Markdown summary.

Exit codes: 0 every phase ran (the summary lists what did not match), 2 bad input, 3 a phase failed or hung.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..args import seconds, whole
from ..errors import InputError
from ..model import ExitCode

if TYPE_CHECKING:  # the phases import the VRAM model and NVML: only `doctor validate` itself pays for them
    from . import phases
    from .flow import Run

DEFAULT_BUDGET_S = 480.0
# The phases in order, each with the least time it needs: a phase may use its own cap only as far as this
# leaves the later phases their share, so a hang early on cannot starve the VRAM matrix or the sweep.
FLOORS = {"nvml-before": 5.0, "facts": 20.0, "check": 30.0, "jobs": 10.0, "bench": 60.0, "vram": 150.0,
          "sweep": 40.0, "nvml-after": 5.0}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="validate doctor on this machine's GPU (facts, checks, bench x5, matmul sweep, "
                                        "HVP, VRAM estimate vs measured) into one results folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="cuda: the GPU(s) the job sees; cpu: the same path at small sizes, figures not judged; "
                        "auto: cuda where torch can use a GPU, else cpu (default)")
    p.add_argument("--output", "-o", metavar="DIR", default="doctor-validate",
                   help="parent folder; the run writes DIR/<gpu>-<date>/ (default ./doctor-validate)")
    p.add_argument("--budget", type=seconds, default=DEFAULT_BUDGET_S, metavar="S",
                   help=f"seconds for the whole run, first CUDA init included (default {DEFAULT_BUDGET_S:g}); "
                        "phases that no longer fit are skipped with the reason")
    p.add_argument("--runs", type=whole(1, 50), metavar="N", help="runs of `doctor bench` (default 5 on a GPU, 2 on the CPU)")
    p.add_argument("--python", metavar="PATH", help="interpreter (or environment) of the job: its torch runs everything")
    p.add_argument("--source", metavar="TEXT",
                   help="provenance of this doctor when it runs from a copy without git, e.g. 'git 1a2b3c4d'")
    p.add_argument("--no-redact", action="store_true",
                   help="keep host names, user names, IPs and GPU identifiers in the folder (default: redacted)")


def _args(args: argparse.Namespace) -> None:
    parent = Path(args.output)
    if parent.exists() and not parent.is_dir():
        raise InputError("--output", args.output, "is a file; expected a folder to write the results folder into")


def _folder(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3 ... when a run of the same day is already there."""
    path, n = parent / name, 1
    while path.exists():
        n += 1
        path = parent / f"{name}-{n}"
    return path


def _source() -> str:
    """The git commit doctor runs from (with '+dirty' for uncommitted changes), or 'installed package'."""
    from .. import subproc

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return "installed package"
    head = subproc.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], 5.0)
    dirty = subproc.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], 5.0)
    if head.returncode != 0:
        return "source tree (no commit)"
    return f"git {head.stdout.strip()}" + ("+dirty" if dirty.stdout.strip() else "")


def run(args: argparse.Namespace) -> int:
    from ..interpreter import select
    from . import phases
    from .analysis import analyse
    from .flow import Clock, Run
    from .summary import render

    _args(args)
    target = select(args.python)
    clock = Clock(args.budget)
    state = phases.State(python=target.executable, device=args.device, runs=args.runs or 0)
    run_ = Run(clock, redacted=not args.no_redact)
    docs: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    record: dict[str, Any] = {"findings": []}

    def step(name: str, body: Any, cap: float) -> Any:
        """Run one phase, keeping for the phases after it the least each of them needs (FLOORS)."""
        later = list(FLOORS)[list(FLOORS).index(name) + 1:]
        return run_.phase(name, body, cap, reserve=sum(FLOORS[n] for n in later))

    try:
        docs["nvml_before"] = step("nvml-before", lambda t: phases.nvml(run_, t), 30)
        names = [d.get("name") or "" for d in ((docs["nvml_before"] or {}).get("probe") or {}).get("devices") or []]
        slug = phases.slug([] if args.device == "cpu" else names, platform.machine())
        run_.open(_folder(Path(args.output), f"{slug}-{dt.date.today().isoformat()}"))
        step("facts", lambda t: phases.facts(run_, state, t), 120)
        if state.device == "auto":   # the facts phase failed: go by NVML alone; the GPU phases then say why not
            state.device = "cuda" if names else "cpu"
            state.device_reason = "the facts phase failed; device chosen from NVML alone"
        state.runs = state.runs or (5 if state.cuda else 2)
        live = step("check", lambda t: phases.check(run_, state, t), 150)
        if live:
            checks[state.machine_profile or "base"] = live
        step("jobs", lambda t: phases.jobs(run_, state, t), 60)
        step("bench", lambda t: phases.bench(run_, state, t), state.runs * (120 if state.cuda else 60))
        step("vram", lambda t: phases.vram(run_, state, t, reserve=FLOORS["sweep"] + FLOORS["nvml-after"]), 900)
        sweep_budget = 90.0 if state.cuda else 3.0
        step("sweep", lambda t: phases.sweep(run_, state, t, max(5.0, min(sweep_budget, t - 40))), sweep_budget + 60)
        docs["nvml_after"] = step("nvml-after", lambda t: phases.nvml(run_, t), 30)
        record = _record(args, state, run_, docs, checks, target.reason)
        run_.write_json("validation.json", record)
        try:
            record = analyse(record, docs)
        except Exception as exc:   # the raw record is already written; say what broke
            record.setdefault("findings", []).append({"what": "the analysis ran", "ok": False,
                                                      "figure": f"{type(exc).__name__}: {exc}"})
        run_.write_json("validation.json", record)
        run_.write_text("summary.md", render(record))
    finally:
        if run_.folder is not None:
            run_.close()
    bad = [f for f in record["findings"] if f["ok"] is False]
    failed = [n for n, p in run_.phases.items() if p["status"] in ("error", "timeout")]
    print(f"doctor validate: {run_.folder} (summary.md): {len(bad)} finding(s) did not match expectations"
          + (f"; phase(s) {', '.join(failed)} failed" if failed else ""))
    return int(ExitCode.UNDECIDED if failed else ExitCode.READY)


def _record(args: argparse.Namespace, state: phases.State, run_: Run, docs: dict[str, Any],
            checks: dict[str, Any], reason: str) -> dict[str, Any]:
    """Everything the run saw, in one document; then what its figures say."""
    facts = state.facts or {}
    torch = facts.get("torch") or {}
    gpu = facts.get("gpu") or {}
    vram_doc = run_.raw.get("vram.json") or {}
    versions = vram_doc.get("versions") or {}
    env = {"gpu": ", ".join(sorted({d.get("name") or "?" for d in gpu.get("devices") or []})) or None,
           "driver": gpu.get("driver_version"), "cuda_driver": gpu.get("cuda_driver_version"),
           "torch": torch.get("version"), "torch_cuda_build": torch.get("cuda_build"),
           "python": ((facts.get("python") or {}).get("version")),
           "nvidia-ml-py": (docs.get("nvml_before") or {}).get("nvidia_ml_py"),
           **{k: versions.get(k) for k in ("transformers", "peft", "bitsandbytes", "accelerate")}}
    for job, verdict in (run_.raw.get("check-jobs.json") or {}).get("jobs", {}).items():
        checks[f"{state.machine_profile} + {job}"] = verdict
    argv0 = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "doctor"
    command = " ".join(shlex.quote(a) for a in ([argv0] + sys.argv[1:]))
    if argv0 in ("__main__.py", "cli.py"):
        command = "doctor " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record: dict[str, Any] = {
        "schema": "doctor.validate/1", "title": env["gpu"] if state.cuda and env["gpu"] else f"the CPU path ({platform.machine()})",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "doctor_version": __version__, "source": args.source or _source(), "device": state.device,
        "device_reason": state.device_reason, "inspected_python": {"executable": state.python, "reason": reason},
        "budget_s": args.budget, "wall_s": round(run_.clock.elapsed(), 1), "environment": env,
        "gpu0_uuid": state.gpu0.get("uuid"), "phases": run_.phases, "checks": checks,
        "commands": [c.__dict__ for c in run_.commands],
        "host": {"cpu_count": os.cpu_count(), "machine": platform.machine()},
    }
    docs.update(facts=state.facts, bench_runs=run_.raw.get("bench-runs.json") or [],
                sweep=(run_.raw.get("sweep.json") or {}).get("dtypes") or [], vram=vram_doc.get("rows") or [])
    run_.write_json("nvml.json", {"before": docs.get("nvml_before"), "after": docs.get("nvml_after")})
    return record

