"""`doctor clean-cache` on real cache layouts built in temp dirs: plans equal the bytes the fixtures wrote
and huggingface_hub's own plan; the safety rules each have a test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

import hubcache as hc

ROOT = Path(__file__).resolve().parents[1]
A, B, C = "a" * 40, "b" * 40, "c" * 40


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Every cache root in tmp_path, so no test reads the real ~/.cache."""
    home = tmp_path / "hf"
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("PIP_CACHE_DIR", raising=False)
    return home / "hub"


def build(hub: Path) -> dict[str, dict[str, int]]:
    """Three repos: org/old (two revisions sharing config, one detached, 40 days old), org/new, and two repos
    sharing a payload through the 2.x shared store; an interrupted download. Returns bytes written."""
    shared = os.urandom(11_000)
    wrote = {
        "org/old": hc.repo(hub, "org/old", {A: {"refs": ["main"], "files": {"config.json": b"{}" * 50,
                                                                          "model.safetensors": os.urandom(3000)}},
                                            B: {"files": {"config.json": b"{}" * 50,
                                                          "model.safetensors": os.urandom(5000)}}}),
        "org/new": hc.repo(hub, "org/new", {C: {"refs": ["main"], "files": {"model.safetensors": os.urandom(7000)}}}),
        "org/s1": hc.repo(hub, "org/s1", {"d" * 40: {"refs": ["main"], "files": {"x.bin": shared,
                                                                               "y.bin": os.urandom(2000)}}},
                          shared={"x.bin"}),
        "org/s2": hc.repo(hub, "org/s2", {"e" * 40: {"refs": ["main"], "files": {"x.bin": shared}}}, shared={"x.bin"}),
    }
    hc.age_repo(hub, "org/old", 40 * 86400)
    hc.age_repo(hub, "org/s1", 20 * 86400)  # the shared payload's access counts for both repos
    hc.age_repo(hub, "org/s2", 20 * 86400)
    return wrote


def left_in_locks(hub: Path) -> list[str]:
    """What a run left in the hub's .locks/ besides its own lock file (which lives there, beside the cache)."""
    return sorted(p.name for p in (hub / ".locks").iterdir() if p.name != "doctor-clean-cache.lock")


def clean(cli, *args: str) -> tuple[int, dict, str]:
    code, out, err = cli("clean-cache", "--format", "json", *args)
    return code, json.loads(out), err


def test_plans_equal_the_bytes_written_and_huggingface_hubs_own_plan(env, cli):
    wrote = build(env)
    part = hc.incomplete(env, "org/new", 1234)
    code, doc, _ = clean(cli, "--detached", "--dry-run")
    assert code == 0 and doc["dry_run"] and not doc["executed"]
    [item] = doc["items"]
    assert item["kind"] == "hub" and item["commit"] == B and "detached" in item["reason"]
    assert item["bytes"] == doc["total_bytes"] == 5000 == scan_cache_dir(env).delete_revisions(B).expected_freed_size

    code, doc, _ = clean(cli, "--older-than", "30d", "--incomplete", "--dry-run")
    kinds = {i["kind"]: i for i in doc["items"]}
    assert set(kinds) == {"hub-repo", "incomplete"} and kinds["hub-repo"]["repo_id"] == "org/old"
    assert sorted(kinds["hub-repo"]["commits"]) == [A, B]
    assert doc["total_bytes"] == sum(wrote["org/old"].values()) + 1234
    assert kinds["incomplete"]["path"] == str(part)

    # the shared payload counts in both repos' sizes but is freed only when both go
    info = scan_cache_dir(env)
    sizes = {r.repo_id: r.size_on_disk for r in info.repos}
    assert sizes["org/s1"] == 13_000 and sizes["org/s2"] == 11_000
    code, doc, _ = clean(cli, "--older-than", "15d", "--keep", "org/old", "--keep", "org/s2", "--dry-run")
    assert [i["repo_id"] for i in doc["items"]] == ["org/s1"] and doc["total_bytes"] == 2000
    assert sorted(k["reason"] for k in doc["kept"]) == ["kept by --keep org/old", "kept by --keep org/s2"]
    code, doc, _ = clean(cli, "--older-than", "15d", "--keep", "org/o*", "--dry-run")
    assert doc["total_bytes"] == 2000 + 11_000 == info.delete_revisions("d" * 40, "e" * 40).expected_freed_size


