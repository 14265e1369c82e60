"""Device memory bandwidth: a large device-to-device copy, counting the bytes read and written."""
import torch

from bench_timing import calibrate, summary, time_calls


def copy_bytes_per_call(nbytes):
    """A copy reads every byte once and writes it once."""
    return 2 * nbytes


def run(device, nbytes, budget_s, progress):
    progress("bandwidth", "copy %d MiB" % (nbytes >> 20))
    n = nbytes // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_(-1, 1)
    dst = torch.empty_like(src)

    def call(_):
        dst.copy_(src)

    iters = calibrate(call, device, warmup=3, budget_s=budget_s, lo=10, hi=200)
    stats = summary(time_calls(call, iters, device))
    verified = bool(torch.equal(dst, src))
    result = {"bytes": n * 4, "gbps": copy_bytes_per_call(n * 4) / stats["median_s"] / 1e9, "verified": verified,
              **stats}
    del src, dst
    return result
