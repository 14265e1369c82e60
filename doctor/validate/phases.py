"""The phases of `doctor validate`. Each runs doctor's own commands (as a user would) or a standalone worker in
the job's Python, under the timeout the flow gives it, and returns JSON-native figures for the record."""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .. import subproc
from ..facts import redacted
from ..profile import available, pick_machine_profile, read
from .flow import PhaseError, Run, doctor_env, json_lines, last_line, read_json
from .setups import plan

BENCH_WORKER = Path(__file__).parents[1] / "bench" / "worker"
WORKERS = Path(__file__).with_name("worker")


@dataclass
class State:
    """What earlier phases learned that later ones need."""

    python: str                      # the job's interpreter
    device: str                      # auto | cuda | cpu (auto is settled by the facts phase)
    runs: int
    facts: dict[str, Any] | None = None
    facts_file: Path | None = None   # the snapshot later phases judge (the live report, which has the bench)
    machine_profile: str | None = None
    device_reason: str = ""
    usable: bool = False             # torch can use the GPU(s) NVML lists
    gpu0: dict[str, Any] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"

    def python_args(self) -> list[str]:
        return [] if self.python == sys.executable else ["--python", self.python]

    def pinned_env(self, scratch: Path | None = None) -> dict[str, str]:
        """The environment for a worker that measures GPU 0 only (pinned by UUID, as `doctor bench` pins),
        offline (the set-ups download nothing), with temporary files in the run's scratch folder."""
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
        if scratch is not None:
            env["TMPDIR"] = str(scratch)
        uuid = self.gpu0.get("uuid")
        if self.cuda and uuid:
            env["CUDA_VISIBLE_DEVICES"] = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        return env


def slug(names: list[str], machine: str) -> str:
    """'nvidia-h100-80gb-hbm3', '8x-nvidia-a800-sxm4-80gb', or 'cpu-x86_64' without a GPU."""
    if not names:
        return "cpu-" + re.sub(r"[^a-z0-9_]+", "-", machine.lower()).strip("-")
    first = re.sub(r"[^a-z0-9]+", "-", names[0].lower()).strip("-")
    return (f"{len(names)}x-" if len(names) > 1 else "") + first


# -- NVML ---------------------------------------------------------------------------------------------------
def nvml(run: Run, timeout: float) -> dict[str, Any]:
    done = run.execute([sys.executable, "-m", "doctor.validate.nvml_dump"], timeout, env=doctor_env())
    if done.timed_out:
        raise PhaseError(f"NVML did not answer within {timeout:.0f} s (a hung driver is a finding)", timed_out=True)
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise PhaseError(f"the NVML dump exited {done.returncode}: {last_line(done.stderr)}") from None


# -- facts and checks ---------------------------------------------------------------------------------------
def facts(run: Run, state: State, timeout: float) -> dict[str, Any]:
    raw = run.scratch / "facts.json"
    done = run.doctor(["facts", "--offline", "--timeout", f"{min(60.0, timeout * 0.8):.0f}", "-o", str(raw),
                       *state.python_args()], timeout)
    if done.timed_out:
        raise PhaseError("`doctor facts` did not finish", timed_out=True)
    if done.returncode not in (0, 3) or not raw.exists():
        raise PhaseError(f"`doctor facts` exited {done.returncode}: {last_line(done.stderr)}")
    state.facts = read_json(raw)
    state.facts_file = raw
    run.write_json("facts.json", redacted(state.facts, run.ids) if run.redacted else state.facts)
    _settle_device(state)
    failed = {k: v.get("message") for k, v in (state.facts.get("probes") or {}).items() if v.get("status") != "ok"}
    return {"exit_code": done.returncode, "probes_failed": failed, "device": state.device,
            "device_reason": state.device_reason, "machine_profile": state.machine_profile}