def test_deletion_frees_what_was_planned_and_the_cache_still_scans(env, cli):
    wrote = build(env)
    hc.incomplete(env, "org/old", 500)
    before = scan_cache_dir(env)
    code, doc, _ = clean(cli, "--older-than", "15d", "--keep", "org/s2", "--incomplete", "--yes")
    assert code == 0 and doc["executed"] and not doc["errors"] and not doc["not_deleted"]
    after = scan_cache_dir(env)
    assert after.warnings == [] and {r.repo_id for r in after.repos} == {"org/new", "org/s2"}
    assert before.size_on_disk - after.size_on_disk == doc["total_bytes"] - 500 == sum(wrote["org/old"].values()) + 2000
    assert not list(env.glob("*/blobs/*.incomplete")) and not left_in_locks(env)
    code, doc, _ = clean(cli, "--older-than", "15d", "--yes")  # now the shared payload goes with its last repo
    assert doc["total_bytes"] == 11_000 and not [p for p in (env / "blobs").glob("??/*") if "." not in p.name]
    assert scan_cache_dir(env).warnings == []


def test_free_target_deletes_least_recently_used_first_until_the_filesystem_has_room(env, cli):
    for i, days in enumerate((50, 30, 10)):
        hc.repo(env, f"org/m{i}", {f"{i}" * 40: {"refs": ["main"], "files": {"w.bin": os.urandom(2_000_000)}}})
        hc.age_repo(env, f"org/m{i}", days * 86400)
    free = os.statvfs(env).f_bavail * os.statvfs(env).f_frsize
    want = free + 3_000_000  # needs the two oldest, not the newest
    code, doc, _ = clean(cli, "--free-target", f"{want / 1e6:.3f}MB", "--dry-run")
    assert code == 0 and [i["repo_id"] for i in doc["items"]] == ["org/m0", "org/m1"]
    assert all("least recently used" in i["reason"] for i in doc["items"]) and doc["target"]["reachable"]
    code, doc, err = clean(cli, "--free-target", f"{(free + 9_000_000) / 1e6:.3f}MB", "--yes")
    assert code == 1 and not doc["executed"] and "cannot be reached" in err
    assert len(scan_cache_dir(env).repos) == 3  # nothing deleted
    code, doc, _ = clean(cli, "--free-target", f"{want / 1e6:.3f}MB", "--keep", "org/m0", "--dry-run")
    assert [i["repo_id"] for i in doc["items"]] == ["org/m1", "org/m2"]


def test_profile_models_are_kept_by_default(env, cli, tmp_path):
    hc.repo(env, "Qwen/Qwen3-VL-32B-Instruct", {A: {"refs": ["main"], "files": {"w.bin": b"x" * 100}}})
    hc.age_repo(env, "Qwen/Qwen3-VL-32B-Instruct", 90 * 86400)
    code, doc, _ = clean(cli, "--older-than", "30d", "--profile", "qwen3-vl-32b-qlora", "--dry-run")
    assert doc["items"] == [] and doc["kept"][0]["reason"] == "the profile's job uses this model"
    assert doc["policy"]["keep_models"] == ["Qwen/Qwen3-VL-32B-Instruct"]


