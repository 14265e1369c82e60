"""Helpers for tests/test_clean_attacks.py: a deterministic hub cache (the same bytes every build, so a run
that was killed and finished can be compared file by file with one that was not), listings that never follow
a symlink, symlink swaps that move the real entry out of the root and point its path at a copy outside, and
runs of `doctor clean-cache` in a forked child (real processes, real SIGKILL, without paying an interpreter
start per run) with the process scan stubbed (psutil's memory maps cost ~0.7 s a run; holders are not what
these tests attack)."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import hubcache as hc

A2, B2 = "2" * 40, "3" * 40
OLD_A, OLD_B, NEW, S1, S2, S3, S4 = "a" * 40, "b" * 40, "c" * 40, "d" * 40, "e" * 40, "f" * 40, "0" * 40
POLICY = ("--older-than", "15d", "--detached", "--incomplete", "--keep", "org/s2")


def data(tag: str, size: int) -> bytes:
    """The same bytes for the same tag, every build."""
    return random.Random(tag).randbytes(size)


def build(hub: Path, out: Path | None = None) -> None:
    """Every kind of hub deletion in one cache: org/old goes whole (two revisions, 40 days old); org/part loses
    its detached revision only (a blob it shares with the kept one stays); org/s1 goes but its shared-store
    payload stays for org/s2 (kept by --keep); org/s3 and org/s4 both go, and their shared payload with them;
    org/new stays; an hour-old interrupted download in org/new goes; with `out`, checkpoint-1 and -2 go
    (--keep-last 1)."""
    hc.repo(hub, "org/old", {OLD_A: {"refs": ["main"], "files": {"config.json": data("cfg", 100),
                                                                 "model.safetensors": data("old-a", 3000)}},
                             OLD_B: {"files": {"config.json": data("cfg", 100),
                                               "model.safetensors": data("old-b", 500)}}})
    hc.repo(hub, "org/part", {A2: {"refs": ["main"], "files": {"config.json": data("pcfg", 100),
                                                               "w.bin": data("part-a", 700)}},
                              B2: {"files": {"config.json": data("pcfg", 100), "w.bin": data("part-b", 900),
                                             "sub/extra.txt": data("part-x", 50)}}})
    hc.repo(hub, "org/new", {NEW: {"refs": ["main"], "files": {"model.safetensors": data("new", 800)}}})
    hc.repo(hub, "org/s1", {S1: {"refs": ["main"], "files": {"x.bin": data("shared-1", 1100),
                                                             "y.bin": data("s1y", 200)}}}, shared={"x.bin"})
    hc.repo(hub, "org/s2", {S2: {"refs": ["main"], "files": {"x.bin": data("shared-1", 1100)}}}, shared={"x.bin"})
    hc.repo(hub, "org/s3", {S3: {"refs": ["main"], "files": {"z.bin": data("shared-2", 1300)}}}, shared={"z.bin"})
    hc.repo(hub, "org/s4", {S4: {"refs": ["main", "refs/pr/1"], "files": {"z.bin": data("shared-2", 1300)}}},
            shared={"z.bin"})
    part = hub / "models--org--new" / "blobs" / (hashlib.sha256(b"partial").hexdigest() + ".incomplete")
    part.write_bytes(data("incomplete", 400))
    hc.age(part, 3600)
    for repo_id in ("org/old", "org/s1", "org/s2", "org/s3", "org/s4"):
        hc.age_repo(hub, repo_id, 40 * 86400)
    if out is not None:
        hc.checkpoints(out, [1, 2, 3])


def listing(top: Path, skip: Callable[[str], bool] = lambda rel: False) -> dict[str, Any]:
    """{relative path: ("dir",) | ("file", sha256) | ("link", target)}, never following a symlink."""
    found: dict[str, Any] = {}
    if not os.path.lexists(top):
        return found
    if os.path.islink(top):
        return {".": ("link", os.readlink(top))}
    for here, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, top)
            if skip(rel):
                continue
            if os.path.islink(path):
                found[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    found[rel] = ("file", hashlib.sha256(f.read()).hexdigest())
    return found


def ours(rel: str) -> bool:
    """doctor's own lock files, which stay beside the cache by design."""
    return rel in (".locks/doctor-clean-cache.lock", ".doctor-clean-cache.lock")


def swap(path: Path, stash: Path, victim: Path) -> None:
    """Replace `path` by a symlink to `victim`, a copy of it outside the root (so a deletion that follows the
    link finds the same names there); the real entry is moved to `stash`, also outside."""
    stash.parent.mkdir(parents=True, exist_ok=True)
    victim.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():  # a link re-pointed outside: the victim holds what it led to
        shutil.copyfile(os.path.realpath(path), victim)
    elif path.is_dir():
        shutil.copytree(path, victim, symlinks=True)
    else:
        shutil.copy2(path, victim)
    os.rename(path, stash)
    os.symlink(victim, path)


def stub_holders() -> None:
    """No process holds anything (the scan costs ~0.7 s; holders are tested in test_clean_cache.py)."""
    from doctor.clean import execute, inventory
    from doctor.clean.inuse import Holders

    inventory.scan_holders = lambda *a, **k: Holders()
    execute.scan_holders = lambda *a, **k: Holders()