def _settle_device(state: State) -> None:
    facts = state.facts or {}
    nvml_devs = (facts.get("gpu") or {}).get("devices") or []
    runtime = (facts.get("torch") or {}).get("runtime") or {}
    usable = bool(nvml_devs) and bool(runtime.get("is_available")) and bool(runtime.get("devices"))
    state.usable = usable
    if state.device == "auto":
        state.device = "cuda" if usable else "cpu"
        state.device_reason = ("torch sees the NVIDIA GPU(s) NVML lists" if usable else
                               "no GPU torch can use (see the facts): the CPU path at small sizes")
    elif state.device == "cuda" and not usable:
        state.device_reason = "--device cuda, but torch cannot use an NVIDIA GPU here"
    else:
        state.device_reason = f"--device {state.device}"
    if nvml_devs:   # the job's first GPU: torch's device 0 (CUDA_VISIBLE_DEVICES applied), found in NVML by UUID
        first = (runtime.get("devices") or [{}])[0].get("uuid") or ""
        first = first if not first or first.startswith(("GPU-", "MIG-")) else f"GPU-{first}"
        state.gpu0 = next((d for d in nvml_devs if first and d.get("uuid") == first), nvml_devs[0])
    names = [d.get("name") or "" for d in nvml_devs]
    state.machine_profile = pick_machine_profile(names) if names else "cpu-ci"
    if state.machine_profile is None:
        state.machine_profile = "base"


def require_torch(state: State) -> None:
    """A phase that runs torch in the job's Python: not without torch there, nor on a GPU torch cannot use."""
    torch = (state.facts or {}).get("torch") or {}
    if state.facts is not None and not torch.get("installed"):
        raise PhaseError(f"torch is not installed in the job's environment ({state.python})")
    if torch.get("import_error"):
        raise PhaseError(f"torch does not import in the job's environment: {torch['import_error']}")
    if state.cuda and not state.usable:
        raise PhaseError(state.device_reason)


def check(run: Run, state: State, timeout: float) -> dict[str, Any]:
    """`doctor check` for real with the machine's profile: probes, judges, then the bench phase on every GPU."""
    raw = run.scratch / "check.json"
    bench_timeout = max(30.0, min(180.0, timeout - 60))
    done = run.doctor(["check", "-p", state.machine_profile or "base", "--offline", "--format", "json", "-o", str(raw),
                       "--bench-timeout", f"{bench_timeout:.0f}", *state.python_args()], timeout)
    if done.timed_out:
        raise PhaseError("`doctor check` did not finish", timed_out=True)
    if done.returncode == 2 or not raw.exists():
        raise PhaseError(f"`doctor check` exited {done.returncode}: {last_line(done.stderr)}")
    report = read_json(raw)
    state.facts_file = raw
    run.write_json("check.json", report)
    bench = (report.get("facts") or {}).get("bench") or {}
    return {"profile": state.machine_profile, "wall_s": round(run.commands[-1].duration_s, 3),
            "bench_phase_s": bench.get("duration_s"), "bench_status": bench.get("status"),
            "bench_reason": bench.get("reason"), **verdict(report)}


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """A report's verdict and the checks that did not pass."""
    v = report.get("verdict") or {}
    return {"exit_code": v.get("exit_code"), "summary": v.get("summary"), "counts": v.get("counts"),
            "not_passed": [{"id": r["id"], "status": r["status"], "summary": r["summary"]}
                           for r in report.get("results") or [] if r.get("status") not in ("pass", "skip")]}


def seed_jobs() -> list[str]:
    """The job profiles shipped with doctor (the seeds' set-ups), not ones from $DOCTOR_PROFILE_PATH."""
    shipped = Path(str(resources.files("doctor.profiles")))
    return sorted(name for name, path in available().items()
                  if path.parent == shipped and read(path).get("kind") == "job")


