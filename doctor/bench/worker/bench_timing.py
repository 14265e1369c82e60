"""Timing for the benchmark worker: CUDA events on a GPU, perf_counter on the CPU; medians, not means."""
import math
import statistics
import time

import torch


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, n, device):
    """Seconds taken by each of `n` calls `fn(i)`, issued back to back.

    On a GPU a pair of CUDA events brackets each call in the stream, so the queue stays full and host
    overhead only counts where it starves the GPU; on the CPU each call is timed with perf_counter.
    """
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for i in range(n):
            starts[i].record()
            fn(i)
            ends[i].record()
        torch.cuda.synchronize(device)
        return [s.elapsed_time(e) / 1e3 for s, e in zip(starts, ends)]
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def calibrate(fn, device, warmup, budget_s, lo, hi):
    """Warm up, then pick an iteration count that fills about `budget_s` (at least lo, at most hi)."""
    for i in range(warmup):
        fn(i)
    synchronize(device)
    t0 = time.perf_counter()
    fn(0)
    synchronize(device)
    each = max(time.perf_counter() - t0, 1e-7)
    return int(min(hi, max(lo, math.ceil(budget_s / each))))


def summary(times):
    """Median and spread of per-call times (the spread is (p90 - p10) / median)."""
    ordered = sorted(times)
    med = statistics.median(ordered)
    p10 = ordered[int(0.1 * (len(ordered) - 1))]
    p90 = ordered[int(math.ceil(0.9 * (len(ordered) - 1)))]
    return {"median_s": med, "min_s": ordered[0], "max_s": ordered[-1], "iterations": len(ordered),
            "spread": (p90 - p10) / med if med > 0 else None}
