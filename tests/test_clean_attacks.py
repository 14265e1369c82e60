"""`doctor clean-cache` against an attacker or a careless user: a parent folder given as the cache, paths
swapped for symlinks between the plan and the deletion, runs killed mid-way, concurrent runs, control
characters in names. Each test fails on the code before these defects were fixed. Fixtures live on a tmpfs
when there is one (deleting on a disk with `discard` costs ~1 ms a file); no network."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir

import clean_attack_kit as kit
import hubcache as hc

A, B = "a" * 40, "b" * 40
EXHAUSTIVE = os.environ.get("DOCTOR_CLEAN_EXHAUSTIVE") == "1"  # every kill point instead of 3 a phase
STATS: dict[str, int] = {}


@pytest.fixture
def base(tmp_path, monkeypatch):
    """A scratch folder (on /dev/shm when writable) holding the caches, HF_HOME and XDG pointing into it."""
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    where = Path(tempfile.mkdtemp(prefix="doctor-attacks-", dir=shm)) if shm else tmp_path
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE", "TORCH_HOME",
                "PIP_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(where / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(where / "xdg"))
    kit.stub_holders_for(monkeypatch)
    yield where
    if where != tmp_path:
        shutil.rmtree(where, ignore_errors=True)


def run(cli, *args: str) -> tuple[int, dict | None, str, str]:
    code, out, err = cli("clean-cache", *args)
    try:
        doc = json.loads(out) if "--format" in args else None
    except ValueError:
        doc = None
    return code, doc, out, err


# ---- 1. a parent folder given as the cache ----

def _home(base: Path) -> tuple[Path, Path]:
    """A home folder: the user's own files, folders named like hub entries without the hub's layout, and a
    real hub cache deep inside it. Everything 60 days old, so no age or freshness rule spares it."""
    home = base / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "notes.txt").write_text("mine")
    (home / "models--mine" / "snapshots" / "v1").mkdir(parents=True)  # no blobs/: a detached "revision" before
    (home / "models--mine" / "snapshots" / "v1" / "weights.bin").write_bytes(b"w" * 100)
    (home / "models--draft" / "blobs").mkdir(parents=True)  # no snapshots/: an "interrupted download" before
    (home / "models--draft" / "blobs" / "part.incomplete").write_bytes(b"p" * 10)
    (home / "datasets--scratch" / "snapshots").mkdir(parents=True)  # a "repo without revisions" before
    (home / "project" / "blobs").mkdir(parents=True)  # scan_cache_dir globs */blobs/*.incomplete
    (home / "project" / "blobs" / "data.incomplete").write_bytes(b"d" * 10)
    (home / "models--notes" / "blobs").mkdir(parents=True)  # the hub's layout, plus the user's own file
    (home / "models--notes" / "snapshots").mkdir()
    (home / "models--notes" / "notes.txt").write_text("keep")
    for p in home.iterdir():
        hc.age(p, 60 * 86400)
    hub = home / ".cache" / "huggingface" / "hub"
    hc.repo(hub, "org/x", {A: {"refs": ["main"], "files": {"w.bin": b"1" * 10}}, B: {"files": {"w.bin": b"2" * 10}}})
    return home, hub


def test_a_folder_that_is_not_a_hub_cache_is_refused_and_lookalikes_are_never_entries(base, cli, monkeypatch):
    home, hub = _home(base)
    before = kit.listing(home)
    policy = ("--detached", "--incomplete", "--older-than", "30d", "--yes")
    tried = 0
    for folder, hint in ((home, None), (home / ".cache" / "huggingface", str(hub)), (home / "project", None),
                         (home / "Documents", None), (home / "models--notes", None)):
        code, _, out, err = run(cli, "--cache-dir", str(folder), *policy)
        tried += 1
        assert code == 2 and len(err.strip().splitlines()) == 1 and not out, (folder, err)
        assert "does not look like a Hugging Face hub cache" in err and "--force-cache-dir" in err
        assert hint is None or f"--cache-dir {hint}" in err
    code, _, _, err = run(cli, "--cache-dir", "/", "--detached", "--dry-run")
    tried += 1
    assert code == 2 and "does not look like a Hugging Face hub cache" in err
    assert kit.listing(home) == before  # nothing deleted, nothing written (not even a lock)

    # forced, or the cache variable set to the parent: only the hub's own layout counts as an entry
    code, doc, _, err = run(cli, "--cache-dir", str(home), "--force-cache-dir", "--format", "json", *policy)
    monkeypatch.setenv("HF_HUB_CACHE", str(home))
    code2, doc2, _, _ = run(cli, "--format", "json", *policy)
    tried += 2
    monkeypatch.delenv("HF_HUB_CACHE")
    for c, d in ((code, doc), (code2, doc2)):
        assert c == 0 and d["items"] == [] and not d.get("deleted"), d
        notes = "\n".join(d["notes"])
        for name in ("models--mine", "datasets--scratch"):  # scanned by huggingface_hub, lacking the hub's layout
            assert f"not a hub cache entry, never deleted: {home / name}" in notes
        assert f"skipped by huggingface_hub's scan (never deleted): Snapshots dir doesn't exist in cached repo: " \
               f"{home / 'models--draft' / 'snapshots'}" in notes
        for part in (home / "project" / "blobs" / "data.incomplete",
                     home / "models--draft" / "blobs" / "part.incomplete"):
            assert f"not an interrupted hub download, never deleted: {part}" in notes
        [kept] = d["kept"]
        assert kept["path"] == str(home / "models--notes") and "'notes.txt'" in kept["reason"]
    assert kit.listing(home, skip=lambda rel: rel in (".locks", ".locks/doctor-clean-cache.lock")) == before

    # the real cache inside it is accepted
    code, doc, _, _ = run(cli, "--cache-dir", str(hub), "--format", "json", *policy)
    assert code == 0 and [i["commit"] for i in doc["items"]] == [B]
    assert {r.repo_id: {v.commit_hash for v in r.revisions} for r in scan_cache_dir(hub).repos} == {"org/x": {A}}
    STATS["parent-folder cache dirs"] = tried


def test_a_users_own_file_in_a_repo_folder_outlives_the_repo(base, cli):
    """A repo folder that also holds something huggingface_hub never writes there: its revisions go when the
    policy selects them all, the folder and the user's file stay (before, the whole folder went)."""
    hub = base / "hf" / "hub"
    hc.repo(hub, "org/mine", {A: {"files": {"w.bin": b"1" * 10}}})
    (hub / "models--org--mine" / "my-notes.md").write_text("keep")
    code, doc, _, _ = run(cli, "--detached", "--format", "json", "--yes")
    assert code == 0 and doc["deleted"] == [str(hub / "models--org--mine")], doc
    assert "the folder stays: it also holds 'my-notes.md'" in doc["items"][0]["reason"]
    assert (hub / "models--org--mine" / "my-notes.md").read_text() == "keep"
    assert [r.revisions for r in scan_cache_dir(hub).repos] == [frozenset()]
    assert not list((hub / "models--org--mine" / "blobs").iterdir())
    code, doc, _, _ = run(cli, "--detached", "--format", "json", "--yes")  # the emptied folder is not taken either
    assert code == 0 and doc["items"] == [] and "'my-notes.md'" in doc["kept"][0]["reason"]
    assert (hub / "models--org--mine" / "my-notes.md").read_text() == "keep"


