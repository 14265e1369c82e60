"""`doctor check --distributed`: a real 2-rank gloo run under torchrun and a rank that never starts (both run
for real, in parallel, ~20 s), the cross-rank checks on hand-edited facts (version skew, two ranks on one GPU, a
rank missing at the barrier, thresholds), the launch environment, nccl-tests' bandwidth arithmetic, and the
interconnect table with its sources."""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from doctor import refdata
from doctor.checks import fleet
from doctor.cli import main
from doctor.distributed import allreduce, launch
from doctor.errors import InputError
from doctor.model import Status
from doctor.profile_schema import INTERCONNECT_LINKS

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")}
    return dict(env, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **extra)


# ------------------------------------------------------------------------------------- real runs (parallel)

def report_validator():
    import jsonschema
    from referencing import Registry, Resource

    schemas = ROOT / "doctor" / "schemas"
    facts_schema = json.loads((schemas / "facts.schema.json").read_text())
    reg = Registry().with_resource(facts_schema["$id"], Resource.from_contents(facts_schema))
    return jsonschema.Draft202012Validator(json.loads((schemas / "report.schema.json").read_text()), registry=reg)


def documented() -> str:
    """The CI command of docs/fleet.md's `distributed-ci` block."""
    text = (ROOT / "docs" / "fleet.md").read_text(encoding="utf-8")
    block = text.split("<!-- distributed-ci:begin -->")[1].split("<!-- distributed-ci:end -->")[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("torchrun ")]
    assert len(lines) == 1, block
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two launches at once: docs/fleet.md's torchrun command (2 ranks, all arrive; its own free port), and rank 0
    of 2 as srun would start it, alone (rank 1 never starts)."""
    tmp = tmp_path_factory.mktemp("dist")
    torchrun = VENV_BIN / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this interpreter")
    argv = shlex.split(documented())
    assert argv[:3] == ["torchrun", "--nproc-per-node", "2"] and argv[-2:] == ["--output", "dist.json"]
    argv = [str(torchrun), *argv[1:3], "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *argv[3:]]
    ok = subprocess.Popen(argv[:-1] + [str(tmp / "ok.json")], cwd=tmp, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    alone = subprocess.Popen(
        [sys.executable, "-m", "doctor", "check", "--distributed", "--profile", "cpu-ci", "--offline", "--format",
         "json", "--output", str(tmp / "alone.json"), "--dist-timeout", "3"],
        cwd=tmp, env=_env(SLURM_PROCID="0", SLURM_NTASKS="2", SLURM_LOCALID="0", SLURM_STEP_NODELIST="localhost",
                          MASTER_PORT=str(free_port())),   # srun's variables; MASTER_ADDR from the node list
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    for name, proc in (("ok", ok), ("alone", alone)):
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{name}: doctor check --distributed did not finish in 120 s")
        out[name] = (proc.returncode, stdout, stderr, tmp / f"{name}.json")
    return out


def test_two_gloo_ranks_under_torchrun_give_one_merged_report(runs):
    rc, stdout, stderr, path = runs["ok"]
    assert rc == 0, stderr[-2000:]
    report = json.loads(path.read_text())
    results = {r["id"]: r for r in report["results"]}
    assert list(results) == list(fleet.CHECKS)
    assert results["distributed.barrier"]["status"] == "pass"
    assert results["distributed.ranks"]["status"] == "pass"
    assert results["distributed.versions"]["status"] == "pass"
    assert results["distributed.allreduce"]["status"] == "skip"   # gloo: the figure, no threshold
    assert "busbw" in results["distributed.allreduce"]["summary"]
    assert "not applicable" in results["distributed.allreduce"]["summary"]
    section = report["facts"]["distributed"]
    assert section["world_size"] == 2 and [r["rank"] for r in section["ranks"]] == [0, 1]
    assert section["allreduce"]["backend"] == "gloo" and section["allreduce"]["busbw_gbps"] > 0
    own = section["reports"]
    assert len(own) == 2 and all(r["verdict"]["exit_code"] == 0 for r in own)
    assert [e.message for e in report_validator().iter_errors(report)] == []   # schema 1.x: `doctor merge` reads it
    # rank 0 alone printed: one table on the terminal (the file got the JSON)
    assert stdout.count("doctor check --distributed: 2 of 2 ranks reported") == 1


def test_a_rank_that_never_starts_is_named_not_waited_for(runs):
    rc, stdout, stderr, path = runs["alone"]
    assert rc == 1, stderr[-2000:]
    report = json.loads(path.read_text())
    results = {r["id"]: r for r in report["results"]}
    assert results["distributed.barrier"]["status"] == "fail"
    assert "rank 1 never joined the process group within 3 s" in results["distributed.barrier"]["summary"]
    assert results["distributed.ranks"]["status"] == "error"
    section = report["facts"]["distributed"]
    assert section["reports"][1] is None and section["ranks"][1] == {"rank": 1, "missing": True}


# ------------------------------------------------------------------------------------- cross-rank checks

def rank(r: int, host: str = "gpu01", ordinal: int | None = None, uuid: str | None = None, torch: str = "2.6.0+cu124",
         driver: str = "570.124.06", exit_code: int = 0, findings: list | None = None) -> dict:
    """One rank's entry as the driver builds it (doctor.distributed.driver.rank_entry)."""
    dev = {"known": True, "ordinal": ordinal,
           "rule": f"LOCAL_RANK {r} of 8 visible CUDA devices" if ordinal is not None else "this rank sees no CUDA device"}
    if ordinal is not None:
        dev.update(uuid=uuid or f"uuid-{host}-{ordinal}", name="NVIDIA A800-SXM4-80GB", pci_bus_id=None)
    return {"rank": r, "local_rank": r, "hostname": host, "gpu_absent": False, "device": dev, "exit_code": exit_code,
            "summary": "Ready for x." if exit_code == 0 else "1 failed — not ready for x.", "findings": findings or [],
            "facts": {"gpu": {"driver_version": driver, "cuda_driver_version": "12.8",
                              "devices": [{"name": "NVIDIA A800-SXM4-80GB"}] * 8},
                      "torch": {"installed": True, "version": torch, "cuda_build": "12.4"},
                      "python": {"version": "3.11.9", "distributions": {"transformers": "4.57.0"}}}}


