"""Drive `doctor check --distributed` on one rank: join the gloo control group (bounded by the timeout), run
the one flow (doctor.session.check) here, meet the others at a timed barrier that names late ranks, run the
all-reduce test, and send this rank's report to rank 0, which judges the cross-rank checks
(doctor.checks.fleet) and tells every rank its exit code.

Two ways to exchange reports: the gloo collectives (gather_object, broadcast_object_list) when every rank
arrived at the barrier; otherwise the rendezvous store, where rank 0 takes the reports that arrive within a
grace period and names the ranks whose report did not. Nothing waits longer than the timeout."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import pickle
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from ..model import ExitCode, Report
from . import allreduce, launch

FACT_KEYS = ("schema_version", "provenance", "gpu", "torch", "python", "env")   # what rank 0 keeps of each rank
GRACE_S = 10.0   # degraded path: how long rank 0 waits for reports (and acks) beyond what it already waited


class Unreachable(Exception):
    """This rank cannot take part (no store at MASTER_ADDR:MASTER_PORT, or rank 0 went away): one line, exit 3."""


@dataclass
class Outcome:
    """One rank's end of the run."""

    rank: int
    world_size: int
    report: Report                                  # rank 0: the merged report; other ranks: their own
    ranks: list[Report | None] = field(default_factory=list)   # rank 0: each rank's own report (None: none came)
    exit_code: int = int(ExitCode.UNDECIDED)        # rank 0's verdict, which every rank that heard it exits with
    message: str | None = None                      # a non-zero rank that lost rank 0: why

    @property
    def prints(self) -> bool:
        return self.rank == 0


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:400]}"


def identity(env: launch.RankEnv, facts: dict[str, Any]) -> dict[str, Any]:
    """This rank's place and the GPU it uses, from its own facts (the torch probe's CUDA devices, matched to
    NVML's by UUID). `device.known` is False when the torch probe did not say which devices CUDA sees."""
    from ..facts import gpu_absence

    torch = facts.get("torch") if isinstance(facts.get("torch"), dict) else {}
    runtime = torch.get("runtime") if isinstance(torch.get("runtime"), dict) else None
    host = (facts.get("provenance") or {}).get("hostname") or socket.gethostname()
    absent = gpu_absence(facts)
    out: dict[str, Any] = {"rank": env.rank, "local_rank": env.local_rank, "hostname": host, "pid": os.getpid(),
                           "gpu_absent": absent[0] if absent else False}
    if runtime is None:
        out["device"] = {"known": False, "ordinal": None, "rule": "the torch probe did not report CUDA's devices"}
        return out
    devices = [d for d in runtime.get("devices") or [] if isinstance(d, dict)]
    count = len(devices) if runtime.get("is_available") else 0
    ordinal, rule = launch.device_ordinal(env.local_rank, count)
    dev: dict[str, Any] = {"known": True, "ordinal": ordinal, "rule": rule}
    if ordinal is not None:
        cuda = devices[ordinal]
        uuid = _uuid(cuda.get("uuid"))
        nvml = next((g for g in (facts.get("gpu") or {}).get("devices") or []
                     if isinstance(g, dict) and uuid and _uuid(g.get("uuid")) == uuid), None)
        dev.update(uuid=uuid, name=cuda.get("name"),
                   pci_bus_id=(nvml or {}).get("pci_bus_id") or cuda.get("pci_bus_id"),
                   nvml_index=(nvml or {}).get("index", (nvml or {}).get("nvml_index")))
    out["device"] = dev
    return out