def test_checkpoints_keep_the_newest_n_and_the_best(env, cli, tmp_path):
    out = tmp_path / "out"
    wrote = hc.checkpoints(out, [100, 200, 300, 400, 500], best=200)
    ds = tmp_path / "ds"
    hc.checkpoints(ds, [10, 20, 30], prefix="global_step")
    (ds / "latest").write_text("global_step10")
    code, doc, _ = clean(cli, "--checkpoints", str(out), "--checkpoints", str(ds), "--keep-last", "1", "--yes")
    assert code == 0 and sorted(doc["deleted"]) == [str(ds / "global_step20")] + [
        str(out / f"checkpoint-{n}") for n in (100, 300, 400)]
    assert doc["total_bytes"] == wrote[100] + wrote[300] + wrote[400] + 1000
    lock = ".doctor-clean-cache.lock"  # the lock of a folder root lives in it
    assert sorted(p.name for p in out.iterdir() if p.name != lock) == ["checkpoint-200", "checkpoint-500"]
    assert sorted(p.name for p in ds.iterdir() if p.name != lock) == ["global_step10", "global_step30", "latest"]
    reasons = {Path(k["path"]).name: k["reason"] for k in doc["kept"]}
    assert "trainer_state.json" in reasons["checkpoint-200"] and "latest" in reasons["global_step10"]


def test_other_caches_are_reported_and_deleted_only_when_included(env, cli, tmp_path):
    datasets = env.parent / "datasets" / "imdb"
    datasets.mkdir(parents=True)
    (datasets / "train.arrow").write_bytes(b"d" * 4096)
    hc.age(datasets, 60 * 86400)
    pip = tmp_path / "xdg" / "pip" / "http-v2"
    pip.mkdir(parents=True)
    (pip / "x").write_bytes(b"p" * 100)
    code, doc, err = clean(cli)
    caches = {c["kind"]: c for c in doc["caches"]}
    assert caches["datasets"]["bytes"] == 4096 and caches["pip"]["bytes"] == 100 and "--include datasets" in err
    code, doc, _ = clean(cli, "--older-than", "30d", "--dry-run")
    assert doc["items"] == []
    code, doc, _ = clean(cli, "--older-than", "30d", "--include", "datasets", "--yes")
    assert doc["deleted"] == [str(datasets)] and not datasets.exists() and pip.exists()
    assert cli("clean-cache", "--include", "conda")[0] == 2


def test_symlinks_are_never_followed_out_of_the_roots(env, cli, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"keep me")
    hc.repo(env, "org/evil", {A: {"refs": [], "files": {"config.json": b"{}"}}})
    os.symlink(outside / "data.bin", env / "models--org--evil" / "snapshots" / A / "linked.bin")
    out = tmp_path / "out"
    hc.checkpoints(out, [1, 2])
    os.symlink(outside, out / "checkpoint-0")
    code, doc, _ = clean(cli, "--detached", "--checkpoints", str(out), "--keep-last", "1", "--yes")
    kept = {Path(k["path"]).name: k["reason"] for k in doc["kept"]}
    assert "reaches outside" in kept["models--org--evil"] and "reaches outside" in kept["checkpoint-0"]
    assert doc["deleted"] == [str(out / "checkpoint-1")]
    assert (outside / "data.bin").read_bytes() == b"keep me" and (out / "checkpoint-0").is_symlink()
    assert (env / "models--org--evil").exists()


HOLD = textwrap.dedent("""
    import mmap, os, sys, time
    mode, path = sys.argv[1], sys.argv[2]
    f = open(path, "rb")
    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if mode == "map" else None
    if mode == "map":
        f.close()  # only the mapping holds it, as safetensors does
    if mode == "deleted":
        os.unlink(path)
    print("ready", flush=True)
    time.sleep(60)
""")


@pytest.fixture
def holder():
    procs = []

    def start(mode: str, path: Path) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, mode, str(path)], stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_files_in_use_keep_their_repo_or_checkpoint(env, cli, tmp_path, holder):
    hc.repo(env, "org/mapped", {A: {"refs": [], "files": {"model.safetensors": os.urandom(4096)}}})
    p = holder("map", env / "models--org--mapped" / "snapshots" / A / "model.safetensors")
    out = tmp_path / "out"
    hc.checkpoints(out, [1, 2, 3])
    q = holder("open", out / "checkpoint-1" / "model.safetensors")
    code, doc, _ = clean(cli, "--detached", "--checkpoints", str(out), "--keep-last", "1", "--yes")
    kept = {Path(k["path"]).name: k["reason"] for k in doc["kept"]}
    assert f"pid {p.pid}" in kept["models--org--mapped"] and "(mapped)" in kept["models--org--mapped"]
    assert f"pid {q.pid}" in kept["checkpoint-1"] and "(open)" in kept["checkpoint-1"]
    assert doc["deleted"] == [str(out / "checkpoint-2")] and (out / "checkpoint-1").exists()
    assert len(scan_cache_dir(env).repos) == 1


