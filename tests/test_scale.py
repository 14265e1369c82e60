"""Cost linear in the cache and not paid on every check: the hub facts `doctor check` reads in one lean pass
equal those huggingface_hub's `scan_cache_dir` gives, file for file and byte for byte; freed sizes for every
revision come from one pass and equal the library's per-revision strategies; the inventory and the plan ask
the library for one strategy, not one per revision; the LRU plan is linear; the facts are reused while the
cache is unchanged and read again when it changes; the probe subprocesses leave without interpreter teardown;
the network probe starts with torch. Each test is small (the timed figures are benchmarks/*.py scripts)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import HFCacheInfo

import clean_attack_kit as kit
import hubcache as hc
from doctor.clean import hub, memo, plan, walk
from doctor.clean.inuse import Holders

ROOT = Path(__file__).resolve().parents[1]
C1, C2, C3, C4 = "1" * 40, "4" * 40, "5" * 40, "6" * 40
VOLATILE = ("scan", "as_of", "reused")


def varied(hub_dir: Path) -> None:
    """Every layout huggingface_hub's scan has a rule for, on top of the attack kit's cache (two revisions
    sharing a blob, the 2.x shared store, an interrupted download): nested refs and snapshot folders, an index
    naming a missing shard, a dataset, a plain file in a snapshot, an absolute link, a link into another repo,
    a link to a folder, a repo without revisions, a folder without blobs/, and the corrupt entries the scan
    skips with a warning (a broken link, a ref to a missing commit, a stray file, bad names)."""
    kit.build(hub_dir)
    hc.repo(hub_dir, "org/nested", {
        C1: {"refs": ["main", "refs/pr/1"], "files": {
            "config.json": b"{}", "onnx/model.onnx": b"o" * 300, "onnx/deep/x.bin": b"d" * 40,
            "model.safetensors.index.json": json.dumps({"weight_map": {"a": "model-1.safetensors",
                                                                       "b": "model-2.safetensors"}}).encode(),
            "model-1.safetensors": b"w" * 500}},
        C2: {"files": {"config.json": b"{}", "onnx/model.onnx": b"p" * 310}}})
    hc.repo(hub_dir, "user/ds", {C3: {"refs": ["main"], "files": {"data/train.parquet": b"t" * 900}}},
            repo_type="dataset")
    nested = hub_dir / "models--org--nested"
    (nested / "snapshots" / C1 / "NOTES.txt").write_bytes(b"n" * 77)  # not a symlink: its own blob
    blob = next((nested / "blobs").iterdir())
    os.symlink(str(blob), nested / "snapshots" / C2 / "absolute.bin")
    os.symlink("../../snapshots", nested / "snapshots" / C2 / "folder-link")  # a link to a folder: skipped
    hc.repo(hub_dir, "org/crafted", {C4: {"refs": ["main"], "files": {"a.bin": b"c" * 60}}})
    other = next((hub_dir / "models--org--new" / "blobs").glob("[0-9a-f]*[0-9a-f]"))
    os.symlink(os.path.relpath(other, hub_dir / "models--org--crafted" / "snapshots" / C4),
               hub_dir / "models--org--crafted" / "snapshots" / C4 / "stolen.bin")
    (hub_dir / "models--org--empty" / "snapshots").mkdir(parents=True)
    (hub_dir / "models--org--empty" / "blobs").mkdir()
    (hub_dir / "models--org--noblobs" / "snapshots" / C1).mkdir(parents=True)
    hc.repo(hub_dir, "org/broken", {C1: {"refs": ["main"], "files": {"w.bin": b"b" * 10}}})
    for b in (hub_dir / "models--org--broken" / "blobs").iterdir():
        b.unlink()
    hc.repo(hub_dir, "org/dangling", {C1: {"refs": ["main"], "files": {"w.bin": b"g" * 10}}})
    (hub_dir / "models--org--dangling" / "refs" / "dev").write_text("9" * 40)
    (hub_dir / "stray.txt").write_text("x")
    (hub_dir / "nodashes").mkdir()
    (hub_dir / "things--org--x" / "snapshots").mkdir(parents=True)
    (hub_dir / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    (hub_dir / ".locks").mkdir(exist_ok=True)


def age_all(path: Path, seconds: float = 100) -> None:
    """Every entry (and the folder) modified `seconds` ago: older than memo's racy window."""
    t = time.time() - seconds
    for p in [*path.rglob("*"), path]:
        os.utime(p, (t, t), follow_symlinks=False)


