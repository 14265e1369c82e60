"""Scale benchmark for `doctor merge`: 100, 1,000 and 10,000 node reports in one directory, merged by a whole
`doctor merge DIR` process (median of --runs), and the ratios between the sizes (linear cost: ~10x per 10x).

The reports are copies of real ones: `doctor check --format json` run here on the literal 8x A800 facts of
tests/factsbuilder.py (the fleet of tests/test_merge.py: healthy, driver 470 under a cu128 torch, 7 of 8 GPUs),
one copy per node with its own hostname, and in every 10th a different transformers, in every 25th a different
NVIDIA driver, so the merge has skew to report. Files are read from the page cache (just written).
The target: 1,000 reports in under 2 s.

    python benchmarks/merge_scale.py [--runs 3] [--sizes 100,1000,10000] [--output FILE]

Writes benchmarks/results/merge-scale-<date>.json by default; exit 1 when the target is missed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
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
TARGET = (1000, 2.0)   # reports, seconds


def real_reports(work: Path) -> list[dict[str, Any]]:
    """The reports of tests/test_merge.py's fleet, made by the real `doctor check --format json`."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import test_merge

    out = []
    for host, make in test_merge.FLEET.items():
        path = work / f"{host}.json"
        test_merge.check_report(make(), path, work)
        out.append(json.loads(path.read_text()))
    return out


def write_fleet(folder: Path, bases: list[dict[str, Any]], n: int) -> int:
    """`n` node reports in `folder`; returns the bytes written."""
    folder.mkdir(parents=True)
    total = 0
    for i in range(n):
        doc = json.loads(json.dumps(bases[i % len(bases)]))
        doc["facts"]["provenance"]["hostname"] = f"node{i:05d}"
        if i % 10 == 3:
            doc["facts"]["python"]["distributions"]["transformers"] = "4.57.0"
        if i % 25 == 7:
            doc["facts"]["gpu"]["driver_version"] = "570.133.20"
        text = json.dumps(doc, indent=2) + "\n"   # as doctor writes it
        (folder / f"node{i:05d}.json").write_text(text)
        total += len(text)
    return total


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                            "python": platform.python_version()}
    with contextlib.suppress(AttributeError, OSError):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
        info["loadavg"] = os.getloadavg()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                                        timeout=10, check=False).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True,
                                timeout=10, check=False).stdout
        info["uncommitted_changes"] = bool(status.strip())   # the commit alone does not say what ran
    return info


def time_merge(folder: Path, runs: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "doctor", "merge", str(folder)]
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_NODELIST"}
    times, codes = [], set()
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT, check=False)
        times.append(time.perf_counter() - start)
        codes.add(proc.returncode)
        if proc.returncode not in (0, 1, 3):
            raise SystemExit(f"doctor merge failed ({proc.returncode}): {proc.stderr.strip()}")
    return {"median_s": round(statistics.median(times), 3), "all_s": [round(t, 3) for t in times],
            "exit_codes": sorted(codes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--output", help="default: benchmarks/results/merge-scale-<date>.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="merge-scale-") as tmp:
        work = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()):
            bases = real_reports(work)
        startup = time_merge_startup(args.runs)
        cases: dict[str, Any] = {}
        for n in sizes:
            folder = work / f"fleet-{n}"
            size = write_fleet(folder, bases, n)
            cases[str(n)] = {"reports": n, "bytes": size, **time_merge(folder, args.runs)}
            print(f"{n:>6} reports ({size / 2**20:.0f} MiB): median {cases[str(n)]['median_s']} s", file=sys.stderr)
    ratios = {f"{b}/{a}": round(cases[str(b)]["median_s"] / cases[str(a)]["median_s"], 2)
              for a, b in zip(sizes, sizes[1:])}
    n, limit = TARGET
    met = str(n) not in cases or cases[str(n)]["median_s"] < limit
    doc = {"benchmark": "doctor merge DIR, whole process, reports from the page cache",
           "date": _dt.date.today().isoformat(), "runs": args.runs, "cases": cases, "ratios": ratios,
           "startup_s": startup, "target": {"reports": n, "under_s": limit, "met": met}, "machine": machine()}
    text = json.dumps(doc, indent=2) + "\n"
    out = Path(args.output) if args.output else ROOT / "benchmarks" / "results" / f"merge-scale-{doc['date']}.json"
    out.write_text(text)
    print(text, end="")
    return 0 if met else 1


def time_merge_startup(runs: int) -> float:
    """`doctor --version`: the interpreter and CLI start-up every merge pays."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "doctor", "--version"], stdout=subprocess.DEVNULL, cwd=ROOT, check=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


if __name__ == "__main__":
    sys.exit(main())