# ---- 2. paths swapped for symlinks between the plan and the deletion ----

PHASES = ("confirm", "incomplete", "refs", "snapshots", "blobs", "shared", "repos", "folders")


def _targets(hub: Path, out: Path) -> dict[str, tuple[Path, str]]:
    """What an attacker swaps, and the last phase that uses it (a later swap is moot)."""
    info = scan_cache_dir(hub)
    repos = {r.repo_id: r for r in info.repos}
    part_b = next(f.blob_path for v in repos["org/part"].revisions if v.commit_hash == kit.B2 for f in v.files
                  if f.file_name == "w.bin")
    s3_link = next(f.blob_path for v in repos["org/s3"].revisions for f in v.files)
    payload = Path(os.path.realpath(s3_link))
    return {
        "cache root": (hub, "repos"),
        "repo folder (deleted whole)": (hub / "models--org--old", "repos"),
        "refs folder": (hub / "models--org--old" / "refs", "refs"),
        "a ref's folder (refs/pr)": (hub / "models--org--s4" / "refs" / "refs" / "pr", "refs"),
        "snapshots folder": (hub / "models--org--part" / "snapshots", "snapshots"),
        "a snapshot": (hub / "models--org--part" / "snapshots" / kit.B2, "snapshots"),
        "blobs folder (partial deletion)": (hub / "models--org--part" / "blobs", "blobs"),
        "blobs folder (whole repo)": (hub / "models--org--old" / "blobs", "blobs"),
        "a blob": (part_b, "blobs"),
        "a shared-store link": (s3_link, "blobs"),
        ".locks": (hub / ".locks", "repos"),
        "shared store": (hub / "blobs", "shared"),
        "shared-store prefix": (payload.parent, "shared"),
        "shared payload": (payload, "shared"),
        "incomplete download": (next(hub.glob("*/blobs/*.incomplete")), "incomplete"),
        "checkpoint": (out / "checkpoint-1", "folders"),
        "checkpoints folder": (out, "folders"),
    }


