"""Scale benchmark for `doctor clean-cache`: synthetic hub caches (real layout: blobs, relative snapshot
symlinks, refs, a detached revision in every tenth repo) of 0, 10k and 100k files (50 and 500 repos of 200
files) and of 1k and 10k repos (10 files each), timed against huggingface_hub's own `scan_cache_dir` on the
same cache in the same rounds (interleaved):

- `doctor clean-cache --older-than 0d --dry-run` (every revision planned and printed) against
  `python -c "scan_cache_dir(...)"`, both whole processes;
- the inventory alone (`doctor.clean.inventory.take`) against `scan_cache_dir`, both in this process.

Prints one JSON object (and writes it with --output): medians, every run, ratios, the machine and the command.

    python benchmarks/clean_cache_scale.py [--runs 5] [--cases files-10k,files-100k,repos-1k,repos-10k]
                                           [--work DIR] [--output FILE]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# case -> (repos, files per repo)
CASES = {"empty": (0, 0), "files-10k": (50, 200), "files-100k": (500, 200), "repos-1k": (1000, 10),
         "repos-10k": (10000, 10)}
# the figures `doctor clean-cache --older-than 0d --dry-run` must reach against scan_cache_dir
TARGETS = {"repos-10k": 1.3, "files-100k": 1.2}
SCAN = "import sys; from huggingface_hub import scan_cache_dir; scan_cache_dir(sys.argv[1])"


def build(hub: Path, repos: int, files: int) -> int:
    """`repos` repos of `files` snapshot files each (one blob per file); returns the files written."""
    hub.mkdir(parents=True, exist_ok=True)
    written = 0
    for r in range(repos):
        folder = hub / f"models--bench--repo{r:05d}"
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


def build_case(work: Path, case: str) -> Path:
    """The case's hub cache under `work`, built once (a `.done` marker says it is whole)."""
    repos, files = CASES[case]
    hub = work / case / "hub"
    if not (work / case / ".done").exists():
        if hub.exists():
            import shutil

            shutil.rmtree(hub)
        print(f"building {case}: {repos} repos x {files} files", file=sys.stderr, flush=True)
        build(hub, repos, files)
        (work / case / ".done").write_text("1\n")
    return hub


def machine() -> dict[str, Any]:
    """What ran it: CPU, memory, load, versions."""
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                                     None)
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
        info["loadavg"] = os.getloadavg()
    except (OSError, ValueError, StopIteration):
        pass
    for dist in ("huggingface_hub", "torch"):
        try:
            from importlib.metadata import version

            info[dist] = version(dist)
        except Exception:  # not installed
            info[dist] = None
    info["PYTHONDONTWRITEBYTECODE"] = os.environ.get("PYTHONDONTWRITEBYTECODE")
    try:
        info["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def summary(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median": round(statistics.median(ordered), 3), "min": round(ordered[0], 3),
            "max": round(ordered[-1], 3), "iqr": round(q[2] - q[0], 3), "all": [round(t, 3) for t in times]}


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cases", default="files-10k,files-100k,repos-1k,repos-10k")
    parser.add_argument("--work", help="folder for the synthetic caches (kept); default: a temporary folder")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; expected some of {list(CASES)}")
    from huggingface_hub import scan_cache_dir

    sys.path.insert(0, str(ROOT))
    from doctor.clean.inventory import take

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="clean-scale-")
    work = Path(args.work or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        hubs = {c: build_case(work, c) for c in cases}
        empty = work / "no-other-caches"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(HF_HOME=str(empty), XDG_CACHE_HOME=str(empty),  # no other caches: the hub alone
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        python = sys.executable
        times: dict[str, list[float]] = {}
        units: dict[str, int] = {}
        failures: list[str] = []
        for c in cases:  # warm-up: the OS's caches for the tree
            scan_cache_dir(hubs[c])
        for r in range(args.runs):
            for c in cases:
                hub = str(hubs[c])
                start = time.perf_counter()
                done = subprocess.run([python, "-c", SCAN, hub], env=env, capture_output=True, text=True)
                times.setdefault(f"scan_cache_dir_process:{c}", []).append(time.perf_counter() - start)
                if done.returncode:
                    failures.append(f"scan {c}: {done.stderr[-300:]}")
                start = time.perf_counter()
                done = subprocess.run([python, "-m", "doctor", "clean-cache", "--cache-dir", hub, "--older-than", "0d",
                                       "--dry-run"], env=env, capture_output=True, text=True)
                times.setdefault(f"clean_cache_dry_run:{c}", []).append(time.perf_counter() - start)
                if done.returncode:
                    failures.append(f"clean-cache {c}: exit {done.returncode}: {done.stderr[-300:]}")
                times.setdefault(f"scan_cache_dir:{c}", []).append(timed(lambda: scan_cache_dir(hub)))
                inv = None

                def inventory() -> None:
                    nonlocal inv
                    inv = take(hub, [], None, None, time.time(), env)

                times.setdefault(f"inventory:{c}", []).append(timed(inventory))
                units[c] = len(inv.units)
            print(f"round {r + 1}/{args.runs} done", file=sys.stderr, flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {}
    for c in cases:
        ratios[f"clean_cache_dry_run_vs_scan_cache_dir:{c}"] = round(
            medians[f"clean_cache_dry_run:{c}"] / medians[f"scan_cache_dir_process:{c}"], 3)
        ratios[f"inventory_vs_scan_cache_dir:{c}"] = round(medians[f"inventory:{c}"] / medians[f"scan_cache_dir:{c}"], 3)
    met = {c: ratios[f"clean_cache_dry_run_vs_scan_cache_dir:{c}"] <= limit for c, limit in TARGETS.items()
           if c in cases}
    out = {"benchmark": "clean_cache_scale", "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
           "dry_run_command": "doctor clean-cache --cache-dir HUB --older-than 0d --dry-run",
           "scan_command": f"python -c {SCAN!r} HUB", "runs": args.runs,
           "cases": {c: {"repos": CASES[c][0], "files": CASES[c][0] * CASES[c][1], "units": units.get(c)}
                     for c in cases},
           "seconds": {k: summary(v) for k, v in times.items()}, "ratios": ratios,
           "targets": {f"clean_cache_dry_run_vs_scan_cache_dir:{c}": v for c, v in TARGETS.items()},
           "targets_met": met, "failures": failures, "machine": machine()}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if all(met.values()) and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