def jobs(run: Run, state: State, timeout: float) -> dict[str, Any]:
    """Every seed job profile judged, with the machine profile, on the snapshot of the live check."""
    if state.facts_file is None:
        raise PhaseError("no facts to judge (the facts phase failed)")
    started = {}
    for job in seed_jobs():
        out = run.scratch / f"job-{job}.json"
        argv = [sys.executable, "-m", "doctor", "check", "--facts", str(state.facts_file),
                "-p", state.machine_profile or "base", "-p", job, "--format", "json", "-o", str(out)]
        started[job] = (argv, out, subproc.Running(argv, doctor_env()))
    results, problems = {}, []
    for job, (argv, out, proc) in started.items():
        done = proc.wait(timeout)
        run.commands.append(_command(argv, done))
        if done.timed_out or done.returncode == 2 or not out.exists():
            problems.append(f"{job}: exit {done.returncode}{' (timed out)' if done.timed_out else ''}")
            continue
        results[job] = verdict(read_json(out))
    run.write_json("check-jobs.json", {"machine_profile": state.machine_profile, "jobs": results})
    if problems:
        raise PhaseError("; ".join(problems))
    return {job: {"exit_code": r["exit_code"], "summary": r["summary"]} for job, r in results.items()}


def _command(argv: list[str], done: subproc.Completed) -> Any:
    from .flow import Command

    tail = "\n".join((done.stderr or "").strip().splitlines()[-6:])
    return Command(argv, done.returncode, done.timed_out, round(done.duration_s, 3), tail)


# -- bench --------------------------------------------------------------------------------------------------
def bench(run: Run, state: State, timeout: float) -> dict[str, Any]:
    """`doctor bench --format json`, `state.runs` times: the figures of each run and its wall time."""
    require_torch(state)
    each = timeout / state.runs
    docs = []
    for i in range(state.runs):
        raw = run.scratch / f"bench-{i + 1}.json"
        done = run.doctor(["bench", "--device", state.device, "--format", "json", "-o", str(raw),
                           "--timeout", f"{max(10.0, each - 15):.0f}", *state.python_args()], each)
        if done.timed_out or not raw.exists():
            run.say(f"  bench run {i + 1}: exit {done.returncode}{' (timed out)' if done.timed_out else ''}")
            break
        doc = read_json(raw)
        doc["wall_s"] = round(done.duration_s, 3)
        doc["exit_code"] = done.returncode
        docs.append(doc)
        run.say(f"  bench run {i + 1}/{state.runs}: exit {done.returncode} in {done.duration_s:.1f} s")
    run.write_json("bench-runs.json", docs)
    if len(docs) < state.runs:
        raise PhaseError(f"{len(docs)} of {state.runs} bench runs finished", timed_out=True)
    return {"runs": len(docs)}


# -- matmul sweep -------------------------------------------------------------------------------------------
def sweep(run: Run, state: State, timeout: float, budget_s: float) -> dict[str, Any]:
    """The best fp16/bf16 matmul over many shapes, by the bench's own measuring code, on GPU 0."""
    require_torch(state)
    bf16 = state.cuda is False or _cc(state.gpu0) >= 8.0
    argv = [state.python, str(WORKERS / "matmul_sweep.py"), "--device", state.device, "--budget", f"{budget_s:.1f}",
            "--dtypes", "fp16,bf16" if bf16 else "fp16", "--bench-worker-dir", str(BENCH_WORKER)]
    done = run.execute(argv, timeout, env=state.pinned_env(run.scratch))
    rows = [e["data"] for e in json_lines(done.stdout) if e.get("event") == "sweep"]
    run.write_json("sweep.json", {"device": state.device, "gpu": state.gpu0.get("name"), "dtypes": rows})
    if done.timed_out:
        raise PhaseError(f"the sweep did not finish in {timeout:.0f} s", timed_out=True)
    if done.returncode != 0 or not rows:
        raise PhaseError(f"the sweep exited {done.returncode}: {last_line(done.stderr)}")
    return {r["dtype"]: {"shapes": r["shapes"], "best_median": r.get("best_median")} for r in rows}


def _cc(dev: dict[str, Any]) -> float:
    try:
        return float(dev.get("compute_capability") or 0)
    except ValueError:
        return 0.0


