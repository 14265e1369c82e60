"""doctor validate: the whole CPU path end to end (as CI runs it), and the arithmetic, budget, NVML dump and
GPU orchestration on recorded or literal inputs (no GPU here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from doctor.redact import Ids, redact
from doctor.validate import analysis, phases
from doctor.validate.flow import Clock, PhaseError, Run
from doctor.validate.stats import error_summary, relative_error, spread
from doctor.validate.worker import matmul_sweep

ROOT = Path(__file__).resolve().parents[1]
FAKE_NVML = str(Path(__file__).parent / "fakes" / "nvml")
FILES = {"facts.json", "check.json", "check-jobs.json", "bench-runs.json", "sweep.json", "vram.json", "nvml.json",
         "validation.json", "summary.md", "log.txt"}


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    """`python benchmarks/validate_gpu.py --device cpu`, the command CI and a user without a GPU run."""
    out = tmp_path_factory.mktemp("validate")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "validate_gpu.py"), "--device", "cpu",
                           "--output", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=FAKE_NVML, FAKE_NVML="partial"))
    wall = time.monotonic() - t0
    folders = list(out.iterdir())
    return done, wall, folders


def test_cpu_run_completes_within_a_minute_and_writes_every_file(cpu_run):
    done, wall, folders = cpu_run
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(folders) == 1 and folders[0].name.startswith("cpu-")
    assert {p.name for p in folders[0].iterdir()} == FILES
    assert wall < 90, f"the CPU path took {wall:.0f} s"   # about 45 s on a quiet 2-core machine
    record = json.loads((folders[0] / "validation.json").read_text())
    assert {n: p["status"] for n, p in record["phases"].items()} == {
        n: "ok" for n in ("nvml-before", "facts", "check", "jobs", "bench", "sweep", "vram", "nvml-after")}
    assert record["device"] == "cpu" and record["schema"] == "doctor.validate/1"
    assert record["bench"]["runs"] == 2 and len(json.loads((folders[0] / "bench-runs.json").read_text())) == 2
    assert set(record["sweep_vs_quick"]) == {"fp16", "bf16"}
    assert [r["status"] for r in record["vram"]] == ["ran (not measured)"] * len(phases.plan(True, None))
    assert "a800-80g" in record["checks"]      # the machine profile matching the (fake) GPUs NVML lists
    assert "a800-80g + qwen3-vl-32b-qlora" in record["checks"]
    # the HVP correctness checks are judged on the CPU too; speed and spread are not
    judged = {f["what"]: f["ok"] for f in record["findings"]}
    assert judged["CPU: the two HVP methods agree (<= 0.001)"] is True
    assert not any("spread" in w for w in judged)


def test_cpu_run_records_nvml_fields_and_redacts_gpu_identifiers(cpu_run):
    _, _, folders = cpu_run
    nvml = json.loads((folders[0] / "nvml.json").read_text())
    before = nvml["before"]
    assert "nvmlDeviceGetMemoryInfo" in before["not_supported"]      # the fake's GPU 1
    assert before["probe"]["devices"][1]["memory"] is None
    calls = {c["call"] for c in before["calls"]}
    assert {"nvmlDeviceGetUUID", "nvmlDeviceGetRemappedRows", "nvmlDeviceGetEccMode"} <= calls
    text = "".join(p.read_text() for p in folders[0].iterdir())
    assert "GPU-fake" in text        # not a UUID: kept
    assert "00000000:17:00.0" not in text and "<pci-1>" in text     # PCI bus ids are replaced, consistently
    summary = (folders[0] / "summary.md").read_text()
    assert "## Did not match expectations" in summary and "| vram | ok |" in summary


def test_spread_error_and_ratio_arithmetic():
    assert spread([100.0, 103.0, 97.0]) == pytest.approx(0.06)
    assert spread([5.0]) is None and spread([None, 2.0]) is None
    assert relative_error(110, 100) == pytest.approx(0.10) and relative_error(90, 100) == pytest.approx(-0.10)
    assert relative_error(1, None) is None and relative_error(1, 0) is None
    assert error_summary([0.1, -0.3, None]) == {"rows": 2, "mean_abs": pytest.approx(0.2), "max_abs": pytest.approx(0.3)}


def _bench_doc(tflops: float, disagreement: float, wall: float) -> dict:
    row = {"key": "GPU-aaaa", "label": "GPU 0 (NVIDIA H100 80GB HBM3)", "name": "NVIDIA H100 80GB HBM3",
           "reference": "H100 SXM5 80GB", "matmul_tflops": {"fp16": tflops, "bf16": tflops},
           "matmul_fraction_of_peak": {"fp16": tflops / 989.4}, "bandwidth_gbps": 3000.0,
           "bandwidth_fraction_of_spec": 3000 / 3350, "hvp_rel_disagreement": disagreement,
           "hvp_known_hessian_rel_error": {"double_backward": 1e-15, "forward_over_reverse": 2e-15}}
    return {"figures": [row], "wall_s": wall,
            "bench": {"devices": [{"key": "GPU-aaaa", "matmul": {"duration_s": 3.0}}]}}


def _vram_row(rid: str, estimate: int, context: int, reserved: int | None, outside: int | None) -> dict:
    measured = None if reserved is None else {"reserved_peak_bytes": reserved, "outside_allocator_bytes": outside,
                                              "nvml_peak_bytes": reserved + outside}
    return {"spec": {"id": rid, "model": "opt-125m", "method": "full"},
            "estimate": {"peak_bytes": estimate, "breakdown": {"cuda_context": context}, "peak_phase": "x"},
            "measured": measured, "result": {}}


def test_analysis_on_literal_gpu_documents():
    gib, mib = 2**30, 2**20
    docs = {"bench_runs": [_bench_doc(700, 1e-6, 20), _bench_doc(714, 2e-6, 22), _bench_doc(721, 1e-6, 21)],
            "sweep": [{"dtype": "fp16", "best_median": {"shape": [8192, 8192, 8192], "tflops": 760.0},
                       "best_call": {"shape": [8192, 8192, 8192], "tflops": 780.0}, "shapes": 80, "duration_s": 40}],
            "vram": [_vram_row("a", 10 * gib, 426 * mib, 9 * gib, 500 * mib),      # reserved +5.3%
                     _vram_row("b", 20 * gib, 426 * mib, 22 * gib, 500 * mib),     # reserved -10.9%
                     _vram_row("c", 1 * gib, 426 * mib, None, None)],
            "facts": {}, "nvml_before": None}
    record = analysis.analyse({"device": "cuda", "budget_s": 480, "wall_s": 400, "gpu0_uuid": "GPU-aaaa"}, docs)
    fp16 = record["bench"]["devices"]["GPU-aaaa"]["metrics"]["matmul_tflops.fp16"]
    assert fp16["median"] == 714 and fp16["spread"] == pytest.approx(21 / 714)
    sq = record["sweep_vs_quick"]["fp16"]
    assert sq["quick_over_sweep"] == pytest.approx(714 / 760) and sq["quick_over_best_call"] == pytest.approx(714 / 780)
    rows = {r["id"]: r for r in record["vram"]}
    assert rows["a"]["error_reserved"] == pytest.approx((10 * gib - 426 * mib) / (9 * gib) - 1)
    assert rows["a"]["error_nvml"] == pytest.approx(10 * gib / (9 * gib + 500 * mib) - 1)
    assert rows["c"]["status"] == "ran (not measured)" and rows["c"]["error_nvml"] is None
    errs = record["vram_errors"]["nvml"]
    assert errs["rows"] == 2 and errs["max_abs"] == pytest.approx(abs(20 * gib / (22 * gib + 500 * mib) - 1))
    judged = {f["what"]: f["ok"] for f in record["findings"]}
    assert judged["fp16: quick bench >= 95% of the sweep's best"] is False           # 93.9%
    assert judged["GPU 0 (NVIDIA H100 80GB HBM3): matmul_tflops.fp16 spread over 3 runs <= 3%"] is True
    assert judged["VRAM estimate vs NVML peak: max |error| <= 10%"] is False          # 11.0%
    assert judged["the run finished within its time budget"] is True


def test_consistency_names_a_probe_that_disagrees_with_the_raw_nvml_dump():
    dev = {"nvml_index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "uuid": "GPU-a",
           "memory": {"total_bytes": 85520809984}}
    facts = {"gpu": {"devices": [dev]},
             "torch": {"runtime": {"devices": [{"ordinal": 0, "uuid": "a", "compute_capability": "9.0"}]}}}
    assert analysis.consistency(facts, {"probe": {"devices": [dict(dev)]}}, []) == []
    wrong = dict(dev, compute_capability="8.0")
    problems = analysis.consistency(facts, {"probe": {"devices": [wrong]}}, [])
    assert problems == ["GPU 0: facts compute_capability '9.0', NVML dump '8.0'"]
    lost = {"gpu": {"devices": [dev]}, "torch": {"runtime": {"devices": [{"ordinal": 0, "uuid": "b"}]}}}
    assert "matches no NVML GPU" in analysis.consistency(lost, None, [])[0]


def test_sweep_is_coarse_to_fine_and_stops_at_its_budget():
    def measure(shape, dtype):   # a device that likes m = 12288 and n = k = 8192 best
        m, n, k = shape
        return {"tflops": 500 - abs(m - 12288) / 100 - abs(n - 8192) / 100 - abs(k - 8192) / 100,
                "tflops_best_call": 501.0, "iterations": 10, "rel_error": 1e-3}

    out = matmul_sweep.sweep(measure, "bf16", budget_s=1e9, grid=matmul_sweep.GPU_GRID)
    assert out["best_median"]["shape"] == [12288, 8192, 8192] and out["stopped_by_budget"] is False
    assert out["shapes"] == len({tuple(r["shape"]) for r in out["rows"]})      # no shape measured twice
    ticks = iter(range(10**6))
    short = matmul_sweep.sweep(measure, "bf16", budget_s=5, grid=matmul_sweep.GPU_GRID, clock=lambda: next(ticks))
    assert short["stopped_by_budget"] is True and short["shapes"] == 5
    assert short["rows"][0]["shape"] == [16384, 16384, 16384]                    # largest products first


def test_a_phase_past_the_budget_is_skipped_and_a_failing_one_does_not_stop_the_run(tmp_path):
    now = [0.0]
    run = Run(Clock(100, now=lambda: now[0]), stream=open(os.devnull, "w"))
    run.open(tmp_path / "out")

    def failing(_):
        raise PhaseError("it broke")

    assert run.phase("one", failing, 30) is None and run.phases["one"]["status"] == "error"
    assert run.phase("two", lambda t: t, 30, reserve=20) == 30
    now[0] = 97.0
    assert run.phase("three", lambda t: t, 30) is None
    assert run.phases["three"]["status"] == "skipped" and "budget" in run.phases["three"]["message"]
    run.close()
    assert "three: skipped" in (tmp_path / "out" / "log.txt").read_text()


def test_a_hung_nvml_is_a_timeout_finding(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", FAKE_NVML)
    monkeypatch.setenv("FAKE_NVML", "hang")
    run = Run(Clock(100), stream=open(os.devnull, "w"))
    t0 = time.monotonic()
    with pytest.raises(PhaseError) as err:
        phases.nvml(run, 3.0)
    assert err.value.timed_out and time.monotonic() - t0 < 10


FAKE_WORKER = '''
import argparse, json, sys
ap = argparse.ArgumentParser()
for a in ("--setups", "--device", "--bench-worker-dir", "--only"):
    ap.add_argument(a)
args = ap.parse_args()
with open(sys.argv[0] + ".calls", "a") as fh:
    fh.write(args.only + "\\n")
print(json.dumps({"event": "versions", "data": {"transformers": "9.9"}}))
if args.only.endswith("-gc"):
    sys.exit(3)   # a crash: the row says so, the others go on
if args.only == "opt-125m-hvp":
    import time
    time.sleep(60)  # hangs
print(json.dumps({"event": "setup", "id": args.only, "data": {"measured": {
    "reserved_peak_bytes": 2 ** 30, "outside_allocator_bytes": 500 * 2 ** 20, "nvml_peak_bytes": 2 ** 30 + 500 * 2 ** 20}}}))
'''


def test_gpu_vram_orchestration_one_process_per_setup(tmp_path, monkeypatch):
    """The cuda branch without a GPU: a stand-in worker answers for each set-up it is started for."""
    (tmp_path / "vram_worker.py").write_text(FAKE_WORKER)
    monkeypatch.setattr(phases, "WORKERS", tmp_path)
    monkeypatch.setattr(phases, "ROW_CAP_S", 4.0)              # a hung set-up is killed at its own cap
    monkeypatch.setattr(phases, "ROW_MIN_S", 1.0)
    run = Run(Clock(600), stream=open(os.devnull, "w"))
    run.open(tmp_path / "out")
    facts = {"torch": {"installed": True}, "python": {"distributions": {"peft": "0.17"}}}
    gpu0 = {"uuid": "GPU-x", "compute_capability": "9.0", "memory": {"total_bytes": 24 * 2**30}}
    state = phases.State(python=sys.executable, device="cuda", runs=1, facts=facts, usable=True, gpu0=gpu0)
    summary = phases.vram(run, state, 500)
    rows = {r["spec"]["id"]: r for r in run.raw["vram.json"]["rows"]}
    assert rows["opt-1.3b-qlora-r16-gc"]["skipped"] == "bitsandbytes not installed in the job's environment"
    too_big = [i for i, r in rows.items() if (r.get("skipped") or "").startswith("estimated")]
    assert too_big and all(rows[i]["estimate"]["peak_bytes"] > 0.9 * 24 * 2**30 for i in too_big)
    calls = (tmp_path / "vram_worker.py.calls").read_text().split()
    assert len(calls) == len(set(calls)) == summary["ran"] + summary["errors"]
    assert rows["opt-125m-full-adamw"]["measured"]["reserved_peak_bytes"] == 2**30
    assert "the worker exited 3" in rows["opt-125m-full-adamw-gc"]["error"]
    assert "timed out" in rows["opt-125m-hvp"]["error"]          # hung on its own: killed at the row's cap
    assert run.raw["vram.json"]["versions"] == {"transformers": "9.9"}


def test_a_setup_cut_by_the_budget_is_skipped_not_failed(tmp_path, monkeypatch):
    (tmp_path / "vram_worker.py").write_text(FAKE_WORKER)
    monkeypatch.setattr(phases, "WORKERS", tmp_path)
    monkeypatch.setattr(phases, "ROW_MIN_S", 0.5)
    run = Run(Clock(3.0), stream=open(os.devnull, "w"))     # far less than the row's own cap
    run.open(tmp_path / "out")
    facts = {"torch": {"installed": True}, "python": {"distributions": {"peft": "0.17"}}}
    gpu0 = {"uuid": "GPU-x", "compute_capability": "9.0", "memory": {"total_bytes": 80 * 2**30}}
    state = phases.State(python=sys.executable, device="cuda", runs=1, facts=facts, usable=True, gpu0=gpu0)
    phases.vram(run, state, 3.0)
    rows = {r["spec"]["id"]: r for r in run.raw["vram.json"]["rows"]}
    cut = [r for r in rows.values() if "budget ran out" in (r.get("skipped") or "")]
    assert cut and not any("timed out" in (r.get("error") or "") for r in rows.values())


def test_ids_are_replaced_consistently_and_only_once():
    ids = Ids()
    doc = {"uuid": "GPU-0b2a7e63-93a4-5a9a-1c2e-8f5b5c1d2e3f", "bus": "00000000:18:00.0", "serial": "1650123456789",
           "again": "pinned to GPU-0b2a7e63-93a4-5a9a-1c2e-8f5b5c1d2e3f on 00000000:18:00.0"}
    out = redact(doc, names=[], ids=ids)
    assert out == {"uuid": "GPU-<uuid-1>", "bus": "<pci-1>", "serial": "<redacted>",
                   "again": "pinned to GPU-<uuid-1> on <pci-1>"}
    assert redact(out, names=[], ids=ids) == out