def side_by_side(hub_dir: Path, mine) -> tuple[dict, dict]:
    """(mine(), the library's facts), the library's scan taken first: reading a file or listing a folder can
    move its access time (relatime, after `age_all` changed its ctime), so both read the times before either
    reads an index or lists a repo folder."""
    info, error = hub.scan_info(str(hub_dir))
    assert error is None
    found = mine()
    return found, hub.summarise(info, os.path.realpath(hub_dir))


def stable(facts: dict) -> dict:
    out = {k: v for k, v in facts.items() if k not in VOLATILE}
    out["warnings"] = sorted(out["warnings"])
    return out


@pytest.fixture
def fresh(tmp_path):
    hub_dir = tmp_path / "hub"
    varied(hub_dir)
    return hub_dir


@pytest.fixture
def cache(fresh, tmp_path):
    """The varied cache, aged; then read once, as a scan reads it: relatime moves a file's access time on its
    first read after `age_all` changed its ctime (an index read for its shards, a listed repo folder), and
    only then; the scans the tests compare must not see each other's reads."""
    age_all(fresh)
    memo.hub_facts(str(fresh), in_use=False, environ={"XDG_CACHE_HOME": str(tmp_path / "settle")})
    return fresh


def test_one_pass_facts_equal_the_library_scan_file_for_file(cache):
    """walk.py replaces `scan_cache_dir` for `doctor check` only because the library is too slow at scale (10k
    repos: the hf probe's 20 s ran out, benchmarks/results/check-scale-*); it must say exactly what the library
    says, on every layout the library has a rule for."""
    info, _ = hub.scan_info(str(cache))
    mine = walk.walk(str(cache))
    theirs = hub.summarise(info, os.path.realpath(cache))
    found = hub.hub_section(mine.root, mine.repos, mine.size, mine.incomplete, mine.warnings, None, mine.accounting)
    assert stable(found) == stable(theirs)
    assert theirs["warning_count"] == 5 and len(theirs["repos"]) == 12  # the fixture exercises what it says
    nested = next(r for r in theirs["repos"] if r["repo_id"] == "org/nested")
    assert {v["commit"]: v["missing_shards"] for v in nested["revisions"]}[C1] == ["model-2.safetensors"]
    assert next(r for r in theirs["repos"] if r["repo_id"] == "org/crafted")["outside"]
    by_path = {str(r.repo_path): r for r in info.repos}
    for repo in mine.repos:  # the files themselves, not only the figures made of them
        want = hub.view(by_path[repo.path])
        assert [(r.commit, r.refs, sorted(r.files), r.last_modified) for r in repo.revisions] == \
               [(r.commit, r.refs, sorted(r.files), r.last_modified) for r in want.revisions]


def test_freed_sizes_in_one_pass_equal_the_library_strategy_for_every_revision(cache):
    info, _ = hub.scan_info(str(cache))
    accounting = hub.Accounting(str(info.cache_dir))
    assert accounting.marked  # the shared store's rule is exercised
    checked = 0
    for repo in info.repos:
        alone, whole = accounting.repo(hub.view(repo).revisions)
        for rev in repo.revisions:
            assert alone[rev.commit_hash] == hub.strategy(info, repo, [rev.commit_hash]).expected_freed_size, \
                (repo.repo_id, rev.commit_hash)
            checked += 1
        if repo.revisions:
            everything = [r.commit_hash for r in repo.revisions]
            assert whole == hub.strategy(info, repo, everything).expected_freed_size, repo.repo_id
    assert checked >= 12