def facts(*entries: dict, barrier: dict | None = None, allreduce_: dict | None = None, init_ok: bool = True) -> dict:
    return {"distributed": {"world_size": 2 if not entries else max(2, len(entries)), "timeout_s": 60.0,
                            "init": {"ok": init_ok}, "barrier": barrier or {"ok": True, "seconds": 0.2, "missing": []},
                            "ranks": list(entries), "allreduce": allreduce_ or {"status": "skipped", "reason": "x"}}}


def two_gpus() -> list[dict]:
    return [rank(0, ordinal=0), rank(1, ordinal=1)]


def test_healthy_ranks_pass_every_cross_rank_check():
    f = facts(*two_gpus())
    for fn in (fleet.distributed_barrier, fleet.distributed_ranks, fleet.distributed_versions,
               fleet.distributed_gpu_visible, fleet.distributed_gpu_unique):
        assert fn(f).status is Status.PASS, fn.__name__


def test_version_skew_fails_naming_the_ranks_and_values():
    a, b = two_gpus()
    b = rank(1, ordinal=1, torch="2.5.1+cu124")
    res = fleet.distributed_versions(facts(a, b))
    assert res.status is Status.FAIL
    assert "torch: 2.6.0+cu124 on rank 0; 2.5.1+cu124 on rank 1" in res.summary


def test_a_version_one_rank_does_not_report_is_undecided_not_a_pass():
    a, b = two_gpus()
    del b["facts"]["gpu"]["driver_version"]
    res = fleet.distributed_versions(facts(a, b))
    assert res.status is Status.ERROR and "NVIDIA driver on rank 1" in res.summary


def test_two_ranks_on_one_gpu_uuid_fail_even_with_different_ordinals():
    a, b = rank(0, ordinal=0, uuid="abc"), rank(1, ordinal=1, uuid="abc")   # e.g. CUDA_VISIBLE_DEVICES per rank
    res = fleet.distributed_gpu_unique(facts(a, b))
    assert res.status is Status.FAIL
    assert "GPU abc: rank 0 (gpu01) cuda:0, rank 1 (gpu01) cuda:1" in res.summary
    same_ordinal_other_hosts = facts(rank(0, "gpu01", ordinal=0), rank(1, "gpu02", ordinal=0))
    assert fleet.distributed_gpu_unique(same_ordinal_other_hosts).status is Status.PASS


