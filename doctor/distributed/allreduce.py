"""All-reduce bus bandwidth, with nccl-tests' definitions (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md):
algbw = bytes / time; busbw = algbw * 2(n-1)/n for all-reduce over n ranks, the figure comparable with a link's
one-direction speed whatever n is. Message sizes are swept by 4x up to a large size; each size gets warm-up
iterations, then timed ones, and the median time is used.

On CPU the test runs in this process over the gloo control group (gloo honours the group's timeout). On GPUs the
NCCL run happens in a child process per rank (doctor.distributed.nccl_worker): a hung NCCL collective can only be
escaped by the watchdog or a communicator abort, which leaves the process unusable, so the child is killed at its
deadline and the hang is a finding. The NCCL path is written but has not been run on GPUs."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

GLOO_MAX_BYTES = 16 << 20        # CPU/gloo: loopback or Ethernet, small sizes keep CI fast
NCCL_MAX_BYTES = 1 << 30         # GPUs: 1 GiB, where busbw has flattened on NVLink and InfiniBand alike
MIN_BYTES = 64 << 10
WARMUP, ITERS = 2, 5


def sizes(max_bytes: int, min_bytes: int = MIN_BYTES) -> list[int]:
    """Message sizes in bytes, by 4x from `min_bytes` up to and including `max_bytes` (multiples of 4: float32)."""
    out, size = [], min_bytes
    while size < max_bytes:
        out.append(size)
        size *= 4
    return out + [max_bytes]


def bus_factor(world_size: int) -> float:
    """nccl-tests' all-reduce bus factor 2(n-1)/n."""
    return 2.0 * (world_size - 1) / world_size


def figures(size_bytes: int, times_s: list[float], world_size: int) -> dict[str, Any]:
    """One size's row: median time, algbw and busbw in GB/s (1 GB = 1e9 B)."""
    t = statistics.median(times_s)
    algbw = size_bytes / t / 1e9 if t > 0 else None
    return {"bytes": size_bytes, "iterations": len(times_s), "median_s": t,
            "algbw_gbps": algbw, "busbw_gbps": algbw * bus_factor(world_size) if algbw is not None else None}


def summary(rows: list[dict[str, Any]], backend: str, world_size: int) -> dict[str, Any]:
    """The section judged by distributed.allreduce: every size, and the busbw at the largest size."""
    last = rows[-1] if rows else {}
    return {"status": "ok", "backend": backend, "world_size": world_size, "sizes": rows,
            "bytes": last.get("bytes"), "busbw_gbps": last.get("busbw_gbps"), "algbw_gbps": last.get("algbw_gbps"),
            "warmup": WARMUP, "iterations": ITERS,
            "definition": "nccl-tests: algbw = bytes/time, busbw = algbw * 2(n-1)/n; median of the timed iterations"}


def run_in_process(dist: Any, world_size: int, max_bytes: int = GLOO_MAX_BYTES, device: str = "cpu") -> dict[str, Any]:
    """The sweep over the default process group, in this process (gloo on CPU; the NCCL child uses it too)."""
    import torch

    rows = []
    for size in sizes(max_bytes):
        x = torch.ones(size // 4, dtype=torch.float32, device=device)
        times = []
        for i in range(WARMUP + ITERS):
            dist.barrier()
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            if device != "cpu":
                torch.cuda.synchronize()
            if i >= WARMUP:
                times.append(time.perf_counter() - t0)
        rows.append(figures(size, times, world_size))
    return summary(rows, "nccl" if device != "cpu" else "gloo", world_size)


def run_nccl_child(rank: int, world_size: int, ordinal: int, addr: str, port: int, timeout_s: float,
                   max_bytes: int = NCCL_MAX_BYTES) -> dict[str, Any]:
    """This rank's part of the NCCL sweep in a child process, killed at `timeout_s`: a hang is reported, never
    waited on. (Not validated on GPUs yet.)"""
    spec = {"rank": rank, "world_size": world_size, "ordinal": ordinal, "addr": addr, "port": port,
            "timeout_s": timeout_s, "max_bytes": max_bytes}
    env = dict(os.environ, DOCTOR_NCCL_SPEC=json.dumps(spec))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "doctor.distributed.nccl_worker"], env=env, text=True,
                              capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "hung", "backend": "nccl", "world_size": world_size,
                "reason": f"the NCCL all-reduce did not finish in {timeout_s:g} s; its process was killed"}
    took = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"status": "error", "backend": "nccl", "world_size": world_size,
                "reason": f"the NCCL all-reduce process exited {proc.returncode} after {took:.1f} s: {tail}"}
    try:
        return json.loads(lines[-1])
    except ValueError:
        return {"status": "error", "backend": "nccl", "world_size": world_size,
                "reason": "the NCCL all-reduce process printed no readable result"}