def test_inventory_and_plan_ask_the_library_for_one_strategy_not_one_per_revision(tmp_path, monkeypatch):
    """The inventory used to call delete_revisions once per revision and once per repo (10k repos: 115 s)."""
    from doctor.clean import command
    from doctor.clean.inventory import take

    hub_dir = tmp_path / "hub"
    for i in range(40):
        revs = {f"{i:02d}{v}".ljust(40, "a"): {"refs": ["main"] if v == 0 else [],
                                                "files": {"w.bin": f"{i}-{v}".encode(), "c.json": b"{}"}}
                for v in range(1 + i % 3)}
        hc.repo(hub_dir, f"org/r{i}", revs)
    calls = []
    real = HFCacheInfo.delete_revisions
    monkeypatch.setattr(HFCacheInfo, "delete_revisions", lambda self, *c: calls.append(len(c)) or real(self, *c))
    monkeypatch.setattr("doctor.clean.inventory.scan_holders", lambda: Holders())
    inv = take(str(hub_dir), [], None, None, time.time(), {"HF_HOME": str(tmp_path / "none"),
                                                            "XDG_CACHE_HOME": str(tmp_path / "none")})
    revisions = sum(1 + i % 3 for i in range(40))
    assert calls == [] and len([u for u in inv.units if u["kind"] == "hub"]) == revisions
    result = plan.make_plan(inv.units, plan.Policy(older_than_s=0, older_than="0d"), inv.filesystems,
                            inv.hub_device, time.time() + 1, exact=lambda units: command._exact(inv, units))
    assert calls == [revisions] and len(result["items"]) == 40  # one strategy for the plan: every repo whole


def _units(rng: random.Random, n: int) -> list[dict]:
    units = []
    for r in range(n):
        revs = rng.randint(1, 3)
        sizes = [rng.randint(0, 50) for _ in range(revs)]
        whole = sum(sizes) + rng.randint(0, 9)  # shared blobs count once in each revision alone
        for v in range(revs):
            units.append({"kind": "hub", "path": f"/h/r{r}/snapshots/{v}", "repo_path": f"/h/r{r}",
                          "repo_id": f"o/r{r}", "bytes": sizes[v], "repo_bytes": whole,
                          "repo_revisions": revs, "last_access": rng.randint(0, 30), "device": 1, "refs": [],
                          "commit": str(v), "in_use": [], "outside": [], "errors": []})
    return units


def _lru_quadratic(candidates, chosen, need):
    """The plan as it was: the estimate recomputed after every step."""
    added, base = [], plan.estimate(chosen)
    for u in sorted(candidates, key=lambda u: (u["last_access"], u["path"])):
        if plan.estimate(chosen + added) - base >= need:
            break
        added.append(u)
    return [u["path"] for u in added]


def test_the_lru_plan_is_linear_and_picks_what_the_quadratic_one_picked(monkeypatch):
    rng = random.Random(7)
    for _ in range(300):
        units = _units(rng, rng.randint(1, 12))
        rng.shuffle(units)
        cut = rng.randint(0, len(units))
        chosen, candidates = units[:cut], units[cut:]
        need = rng.randint(0, 200)
        got = [u["path"] for u in plan._lru(candidates, chosen, need, "1GB", 100.0)]
        assert got == _lru_quadratic(candidates, chosen, need)
    calls = []
    real = plan.estimate
    monkeypatch.setattr(plan, "estimate", lambda units: calls.append(len(units)) or real(units))
    units = _units(random.Random(1), 2000)
    filesystems = {1: {"mountpoint": "/", "free_bytes": 0, "total_bytes": 10**12}}
    result = plan.make_plan(units, plan.Policy(free_target=10**9, free_target_text="1GB"), filesystems, 1, 100.0)
    assert len(result["items"]) > 100 and len(calls) <= 8  # not one estimate per unit added