@pytest.mark.parametrize("phase", PHASES)
def test_a_path_swapped_for_a_symlink_is_never_followed(base, cli, monkeypatch, phase):
    """At the confirmation (after the plan was shown) or at the start of a deletion phase, a path the plan
    deletes, or a folder on its way, is moved out of the root and replaced by a symlink to a copy outside
    ("victim"). Nothing outside the root changes, and the run reports the refusal (exit 1)."""
    from doctor.clean import execute

    hub, out = base / "hf" / "hub", base / "out"
    kit.build(hub, out)
    names = [n for n, (_, last) in _targets(hub, out).items() if PHASES.index(phase) <= PHASES.index(last)]
    shutil.rmtree(base / "hf")
    shutil.rmtree(out)
    for name in names:
        shutil.rmtree(base / "hf", ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(base / "outside", ignore_errors=True)
        kit.build(hub, out)
        target = _targets(hub, out)[name][0]
        (base / "outside" / "bystander").mkdir(parents=True)
        (base / "outside" / "bystander" / "precious.bin").write_bytes(b"precious")

        def attack(now: str = phase) -> None:
            if now == phase and not hasattr(attack, "before"):
                kit.swap(target, base / "outside" / "stash" / target.name, base / "outside" / "victim" / target.name)
                attack.before = kit.listing(base / "outside")  # type: ignore[attr-defined]

        args = ["--format", "json", *kit.POLICY, "--checkpoints", str(out), "--keep-last", "1"]
        if phase == "confirm":
            monkeypatch.setattr(sys, "stdin", kit.Answer(attack, "y"))
        else:
            monkeypatch.setattr(execute, "PHASE_HOOK", attack, raising=False)
            args.append("--yes")
        code, doc, _, err = run(cli, *args)
        monkeypatch.setattr(execute, "PHASE_HOOK", None, raising=False)
        assert hasattr(attack, "before"), (name, "the swap never happened")
        assert kit.listing(base / "outside") == attack.before, (name, phase, "something outside the root changed")
        assert code == 1 and doc is not None, (name, phase, code, err)
        assert any("refused" in e or "not followed" in e for e in doc["errors"]), (name, phase, doc["errors"])
        STATS[f"symlink swaps at {phase}"] = STATS.get(f"symlink swaps at {phase}", 0) + 1
        del attack.before  # type: ignore[attr-defined]


@pytest.mark.parametrize("race", ["a tag now points to it", "a new revision shares its blob"])
def test_what_another_process_did_since_the_plan_is_respected(base, cli, monkeypatch, race):
    """Not a symlink, a download: between the plan and a phase, a tag is pointed at the detached revision
    being deleted, or a revision sharing its blob is downloaded. The cache still scans cleanly after."""
    from doctor.clean import execute

    hub = base / "hf" / "hub"
    kit.build(hub)
    part = hub / "models--org--part"
    blob = next(f.blob_path for v in scan_cache_dir(hub).repos for r in [v] if v.repo_id == "org/part"
                for rev in r.revisions if rev.commit_hash == kit.B2 for f in rev.files if f.file_name == "w.bin")

    def meddle(phase: str) -> None:
        if race == "a tag now points to it" and phase == "refs":
            (part / "refs" / "v2").write_text(kit.B2)
        if race == "a new revision shares its blob" and phase == "blobs":
            (part / "snapshots" / ("9" * 40)).mkdir()
            os.symlink(f"../../blobs/{blob.name}", part / "snapshots" / ("9" * 40) / "w.bin")

    monkeypatch.setattr(execute, "PHASE_HOOK", meddle, raising=False)
    code, doc, _, _ = run(cli, "--detached", "--format", "json", "--yes")
    info = scan_cache_dir(hub)
    assert info.warnings == [] and blob.is_file()
    revs = {r.repo_id: {v.commit_hash for v in r.revisions} for r in info.repos}
    if race == "a tag now points to it":
        assert code == 1 and kit.B2 in revs["org/part"] and "a branch or tag points to it again" in doc["errors"][0]
    else:
        assert code == 0 and revs["org/part"] == {kit.A2, "9" * 40}


# ---- 3. a run killed mid-way is finished by the next run of the same policy ----

def _kill_points(ops: list[list[str]]) -> list[tuple[int, str]]:
    """(1-based call number, phase): every call, or the first, middle and last call of each phase."""
    by_phase: dict[str, list[int]] = {}
    for n, (phase, _, _) in enumerate(ops, 1):
        by_phase.setdefault(phase, []).append(n)
    if EXHAUSTIVE:
        return [(n, p) for p, ns in by_phase.items() for n in ns]
    return sorted({(ns[i], p) for p, ns in by_phase.items() for i in (0, len(ns) // 2, -1)})


@pytest.mark.parametrize("policy", [kit.POLICY, ("--older-than", "15d")], ids=["all-kinds", "older-than-only"])
def test_a_killed_deletion_is_finished_by_the_next_run(base, policy):
    hub, out, outside = base / "hf" / "hub", base / "out", base / "outside"
    args = ["clean-cache", *policy, "--checkpoints", str(out), "--keep-last", "1", "--yes"]

    def fresh() -> dict:
        for p in (base / "hf", out, outside):
            shutil.rmtree(p, ignore_errors=True)
        kit.build(hub, out)
        outside.mkdir()
        (outside / "other.bin").write_bytes(b"x" * 10)
        return kit.listing(outside)

    fresh()
    reference = kit.forked(args, log_phases=True)
    assert reference["code"] == 0 and reference["ops"], reference
    want = (kit.listing(hub, skip=kit.ours), kit.listing(out, skip=kit.ours))
    assert not [p for p in want[0] if "doctor-" in p], "a clean run left something in .locks/"
    for kill_at, phase in _kill_points(reference["ops"]):
        untouched = fresh()
        killed = kit.forked(args, kill_at=kill_at)
        assert killed["killed"], (kill_at, phase, killed)
        assert scan_cache_dir(hub).warnings == [], (kill_at, phase)  # every prefix of the order scans cleanly
        again = kit.forked(args)
        assert again["code"] == 0, (kill_at, phase, again["stdout"][-2000:], again["stderr"][-2000:])
        got = (kit.listing(hub, skip=kit.ours), kit.listing(out, skip=kit.ours))
        assert got == want, (kill_at, phase, _diff(want, got))
        assert scan_cache_dir(hub).warnings == [] and kit.listing(outside) == untouched
        key = f"kills in phase {phase} ({'+'.join(policy)})"
        STATS[key] = STATS.get(key, 0) + 1


def test_a_damaged_or_forged_journal_deletes_nothing_but_itself(base, cli):
    """A journal is written whole before the first deletion: one that does not parse, or names a path that
    is not one component of the cache, stands for nothing deleted and goes as a leftover."""
    hub = base / "hf" / "hub"
    kit.build(hub)
    (hub / ".locks").mkdir(exist_ok=True)
    (hub / ".locks" / "doctor-clean-journal-1-aa.json").write_text('{"schema": "doctor.clean.journal/1", "rep')
    forged = {"schema": "doctor.clean.journal/1", "repos": [
        {"folder": "models--org--new", "commits": [kit.NEW], "whole": True, "blobs": ["..", "../../x"], "shared": []}]}
    (hub / ".locks" / "doctor-clean-journal-2-bb.json").write_text(json.dumps(forged))
    before = kit.listing(hub, skip=lambda rel: rel.startswith(".locks"))
    code, doc, _, _ = run(cli, "--incomplete", "--format", "json", "--dry-run")
    assert sorted(Path(i["path"]).name for i in doc["items"] if i["kind"] == "leftover") == [
        "doctor-clean-journal-1-aa.json", "doctor-clean-journal-2-bb.json"]
    assert not [i for i in doc["items"] if i["kind"] == "unfinished"]
    code, doc, _, _ = run(cli, "--incomplete", "--format", "json", "--yes")
    assert code == 0 and [k for k in kit.listing(hub, skip=kit.ours) if k.startswith(".locks/")] == []
    after = kit.listing(hub, skip=lambda rel: rel.startswith(".locks"))
    assert {k: v for k, v in before.items() if not k.endswith(".incomplete")} == after  # only the download went


def _diff(want: tuple, got: tuple) -> dict:
    return {"missing": sorted(set(want[0]) - set(got[0]) | set(want[1]) - set(got[1])),
            "extra": sorted(set(got[0]) - set(want[0]) | set(got[1]) - set(want[1]))}


# ---- 4. the lock lives beside the cache ----

def test_runs_with_different_tmpdirs_or_paths_contend_on_the_lock_beside_the_cache(base, cli, monkeypatch):
    hub, out = base / "hf" / "hub", base / "out"
    kit.build(hub, out)
    other_hub = base / "other" / "hub"
    hc.repo(other_hub, "org/y", {A: {"refs": ["main"], "files": {"w": b"1"}}})
    link = base / "link-to-hub"
    os.symlink(hub, link)
    tmp_a, tmp_b = base / "tmp-user-a", base / "tmp-user-b"
    tmp_a.mkdir()
    tmp_b.mkdir()
    before = kit.listing(hub, skip=lambda rel: rel.startswith(".locks"))
    holder = kit.Holder(["clean-cache", "--detached", "--checkpoints", str(out), "--keep-last", "1"],
                        env={"TMPDIR": str(tmp_a)})
    try:
        holder.wait_for_prompt()
        monkeypatch.setenv("TMPDIR", str(tmp_b))
        monkeypatch.setattr(tempfile, "tempdir", None)
        runs = [("--detached", "--yes"),  # another user, another TMPDIR
                ("--cache-dir", str(link), "--detached", "--yes"),  # the same cache through another path
                ("--cache-dir", str(other_hub), "--checkpoints", str(out), "--keep-last", "1", "--yes")]
        for args in runs:
            code, _, _, err = run(cli, *args)
            assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
            assert "another doctor clean-cache is running" in err, (args, err)
        assert run(cli, "--detached", "--dry-run")[0] == 0  # a dry run needs no lock
        assert (hub / ".locks" / "doctor-clean-cache.lock").is_file() and (out / ".doctor-clean-cache.lock").is_file()
        assert kit.listing(hub, skip=lambda rel: rel.startswith(".locks")) == before
        assert sorted(p.name for p in out.iterdir()) == [
            ".doctor-clean-cache.lock", "checkpoint-1", "checkpoint-2", "checkpoint-3"]
        assert holder.answer("n") == 2  # the holder declines: nothing deleted
        STATS["concurrent runs refused"] = len(runs)
    finally:
        holder.stop()
    assert not list(tmp_a.iterdir()) and not list(tmp_b.iterdir())  # no lock in anyone's TMPDIR
    assert run(cli, "--detached", "--yes")[0] == 0  # once it is gone, the next run proceeds


# ---- 5. control characters from the cache or a profile never reach the terminal raw ----

EVIL = {"ansi": "org/evil\x1b[2J\x1b[31m", "markup": "org/[link=https://example.com]click[/link]",
        "bidi": "org/\u202etxt.exe", "newline": "org/two\nlines"}


def test_control_characters_are_escaped_on_the_terminal_and_kept_in_json(base, cli, monkeypatch):
    hub = base / "hf" / "hub"
    for repo_id in EVIL.values():
        hc.repo(hub, repo_id, {A: {"refs": ["main"], "files": {"w.bin": b"1"}}, B: {"files": {"w.bin": b"2"}}})
    (hub / "models--org--\x1b]0;pwned\x07" / "snapshots").mkdir(parents=True)  # not a hub entry: a note
    datasets = base / "hf" / "datasets" / "imdb\x1b[5m"
    datasets.mkdir(parents=True)
    (datasets / "x").write_bytes(b"d" * 10)
    hc.age(datasets, 90 * 86400)
    ck = base / "ck\x1b[31m"
    hc.checkpoints(ck, [1, 2])
    profile = base / "p.yaml"
    profile.write_text('kind: job\ndescription: t\njob:\n  name: t\n  workload:\n    model: "org/m\\e[1m"\n'
                       f'  storage:\n    checkpoints:\n      path: "{base}/ck\\e[31m"\n      gib: 1\n')

    def raw(text: str) -> list[str]:
        return [c for c in set(text) if not c.isprintable() and c != "\n"]

    code, _, out, err = run(cli, "-p", str(profile))  # the report, no policy: profile folder, notes
    assert code == 0 and not raw(out + err) and "ck\\x1b[31m" in out + err and "\\x1b]0;pwned\\x07" in out + err
    code, _, out, err = run(cli, "--detached", "--older-than", "30d", "--include", "datasets", "--dry-run")
    assert code == 0 and not raw(out + err), raw(out + err)
    text = out + err
    assert "org/evil\\x1b[2J\\x1b[31m" in text and "org/\\u202etxt.exe" in text and "org/two\\x0alines" in text
    assert "[link=https://example.com]click[/link]" in text  # shown as text, not read as rich markup
    assert "imdb\\x1b[5m" in text

    # JSON keeps the real strings (escaped by JSON itself)
    code, doc, out, _ = run(cli, "--detached", "--dry-run", "--format", "json")
    assert "\x1b" not in out and "\u202e" not in out
    assert {i["repo_id"] for i in doc["items"]} == set(EVIL.values())

    # an error line: the evil repo's snapshot swapped for a symlink at the confirmation
    snap = hub / "models--org--evil\x1b[2J\x1b[31m" / "snapshots" / B
    monkeypatch.setattr(sys, "stdin", kit.Answer(lambda: kit.swap(snap, base / "stash" / "s", base / "victim" / "s"),
                                                 "y"))
    code, _, out, err = run(cli, "--detached")
    assert code == 1 and not raw(out + err), raw(out + err)
    assert "error: " in out + err and "evil\\x1b[2J\\x1b[31m" in out + err and "not deleted: " in out + err

    STATS["names with control characters"] = len(EVIL) + 3


# ---- beyond the five: a commit hash two repos share ----

def test_a_commit_hash_shared_by_two_repos_deletes_only_the_selected_one(base, cli):
    """huggingface_hub's delete_revisions(hash) takes the first repo it meets holding that hash (a set's
    order): with the same commit detached in one repo and on `main` in seven forks, the fork's revision
    was deleted seven times in eight before the strategy was computed per repo."""
    hub = base / "hf" / "hub"
    hc.repo(hub, "org/original", {A: {"refs": ["main"], "files": {"w": b"new"}}, B: {"files": {"w": b"old"}}})
    for i in range(7):
        hc.repo(hub, f"fork{i}/copy", {B: {"refs": ["main"], "files": {"w": b"old"}}})
    code, doc, _, _ = run(cli, "--detached", "--format", "json", "--yes")
    assert code == 0 and [(i["repo_id"], i["commit"]) for i in doc["items"]] == [("org/original", B)]
    info = scan_cache_dir(hub)
    assert {r.repo_id: sorted(v.commit_hash for v in r.revisions) for r in info.repos} == {
        "org/original": [A], **{f"fork{i}/copy": [B] for i in range(7)}} and info.warnings == []


def test_zz_report(capsys):
    """Prints the attack counts (pytest -s shows them)."""
    with capsys.disabled():
        print("\nattacks:", json.dumps(STATS, indent=1, sort_keys=True))
