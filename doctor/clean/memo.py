"""The hub facts of an earlier `doctor check`, reused while the hub cache's modification state is unchanged,
so a check on a large cache does not walk every file each time.

The state is every folder huggingface_hub writes in (the cache, each repo folder, its blobs/, snapshots/ and
refs/, each snapshot folder and its sub-folders, the shared store's folders) by modification time and inode,
every ref file by modification time, size and inode, and every interrupted download by size: a download, a
deletion, a moved ref or a growing `.incomplete` changes it. Reading a file changes only its access time,
which the state does not see: reuse is therefore limited to REUSE_S after the walk, and the facts say when the
figures were read (`as_of`). A state whose newest modification is younger than RACY_S is not saved (a change
in the same clock tick would keep the same times). Processes holding files are never reused: they are
scanned on every check.

Stored under $XDG_CACHE_HOME/doctor/ (~/.cache/doctor), one file per cache path; a missing, unreadable or
foreign file is a miss, and a cache that cannot be written is simply not reused."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from typing import Any

SCHEMA = "doctor.hub-facts/1"
REUSE_S = 900.0
RACY_S = 2.0
REPO_SUBDIRS = ("blobs", "snapshots", "refs")


def location(root: str, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return os.path.join(base, "doctor", f"hub-facts-{digest}.json")


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_mtime_ns, st.st_ino, stat.S_IFMT(st.st_mode)]


def _tree(path: str, out: list[Any], newest: list[int], files: bool) -> None:
    """Each folder below `path` (not following links) by modification time; with `files`, each file too."""
    stack = [path]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            out.append([folder, "error", exc.errno])
            continue
        for entry in entries:
            is_dir = entry.is_dir(follow_symlinks=False)
            if not is_dir and not files:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            stamp = _stamp(st) + ([] if is_dir else [st.st_size])
            out.append([entry.path, *stamp])
            newest[0] = max(newest[0], st.st_mtime_ns)
            if is_dir:
                if st.st_nlink == 2:  # no sub-folder below it (ext4, xfs, tmpfs): nothing more to list
                    out.append([entry.path, "leaf"])
                else:
                    stack.append(entry.path)


def state(root: str) -> tuple[str, int]:
    """(digest of the cache's folders' modification state, its newest modification time in ns)."""
    out: list[Any] = []
    newest = [0]

    def one(path: str) -> os.stat_result | None:
        try:
            st = os.stat(path)
        except OSError as exc:
            out.append([path, "missing", exc.errno])
            return None
        out.append([path, *_stamp(st)])
        newest[0] = max(newest[0], st.st_mtime_ns)
        return st

    one(root)
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        names = []
        out.append(["list", exc.errno])
    for name in names:
        if name == ".locks":  # lock files and doctor's own journals: no fact comes from there
            continue
        path = os.path.join(root, name)
        st = one(path)
        if st is None or not stat.S_ISDIR(st.st_mode):
            continue
        if name == "blobs":  # the shared store: its prefix folders (payloads are written whole, by rename)
            _tree(path, out, newest, files=False)
            continue
        for sub in REPO_SUBDIRS:
            if one(os.path.join(path, sub)) is not None and sub != "blobs":
                _tree(os.path.join(path, sub), out, newest, files=sub == "refs")
    blob = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")
    return hashlib.sha256(blob).hexdigest(), newest[0]


def _partial(paths: list[str]) -> list[list[Any]]:
    """[path, bytes, mtime] of each interrupted download (they grow in place: their folder's time stays)."""
    out: list[list[Any]] = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append([path, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([path, None, None])
    return out


def _key(digest: str, partial: list[list[Any]]) -> str:
    text = json.dumps([digest, partial], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def load(root: str, now: float, environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The saved facts for this cache if its state is unchanged and they are younger than REUSE_S."""
    path = location(root, environ)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 256 << 20:
            return None
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, UnicodeError):
        return None
    if (not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("root") != root
            or not isinstance(doc.get("facts"), dict) or not isinstance(doc.get("as_of"), (int, float))
            or not isinstance(doc.get("incomplete"), list) or not 0 <= now - doc["as_of"] <= REUSE_S):
        return None
    digest, _ = state(root)
    partial = _partial([p for p in doc["incomplete"] if isinstance(p, str)])
    return doc["facts"] if _key(digest, partial) == doc.get("key") else None


def save(root: str, key: str, facts: dict[str, Any], as_of: float, incomplete: list[str],
         environ: dict[str, str] | None = None) -> bool:
    """Save the facts under the state they were read in; False when it could not be written."""
    path = location(root, environ)
    doc = {"schema": SCHEMA, "root": root, "key": key, "as_of": as_of, "incomplete": incomplete, "facts": facts}
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
        return True
    except (OSError, ValueError, TypeError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def hub_facts(hub_dir: str, in_use: bool = True, environ: dict[str, str] | None = None,
              now: float | None = None) -> dict[str, Any]:
    """The hub section for `doctor check`: reused while the cache is unchanged (see above), else read in one
    pass (walk.py) and saved; processes holding its files are scanned each time."""
    from . import walk
    from .hub import attach_holders, hub_section

    root = os.path.realpath(os.path.expanduser(hub_dir))
    now = time.time() if now is None else now
    facts = load(root, now, environ) if os.path.isdir(root) else None
    if facts is not None:
        facts["reused"] = True
    else:
        before, newest = state(root)
        as_of = time.time()
        try:
            found = walk.walk(root)
        except (OSError, ValueError, UnicodeError) as exc:
            found, error = None, f"cannot scan {hub_dir}: {type(exc).__name__}: {exc}"
        else:
            error = None
        if found is None:
            return {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0,
                    "warnings": [error] if error else [], "scan": "filesystem"}
        partial = _partial(sorted(p for p, _ in found.incomplete))
        facts = hub_section(found.root, found.repos, found.size, [(p, b) for p, b, _ in partial if b is not None],
                            found.warnings, None, found.accounting, scan="filesystem", as_of=round(as_of, 3),
                            reused=False)
        after, _ = state(root)
        # saved only if nothing changed while it was read, and no change can hide in the same clock tick
        if after == before and newest / 1e9 < as_of - RACY_S:
            save(root, _key(before, partial), facts, as_of, [p for p, _, _ in partial], environ)
    if in_use and facts.get("repos"):
        from .inuse import scan as scan_holders

        attach_holders(facts, scan_holders(), root)
    return facts