def test_processes_that_cannot_be_inspected_are_reported(env, cli, monkeypatch, holder, tmp_path):
    import psutil

    victim = holder("open", Path(__file__))
    real = psutil.Process.open_files

    def denied(self):
        if self.pid == victim.pid:
            raise psutil.AccessDenied(self.pid, "python")
        return real(self)

    monkeypatch.setattr(psutil.Process, "open_files", denied)
    hc.repo(env, "org/x", {A: {"refs": [], "files": {"w": b"1"}}})
    code, doc, err = clean(cli, "--detached", "--dry-run")
    assert any(f"pid {victim.pid}" in n and "could not be inspected" in n for n in doc["notes"])


def test_a_deleted_file_still_open_is_not_counted_as_freed(env, cli, tmp_path, holder):
    ghost = env.parent / "ghost.bin"
    env.mkdir(parents=True)
    ghost.write_bytes(b"g" * 3_000_000)
    holder("deleted", ghost)
    hc.repo(env, "org/x", {A: {"refs": [], "files": {"w": b"1" * 10}}})
    code, doc, _ = clean(cli, "--detached", "--dry-run")
    [fs] = doc["filesystems"]
    assert fs["held_deleted_bytes"] >= 3_000_000 and fs["freed"] == doc["total_bytes"] == 10
    assert fs["free_after"] == fs["free_before"] + 10
    assert any("deleted files still open" in n for n in doc["notes"])


KILLER = textwrap.dedent("""
    import os, signal
    _n = int(os.environ["KILL_AT"]); _count = [0]
    def _wrap(fn):
        def inner(*a, **k):
            _count[0] += 1
            if _count[0] == _n:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return inner
    for _name in ("unlink", "remove", "rmdir", "rename", "replace"):
        setattr(os, _name, _wrap(getattr(os, _name)))
""")


