"""The hub cache in one lean filesystem pass, for `doctor check`: the same repos, revisions, files, blob
sizes and access times that huggingface_hub's `scan_cache_dir` reports (its rules: `<type>s--<id>` folders,
snapshot symlinks resolved one hop, refs read as text, a repo with a broken link or a ref to a missing commit
skipped with a warning), built from `os.scandir`/`os.readlink`/`os.stat` on plain strings instead of
`pathlib` objects, which is where the library spends most of its time (~6 µs a file here against ~60 µs).
The figures are then reduced by the same code as the library's scan (`hub.hub_section`), so `doctor check`
and `doctor clean-cache` agree on every byte; tests/test_scale.py holds the two to equality.

Why not the library's scan here: at 10,000 repos it outlasts the hf probe's 20 s on a 2-core machine, and a
100,000-file cache after a change takes 7x the unchanged check (benchmarks/results/check-scale-via-scan_cache_dir-
2026-11-27.json), so the check could not decide on exactly the caches that fill disks. `doctor clean-cache`
keeps using `scan_cache_dir`: its deletions are huggingface_hub's own strategy, computed on the library's
objects."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from .hub import IGNORED, Accounting, RepoView, Revision

SKIPPED = frozenset({".locks", "CACHEDIR.TAG"})


class Corrupted(Exception):
    """What huggingface_hub raises as CorruptedCacheException: the repo is skipped, with a warning."""


@dataclass
class Walk:
    root: str
    repos: list[RepoView] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    incomplete: list[tuple[str, int]] = field(default_factory=list)
    size: int = 0
    accounting: Accounting | None = None


def _read_text(path: str) -> str:
    """A ref as the library reads it: text, universal newlines (an undecodable ref fails the whole scan,
    as it does there)."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _entries(path: str) -> list[os.DirEntry[str]]:
    """A folder's entries, or none when it cannot be listed for lack of permission (pathlib's glob skips it)."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except PermissionError:
        return []


def _refs(refs_dir: str) -> dict[str, set[str]]:
    """{commit: ref names} from refs/, as `glob("**/*")` finds them: real folders recursed, files read."""
    by_hash: dict[str, set[str]] = {}
    if not os.path.exists(refs_dir):
        return by_hash
    if os.path.isfile(refs_dir):
        raise Corrupted(f"Refs directory cannot be a file: {refs_dir}")
    stack = [(refs_dir, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in _entries(folder):
            if entry.is_dir():
                if not entry.is_symlink():
                    stack.append((entry.path, prefix + entry.name + "/"))
                continue
            if entry.name in IGNORED:
                continue
            by_hash.setdefault(_read_text(entry.path), set()).add(prefix + entry.name)
    return by_hash


def _ups(folder: str, cut: int, ups: dict[str, str]) -> str:
    """`../` once per level from `folder` up to the repo folder, then `blobs/`: the link huggingface_hub
    writes from that folder of a snapshot."""
    depth = folder[cut:].count("/") + 1 if len(folder) >= cut else 0
    ups[folder] = "../" * (depth + 2) + "blobs/"
    return ups[folder]


def _repo(path: str, name: str, types: dict[str, str], stats: dict[str, os.stat_result]) -> RepoView:
    """One repo folder, by huggingface_hub's `_scan_cached_repo` rules."""
    if not os.path.isdir(path):
        raise Corrupted(f"Repo path is not a directory: {path}")
    if "--" not in name:
        raise Corrupted(f"Repo path is not a valid HuggingFace cache directory: {path}")
    kind, repo_id = name.split("--", 1)
    if kind not in types:
        raise Corrupted(f"Repo type must be one of {sorted(types)}, found `{kind}` ({path}).")
    snapshots = path + "/snapshots"
    if not os.path.isdir(snapshots):
        raise Corrupted(f"Snapshots dir doesn't exist in cached repo: {snapshots}")
    refs = _refs(path + "/refs")
    used: dict[str, os.stat_result] = {}  # this repo's blobs
    blobs = path + "/blobs/"
    revisions = []
    for snap in _entries(snapshots):
        if snap.name in IGNORED:
            continue
        if snap.is_file():
            raise Corrupted(f"Snapshots folder corrupted. Found a file: {snap.path}")
        files: list[tuple[str, str, int, float]] = []
        cut = len(snap.path) + 1
        ups: dict[str, str] = {}
        stack = [snap.path]
        while stack:
            folder = stack.pop()
            for entry in _entries(folder):
                if entry.is_symlink():
                    link = os.readlink(entry.path)
                    prefix = ups.get(folder) or _ups(folder, cut, ups)
                    rest = link[len(prefix):] if link.startswith(prefix) else ""
                    if rest and "/" not in rest and rest != "." and rest != "..":
                        blob = blobs + rest  # `../../blobs/<etag>`, what huggingface_hub writes: no normpath
                    else:
                        blob = os.path.normpath(os.path.join(folder, link))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                else:
                    blob = entry.path
                st = stats.get(blob)
                if st is None:
                    try:
                        st = stats[blob] = os.stat(blob)
                    except OSError:
                        raise Corrupted(f"Blob missing (broken symlink): {blob}") from None
                if stat.S_ISDIR(st.st_mode):  # a link to a folder: pathlib's glob skips it as a folder
                    continue
                used[blob] = st
                files.append((entry.path[cut:], blob, st.st_size, st.st_atime))
        if files:
            modified = max(stats[blob].st_mtime for _, blob, _, _ in files)
        else:
            modified = os.stat(snap.path).st_mtime
        revisions.append(Revision(snap.name, snap.path, sorted(refs.pop(snap.name, ())), files, modified))
    if refs:
        raise Corrupted(f"Reference(s) refer to missing commit hashes: {refs} ({path}).")
    if used:
        last = max(st.st_atime for st in used.values())
    else:
        last = os.stat(path).st_atime
    return RepoView(repo_id.replace("--", "/"), types[kind], path, sum(st.st_size for st in used.values()), last,
                    sorted(revisions, key=lambda r: r.commit))


