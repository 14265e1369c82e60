"""Performance record of `doctor bench` on a real GPU (issue 5's figures), written to benchmarks/results/.

In one run: the quick bench `--runs` times (its wall time and run-to-run spread), then an exhaustive shape
sweep of the same matmul code (how close the quick search's best gets to the sweep's best), plus the HVP
methods' time ratios and agreement and the copy bandwidth against the datasheet.

    python benchmarks/gpu_bench.py                       # on the GPU machine: every visible GPU's first
    python benchmarks/gpu_bench.py --device cpu --runs 2 --sweep-max 384 --sweep-step 128   # smoke test
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "doctor" / "bench" / "worker"))


def quick_runs(device: str, runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "doctor", "bench", "--device", device, "--format", "json"],
                              capture_output=True, text=True, cwd=ROOT)
        doc = json.loads(done.stdout)
        doc["wall_s"] = time.monotonic() - t0
        out.append(doc)
    return out


def sweep(device_name: str, dtypes: list[str], step: int, top: int, budget_s: float) -> dict:
    import torch

    import bench_matmul

    device = torch.device(device_name)
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    l2 = getattr(props, "L2_cache_size", 0) if props else 0
    gen = torch.Generator(device=device).manual_seed(0)
    sizes = list(range(step, top + 1, step))
    out = {}
    for name in dtypes:
        rows = []
        for shape in itertools.product(sizes, sizes, sizes):
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
            try:
                r = bench_matmul.measure(shape, bench_matmul.DTYPES[name], device, budget_s, l2, free, gen)
            except torch.OutOfMemoryError:
                continue
            rows.append({"shape": r["shape"], "tflops": r["tflops"]})
        best = max(rows, key=lambda r: r["tflops"])
        out[name] = {"shapes": len(rows), "best": best, "grid": f"{step}..{top} step {step}, m x n x k"}
    return out


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "host_cpu": platform.processor() or platform.machine()}
    if device == "cuda":
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        env.update(gpu=pynvml.nvmlDeviceGetName(h), driver=pynvml.nvmlSystemGetDriverVersion(),
                   power_limit_w=pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000,
                   max_sm_clock_mhz=pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM))
    return env


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sweep-step", type=int, default=1024)
    ap.add_argument("--sweep-max", type=int, default=16384)
    ap.add_argument("--sweep-budget", type=float, default=0.03, help="seconds of timing per swept shape")
    ap.add_argument("--output", help="default: benchmarks/results/<gpu>-<date>.json")
    args = ap.parse_args()
    runs = quick_runs(args.device, args.runs)
    dtypes = sorted(runs[0]["figures"][0]["matmul_tflops"])
    swept = sweep(args.device, dtypes, args.sweep_step, args.sweep_max, args.sweep_budget)
    record: dict = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "environment": environment(args.device)}
    per_dtype = {}
    for name in dtypes:
        vals = [r["figures"][0]["matmul_tflops"][name] for r in runs]
        per_dtype[name] = {"quick_tflops_runs": vals, "quick_median": statistics.median(vals),
                           "run_to_run_spread": (max(vals) - min(vals)) / statistics.median(vals),
                           "sweep": swept[name], "quick_over_sweep_best": statistics.median(vals) / swept[name]["best"]["tflops"],
                           "fraction_of_peak": [r["figures"][0]["matmul_fraction_of_peak"].get(name) for r in runs]}
    fig = [r["figures"][0] for r in runs]
    record["matmul"] = per_dtype
    record["bench_phase_wall_s"] = {"runs": [r["wall_s"] for r in runs], "median": statistics.median(r["wall_s"] for r in runs),
                                    "inside_workers": [r["bench"]["duration_s"] for r in runs]}
    record["bandwidth"] = {"gbps": [f["bandwidth_gbps"] for f in fig], "fraction_of_spec": [f["bandwidth_fraction_of_spec"] for f in fig]}
    record["hvp"] = {m: {"per_s": [f["hvp_per_s"][m] for f in fig], "grad_ratio": [f["hvp_grad_ratio"][m] for f in fig],
                         "peak_bytes": [f["hvp_peak_bytes"][m] for f in fig]} for m in fig[0]["hvp_per_s"]}
    record["hvp"]["rel_disagreement"] = [f["hvp_rel_disagreement"] for f in fig]
    record["hvp"]["workload"] = {k: runs[0]["bench"]["devices"][0]["hvp"]["transformer"][k]
                                 for k in ("model", "parameters", "batch", "sequence", "dtype", "attention")}
    record["verdicts"] = [{r["id"]: r["status"] for r in run["results"]} for run in runs]
    record["last_run"] = runs[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", (record["environment"].get("gpu") or args.device).lower()).strip("-")
    path = Path(args.output or ROOT / "benchmarks" / "results" / f"{slug}-{record['created'][:10]}.json")
    path.write_text(json.dumps(record, indent=2) + "\n")
    summary = {k: record[k] for k in ("bench_phase_wall_s", "bandwidth")}
    summary["matmul"] = {d: {k: v for k, v in m.items() if k != "sweep"} | {"sweep_best": m["sweep"]["best"]}
                         for d, m in per_dtype.items()}
    summary["hvp"] = {k: v for k, v in record["hvp"].items() if k != "workload"}
    print(json.dumps(summary, indent=1))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
