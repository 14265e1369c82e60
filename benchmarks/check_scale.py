"""Scale benchmark for `doctor check`: `doctor check --profile cpu-ci --offline` on synthetic hub caches of
0, 10k and 100k files (50 and 500 repos of 200 files) and of 1k and 10k repos (10 files each), against
`python -c "import torch"` timed in the same rounds (interleaved, so a busy machine slows both alike).

Each round times, for every cache: the check as it runs again on an unchanged cache (its hub facts reused,
doctor/clean/memo.py), and the first check after the cache changed (one ref rewritten: the whole cache walked
again, doctor/clean/walk.py). One JSON report per cache (not timed) then shows whether the hf probe finished
and what the facts hold. Prints one JSON object (and writes it with --output): medians, every run, the
ratios the targets name, the machine and the command.

    python benchmarks/check_scale.py [--runs 7] [--cases empty,files-10k,files-100k,repos-1k,repos-10k]
                                     [--work DIR] [--output FILE] [--as-is]

By default doctor runs from a byte-compiled copy of the package (as `pip install` leaves it, and as torch is
in site-packages); --as-is runs the checkout with the caller's environment (PYTHONDONTWRITEBYTECODE and all).
--work keeps the synthetic caches there for the next run (building 10k repos takes a minute).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_cache_scale import CASES, build_case, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"empty_vs_import_torch": 0.85, "files-100k_vs_empty": 1.1}


def installed_copy(work: Path) -> Path:
    """doctor's package copied under `work` and byte-compiled, as an installed wheel has it."""
    import compileall

    site = work / "site"
    if site.exists():
        shutil.rmtree(site)
    shutil.copytree(ROOT / "doctor", site / "doctor", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(str(site / "doctor"), quiet=1)
    return site


def run(argv: list[str], env: dict[str, str], timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    return time.perf_counter() - start, done


def touch_ref(hub: Path, step: int) -> None:
    """Change the cache's state as a download or a moved branch would: rewrite one ref (same commit), with a
    modification time in the past (a new time each round, never `racy`), so the next check walks again."""
    ref = next(iter(sorted(hub.glob("*/refs/main"))), None)
    if ref is None:
        return
    ref.write_text(ref.read_text())
    past = time.time() - 60 - step
    os.utime(ref, (past, past))


def summary(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return {"median": round(statistics.median(ordered), 3), "min": round(ordered[0], 3),
            "max": round(ordered[-1], 3), "iqr": round(q[2] - q[0], 3), "all": [round(t, 3) for t in times]}


def report_facts(python: str, env: dict[str, str]) -> dict[str, Any]:
    """One `doctor check --format json` run: the hf probe's record and what the hub facts hold."""
    seconds, done = run([python, "-m", "doctor", "check", "--profile", "cpu-ci", "--offline", "--format", "json"], env)
    try:
        facts = json.loads(done.stdout)["facts"]
    except (ValueError, KeyError):
        return {"error": (done.stderr or done.stdout)[-500:], "exit": done.returncode}
    hub = (facts.get("hf") or {}).get("hub") or {}
    return {"exit": done.returncode, "seconds": round(seconds, 3), "hf_probe": facts["probes"].get("hf"),
            "torch_probe": facts["probes"].get("torch"), "exists": hub.get("exists"),
            "repos": len(hub.get("repos") or []),
            "revisions": sum(len(r.get("revisions") or []) for r in hub.get("repos") or []),
            "files": sum(v.get("files", 0) for r in hub.get("repos") or [] for v in r.get("revisions") or []),
            "size_bytes": hub.get("size_bytes"), "scan": hub.get("scan"), "reused": hub.get("reused"),
            "warnings": hub.get("warning_count")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--work", help="folder for the synthetic caches (kept); default: a temporary folder")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--as-is", action="store_true", help="run the checkout with the caller's environment")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; expected some of {list(CASES)}")
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="check-scale-")
    work = Path(args.work or tmp.name).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        hubs = {c: build_case(work, c) for c in cases}
        time.sleep(2.5)  # the newest folder must be older than doctor's `racy` window to be reused
        python = sys.executable
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
        env.update(HOME=str(work / "home"), XDG_CACHE_HOME=str(work / "xdg"), HF_HOME=str(work / "hf-home"))
        (work / "home").mkdir(exist_ok=True)
        if args.as_is:
            env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
            how = "the checkout as is (caller's environment)"
        else:
            env["PYTHONPATH"] = str(installed_copy(work)) + os.pathsep + env.get("PYTHONPATH", "")
            how = "a byte-compiled copy of the package (as installed); torch from site-packages"
        check = [python, "-m", "doctor", "check", "--profile", "cpu-ci", "--offline"]
        envs = {c: {**env, "HF_HUB_CACHE": str(hubs[c])} for c in cases}
        shutil.rmtree(work / "xdg", ignore_errors=True)
        for c in cases:  # warm-up: the OS's caches for the tree, and the check's saved facts
            run(check, envs[c])
        run([python, "-c", "import torch"], env)
        times: dict[str, list[float]] = {"import_torch": [], "import_torch_no_teardown": []}
        failures: list[str] = []
        for r in range(args.runs):
            seconds, _ = run([python, "-c", "import torch"], env)
            times["import_torch"].append(seconds)
            # the floor of any check that imports torch in a probe process that exits without teardown
            seconds, _ = run([python, "-c", "import os, torch; os._exit(0)"], env)
            times["import_torch_no_teardown"].append(seconds)
            for c in cases:
                seconds, done = run(check, envs[c])
                times.setdefault(f"check:{c}", []).append(seconds)
                if done.returncode not in (0, 1):
                    failures.append(f"{c}: exit {done.returncode}: {done.stderr[-300:]}")
                if c != "empty":
                    touch_ref(hubs[c], r)
                    seconds, _ = run(check, envs[c])  # walks, and saves the facts for the next round
                    times.setdefault(f"check_changed:{c}", []).append(seconds)
            print(f"round {r + 1}/{args.runs} done", file=sys.stderr, flush=True)
        facts = {c: {"unchanged": report_facts(python, envs[c])} for c in cases}
        for c in cases:
            if c != "empty":
                touch_ref(hubs[c], args.runs)
                facts[c]["changed"] = report_facts(python, envs[c])
    finally:
        if tmp is not None:
            tmp.cleanup()
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios: dict[str, float] = {}
    if "check:empty" in medians:
        ratios["empty_vs_import_torch"] = medians["check:empty"] / medians["import_torch"]
        ratios["floor_vs_import_torch"] = medians["import_torch_no_teardown"] / medians["import_torch"]
        ratios["empty_vs_floor"] = medians["check:empty"] / medians["import_torch_no_teardown"]
        for c in cases:
            if c != "empty":
                ratios[f"{c}_vs_empty"] = medians[f"check:{c}"] / medians["check:empty"]
                ratios[f"{c}_changed_vs_empty"] = medians[f"check_changed:{c}"] / medians["check:empty"]
    for c in cases:
        ratios[f"{c}_vs_import_torch"] = medians[f"check:{c}"] / medians["import_torch"]
    met = {k: ratios[k] <= v for k, v in TARGETS.items() if k in ratios}
    complete = {c: all((f.get("hf_probe") or {}).get("status") == "ok" for f in runs.values())
                for c, runs in facts.items()}
    out = {"benchmark": "check_scale", "command": " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
           "check_command": "doctor check --profile cpu-ci --offline", "doctor_runs_from": how,
           "runs": args.runs, "cases": {c: CASES[c] for c in cases},
           "seconds": {k: summary(v) for k, v in times.items()},
           "ratios": {k: round(v, 3) for k, v in ratios.items()}, "targets": TARGETS, "targets_met": met,
           "hf_facts_complete": complete, "facts": facts, "failures": failures, "machine": machine()}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if all(met.values()) and all(complete.values()) and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