def _uuid(value: Any) -> str | None:
    """A GPU UUID as NVML and torch both give it, compared without NVML's 'GPU-' prefix and case."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    return text[4:] if text.startswith("gpu-") else text


def run(req: Any, check: Callable[[Any], Report], timeout_s: float,
        environ: Mapping[str, str] | None = None) -> Outcome:
    """This rank's part of the distributed check (see the module docstring)."""
    env = launch.from_environ(os.environ if environ is None else environ)
    try:
        import torch.distributed as dist
    except ImportError as exc:
        raise InputError("--distributed", None, f"needs torch in doctor's own interpreter ({sys.executable}): "
                                                f"{exc}") from None
    if not dist.is_available() or not dist.is_gloo_available():
        raise InputError("--distributed", None, "needs torch.distributed with gloo; this torch build has neither")
    timeout = _dt.timedelta(seconds=timeout_s)
    section: dict[str, Any] = {"backend": "gloo", "launcher": env.launcher, "world_size": env.world_size,
                               "timeout_s": timeout_s, "master": f"{env.master_addr}:{env.master_port}",
                               "notes": list(env.notes)}
    try:
        store = dist.TCPStore(env.master_addr, env.master_port, env.world_size,
                              is_master=env.rank == 0 and not env.agent_store, timeout=timeout,
                              wait_for_workers=False)
    except Exception as exc:
        raise Unreachable(f"rank {env.rank} could not reach the rendezvous store at {section['master']} within "
                          f"{timeout_s:g} s: {_line(exc)}") from None
    ctl = dist.PrefixStore("doctor/ctl", store)
    ctl.set(f"joined/{env.rank}", "1")
    t0 = time.perf_counter()
    try:
        dist.init_process_group("gloo", store=dist.PrefixStore("doctor/pg", store), rank=env.rank,
                                world_size=env.world_size, timeout=timeout)
        section["init"] = {"ok": True, "seconds": round(time.perf_counter() - t0, 3)}
    except Exception as exc:
        section["init"] = {"ok": False, "seconds": round(time.perf_counter() - t0, 3), "error": _line(exc)}
    local = dataclasses.replace(req, bench=req.bench and env.local_rank == 0, progress=False,
                                notes=(*req.notes, f"rank {env.rank} of {env.world_size} (local rank "
                                                   f"{env.local_rank}), launched by {env.launcher}"))
    own = check(local)
    me = identity(env, own.facts)
    try:
        return _exchange(dist, ctl, env, req, own, me, section, timeout)
    except Exception as exc:   # only rank 0 judges: another rank that lost it says so and is undecided
        if env.rank == 0:
            raise
        return Outcome(env.rank, env.world_size, own, [], int(ExitCode.UNDECIDED),
                       f"doctor: rank {env.rank}: lost rank 0 (store at {section['master']}): {_line(exc)}")
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def _exchange(dist: Any, ctl: Any, env: launch.RankEnv, req: Any, own: Report, me: dict[str, Any],
              section: dict[str, Any], timeout: _dt.timedelta) -> Outcome:
    """Barrier, then the collectives when every rank arrived, else the store."""
    ctl.set(f"arrived/{env.rank}", "1")
    timeout_s = timeout.total_seconds()
    try:
        if not section["init"]["ok"]:
            raise RuntimeError("no process group")
        section["barrier"] = me["barrier"] = _barrier(dist, ctl, env, timeout)   # each rank's view goes to rank 0
        if not section["barrier"]["ok"]:
            raise RuntimeError("barrier failed")
        return _together(dist, env, req, own, me, section, timeout_s)
    except Exception as exc:   # a rank is missing or went away: exchange through the store, bounded
        section.setdefault("degraded", _line(exc))
        return _apart(dist, ctl, env, req, own, me, section, timeout_s)


def _barrier(dist: Any, ctl: Any, env: launch.RankEnv, timeout: _dt.timedelta) -> dict[str, Any]:
    """monitored_barrier (gloo only): on rank 0 a failure names every rank that did not arrive."""
    t0 = time.perf_counter()
    try:
        dist.monitored_barrier(timeout=timeout, wait_all_ranks=True)
        return {"ok": True, "seconds": round(time.perf_counter() - t0, 3), "missing": []}
    except Exception as exc:
        text = _line(exc)
        missing: list[int] = []
        if env.rank == 0:
            m = re.search(r"Ranks? ([\d,\s]+) failed to pass monitoredBarrier", text)
            missing = [int(x) for x in re.findall(r"\d+", m.group(1))] if m else \
                [r for r in range(1, env.world_size) if not ctl.check([f"arrived/{r}"])]
        return {"ok": False, "seconds": round(time.perf_counter() - t0, 3), "missing": missing, "error": text}


