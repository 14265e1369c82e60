"""doctor validate's matmul sweep: the best fp16 / bf16 throughput this device reaches over many shapes,
measured by the same code as `doctor bench` (rotating operands, CUDA events, medians), in a time budget.

The search is coarse-to-fine, in the spirit of the Maximum Achievable Matmul FLOPS finder
(github.com/stas00/ml-engineering, compute/accelerator/benchmarks): a cube of sizes, then a line of m at the
best n and k, then single steps around the best shape. Every shape tried is reported with its median and its
best single call. Standalone (imports nothing of doctor); prints one JSON line per dtype.
"""
import argparse
import itertools
import json
import sys
import time

GPU_GRID = {"cube": (4096, 8192, 12288, 16384), "line": (1024, 20480, 1024), "steps": (256, 512, 1024, 2048)}
CPU_GRID = {"cube": (64, 128, 256), "line": (32, 320, 64), "steps": (32, 64)}


def plan_cube(grid):
    """The cube's shapes, largest first (large products are where the best figures lie)."""
    return sorted(itertools.product(grid["cube"], repeat=3), key=lambda s: (-s[0] * s[1] * s[2], s))


def plan_line(grid, best):
    lo, hi, step = grid["line"]
    return [(m, best[1], best[2]) for m in range(lo, hi + 1, step)]


def plan_steps(grid, best):
    out = []
    for axis, delta, sign in itertools.product(range(3), grid["steps"], (-1, 1)):
        shape = list(best)
        shape[axis] += sign * delta
        if shape[axis] > 0:
            out.append(tuple(shape))
    return out


def sweep(measure, dtype, budget_s, grid, clock=time.monotonic):
    """Measure shapes until the budget runs out; `measure(shape, dtype)` returns bench_matmul's record
    (or raises MemoryError-like errors, which skip the shape)."""
    t0 = clock()
    rows, seen, skipped = [], set(), []
    stopped = False

    def run(shapes):
        nonlocal stopped
        for shape in shapes:
            if shape in seen:
                continue
            if clock() - t0 > budget_s:
                stopped = True
                return
            seen.add(shape)
            try:
                r = measure(shape, dtype)
            except Exception as exc:  # out of memory for this shape: the others still count
                skipped.append({"shape": list(shape), "error": ("%s: %s" % (type(exc).__name__, exc))[:200]})
                continue
            rows.append({"shape": list(shape), "tflops": r["tflops"], "tflops_best_call": r["tflops_best_call"],
                         "iterations": r["iterations"], "rel_error": r["rel_error"]})

    def best():
        return tuple(max(rows, key=lambda r: r["tflops"])["shape"]) if rows else None

    run(plan_cube(grid))
    if best():
        run(plan_line(grid, best()))
    if best():
        run(plan_steps(grid, best()))
    out = {"dtype": dtype, "shapes": len(rows), "stopped_by_budget": stopped, "duration_s": round(clock() - t0, 3),
           "budget_s": budget_s, "grid": {k: list(v) for k, v in grid.items()}, "skipped": skipped, "rows": rows}
    if rows:
        top = max(rows, key=lambda r: r["tflops"])
        top_call = max(rows, key=lambda r: r["tflops_best_call"])
        out["best_median"] = {"shape": top["shape"], "tflops": top["tflops"]}
        out["best_call"] = {"shape": top_call["shape"], "tflops": top_call["tflops_best_call"]}
    return out


def confirm(measure_at, dtype, rows, quick_shapes, top=3):
    """Re-measure the sweep's best shapes and the quick bench's own shapes one after the other, with the quick
    bench's timing: the best of many short measurements is biased upward, a paired re-measurement is not."""
    best = [tuple(r["shape"]) for r in sorted(rows, key=lambda r: -r["tflops"])[:top]]
    out = {"sweep": [], "quick": []}
    for label, shapes in (("sweep", best), ("quick", [tuple(s) for s in quick_shapes])):
        for shape in shapes:
            try:
                r = measure_at(shape, dtype)
            except Exception as exc:
                out[label].append({"shape": list(shape), "error": ("%s: %s" % (type(exc).__name__, exc))[:200]})
                continue
            out[label].append({"shape": list(shape), "tflops": r["tflops"]})
    for label in ("sweep", "quick"):
        done = [r for r in out[label] if "tflops" in r]
        out[label + "_best"] = max(done, key=lambda r: r["tflops"]) if done else None
    if out["sweep_best"] and out["quick_best"]:
        out["quick_over_sweep"] = out["quick_best"]["tflops"] / out["sweep_best"]["tflops"]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=("cuda", "cpu"), required=True)
    ap.add_argument("--dtypes", default="fp16,bf16")
    ap.add_argument("--budget", type=float, required=True, help="seconds for all dtypes together")
    ap.add_argument("--per-shape", type=float, default=None, help="seconds of timed calls per shape")
    ap.add_argument("--bench-worker-dir", required=True)
    args = ap.parse_args(argv)
    sys.path.insert(0, args.bench_worker_dir)
    import torch

    import bench_matmul

    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    grid = GPU_GRID if device.type == "cuda" else CPU_GRID
    per_shape = args.per_shape or (0.05 if device.type == "cuda" else 0.01)
    l2 = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) if device.type == "cuda" else 0
    gen = torch.Generator(device=device).manual_seed(0)

    def measure_at(shape, name, budget_s):
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        m, n, k = shape
        if free is not None and 5 * max(m * k, k * n, m * n) * 2 > 0.5 * free:
            raise MemoryError("shape needs more than half the free memory")
        failure = None
        try:
            r = bench_matmul.measure(shape, bench_matmul.DTYPES[name], device, budget_s, l2, free, gen)
        except Exception as exc:   # keep only the message: the traceback would hold the shape's tensors
            failure = "%s: %s" % (type(exc).__name__, exc)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if failure:
            raise RuntimeError(failure[:300])
        r["tflops_best_call"] = bench_matmul.gemm_flops(m, n, k) / r["min_s"] / 1e12
        return r

    dtypes = [d for d in args.dtypes.split(",") if d]
    quick_shapes = bench_matmul.GPU_SHAPES if device.type == "cuda" else bench_matmul.CPU_SHAPES
    quick_budget = 0.15 if device.type == "cuda" else 0.05     # what doctor bench gives each of its shapes
    for name in dtypes:
        share = args.budget / len(dtypes)
        data = sweep(lambda shape, dtype: measure_at(shape, dtype, per_shape), name, 0.8 * share, grid)
        data["confirm"] = confirm(lambda shape, dtype: measure_at(shape, dtype, quick_budget), name,
                                  data["rows"], quick_shapes)
        sys.stdout.write(json.dumps({"event": "sweep", "data": data}) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