def test_a_run_killed_at_any_point_leaves_a_cache_that_scans_cleanly(env, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(KILLER)
    cmd = [sys.executable, "-m", "doctor", "clean-cache", "--older-than", "15d", "--keep", "org/s2", "--detached",
           "--yes"]
    for kill_at in range(1, 60, 3):
        build(env)
        run_env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}", "KILL_AT": str(kill_at)}
        done = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=60)
        info = scan_cache_dir(env)
        assert info.warnings == [], (kill_at, info.warnings)
        if done.returncode == 0:
            break
        assert done.returncode == -9, done.stderr
        again = subprocess.run(cmd, env={**run_env, "KILL_AT": "0"}, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
        assert {r.repo_id for r in scan_cache_dir(env).repos} == {"org/new", "org/s2"}
        assert not left_in_locks(env) and not list(env.glob("*/blobs/*.incomplete"))
        import shutil
        shutil.rmtree(env)
    else:
        pytest.fail("the run was killed at every point tried; raise the range")
    assert kill_at > 10, kill_at  # the loop did kill runs in every deletion phase before one completed


def test_an_exception_mid_way_is_reported_and_the_cache_still_scans(env, cli, monkeypatch):
    build(env)
    calls = [0]
    real = os.unlink

    def flaky(path, *a, **k):  # deletion unlinks relative to a folder's descriptor (never by a followed path)
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(5, "Input/output error", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "unlink", flaky)
    code, doc, err = clean(cli, "--older-than", "15d", "--yes")
    assert code == 1 and doc["errors"] and "Input/output error" in doc["errors"][0]
    assert scan_cache_dir(env).warnings == []


def test_a_second_concurrent_run_refuses(env, cli, tmp_path):
    build(env)
    hold = textwrap.dedent(f"""
        import sys, time
        from doctor.clean.execute import locked
        with locked([], hub_root={str(env)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "locked"
        code, out, err = cli("clean-cache", "--detached", "--yes")
        assert code == 2 and "another doctor clean-cache is running" in err and len(err.strip().splitlines()) == 1
        assert len(scan_cache_dir(env).repos) == 4
        assert cli("clean-cache", "--detached", "--dry-run")[0] == 0  # a dry run needs no lock
    finally:
        p.kill()
        p.wait()
    assert cli("clean-cache", "--detached", "--yes")[0] == 0


def test_without_a_tty_or_yes_it_refuses_in_one_line(env, tmp_path):
    build(env)
    done = subprocess.run([sys.executable, "-m", "doctor", "clean-cache", "--detached"], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--yes" in done.stderr
    assert len(scan_cache_dir(env).repos) == 4


@pytest.mark.parametrize("args, expect", [
    (("--cache-dir", "/nonexistent/hub", "--detached"), "--cache-dir: /nonexistent/hub: is not a folder"),
    (("--checkpoints", "/nonexistent", "--keep-last", "2"), "--checkpoints: /nonexistent: is not a folder"),
    (("--checkpoints", "."), "needs --keep-last"),
    (("--older-than", "30"), "expected a duration with its unit"),
    (("--free-target", "100"), "expected a size with its unit"),
    (("--keep-last", "-1", "--checkpoints", "."), "expected a whole number from 0"),
])
def test_bad_input_is_one_line_and_exit_2(env, cli, args, expect):
    code, out, err = cli("clean-cache", *args)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1


def test_malformed_and_unreadable_entries_are_reported_not_raised(env, cli):
    build(env)
    (env / "not-a-repo").mkdir()
    (env / "models--org--nosnap").mkdir()
    code, doc, _ = clean(cli, "--detached", "--dry-run")
    assert code == 0 and sum("skipped by huggingface_hub's scan" in n for n in doc["notes"]) == 2
    assert all("nosnap" not in i["path"] for i in doc["items"])
    (env / "models--org--new" / "refs" / "main").write_bytes(b"\xff\xfe")  # unreadable as text
    code, doc, _ = clean(cli, "--detached", "--dry-run")
    assert code == 0 and doc["items"] == [] and any("cannot scan" in n for n in doc["notes"])


def test_a_fresh_incomplete_download_is_kept(env, cli):
    build(env)
    hc.incomplete(env, "org/new", 100, age_s=30)
    code, doc, _ = clean(cli, "--incomplete", "--dry-run")
    assert doc["items"] == [] and "download may still be running" in doc["kept"][0]["reason"]


def _hub_facts(repos: list[tuple[str, float, float]], now: float) -> dict:
    """Literal hub facts (schema 1.3): (repo id, GiB, days since last access)."""
    gib = 2**30
    out = []
    for i, (repo_id, size, days) in enumerate(repos):
        rev = {"commit": f"{i}" * 40, "refs": ["main"], "size_bytes": int(size * gib), "freed_bytes": int(size * gib),
               "last_access": now - days * 86400, "files": 3, "has_config": True, "weights": ["model.safetensors"],
               "missing_shards": []}
        out.append({"repo_id": repo_id, "repo_type": "model", "path": f"/data/hf/hub/models--{repo_id.replace('/', '--')}",
                    "size_bytes": rev["size_bytes"], "freed_bytes": rev["size_bytes"], "last_access": rev["last_access"],
                    "in_use": [], "outside": [], "revisions": [rev]})
    return {"exists": True, "path": "/data/hf/hub", "size_bytes": sum(r["size_bytes"] for r in out), "repos": out,
            "incomplete_files": 0, "incomplete_bytes": 0, "warnings": []}


def test_a_short_disk_names_the_exact_clean_cache_command_and_what_it_frees(recorded, judge):
    from datetime import datetime

    from factsbuilder import edit

    from doctor.model import Status

    gib = 2**30
    now = datetime.fromisoformat(recorded["provenance"]["created"]).timestamp()
    hub = _hub_facts([("org/old", 30, 90), ("org/mid", 20, 40), ("org/recent", 10, 1),
                      ("Qwen/Qwen3-VL-32B-Instruct", 5, 200)], now)
    hub["repos"][-1]["revisions"][0]["has_config"] = False  # an incomplete copy of the job's model: kept anyway
    fs = {"mountpoint": "/data", "device": 7, "free_bytes": 40 * gib, "total_bytes": 200 * gib}
    disk = {**recorded["disk"], "paths": {"hf_hub_cache": {"path": "/data/hf/hub", "resolved": "/data/hf/hub",
                                                           "exists": True, **fs},
                                          "storage.base_model": {"path": "{hf_hub_cache}", "exists": True, **fs}}}
    hf = {**recorded["hf"], "hf_hub_cache": "/data/hf/hub", "hub": hub, "env": {"HF_HOME": "/data/hf"}}
    facts = edit(recorded, "a 40 GiB-free data disk with a full hub cache", hf=hf, disk=disk)
    r = judge(facts, "disk.space", "qwen3-vl-32b-qlora")
    assert r.status is Status.FAIL
    # 62 GiB needed with a 10% margin: 68.9 GiB free wanted, so 28.9 GiB must go: the oldest repo (30 GiB) suffices
    command = ("doctor clean-cache --free-target 68.9GiB --keep Qwen/Qwen3-VL-32B-Instruct "
               "--cache-dir /data/hf/hub")
    assert r.remediation.commands[0] == command
    assert f"`{command}` frees 30.0 GiB (least recently used first: org/old…)" in r.remediation.text
    hub["repos"][0]["in_use"] = ["pid 7 python (mapped)"]  # the oldest is mapped by a job: the next two go
    r = judge(edit(facts, "old repo in use", hf=hf), "disk.space", "qwen3-vl-32b-qlora")
    assert "frees 30.0 GiB (least recently used first: org/mid, org/recent…)" in r.remediation.text
    hub["repos"][1]["in_use"] = ["pid 8 python (open)"]
    r = judge(edit(facts, "two in use", hf=hf), "disk.space", "qwen3-vl-32b-qlora")
    assert "could free at most 10.0 GiB" in r.remediation.text


def test_a_repo_left_without_revisions_is_reclaimed(env, cli):
    import shutil

    wrote = build(env)
    folder = env / "models--org--new"
    shutil.rmtree(folder / "refs")
    shutil.rmtree(folder / "snapshots" / C)  # as a run killed between the snapshot and the blob phase leaves it
    assert [r.revisions for r in scan_cache_dir(env).repos if r.repo_id == "org/new"] == [frozenset()]
    code, doc, _ = clean(cli, "--detached", "--yes")
    item = next(i for i in doc["items"] if i["kind"] == "hub-empty")
    assert item["bytes"] == sum(wrote["org/new"].values()) and not folder.exists()
    assert scan_cache_dir(env).warnings == []


def test_a_permission_error_the_library_only_logs_stops_before_the_next_phase(env, cli, monkeypatch):
    build(env)
    real = os.unlink

    def no_refs(path, *a, dir_fd=None, **k):
        where = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path) if dir_fd is not None else str(path)
        if "/refs/" in where:
            raise PermissionError(13, "Permission denied", where)
        return real(path, *a, dir_fd=dir_fd, **k)

    monkeypatch.setattr(os, "unlink", no_refs)
    code, doc, _ = clean(cli, "--older-than", "30d", "--yes")
    assert code == 1 and "refs/main: Permission denied; stopped before its next phase" in doc["errors"][0]
    info = scan_cache_dir(env)
    assert info.warnings == [] and "org/old" in {r.repo_id for r in info.repos}