def test_check_facts_plan_what_clean_cache_plans(cache, monkeypatch):
    """The `--free-target` command doctor check prints is planned on the one-pass facts: the same items and
    bytes as `doctor clean-cache` plans from huggingface_hub's scan."""
    from doctor.clean import command
    from doctor.clean.inventory import take

    monkeypatch.setattr("doctor.clean.inventory.scan_holders", lambda: Holders())
    env = {"HF_HOME": str(cache.parent / "none"), "XDG_CACHE_HOME": str(cache.parent / "xdg")}
    for repo_id in ("org/old", "org/s1", "org/s3", "org/s4", "org/nested"):
        hc.age_repo(cache, repo_id, 40 * 86400)
    now = time.time()
    inv = take(str(cache), [], None, None, now, env)
    found = memo.hub_facts(str(cache), in_use=False, environ=env)
    fs = {inv.hub_device: {**inv.filesystems[inv.hub_device], "free_bytes": 0}}
    for policy in (plan.Policy(free_target=4000, free_target_text="4000B"),
                   plan.Policy(older_than_s=15 * 86400, older_than="15d", keep=("org/s2",))):
        theirs = plan.make_plan([u for u in inv.units if u["kind"] == "hub"], policy, fs, inv.hub_device, now,
                                exact=lambda units: command._exact(inv, units))
        mine = plan.make_plan(hub.units(found, inv.hub_device), policy, fs, inv.hub_device, now)
        assert [i["path"] for i in mine["items"]] == [i["path"] for i in theirs["items"]]
        # without the live scan the figure is plan.estimate's: exact per repo, a shared-store payload that
        # only goes with several repos together not counted (the lower bound storage.py states)
        assert 0 < mine["total_bytes"] <= theirs["total_bytes"]


# ---- the facts reused while the cache is unchanged ----

@pytest.fixture
def aged(cache):
    return cache


def _fresh(aged, tmp_path, **kw):
    return memo.hub_facts(str(aged), in_use=False, environ={"XDG_CACHE_HOME": str(tmp_path / "xdg")}, **kw)


def test_facts_are_reused_while_the_cache_is_unchanged(aged, tmp_path):
    first, theirs = side_by_side(aged, lambda: _fresh(aged, tmp_path))
    assert first["reused"] is False and os.path.isfile(memo.location(str(aged), {"XDG_CACHE_HOME":
                                                                                  str(tmp_path / "xdg")}))
    again = _fresh(aged, tmp_path)
    assert again["reused"] is True and stable(again) == stable(first) == stable(theirs)
    assert _fresh(aged, tmp_path, now=time.time() + memo.REUSE_S + 1)["reused"] is False  # too old: read again


@pytest.mark.parametrize("change", ["nested snapshot file", "ref moved in place", "download grows",
                                    "repo removed", "blob removed"])
def test_any_change_a_download_or_deletion_makes_is_seen(aged, tmp_path, change):
    _fresh(aged, tmp_path)
    assert _fresh(aged, tmp_path)["reused"] is True
    nested = aged / "models--org--nested"
    if change == "nested snapshot file":  # only onnx/deep's own time changes
        os.symlink("../../../../blobs/x", nested / "snapshots" / C1 / "onnx" / "deep" / "new.bin")
    elif change == "ref moved in place":
        ref = nested / "refs" / "main"
        ref.write_text(C2)
        age_all(ref, 50)
    elif change == "download grows":
        part = next((aged / "models--org--new" / "blobs").glob("*.incomplete"))
        with open(part, "ab") as f:
            f.write(b"more")
    elif change == "repo removed":
        import shutil

        shutil.rmtree(aged / "datasets--user--ds")
    else:
        next((nested / "blobs").iterdir()).unlink()
    again, theirs = side_by_side(aged, lambda: _fresh(aged, tmp_path))
    assert again["reused"] is False and stable(again) == stable(theirs)