def _incomplete(folder: str, walk: Walk) -> None:
    """`<entry>/blobs/*.incomplete`, as the library's `glob("*/blobs/*.incomplete")` finds them."""
    blobs = folder + "/blobs"
    if not os.path.isdir(blobs):
        return
    for entry in _entries(blobs):
        if entry.name.endswith(".incomplete"):
            try:
                walk.incomplete.append((entry.path, os.stat(entry.path).st_size))
            except OSError:
                pass


def walk(hub_dir: str) -> Walk | None:
    """The hub cache at `hub_dir` (None when it is not a folder). Raises OSError / UnicodeError where
    `scan_cache_dir` raises (an unreadable ref)."""
    root = os.path.realpath(os.path.expanduser(hub_dir))
    if not os.path.isdir(root):
        return None
    from huggingface_hub.constants import REPO_TYPES_MAPPING

    out = Walk(root)
    out.accounting = accounting = Accounting(root)
    stats: dict[str, os.stat_result] = {}
    types = dict(REPO_TYPES_MAPPING)
    for name in sorted(os.listdir(root)):
        if name in IGNORED or name in SKIPPED:
            continue
        path = root + "/" + name
        if os.path.isdir(path):
            _incomplete(path, out)
        if name == "blobs" and accounting.marked:
            continue
        try:
            out.repos.append(_repo(path, name, types, stats))
        except Corrupted as exc:
            out.warnings.append(str(exc))
    # the cache's physical size, as the library counts it: every blob the repos reference once, a shared
    # payload once (and the store's payloads no repo references any more)
    repo_blobs = {blob for repo in out.repos for rev in repo.revisions for _, blob, _, _ in rev.files}
    size = 0
    for blob in repo_blobs:
        if accounting.marked and accounting.target(blob) is not None:
            continue
        size += stats[blob].st_size
    if accounting.marked:
        from huggingface_hub.utils._shared_blobs import shared_store_blob_paths

        for payload in shared_store_blob_paths(root):
            try:
                size += payload.stat().st_size
            except OSError:
                pass
    out.size = size
    return out


def hub_facts(hub_dir: str, in_use: bool = True) -> dict[str, Any]:
    """The hub section of the facts from one pass (see the module's docstring)."""
    from .hub import hub_section

    try:
        found = walk(hub_dir)
    except (OSError, ValueError, UnicodeError) as exc:
        return {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0,
                "warnings": [f"cannot scan {hub_dir}: {type(exc).__name__}: {exc}"], "scan": "filesystem"}
    if found is None:
        return {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0, "warnings": [],
                "scan": "filesystem"}
    holders = None
    if in_use and found.repos:
        from .inuse import scan as scan_holders

        holders = scan_holders()
    return hub_section(found.root, found.repos, found.size, found.incomplete, found.warnings, holders,
                       found.accounting, scan="filesystem")