def _allreduce(dist: Any, env: launch.RankEnv, me: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """The all-reduce test: NCCL in child processes when every rank has a GPU, gloo here when none has."""
    if env.world_size < 2:
        return {"status": "skipped", "reason": "one rank: nothing to reduce across"}
    everyone: list[Any] = [None] * env.world_size
    dist.all_gather_object(everyone, (me["device"] or {}).get("ordinal"))
    if all(o is not None for o in everyone):
        box: list[Any] = [_free_port() if env.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return allreduce.run_nccl_child(env.rank, env.world_size, me["device"]["ordinal"], env.master_addr,
                                        box[0], timeout_s)
    if any(o is not None for o in everyone):
        return {"status": "skipped", "reason": "some ranks have a GPU and some do not (see distributed.gpu_visible)"}
    try:
        return allreduce.run_in_process(dist, env.world_size)
    except Exception as exc:
        return {"status": "error", "backend": "gloo", "world_size": env.world_size, "reason": _line(exc)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _together(dist: Any, env: launch.RankEnv, req: Any, own: Report, me: dict[str, Any], section: dict[str, Any],
              timeout_s: float) -> Outcome:
    """Every rank arrived: all-reduce, gather_object to rank 0, broadcast rank 0's exit code."""
    mine = _allreduce(dist, env, me, timeout_s)
    payload = {"identity": me, "report": own, "allreduce": mine}
    gathered: list[Any] | None = [None] * env.world_size if env.rank == 0 else None
    dist.gather_object(payload, gathered, dst=0)
    merged, reports = (merge(section, gathered or [], own, req) if env.rank == 0 else (own, []))
    box: list[Any] = [int(merged.exit_code) if env.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return Outcome(env.rank, env.world_size, merged, reports, int(box[0]))


def _apart(dist: Any, ctl: Any, env: launch.RankEnv, req: Any, own: Report, me: dict[str, Any],
           section: dict[str, Any], timeout_s: float) -> Outcome:
    """Some rank is missing: reports through the store; rank 0 waits a grace period for those that are alive."""
    payload = {"identity": me, "report": own,
               "allreduce": {"status": "skipped", "reason": "not every rank arrived (see distributed.barrier)"}}
    ctl.set(f"report/{env.rank}", pickle.dumps(payload))
    if env.rank != 0:
        try:
            ctl.set_timeout(_dt.timedelta(seconds=timeout_s + GRACE_S))
            code = int(ctl.get("exit_code"))
            ctl.add("acked", 1)
            return Outcome(env.rank, env.world_size, own, [], code)
        except Exception as exc:
            return Outcome(env.rank, env.world_size, own, [], int(ExitCode.UNDECIDED),
                           f"doctor: rank {env.rank}: no verdict from rank 0 at {section['master']}: {_line(exc)}")
    section["joined"] = [r for r in range(env.world_size) if ctl.check([f"joined/{r}"])]
    expected = [r for r in section["joined"] if r not in (section.get("barrier") or {}).get("missing", [])]
    deadline = time.monotonic() + GRACE_S
    gathered: list[Any] = [None] * env.world_size
    while True:
        for r in expected:
            if gathered[r] is None and ctl.check([f"report/{r}"]):
                gathered[r] = pickle.loads(ctl.get(f"report/{r}"))
        if all(gathered[r] is not None for r in expected) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    merged, reports = merge(section, gathered, own, req)
    ctl.set("exit_code", str(int(merged.exit_code)))
    alive = sum(1 for r, p in enumerate(gathered) if p is not None and r != 0)
    deadline = time.monotonic() + GRACE_S   # rank 0 may host the store: let the others read their exit code
    while time.monotonic() < deadline and ctl.add("acked", 0) < alive:
        time.sleep(0.1)
    return Outcome(0, env.world_size, merged, reports, int(merged.exit_code))


def rank_entry(payload: dict[str, Any]) -> dict[str, Any]:
    """What the cross-rank checks see of one rank: its place, GPU, verdict, findings and key facts."""
    report: Report = payload["report"]
    return {**payload["identity"], "exit_code": int(report.exit_code), "summary": report.verdict(),
            "findings": [{"id": r.check_id, "status": r.status.value, "summary": r.summary}
                         for r in report.results if r.status.value in ("fail", "error", "warn")],
            "facts": {k: report.facts[k] for k in FACT_KEYS if k in report.facts}}


def merge(section: dict[str, Any], gathered: list[Any], own: Report, req: Any) -> tuple[Report, list[Report | None]]:
    """Rank 0: the distributed section from every rank's payload, judged by the cross-rank checks."""
    from ..checks import fleet
    from ..profile import load
    from ..registry import Registry, discover
    from ..runner import judge, report

    section = dict(section)
    section["ranks"] = [rank_entry(p) if p is not None else {"rank": r, "missing": True}
                        for r, p in enumerate(gathered)]
    section.setdefault("joined", [r for r, p in enumerate(gathered) if p is not None])
    mine = next((p for p in gathered if p is not None and p["identity"]["rank"] == 0), None)
    section["allreduce"] = (mine or {}).get("allreduce") or {"status": "error", "reason": "rank 0 has no result"}
    worst = [p["allreduce"] for p in gathered if p is not None and p["allreduce"].get("status") in ("hung", "error")]
    if section["allreduce"].get("status") == "ok" and worst:
        section["allreduce"] = worst[0]   # a rank whose NCCL child hung or failed decides it
    registry = Registry()
    registry.add_from(fleet)
    profile = load(list(own.profiles), discover(), offline=None)
    profile = dataclasses.replace(profile, data=dict(profile.data, checks=[{"id": c} for c in fleet.CHECKS]))
    facts = {"schema_version": own.facts.get("schema_version"), "provenance": own.facts.get("provenance"),
             "probes": {}, "distributed": section}   # nothing probed for the merged view: the ranks' facts are in it
    notes = [f"{env_note}" for env_note in section.get("notes", [])]
    notes.append(f"{len([p for p in gathered if p is not None])} of {section['world_size']} ranks reported; "
                 "each rank's own report is under facts.distributed.reports in --format json")
    merged = report(facts, profile, registry, judge(facts, profile, registry), req.strict, notes)
    return merged, [p["report"] if p is not None else None for p in gathered]