def test_a_state_changed_within_the_clock_tick_is_not_saved(fresh, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert memo.hub_facts(str(fresh), in_use=False, environ=env)["reused"] is False  # just written: racy
    assert not os.path.exists(memo.location(str(fresh), env))


def test_a_damaged_or_foreign_saved_file_is_a_miss(aged, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    _fresh(aged, tmp_path)
    where = Path(memo.location(str(aged), env))
    doc = json.loads(where.read_text())
    for bad in ("{not json", json.dumps({**doc, "root": "/elsewhere"}), json.dumps({**doc, "schema": "x"}),
                json.dumps({**doc, "facts": []}), json.dumps({**doc, "key": "0"})):
        where.write_text(bad)
        assert _fresh(aged, tmp_path)["reused"] is False


def test_processes_holding_files_are_scanned_on_every_check(aged, tmp_path, monkeypatch):
    held = Holders()
    monkeypatch.setattr("doctor.clean.inuse.scan", lambda: held)
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert all(r["in_use"] == [] for r in memo.hub_facts(str(aged), environ=env)["repos"])
    new_blob = next((aged / "models--org--new" / "blobs").glob("[0-9a-f]*[0-9a-f]"))
    payload = next(p for p in (aged / "blobs").glob("*/*") if not p.name.endswith(".refs")
                   and (aged / "models--org--s3" / "blobs").exists()
                   and any(os.path.realpath(b) == str(p) for b in (aged / "models--org--s3" / "blobs").iterdir()))
    held.paths = {str(new_blob): ["pid 7 python (mapped)"], str(payload): ["pid 8 python (open)"]}
    facts = memo.hub_facts(str(aged), environ=env)
    assert facts["reused"] is True
    in_use = {r["repo_id"]: r["in_use"] for r in facts["repos"] if r["in_use"]}
    assert in_use == {"org/new": ["pid 7 python (mapped)"], "org/s3": ["pid 8 python (open)"],
                      "org/s4": ["pid 8 python (open)"]}
    info, _ = hub.scan_info(str(aged))  # the inventory's reading of the same processes agrees (but for a repo
    theirs = hub.summarise(info, os.path.realpath(aged), held)  # whose crafted link reaches org/new: kept anyway)
    assert {r["repo_id"]: r["in_use"] for r in theirs["repos"] if r["in_use"] and not r["outside"]} == in_use


def test_the_hf_probe_reads_the_hub_through_the_saved_facts(aged, tmp_path):
    from doctor.probes.hf import collect

    env = {"HF_HUB_CACHE": str(aged), "HF_HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    first, second = collect(env)["hub"], collect(env)["hub"]
    assert (first["reused"], second["reused"]) == (False, True) and first["scan"] == "filesystem"
    missing = collect({**env, "HF_HUB_CACHE": str(tmp_path / "absent")})["hub"]
    assert missing["exists"] is False and missing["repos"] == []


# ---- probe subprocesses leave without interpreter teardown ----

TEARDOWN = "import atexit, sys; atexit.register(lambda: sys.stderr.write('TEARDOWN-RAN'))\n"
FAKE_TORCH = TEARDOWN + """
__version__ = "2.9.0+cpu"
class version:
    cuda = None
    hip = None
class _C:
    @staticmethod
    def _cuda_getArchFlags():
        return ""
class backends:
    class mps:
        @staticmethod
        def is_built():
            return False
    class cudnn:
        @staticmethod
        def version():
            return None
class cuda:
    @staticmethod
    def is_available():
        return False
"""


def _run_script(script: Path, tmp_path: Path, torch_body: str | None, *args: str) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    if torch_body is not None:
        (site / "torch").mkdir(parents=True, exist_ok=True)
        (site / "torch" / "__init__.py").write_text(torch_body)
    driver = TEARDOWN + "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", driver, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_torch_probe_script_exits_without_teardown_once_flushed(tmp_path):
    done = _run_script(ROOT / "doctor/probes/torch_script.py", tmp_path, FAKE_TORCH)
    stages = [json.loads(line)["stage"] for line in done.stdout.splitlines()]
    assert done.returncode == 0 and stages == ["import", "runtime", "extensions", "done"]
    assert "TEARDOWN-RAN" not in done.stderr  # os._exit: no atexit, no module teardown
    broken = _run_script(ROOT / "doctor/probes/torch_script.py", tmp_path, "raise RuntimeError('bad build')")
    assert broken.returncode == 0 and "bad build" in broken.stdout and "TEARDOWN-RAN" not in broken.stderr


def test_the_package_listing_and_the_bench_worker_exit_without_teardown(tmp_path):
    done = _run_script(ROOT / "doctor/probes/dists_script.py", tmp_path, None)
    assert done.returncode == 0 and "TEARDOWN-RAN" not in done.stderr
    assert "pytest" in json.loads(done.stdout)["distributions"]  # the whole listing was flushed first
    worker = ROOT / "doctor/bench/worker/bench_main.py"
    done = _run_script(worker, tmp_path, TEARDOWN + "raise ImportError('no torch here')",
                       "--device", "cpu", "--opt-config", "x.json")
    assert done.returncode == 0 and "TEARDOWN-RAN" not in done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["kind"] == "missing_dependency"
    bad = _run_script(worker, tmp_path, None, "--device", "tpu")  # argparse's exit status survives
    assert bad.returncode == 2 and "TEARDOWN-RAN" not in bad.stderr


def test_a_driver_that_runs_atexit_shows_the_teardown_marker(tmp_path):
    """The marker the tests above look for does appear when a script ends normally."""
    script = tmp_path / "plain.py"
    script.write_text("print('hi')\n")
    done = _run_script(script, tmp_path, None)
    assert done.returncode == 0 and "TEARDOWN-RAN" in done.stderr


# ---- the network probe starts with torch ----

def test_the_network_probe_starts_with_torch_and_is_adopted_once(monkeypatch):
    from doctor import probing
    from doctor.interpreter import select

    calls: list[tuple[str, bool, float]] = []
    release = threading.Event()

    def fake(name):
        def run(ctx, _):
            calls.append((name, ctx.offline, time.monotonic()))
            if name == "torch":
                release.wait(5)
            return {"name": name}
        return run

    for name in ("torch", "network", "gpu"):
        monkeypatch.setitem(probing.PROBES, name, probing.ProbeSpec(name, fake(name), 5))
    ctx = probing.ProbeContext(select(), {}, offline=True)
    run = probing.ProbeRun(ctx, ["torch"])
    for _ in range(100):
        if any(c[0] == "network" for c in calls):
            break
        time.sleep(0.01)
    assert [c[0] for c in calls if c[0] == "network"] == ["network"]  # before anyone asked for it
    run.start(ctx, ["gpu", "network"])
    release.set()
    sections, records = run.collect()
    assert sorted(sections) == ["gpu", "network", "torch"] and [c[0] for c in calls].count("network") == 1
    # asked for under another offline mode: run again under the one asked for
    calls.clear()
    release.clear()
    run = probing.ProbeRun(ctx, ["torch"])
    run.start(probing.ProbeContext(select(), {}, offline=False), ["network"])
    release.set()
    run.collect()
    assert any(c[:2] == ("network", False) for c in calls)
    # never asked for: not reported; the bench gate (torch with others) starts no network probe
    release.set()
    assert sorted(probing.ProbeRun(ctx, ["torch"]).collect()[0]) == ["torch"]
    calls.clear()
    assert sorted(probing.ProbeRun(ctx, ["torch", "gpu"]).collect()[0]) == ["gpu", "torch"]
    time.sleep(0.05)
    assert sorted(c[0] for c in calls) == ["gpu", "torch"]