def test_a_rank_past_its_visible_gpus_fails_and_an_unknown_one_is_undecided():
    a = rank(0, ordinal=0)
    b = rank(1)
    b["device"]["rule"] = "LOCAL_RANK 1 but this rank sees only 1 CUDA devices"
    res = fleet.distributed_gpu_visible(facts(a, b))
    assert res.status is Status.FAIL and "rank 1" in res.summary and "sees only 1" in res.summary
    c = rank(1)
    c["device"] = {"known": False, "ordinal": None, "rule": "the torch probe did not report CUDA's devices"}
    assert fleet.distributed_gpu_visible(facts(a, c)).status is Status.ERROR


def test_no_gpu_on_any_rank_skips_the_gpu_checks_with_the_shared_cause():
    a, b = rank(0), rank(1)
    a["gpu_absent"] = b["gpu_absent"] = True
    for fn in (fleet.distributed_gpu_visible, fleet.distributed_gpu_unique):
        res = fn(facts(a, b))
        assert res.status is Status.SKIP and res.cause == "no NVIDIA GPU"


def test_a_missing_rank_from_a_timed_out_barrier_is_named():
    f = facts(rank(0, ordinal=0), {"rank": 1, "missing": True},
              barrier={"ok": False, "missing": [1], "error": "RuntimeError: [Rank 0]: Ranks 1 failed to pass "
                                                              "monitoredBarrier in 3000 ms"})
    res = fleet.distributed_barrier(f)
    assert res.status is Status.FAIL and "rank 1 did not arrive at the barrier within 60 s" in res.summary
    assert fleet.distributed_ranks(f).status is Status.ERROR
    never = facts(rank(0), {"rank": 1, "missing": True}, init_ok=False)
    never["distributed"]["joined"] = [0]
    assert "rank 1 never joined" in fleet.distributed_barrier(never).summary
    unknown = facts(rank(0), rank(1), barrier={"ok": False, "missing": [], "error": "boom"})
    assert fleet.distributed_barrier(unknown).status is Status.ERROR
    unknown["distributed"]["ranks"][1]["barrier"] = {"ok": False, "seconds": 60.0}   # rank 1 waited for rank 0
    res = fleet.distributed_barrier(unknown)
    assert res.status is Status.FAIL and res.summary.startswith("rank 0 (gpu01) did not arrive") and "rank 1" in res.summary


def test_a_not_ready_rank_fails_the_job_with_its_first_failure():
    bad = rank(1, ordinal=1, exit_code=1, findings=[{"id": "gpu.ecc", "status": "fail", "summary": "12 DBE"}])
    res = fleet.distributed_ranks(facts(rank(0, ordinal=0), bad))
    assert res.status is Status.FAIL and "rank 1 (gpu01): gpu.ecc: 12 DBE" in res.summary


def nccl(busbw: float, hosts: tuple[str, ...] = ("gpu01", "gpu01")) -> dict:
    section = facts(*(rank(i, h, ordinal=i) for i, h in enumerate(hosts)))
    section["distributed"]["allreduce"] = {"status": "ok", "backend": "nccl", "world_size": len(hosts),
                                           "bytes": 1 << 30, "busbw_gbps": busbw, "algbw_gbps": busbw / 2,
                                           "sizes": [{"bytes": 1 << 30, "median_s": 0.01, "busbw_gbps": busbw}]}
    return section


@pytest.mark.parametrize("busbw,status", [(250.0, Status.PASS), (150.0, Status.WARN), (100.0, Status.FAIL)])
def test_nccl_busbw_is_judged_against_the_intra_node_link(busbw, status):
    # nvlink-a100: 300 GB/s one way; warns below 0.6 (180), fails below 0.4 (120)
    res = fleet.distributed_allreduce(nccl(busbw), intra_node="nvlink-a100", inter_node="ib-hdr", inter_node_ports=8)
    assert res.status is status, res.summary


def test_across_hosts_the_inter_node_link_times_its_ports_applies():
    # 8 ib-hdr ports: 200 GB/s; 130 GB/s passes (>= 120), would fail against NVLink3
    res = fleet.distributed_allreduce(nccl(130.0, ("gpu01", "gpu02")), intra_node="nvlink-a100", inter_node="ib-hdr",
                                      inter_node_ports=8)
    assert res.status is Status.PASS and "ib-hdr" in res.summary


def test_busbw_without_a_threshold_or_over_gloo_is_reported_not_judged():
    res = fleet.distributed_allreduce(nccl(50.0))
    assert res.status is Status.SKIP and "50.00 GB/s" in res.summary and "sets no machine.interconnect" in res.summary
    gloo = nccl(0.8)
    gloo["distributed"]["allreduce"]["backend"] = "gloo"
    res = fleet.distributed_allreduce(gloo, intra_node="nvlink-a100")
    assert res.status is Status.SKIP and "not applicable" in res.summary