def warm() -> None:
    """Import in the parent what a run imports lazily, so each forked child does not pay for it again."""
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401
    from huggingface_hub.utils import _shared_blobs  # noqa: F401

    from doctor.clean import command, execute, hub, inventory, plan, render  # noqa: F401
    from doctor.cli import build_parser

    build_parser()


def forked(argv: list[str], kill_at: int = 0, log_phases: bool = False,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `doctor <argv>` in a forked child. With kill_at=N the child SIGKILLs itself at its Nth
    unlink/remove/rmdir/rename/replace, by test_clean_cache.py's own KILLER. Returns the wait status
    ('killed' / 'code'), stdout, stderr, and the destructive calls made ('ops': [(phase, call, path)])."""
    import test_clean_cache as base

    warm()
    fd, report = tempfile.mkstemp(prefix="doctor-forked-")
    os.close(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 70
        try:
            os.environ.update(env or {})
            os.environ["KILL_AT"] = str(kill_at)
            tempfile.tempdir = None
            stub_holders()
            namespace: dict[str, Any] = {}
            exec(base.KILLER, namespace)  # wraps os.unlink/remove/rmdir/rename/replace, counting
            ops: list[tuple[str, str, str]] = []
            phase = ["plan"]
            if log_phases:
                from doctor.clean import execute

                execute.PHASE_HOOK = lambda name: phase.__setitem__(0, name)
                for name in ("unlink", "remove", "rmdir", "rename", "replace"):
                    inner = getattr(os, name)

                    def logged(*a, _inner=inner, _name=name, **k):
                        where = str(a[0]) if a else ""
                        if k.get("dir_fd") is not None or k.get("src_dir_fd") is not None:
                            dfd = k.get("dir_fd", k.get("src_dir_fd"))
                            where = os.path.join(os.readlink(f"/proc/self/fd/{dfd}"), where)
                        ops.append((phase[0], _name, where))
                        return _inner(*a, **k)

                    setattr(os, name, logged)
            from doctor.cli import main

            with open(report + ".out", "w") as out, open(report + ".err", "w") as err:
                sys.stdout, sys.stderr = out, err
                code = main(argv)
                out.flush()
                err.flush()
            with open(report, "w") as f:
                json.dump({"code": code, "ops": ops}, f)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            with open(report, "w") as f:
                json.dump({"code": 70, "ops": [], "exception": repr(exc)}, f)
        finally:
            os._exit(code if isinstance(code, int) else 70)
    _, status = os.waitpid(pid, 0)
    result: dict[str, Any] = {"killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
                              "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
    for suffix, key in ((".out", "stdout"), (".err", "stderr")):
        try:
            result[key] = Path(report + suffix).read_text()
            os.unlink(report + suffix)
        except OSError:
            result[key] = ""
    try:
        result.update(json.loads(Path(report).read_text() or "{}"))
    except (OSError, ValueError):
        pass
    os.unlink(report)
    return result


def stub_holders_for(monkeypatch: Any) -> None:
    """stub_holders, undone after the test."""
    from doctor.clean import execute, inventory
    from doctor.clean.inuse import Holders

    monkeypatch.setattr(inventory, "scan_holders", lambda *a, **k: Holders())
    monkeypatch.setattr(execute, "scan_holders", lambda *a, **k: Holders())


class Answer:
    """A terminal on stdin: shows the plan's prompt was reached, lets `act` run while the user reads the
    plan (an attacker swaps a path then), and answers `reply`."""

    def __init__(self, act: Callable[[], None], reply: str):
        self.act, self.reply = act, reply

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        self.act()
        return self.reply + "\n"


class Holder:
    """`doctor <argv>` in a forked child that stops at the confirmation prompt, holding its locks, until
    answer() replies; env is set in the child only (another user's TMPDIR)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        warm()
        to_r, self._to_child = os.pipe()
        self._from_child, from_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.close(self._to_child)
                os.close(self._from_child)
                os.environ.update(env or {})
                tempfile.tempdir = None
                stub_holders()

                class Stdin:
                    def isatty(self) -> bool:
                        return True

                    def readline(self) -> str:
                        os.write(from_w, b"prompt\n")
                        return os.read(to_r, 100).decode()

                sys.stdin = Stdin()  # type: ignore[assignment]
                sys.stdout = sys.stderr = open(os.devnull, "w")
                from doctor.cli import main

                code = main(argv)
            finally:
                os._exit(code if isinstance(code, int) else 70)
        os.close(to_r)
        os.close(from_w)
        self.pid: int | None = pid

    def wait_for_prompt(self, timeout: float = 60) -> None:
        import select

        ready, _, _ = select.select([self._from_child], [], [], timeout)
        assert ready and os.read(self._from_child, 100) == b"prompt\n", "the holder never reached its prompt"

    def answer(self, reply: str) -> int:
        os.write(self._to_child, (reply + "\n").encode())
        assert self.pid is not None
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        return os.WEXITSTATUS(status)

    def stop(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = None
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