# -- VRAM matrix --------------------------------------------------------------------------------------------
ROW_CAP_S = 150.0   # one set-up's own limit: past it, a set-up is hung
ROW_MIN_S = 30.0    # what a small set-up needs at least (imports, CUDA start, build, two steps); 7B models twice


def vram(run: Run, state: State, timeout: float, reserve: float = 0.0) -> dict[str, Any]:
    """Each set-up measured in the job's Python (one process each on a GPU) beside doctor's estimate."""
    require_torch(state)
    cc = _cc(state.gpu0) or None
    rows = plan(small=not state.cuda, sm=cc)
    setups = run.scratch / "setups.json"
    setups.write_text(json.dumps([r["spec"] for r in rows]), encoding="utf-8")
    installed = ((state.facts or {}).get("python") or {}).get("distributions") or {}
    total = ((state.gpu0.get("memory") or {}).get("total_bytes")) if state.cuda else None
    base = [state.python, str(WORKERS / "vram_worker.py"), "--setups", str(setups), "--device", state.device,
            "--bench-worker-dir", str(BENCH_WORKER)]
    versions: dict[str, Any] = {}
    if not state.cuda:   # one process for every tiny set-up: nothing is measured on the CPU, only exercised
        done = run.execute(base, timeout, env=state.pinned_env(run.scratch))
        _collect(rows, done, versions)
    else:
        for row in rows:
            spec = row["spec"]
            missing = [p for p in spec["needs"] if p not in installed]
            if missing:
                row["skipped"] = f"{', '.join(missing)} not installed in the job's environment"
                continue
            if total and row["estimate"]["peak_bytes"] > 0.9 * total:
                row["skipped"] = (f"estimated {row['estimate']['peak_bytes'] / 2**30:.1f} GiB of this GPU's "
                                  f"{total / 2**30:.1f} GiB")
                continue
            left = run.clock.allow(ROW_CAP_S, reserve=reserve)
            need = ROW_MIN_S * (2 if spec["model"].startswith("llama") else 1)
            if left < need:
                row["skipped"] = f"the time budget ran out ({left:.0f} s left, the set-up needs about {need:.0f} s)"
                continue
            run.say(f"  vram {spec['id']} (up to {left:.0f} s)")
            done = run.execute(base + ["--only", spec["id"]], left, env=state.pinned_env(run.scratch))
            _collect([row], done, versions)
            if done.timed_out and left < ROW_CAP_S:   # cut by the run's budget, not hung on its own
                row.pop("error", None)
                row["skipped"] = f"the time budget ran out during the set-up ({left:.0f} s allowed)"
    run.write_json("vram.json", {"device": state.device, "gpu": state.gpu0.get("name"),
                                 "compute_capability": cc, "versions": versions, "rows": rows})
    measured = sum(1 for r in rows if r.get("measured"))
    ran = sum(1 for r in rows if "result" in r)
    errors = [f"{r['spec']['id']}: {r['error']}" for r in rows if r.get("error")]
    if errors and not ran:
        raise PhaseError(errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return {"setups": len(rows), "ran": ran, "measured": measured, "errors": len(errors),
            "skipped": sum(1 for r in rows if r.get("skipped"))}


def _collect(rows: list[dict[str, Any]], done: subproc.Completed, versions: dict[str, Any]) -> None:
    """Attach what the worker printed to the rows it ran; a row with no line says why (hang, crash)."""
    events = json_lines(done.stdout)
    for ev in events:
        if ev.get("event") == "versions":
            versions.update(ev.get("data") or {})
    by_id = {ev["id"]: ev for ev in events if ev.get("event") == "setup"}
    for row in rows:
        ev = by_id.get(row["spec"]["id"])
        if ev is None:
            why = "timed out" if done.timed_out else f"the worker exited {done.returncode}"
            row["error"] = f"no result ({why}): {last_line(done.stderr)}"
        elif "error" in ev:
            row["error"], row["error_kind"] = ev["error"], ev.get("kind")
        else:
            row["result"] = ev["data"]
            row["measured"] = ev["data"].get("measured")