def test_a_hung_nccl_run_fails_and_a_missing_result_is_undecided():
    hung = nccl(0)
    hung["distributed"]["allreduce"] = {"status": "hung", "reason": "the NCCL all-reduce did not finish in 60 s"}
    assert fleet.distributed_allreduce(hung).status is Status.FAIL
    none = nccl(0)
    del none["distributed"]["allreduce"]
    assert fleet.distributed_allreduce(none).status is Status.ERROR


# ------------------------------------------------------------------------------------- launch, arithmetic, data

def test_rank_place_from_torchrun_and_from_srun():
    env = launch.from_environ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "MASTER_ADDR": "n1",
                               "MASTER_PORT": "1234", "TORCHELASTIC_RUN_ID": "x", "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher,
            env.agent_store) == (3, 8, 3, "n1", 1234, "torchrun", True)
    env = launch.from_environ({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1",
                               "SLURM_STEP_NODELIST": "gpu[07-14]"})
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.master_port, env.launcher) == \
        (5, 16, 1, "gpu07", launch.DEFAULT_PORT, "slurm")
    assert len(env.notes) == 2   # both defaults are said, not silently assumed


@pytest.mark.parametrize("environ,why", [
    ({}, "needs a launcher"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "expected 0 to 1"),
    ({"RANK": "x", "WORLD_SIZE": "2"}, "expected a whole number"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "MASTER_ADDR"),
])
def test_bad_launch_environment_is_bad_input(environ, why):
    with pytest.raises(InputError, match=why):
        launch.from_environ(environ)


def test_device_ordinal_rules():
    assert launch.device_ordinal(3, 8)[0] == 3
    assert launch.device_ordinal(3, 1)[0] == 0          # srun --gpus-per-task=1
    assert launch.device_ordinal(3, 2)[0] is None       # past the visible devices
    assert launch.device_ordinal(0, 0)[0] is None


def test_nccl_tests_bus_bandwidth_definition():
    assert allreduce.bus_factor(2) == 1.0 and allreduce.bus_factor(8) == 1.75
    row = allreduce.figures(1 << 30, [0.02, 0.01, 0.03], 8)       # median 0.02 s
    assert row["algbw_gbps"] == pytest.approx((1 << 30) / 0.02 / 1e9)
    assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * 1.75)
    assert allreduce.sizes(1 << 20, 64 << 10) == [64 << 10, 256 << 10, 1 << 20]


def test_interconnect_links_cite_sources_and_match_the_profile_schema():
    data = refdata.load("interconnect")
    assert tuple(data["links"]) == INTERCONNECT_LINKS
    for name, row in data["links"].items():
        assert row["source"].startswith("https://") and row["gbps"] > 0, name
    assert 0 < data["levels"]["fail_fraction"] < data["levels"]["warn_fraction"] < 1


def test_an_unknown_link_in_a_profile_is_bad_input(tmp_path, capsys):
    p = tmp_path / "p.yaml"
    p.write_text("kind: machine\ndescription: x\nextends: [cpu-ci]\nmachine:\n  interconnect:\n"
                 "    intra_node: nvlink-9000\n")
    code = main(["check", "--profile", str(p), "--facts", str(tmp_path / "none.json")])
    err = capsys.readouterr().err
    assert code == 2 and "nvlink-9000" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,why", [
    (["--facts", "f.json"], "cannot judge a saved snapshot"),
    ([], "needs a launcher"),
])
def test_distributed_bad_usage_exits_2_with_one_line(monkeypatch, capsys, argv, why):
    for k in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    code = main(["check", "--distributed", "--profile", "cpu-ci", *argv])
    err = capsys.readouterr().err
    assert code == 2 and why in err and len(err.strip().splitlines()) == 1


def test_doctor_start_up_does_not_import_torch():
    code = ("import sys, doctor.cli; doctor.cli.build_parser(); import doctor.session, doctor.distributed.driver, "
            "doctor.distributed.render, doctor.checks.fleet; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


def test_cross_rank_checks_have_what_why_fix():
    from doctor.registry import Registry

    reg = Registry()
    reg.add_from(fleet)
    assert sorted(reg.checks) == sorted(fleet.CHECKS)
    for spec in reg.checks.values():
        assert spec.doc.get("why") and spec.doc.get("fix"), spec.id
