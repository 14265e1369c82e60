"""Scale benchmark for `doctor clean-cache`'s inventory: a synthetic hub cache of ~100k files in 500 repos
(real layout: blobs, relative snapshot symlinks, refs, a detached revision in every tenth repo), timed
against huggingface_hub's own `scan_cache_dir` on the same cache. Prints one JSON object.

    python benchmarks/clean_cache_scale.py [--repos 500] [--files 200] [--runs 5]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build(hub: Path, repos: int, files: int) -> int:
    """`repos` repos of `files` snapshot files each (one blob per file); returns the files written."""
    written = 0
    for r in range(repos):
        folder = hub / f"models--bench--repo{r:04d}"
        blobs = folder / "blobs"
        blobs.mkdir(parents=True)
        commits = [hashlib.sha1(f"{r}-{v}".encode()).hexdigest() for v in range(2 if r % 10 == 0 else 1)]
        for v, commit in enumerate(commits):
            snap = folder / "snapshots" / commit
            snap.mkdir(parents=True)
            for f in range(files // len(commits)):
                etag = hashlib.sha256(f"{r}-{v}-{f}".encode()).hexdigest()
                (blobs / etag).write_bytes(b"x" * (f % 7 + 1))
                os.symlink(f"../../blobs/{etag}", snap / f"file{f:04d}.bin")
                written += 1
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commits[0])
    return written


def timed(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=500)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from huggingface_hub import __version__ as hf_version, scan_cache_dir

    from doctor.clean.inventory import take

    with tempfile.TemporaryDirectory() as tmp:
        hub = Path(tmp) / "hub"
        files = build(hub, args.repos, args.files)
        empty = Path(tmp) / "none"
        env = {"HF_HOME": str(empty), "XDG_CACHE_HOME": str(empty)}  # no other caches: the hub alone
        scan_cache_dir(hub)  # warm the dentry cache for both
        hf_times = timed(lambda: scan_cache_dir(hub), args.runs)
        inv_times = timed(lambda: take(str(hub), [], None, None, time.time(), env), args.runs)
        inv = take(str(hub), [], None, None, time.time(), env)
    hf_med, inv_med = statistics.median(hf_times), statistics.median(inv_times)
    print(json.dumps({"repos": args.repos, "files": files, "units": len(inv.units), "runs": args.runs,
                      "scan_cache_dir_s": {"median": round(hf_med, 3), "all": [round(t, 3) for t in hf_times]},
                      "inventory_s": {"median": round(inv_med, 3), "all": [round(t, 3) for t in inv_times]},
                      "ratio": round(inv_med / hf_med, 3), "huggingface_hub": hf_version,
                      "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()},
                     indent=2))
    return 0 if inv_med <= 1.2 * hf_med else 1


if __name__ == "__main__":
    sys.exit(main())
