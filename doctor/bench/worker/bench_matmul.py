"""Dense matmul throughput (fp16, bf16) with a product check against a float64 reference."""
import math

import torch

from bench_timing import calibrate, summary, synchronize, time_calls

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# Quick search: square GEMMs large enough to fill every tile of the chip. The exhaustive sweep in
# benchmarks/matmul_sweep.py measures how close the best of these gets to the best shape overall.
GPU_SHAPES = [(n, n, n) for n in (4096, 6144, 8192, 12288, 16384)]
CPU_SHAPES = [(n, n, n) for n in (128, 256)]
CHECK_ROWS, CHECK_COLS = 16, 256


def gemm_flops(m, n, k):
    """Floating-point operations of an (m x k) @ (k x n) product: one multiply and one add per term."""
    return 2 * m * n * k


def rotating_sets(set_bytes, l2_bytes, free_bytes):
    """How many operand sets to cycle through so no call finds its inputs in L2: together they span
    at least three L2 caches; at least 2, and at most what 40% of the free memory holds."""
    want = max(2, math.ceil(3 * (l2_bytes or 0) / max(set_bytes, 1)) + 1)
    room = int(0.4 * free_bytes // max(set_bytes, 1)) if free_bytes else want
    return max(1, min(want, room, 64))


def product_error(a, b, c, rows, cols):
    """Error of `c = a @ b` on a `rows` x `cols` block, against float64 on the CPU: (Frobenius relative
    error, largest element error over the reference's RMS). Independent of the device under test."""
    ref = a[rows].double().cpu() @ b[:, cols].double().cpu()
    got = c[rows][:, cols].double().cpu()
    diff = got - ref
    ref_norm = ref.norm().item()
    rms = ref_norm / math.sqrt(ref.numel())
    if not math.isfinite(diff.norm().item()):
        return float("inf"), float("inf")
    return diff.norm().item() / ref_norm, diff.abs().max().item() / rms


def measure(shape, dtype, device, budget_s, l2_bytes, free_bytes, gen):
    m, n, k = shape
    itemsize = torch.empty((), dtype=dtype).element_size()
    sets = rotating_sets((m * k + k * n) * itemsize, l2_bytes, free_bytes)
    # random normal inputs: zeros or constants would let the hardware skip work and flatter the figure
    a_list = [torch.randn(m, k, dtype=dtype, device=device, generator=gen) for _ in range(sets)]
    b_list = [torch.randn(k, n, dtype=dtype, device=device, generator=gen) for _ in range(sets)]
    out = torch.empty(m, n, dtype=dtype, device=device)

    def call(i):
        torch.matmul(a_list[i % sets], b_list[i % sets], out=out)

    iters = calibrate(call, device, warmup=3, budget_s=budget_s, lo=10, hi=200)
    stats = summary(time_calls(call, iters, device))
    call(0)
    synchronize(device)
    pick = torch.Generator().manual_seed(m)
    rows, cols = torch.randperm(m, generator=pick)[:CHECK_ROWS], torch.randperm(n, generator=pick)[:CHECK_COLS]
    fro, worst = product_error(a_list[0], b_list[0], out, rows.to(out.device), cols.to(out.device))
    result = {"shape": [m, n, k], "tflops": gemm_flops(m, n, k) / stats["median_s"] / 1e12, "rotating_sets": sets,
              "rel_error": fro, "max_error_rms": worst, **stats}
    del a_list, b_list, out
    return result


def run(device, dtype_names, shapes, budget_s, progress):
    """Best shape per dtype (by median TFLOPS), every shape tried, and the product check of each."""
    props = torch.cuda.get_device_properties(device) if device.type == "cuda" else None
    l2 = getattr(props, "L2_cache_size", 0) if props else 0
    gen = torch.Generator(device=device).manual_seed(0)
    out = {}
    for name in dtype_names:
        tried = []
        for shape in shapes:
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
            m, n, k = shape
            need = 5 * max(m * k, k * n, m * n) * 2  # two operand sets and the output, 2-byte elements
            if free is not None and need > 0.5 * free:
                continue
            progress("matmul", "%s %dx%dx%d" % ((name,) + tuple(shape)))
            tried.append(measure(shape, DTYPES[name], device, budget_s, l2, free, gen))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        best = max(tried, key=lambda r: r["tflops"])
        out[name] = {**best, "search": [{"shape": r["shape"], "tflops": r["tflops"], "rel_error": r["rel_error"],
                                         "max_error_rms": r["max_error_rms"]} for r in tried],
                     "rel_error": max(r["rel_error"] for r in tried),
                     "max_error_rms": max(r["max_error_rms"] for r in tried)}
    return out
