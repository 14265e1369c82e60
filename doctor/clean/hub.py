"""The Hugging Face hub cache through huggingface_hub's own cache API: scan, per-revision facts for
planning (last access, bytes a deletion frees by the library's own `expected_freed_size`), what counts as a
hub entry (the layout huggingface_hub writes), and a crash-safe, symlink-proof execution of its delete
strategy, with a journal beside the cache that the next run finishes from."""
from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import safefs
from .inuse import Holders
from .safefs import Changed, Rel, Root, Seen
from .trees import inside

TRASH_PREFIX = "doctor-trash-"  # under <hub>/.locks/, which scan_cache_dir skips
JOURNAL_PREFIX = "doctor-clean-journal-"
JOURNAL_SCHEMA = "doctor.clean.journal/1"
REPO_DIR = re.compile(r"^(models|datasets|spaces)--.+$", re.S)  # huggingface_hub's `<type>s--<id>` folders
HUB_WRITES = frozenset({"blobs", "snapshots", "refs", ".no_exist"})  # what huggingface_hub writes in one
ROOT_WRITES = frozenset({".locks", "CACHEDIR.TAG", "version.txt", "version_diffusers_cache.txt"})
STORE_MARKER = ".huggingface-shared-blobs"  # huggingface_hub 2.x marks its shared blobs/ store with it
IGNORED = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # huggingface_hub's FILES_TO_IGNORE
NAME = re.compile(r"^(?!\.\.?$)[^/\x00]+$")  # one path component, never . or ..
STORE_REL = re.compile(r"^blobs/([0-9a-f]{2})/([0-9a-f]{64})$")


def scan_info(hub_cache: str) -> tuple[Any, str | None]:
    """(HFCacheInfo or None, why not): a missing or unreadable cache is reported, never raised."""
    if not os.path.isdir(hub_cache):
        return None, None
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(hub_cache), None
    except CacheNotFound:
        return None, None
    except (OSError, ValueError, UnicodeError) as exc:  # e.g. an unreadable refs file
        return None, f"cannot scan {hub_cache}: {type(exc).__name__}: {exc}"


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def not_hub(repo_path: Path) -> str | None:
    """Why a folder is not a hub cache entry as huggingface_hub writes it (a `<type>s--<id>` folder holding
    real `blobs/` and `snapshots/` folders, `refs/` a folder when present), or None when it is one."""
    if not REPO_DIR.match(repo_path.name):
        return "its name is not <type>s--<owner>--<name>"
    if not _is_dir(repo_path):
        return "it is not a plain folder (a symlink or a file)"
    for sub in ("blobs", "snapshots"):
        if not _is_dir(repo_path / sub):
            return f"it has no {sub}/ folder (huggingface_hub writes one in every repo folder)"
    if os.path.lexists(repo_path / "refs") and not _is_dir(repo_path / "refs"):
        return "its refs/ is not a plain folder"
    return None


def foreign(repo_path: Path) -> list[str]:
    """Entries of a repo folder that huggingface_hub does not write there (a user's own files)."""
    try:
        names = os.listdir(repo_path)
    except OSError:
        return []
    return sorted(n for n in names if n not in HUB_WRITES and n not in IGNORED)


def layout(repo_path: str) -> tuple[str | None, list[str], set[str]]:
    """(`not_hub`, `foreign`, the names in blobs/ that are symlinks) of a repo folder from one listing of it
    and one of its blobs/ (the same answers as those functions, without a system call per question)."""
    name = os.path.basename(repo_path)
    if not REPO_DIR.match(name):
        return "its name is not <type>s--<owner>--<name>", [], set()
    if not _is_dir(Path(repo_path)):
        return "it is not a plain folder (a symlink or a file)", [], set()
    try:
        with os.scandir(repo_path) as it:
            kinds = {e.name: e.is_dir(follow_symlinks=False) for e in it}
    except OSError:
        kinds = {}
    for sub in ("blobs", "snapshots"):
        if not kinds.get(sub):
            return f"it has no {sub}/ folder (huggingface_hub writes one in every repo folder)", [], set()
    if "refs" in kinds and not kinds["refs"]:
        return "its refs/ is not a plain folder", [], set()
    extra = sorted(n for n in kinds if n not in HUB_WRITES and n not in IGNORED)
    return None, extra, _links(repo_path)


def cache_dir_problem(path: str) -> str | None:
    """Why a folder does not look like a hub cache (it holds entries huggingface_hub never writes in one),
    or None. A hub cache holds `<type>s--<id>` repo folders, .locks/, the marked shared blobs/ store,
    CACHEDIR.TAG (and the version files older libraries wrote)."""
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        return f"cannot list it: {exc.strerror or exc}"
    other = [n for n in names if not (REPO_DIR.match(n) or n in ROOT_WRITES or n in IGNORED
                                      or (n == "blobs" and os.path.isfile(os.path.join(path, n, STORE_MARKER))
                                          and _is_dir(Path(path, n))))]
    if not other:
        return None
    shown = ", ".join(repr(n) for n in other[:3]) + (f" and {len(other) - 3} more" if len(other) > 3 else "")
    hint = ""
    if os.path.isdir(os.path.join(path, "hub")) and cache_dir_problem(os.path.join(path, "hub")) is None:
        hint = f" (its hub/ folder is one: --cache-dir {os.path.join(path, 'hub')})"
    return (f"does not look like a Hugging Face hub cache: it holds {shown}, which huggingface_hub does not write "
            f"in one{hint}; pass --force-cache-dir to clean it anyway")


def strategy(info: Any, repo: Any, commits: list[str] | set[str]) -> Any:
    """huggingface_hub's delete strategy for revisions of one repo: `delete_revisions` matches a commit hash
    in the first repo it meets, so a hash two repos share (a fork, a re-upload) must not reach the other."""
    return replace(info, repos=frozenset({repo})).delete_revisions(*commits)


def freed(info: Any, selection: dict[str, list[str]]) -> int:
    """Exact bytes huggingface_hub expects to free for {repo path: commits}: one strategy over all of them
    (a shared-store payload counts once, when every repo using it goes) unless a hash is ambiguous."""
    repos = {str(r.repo_path): r for r in info.repos}
    chosen = [repos[p] for p in selection if p in repos]
    owners: dict[str, int] = {}
    for repo in info.repos:
        for rev in repo.revisions:
            owners[rev.commit_hash] = owners.get(rev.commit_hash, 0) + 1
    commits = [c for p in selection for c in selection[p]]
    if all(owners.get(c, 0) == 1 for c in commits) and len(set(commits)) == len(commits):
        return replace(info, repos=frozenset(chosen)).delete_revisions(*commits).expected_freed_size
    return sum(strategy(info, repos[p], cs).expected_freed_size for p, cs in selection.items() if p in repos)


def _missing_shards(snapshot: str, names: set[str]) -> list[str]:
    """Shards a `*.index.json` in the snapshot names that the snapshot lacks (an interrupted download)."""
    missing: set[str] = set()
    for index in [n for n in names if n.endswith(".index.json")]:
        try:
            with open(os.path.join(snapshot, index), encoding="utf-8") as f:
                weight_map = json.loads(f.read(64 << 20)).get("weight_map") or {}
        except (OSError, ValueError, AttributeError):
            missing.add(f"{index} (unreadable)")
            continue
        try:
            missing.update(f for f in set(weight_map.values()) if f not in names)
        except (TypeError, AttributeError):  # not a {tensor: file} map
            missing.add(f"{index} (unreadable)")
    return sorted(missing)


def _shared_target(blob: Path | str, root: str) -> Path | None:
    try:
        from huggingface_hub.utils._shared_blobs import shared_blob_target
    except ImportError:  # huggingface_hub 1.x: no shared store
        return None
    return shared_blob_target(Path(blob), root)


# ---- the hub section of the facts, from huggingface_hub's scan or from one filesystem pass (walk.py) ----

@dataclass
class Revision:
    """One revision as huggingface_hub's scan describes it, in plain strings: each snapshot file with the path
    its symlink's first hop names (the repo's blob entry; the file itself when it is not a symlink), that
    blob's size and last access."""

    commit: str
    snapshot: str
    refs: list[str]
    files: list[tuple[str, str, int, float]]  # (name relative to the snapshot, blob path, bytes, last access)
    last_modified: float


@dataclass
class RepoView:
    repo_id: str
    repo_type: str
    path: str
    size: int  # the library's size_on_disk: each blob the revisions reference, once
    last_access: float  # the library's last_accessed
    revisions: list[Revision]
    links: set[str] | None = None  # names in blobs/ that are symlinks (None: list blobs/ to find out)


def view(repo: Any) -> RepoView:
    """A CachedRepoInfo of huggingface_hub's scan as a RepoView."""
    revisions = []
    for rev in repo.revisions:
        cut = len(str(rev.snapshot_path)) + 1
        revisions.append(Revision(rev.commit_hash, str(rev.snapshot_path), sorted(rev.refs),
                                  [(str(f.file_path)[cut:], str(f.blob_path), f.size_on_disk, f.blob_last_accessed)
                                   for f in rev.files], rev.last_modified))
    return RepoView(repo.repo_id, repo.repo_type, str(repo.repo_path), repo.size_on_disk, repo.last_accessed,
                    sorted(revisions, key=lambda r: r.commit))


class Accounting:
    """huggingface_hub's `expected_freed_size` (`HFCacheInfo.delete_revisions`), computed for every revision
    alone and every repo whole in one pass over the files: a revision frees the blobs no other revision of
    its repo references (and files that live in its snapshot); a repo frees every blob its revisions
    reference; a blob that links into the 2.x shared store counts its payload once, and only when every
    reference the store's manifest lists goes too. Manifests are read once per payload, not once per
    revision."""

    def __init__(self, root: str):
        self.root = root
        self.marked = False
        self._targets: dict[str, str | None] = {}
        self._refs: dict[str, frozenset[str] | None] = {}
        self._payload: dict[str, int] = {}
        if os.path.isfile(os.path.join(root, "blobs", STORE_MARKER)):
            try:
                from huggingface_hub.utils import _shared_blobs
            except ImportError:
                _shared_blobs = None
            self.marked = _shared_blobs is not None and _shared_blobs.is_shared_blobs_dir(
                _shared_blobs.shared_blobs_dir(root))

    def target(self, blob: str) -> str | None:
        """The store payload a blob entry links to (the library's `shared_blob_target`), or None."""
        if blob not in self._targets:
            found = _shared_target(blob, self.root)
            self._targets[blob] = str(found) if found is not None else None
        return self._targets[blob]

    def _references(self, payload: str) -> frozenset[str] | None:
        if payload not in self._refs:
            from huggingface_hub.utils._shared_blobs import _read_valid_manifest_references

            refs = _read_valid_manifest_references(Path(payload), self.root)
            self._refs[payload] = frozenset(str(p) for p in refs) if refs is not None else None
        return self._refs[payload]

    def _payload_size(self, payload: str) -> int:
        if payload not in self._payload:
            try:
                st = os.lstat(payload)
                self._payload[payload] = st.st_size if stat.S_ISREG(st.st_mode) else 0
            except OSError:
                self._payload[payload] = 0
        return self._payload[payload]

    def size(self, unlinked: dict[str, int]) -> int:
        """Bytes freed by unlinking these blob entries ({path: scanned bytes}), as the library counts them."""
        if not self.marked:
            return sum(unlinked.values())
        total, payloads = 0, set()
        for blob, size in unlinked.items():
            payload = self.target(blob)
            if payload is None:
                total += size
            else:
                payloads.add(payload)
        for payload in payloads:
            refs = self._references(payload)
            if refs and refs <= unlinked.keys():
                total += self._payload_size(payload)
        return total

    def repo(self, revisions: list[Revision]) -> tuple[dict[str, int], int]:
        """({commit: bytes deleting that revision alone frees}, bytes deleting the whole repo frees)."""
        whole: dict[str, int] = {}
        users: dict[str, int] = {}  # blob -> how many revisions reference it
        for rev in revisions:
            mine = {blob: size for _, blob, size, _ in rev.files}
            whole.update(mine)
            for blob in mine:
                users[blob] = users.get(blob, 0) + 1
        total = self.size(whole)
        if len(revisions) == 1:  # its only revision: the library deletes the whole repo
            return {revisions[0].commit: total}, total
        alone = {}
        for rev in revisions:
            inner = rev.snapshot + "/"
            alone[rev.commit] = self.size({blob: size for _, blob, size, _ in rev.files
                                           if users[blob] == 1 or blob.startswith(inner)})
        return alone, total


def _links(path: str) -> set[str]:
    try:
        with os.scandir(os.path.join(path, "blobs")) as entries:
            return {e.name for e in entries if e.is_symlink()}
    except OSError:
        return set()


def outside_paths(repo: RepoView, root: str, accounting: Accounting | None = None) -> list[str]:
    """Paths a deletion of this repo would touch that huggingface_hub did not write there: outside the cache,
    outside the repo's own blobs/ (a crafted link into another repo), or a blob symlink that does not lead to
    the shared store."""
    direct = os.path.dirname(repo.path) == root  # `root` is a real path: a folder directly in it is inside
    if not (direct or inside(repo.path, root)) or os.path.islink(repo.path):
        return [repo.path]
    blobs_dir = repo.path + "/blobs"
    links = repo.links if repo.links is not None else _links(repo.path)
    found: list[str] = []
    checked: set[str] = set()
    for rev in repo.revisions:
        inner = rev.snapshot + "/"
        for _, blob, _, _ in rev.files:
            if blob in checked:
                continue
            checked.add(blob)
            folder, _, name = blob.rpartition("/")
            if folder == blobs_dir:
                if name in links and (accounting.target(blob) if accounting else _shared_target(blob, root)) is None:
                    try:
                        found.append(f"{blob} -> {os.readlink(blob)}")
                    except OSError:
                        found.append(blob)
            elif not blob.startswith(inner) or not inside(blob, root):
                found.append(blob)
            if len(found) >= 5:
                return found
    return found


def _outside(repo: Any, root: str) -> list[str]:
    return outside_paths(view(repo), root)


def held_under(holders: Holders, root: str) -> dict[str, list[str]]:
    """The held paths inside the cache: usually none, which spares resolving every blob."""
    base = root.rstrip("/") + "/"
    return {p: w for p, w in holders.paths.items() if p.startswith(base)}


def repo_holders(repo: Any, held: dict[str, list[str]]) -> list[str]:
    """Processes holding a file of this repo (`held` from `held_under`): under its folder, or its blobs'
    real paths (a shared-store payload, or a mapped safetensors file seen through its snapshot symlink)."""
    if not held:
        return []
    repo = repo if isinstance(repo, RepoView) else view(repo)
    prefix = os.path.realpath(repo.path).rstrip("/") + "/"
    found = list(dict.fromkeys(w for p, who in held.items() if p.startswith(prefix) for w in who))
    if all(p.startswith(prefix) for p in held):
        return found
    blobs = {os.path.realpath(blob) for r in repo.revisions for _, blob, _, _ in r.files}
    return found + [w for p in sorted(blobs & held.keys()) for w in held[p] if w not in found]


def attach_holders(facts: dict[str, Any], holders: Holders, root: str) -> None:
    """Set each repo's `in_use` in hub facts from a process scan: held paths under its folder, and held
    shared-store payloads, through the store's manifest of the repo blobs that link to them."""
    held = held_under(holders, root)
    facts["in_use_scan"] = holders.to_dict()
    by_name = {os.path.basename(r["path"]): r for r in facts.get("repos") or []}
    found: dict[str, list[str]] = {}
    base = root.rstrip("/") + "/"
    for path, who in held.items():
        first = path[len(base):].split("/", 1)[0]
        owners = [first] if first in by_name else []
        if not owners and first == "blobs":
            try:
                from huggingface_hub.utils._shared_blobs import _read_valid_manifest_references

                refs = _read_valid_manifest_references(Path(path), root) or set()
            except (ImportError, OSError):
                refs = set()
            owners = sorted({p.parent.parent.name for p in refs} & by_name.keys())
        for name in owners:
            mine = found.setdefault(name, [])
            mine.extend(w for w in who if w not in mine)
    for name, repo in by_name.items():
        repo["in_use"] = found.get(name, [])[:10]


def units(hub: dict[str, Any], device: int | None) -> list[dict[str, Any]]:
    """Planning units from the hub facts: one per revision, carrying its repo's figures. A folder that is
    not a hub entry (no huggingface_hub layout) yields none."""
    out = []
    for repo in hub.get("repos") or []:
        if repo.get("not_hub"):
            continue
        for rev in repo.get("revisions") or []:
            if "freed_bytes" not in rev:  # a facts snapshot older than schema 1.3
                continue
            out.append({"kind": "hub", "root": hub.get("path"), "device": device,
                        "path": f"{repo['path']}/snapshots/{rev['commit']}", "repo_path": repo["path"],
                        "repo_id": repo["repo_id"], "repo_type": repo["repo_type"], "commit": rev["commit"],
                        "refs": rev["refs"], "detached": not rev["refs"], "bytes": rev["freed_bytes"],
                        "last_access": rev["last_access"], "in_use": repo.get("in_use") or [],
                        "outside": repo.get("outside") or [], "errors": [], "repo_bytes": repo["freed_bytes"],
                        "repo_revisions": len(repo["revisions"]), "foreign": repo.get("foreign") or []})
    return out


WEIGHTS = (".safetensors", ".bin")


def repo_entry(repo: RepoView, root: str, accounting: Accounting, held: dict[str, list[str]]) -> dict[str, Any]:
    """One repo of the hub facts: its revisions with what checks and plans need."""
    alone, whole = accounting.repo(repo.revisions)
    revisions = []
    for rev in repo.revisions:
        rel_names = {name for name, _, _, _ in rev.files}
        names = {n.rsplit("/", 1)[-1] for n in rel_names}
        sizes = {blob: size for _, blob, size, _ in rev.files}
        revisions.append({
            "commit": rev.commit, "refs": rev.refs, "size_bytes": sum(sizes.values()),
            "freed_bytes": alone[rev.commit],
            "last_access": max((atime for _, _, _, atime in rev.files), default=rev.last_modified),
            "files": len(rev.files), "has_config": "config.json" in names,
            "weights": sorted(n for n in rel_names if n.endswith(WEIGHTS))[:5],
            "missing_shards": _missing_shards(rev.snapshot, rel_names)})
    in_use = repo_holders(repo, held)
    why_not, extra, links = layout(repo.path)
    if repo.links is None:
        repo.links = links
    entry = {"repo_id": repo.repo_id, "repo_type": repo.repo_type, "path": repo.path, "size_bytes": repo.size,
             "last_access": repo.last_access, "freed_bytes": whole if repo.revisions else 0,
             "in_use": in_use[:10], "outside": outside_paths(repo, root, accounting), "revisions": revisions}
    if why_not:
        entry["not_hub"] = why_not
    elif extra:
        entry["foreign"] = extra[:10]
    return entry


def hub_section(root: str, repos: list[RepoView], size: int, incomplete: list[tuple[str, int]], warnings: list[str],
                holders: Holders | None, accounting: Accounting | None = None, **extra: Any) -> dict[str, Any]:
    """The hub section of the facts from RepoViews (huggingface_hub's scan, or walk.py's pass)."""
    accounting = accounting or Accounting(root)
    held = held_under(holders, root) if holders is not None else {}
    entries = [repo_entry(r, root, accounting, held) for r in sorted(repos, key=lambda r: (-r.size, r.path))]
    return {"exists": True, "path": root, "size_bytes": size, "repos": entries,
            "incomplete_files": len(incomplete), "incomplete_bytes": sum(b for _, b in incomplete),
            "warnings": [" ".join(str(w).split()) for w in warnings][:10], "warning_count": len(warnings),
            "in_use_scan": holders.to_dict() if holders is not None else None, **extra}


def summarise(info: Any, root: str, holders: Holders | None = None) -> dict[str, Any]:
    """The hub section of the facts from huggingface_hub's `scan_cache_dir`: repos and revisions with what
    planning needs."""
    accounting = Accounting(str(info.cache_dir) if getattr(info, "cache_dir", None) else root)
    incomplete = [(str(f.file_path), f.size_on_disk) for f in getattr(info, "incomplete_files", ())]
    return hub_section(root, [view(r) for r in info.repos], info.size_on_disk, incomplete, list(info.warnings),
                       holders, accounting)


def incomplete_problem(path: Path) -> str | None:
    """Why an `*.incomplete` file is not an interrupted hub download: it must be a regular file directly in
    the blobs/ folder of a hub repo folder (huggingface_hub downloads `blobs/<etag>….incomplete` there)."""
    if path.parent.name != "blobs":
        return "not in a blobs/ folder"
    why = not_hub(path.parent.parent)
    if why:
        return f"{path.parent.parent} is not a hub repo folder: {why}"
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return "not a regular file (a symlink or a folder)"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def trash_name() -> str:
    return f"{TRASH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def leftovers(hub_root: str) -> list[Path]:
    """What an interrupted run left under .locks/: renamed repo folders, and journals too damaged to read
    (a journal is written whole before the first deletion, so a damaged one stands for nothing deleted)."""
    try:
        entries = sorted((Path(hub_root) / ".locks").iterdir())
    except OSError:
        return []
    out = [p for p in entries if p.name.startswith(TRASH_PREFIX)]
    out += [p for p in entries if p.name.startswith(JOURNAL_PREFIX) and _read_journal(p) is None]
    return sorted(out)


# ---- the journal: what a confirmed hub deletion is about to do, for the next run to finish ----

def _read_journal(path: Path) -> dict[str, Any] | None:
    data = safefs.read_small(str(path))
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != JOURNAL_SCHEMA or not isinstance(doc.get("repos"), list):
        return None
    repos = []
    for entry in doc["repos"]:
        if not isinstance(entry, dict):
            return None
        folder, commits = entry.get("folder"), entry.get("commits")
        blobs, shared = entry.get("blobs"), entry.get("shared")
        if not (isinstance(folder, str) and REPO_DIR.match(folder) and NAME.match(folder)
                and isinstance(commits, list) and all(isinstance(c, str) and NAME.match(c) for c in commits)
                and isinstance(blobs, list) and all(isinstance(b, str) and NAME.match(b) for b in blobs)
                and isinstance(shared, list) and all(isinstance(s, str) and STORE_REL.match(s) for s in shared)):
            return None
        repos.append({"folder": folder, "commits": commits, "blobs": blobs, "shared": shared,
                      "whole": bool(entry.get("whole"))})
    return {"repos": repos}


def journals(hub_root: str) -> list[tuple[Path, dict[str, Any]]]:
    try:
        entries = sorted((Path(hub_root) / ".locks").iterdir())
    except OSError:
        return []
    out = []
    for path in entries:
        if path.name.startswith(JOURNAL_PREFIX):
            doc = _read_journal(path)
            if doc is not None:
                out.append((path, doc))
    return out


def _unreferenced(root: str) -> dict[Path, int]:
    try:
        from huggingface_hub.utils._shared_blobs import unreferenced_shared_blobs
    except ImportError:
        return {}
    return unreferenced_shared_blobs(root)


def unfinished(info: Any, root: str) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str]]:
    """What journals of interrupted runs still leave to do, one unit per repo, plus the journals read ({journal:
    the paths of its units}; a journal with nothing left to do maps to []) and notes. A journaled commit still
    present is deleted (its refs, snapshot, blobs); a journaled blob no remaining revision uses is deleted; a
    repo the run was deleting whole goes once no other revision (and nothing huggingface_hub does not write)
    is in it; journaled shared payloads are swept again (the library keeps those still referenced)."""
    units, notes, read = [], [], {}
    by_path = {str(r.repo_path): r for r in (info.repos if info is not None else ())}
    loose: dict[Path, int] | None = None
    for path, doc in journals(root):
        read[str(path)] = []
        for entry in doc["repos"]:
            folder = Path(root) / entry["folder"]
            if entry["shared"] and loose is None:
                loose = _unreferenced(root)
            # the library's sweep is idempotent: it rewrites a manifest that still names deleted links, and
            # collects a payload only when no valid reference is left
            # (a payload already gone may have left its manifest, when a sweep was killed between the two)
            sweep = [Path(root) / s for s in entry["shared"]
                     if os.path.lexists(Path(root) / s) or os.path.lexists(Path(root) / (s + ".refs"))]
            if not os.path.lexists(folder):
                if sweep:
                    units.append(_unfinished_unit(root, folder, entry, [], [], False, sweep, loose or {}, None, path))
                    read[str(path)].append(str(folder))
                continue
            repo, why = by_path.get(str(folder)), not_hub(folder)
            if why or repo is None:
                notes.append(f"journal {path.name}: {folder} is left alone: "
                             f"{why or 'huggingface_hub could not scan it'}")
                read[str(path)].append(str(folder))  # never done: the journal stays
                continue
            present = {rev.commit_hash for rev in repo.revisions}
            commits = [c for c in entry["commits"] if c in present]
            keep_revs = [rev for rev in repo.revisions if rev.commit_hash not in commits]
            used = {f.blob_path for rev in keep_revs for f in rev.files}
            blobs = [b for b in entry["blobs"] if (folder / "blobs" / b) not in used
                     and os.path.lexists(folder / "blobs" / b)]
            whole = entry["whole"] and not keep_revs and not foreign(folder)
            if commits or blobs or whole or sweep:
                units.append(_unfinished_unit(root, folder, entry, commits, blobs, whole, sweep, loose or {},
                                              (info, repo), path))
                read[str(path)].append(str(folder))
    return units, read, notes


def _unfinished_unit(root: str, folder: Path, entry: dict[str, Any], commits: list[str], blobs: list[str],
                     whole: bool, sweep: list[Path], loose: dict[Path, int], scanned: Any,
                     journal: Path) -> dict[str, Any]:
    size = sum(loose.get(p, 0) for p in sweep)
    if scanned is not None and commits:
        size += strategy(scanned[0], scanned[1], commits).expected_freed_size
    for b in blobs:
        try:
            st = os.lstat(folder / "blobs" / b)
            size += st.st_size if stat.S_ISREG(st.st_mode) else 0
        except OSError:
            pass
    name = entry["folder"]
    kind, _, rest = name.partition("--")
    repo = scanned[1] if scanned is not None else None
    last = repo.last_accessed if repo is not None else 0.0
    return {"kind": "unfinished", "root": root, "path": str(folder), "repo_path": str(folder),
            "repo_id": repo.repo_id if repo is not None else rest.replace("--", "/"),
            "repo_type": repo.repo_type if repo is not None else kind.rstrip("s"),
            "commits": commits, "blobs": blobs, "whole": whole, "shared": [str(p) for p in sweep],
            "bytes": size, "last_access": last, "errors": [], "journal": str(journal),
            "outside": _outside(repo, root) if repo is not None else []}


# ---- execution ----

@dataclass
class RepoJob:
    """One repo's share of a confirmed deletion: every path with what it was when the plan was shown."""

    folder: str
    paths: list[str]  # the plan items it carries out
    commits: list[str]
    whole: bool
    refs: list[tuple[Rel, Seen]] = field(default_factory=list)
    snapshots: list[tuple[Rel, Seen]] = field(default_factory=list)
    blobs: list[tuple[Rel, Seen]] = field(default_factory=list)
    shared: list[tuple[Rel, Seen | None]] = field(default_factory=list)  # None: the payload is already gone
    ref_commits: dict[Rel, str] = field(default_factory=dict)  # the commit each ref named at plan time
    seen: Seen | None = None
    problem: str | None = None
    failed: bool = False

    def journal(self) -> dict[str, Any]:
        return {"folder": self.folder, "commits": self.commits, "whole": self.whole,
                "blobs": [rel[-1] for rel, _ in self.blobs], "shared": ["/".join(rel) for rel, _ in self.shared]}


def _rel(root: str, path: Path | str) -> Rel:
    rel = os.path.relpath(str(path), root)
    parts = tuple(rel.split(os.sep))
    if rel.startswith("..") or os.path.isabs(rel) or any(p in ("", ".", "..") for p in parts):
        raise Changed(f"{path}: refused: not under {root}")
    return parts


def prepare_repo(info: Any, root: str, repo_path: str, commits: list[str], paths: list[str],
                 extra_blobs: list[str] = (), whole_ok: bool = True, extra_shared: list[str] = (),
                 dirs: dict[Rel, Seen] | None = None) -> RepoJob:
    """The paths huggingface_hub's strategy deletes for these commits of one repo, each with its plan-time
    identity; a repo deleted whole also loses every other entry of its blobs/ and then its folder."""
    folder = Path(repo_path)
    job = RepoJob(folder=folder.name, paths=paths, commits=sorted(commits), whole=False)
    dirs = {} if dirs is None else dirs
    try:
        rel_folder = _rel(root, folder)
        if len(rel_folder) != 1:
            raise Changed(f"{folder}: refused: not directly in the cache")
        job.seen = safefs.look(str(folder))
        if job.seen is not None:
            if not_hub(folder):
                raise Changed(f"{folder}: refused: {not_hub(folder)}")
            dirs[rel_folder] = job.seen
            _prepare_folder(job, info, root, folder, commits, extra_blobs, whole_ok, dirs)
        for rel_text in extra_shared:
            target = Path(root) / rel_text
            if any(r == _rel(root, target) for r, _ in job.shared):
                continue
            if os.path.lexists(target):
                job.shared.append(_entry(root, target, ("file",), dirs))
            elif os.path.lexists(str(target) + ".refs"):  # only its manifest is left
                job.shared.append(_entry(root, Path(str(target) + ".refs"), ("file",), dirs))
                job.shared[-1] = (_rel(root, target), None)
    except Changed as exc:
        job.problem = str(exc)
    except OSError as exc:
        job.problem = f"{folder}: {exc.strerror or exc}"
    return job


def _prepare_folder(job: RepoJob, info: Any, root: str, folder: Path, commits: list[str], extra_blobs: list[str],
                    whole_ok: bool, dirs: dict[Rel, Seen]) -> None:
    repo = next((r for r in info.repos if r.repo_path == folder), None) if info is not None else None
    deleted = [rev for rev in (repo.revisions if repo is not None else ()) if rev.commit_hash in commits]
    keep = [rev for rev in (repo.revisions if repo is not None else ()) if rev.commit_hash not in commits]
    job.whole = not keep and whole_ok and not foreign(folder)
    rel_folder = (folder.name,)
    blobs_dir = folder / "blobs"
    for sub in ("blobs", "snapshots", "refs"):
        seen = safefs.look(str(folder / sub))
        if seen is not None:
            if seen.kind != "dir":
                raise Changed(f"{folder / sub}: refused: not a plain folder")
            dirs[rel_folder + (sub,)] = seen
    for rev in deleted:
        for ref in sorted(rev.refs):
            job.refs.append(_entry(root, folder / "refs" / ref, ("file",), dirs))
            job.ref_commits[job.refs[-1][0]] = rev.commit_hash
        job.snapshots.append(_entry(root, rev.snapshot_path, ("dir",), dirs))
    used = {f.blob_path for rev in keep for f in rev.files}
    if job.whole:
        names = sorted(os.listdir(blobs_dir))
    else:
        names = sorted({f.blob_path.name for rev in deleted for f in rev.files
                        if f.blob_path.parent == blobs_dir and f.blob_path not in used} | set(extra_blobs))
    for name in names:
        blob = blobs_dir / name
        seen = safefs.look(str(blob))
        if blob in used or seen is None or (job.whole and seen.kind not in ("file", "link")):
            continue  # a folder in blobs/ is not the hub's: it goes with the repo folder, never alone
        rel, seen = _entry(root, blob, ("file", "link"), dirs)
        job.blobs.append((rel, seen))
        if seen.kind == "link" and (target := _shared_target(blob, root)) is not None:
            job.shared.append(_entry(root, target, ("file",), dirs))


def _entry(root: str, path: Path, kinds: tuple[str, ...], dirs: dict[Rel, Seen]) -> tuple[Rel, Seen]:
    rel = _rel(root, path)
    for i in range(1, len(rel)):
        if rel[:i] not in dirs:
            seen = safefs.look(os.path.join(root, *rel[:i]))
            if seen is None or seen.kind != "dir":
                raise Changed(f"{os.path.join(root, *rel[:i])}: refused: not a plain folder")
            dirs[rel[:i]] = seen
    seen = safefs.look(str(path))
    if seen is None or seen.kind not in kinds:
        what = "missing" if seen is None else f"a {seen.kind}"
        raise Changed(f"{path}: refused: {what}, where huggingface_hub writes a {' or '.join(kinds)}")
    return rel, seen


def delete(jobs: list[RepoJob], root: Root, hook: Any = None) -> list[str]:
    """Execute prepared repo jobs in an order where every prefix leaves a cache that `scan_cache_dir` reads
    without warnings: refs, then snapshots, then blobs, then the shared-store payloads no repo uses any more
    (huggingface_hub's own sweep), then each emptied repo folder moved atomically out of the scan's sight
    (.locks/) before it is removed. Each path is re-checked against the plan just before it goes; a repo
    where one is refused or fails goes no further. Returns errors; never raises for one path."""
    errors: list[str] = []
    for job in jobs:
        if job.problem:
            job.failed = True
            errors.append(job.problem)
    for phase in ("refs", "snapshots", "blobs"):
        if hook:
            hook(phase)
        for job in jobs:
            if job.failed:
                continue
            try:
                _recheck(root, job, phase)
            except (Changed, OSError) as exc:
                job.failed = True
                errors.append(f"{exc}; stopped before its {phase}")
                continue
            for rel, seen in getattr(job, phase):
                try:
                    if phase == "snapshots":
                        failures: list[str] = []
                        root.rmtree(rel, seen, failures)
                        if failures:
                            raise OSError(failures[0])
                    elif phase == "refs":
                        data = root.read(rel, seen)
                        if data is not None and data.decode(errors="replace").strip() != job.ref_commits.get(rel):
                            raise Changed(f"{root.show(rel)}: refused: it names another commit than when the plan "
                                          "was shown")
                        root.unlink(rel, seen)
                    else:
                        root.unlink(rel, seen)
                except (Changed, OSError) as exc:
                    job.failed = True
                    errors.append(f"{exc}; stopped before its next phase" if isinstance(exc, Changed)
                                  else f"{root.show(rel)}: {exc.strerror or exc}; stopped before its next phase")
                    break
    if hook:
        hook("shared")
    refused = _sweep([rel_seen for job in jobs if not job.failed for rel_seen in job.shared], root)
    errors += list(refused.values())
    for job in jobs:  # its folder stays, and the journal with it: the next run sweeps again
        if any(rel in refused for rel, _ in job.shared):
            job.failed = True
    if hook:
        hook("repos")
    for job in jobs:
        if job.failed or not job.whole:
            continue
        try:
            errors += remove_folder(root, (job.folder,), job.seen)
        except (Changed, OSError) as exc:
            job.failed = True
            errors.append(str(exc) if isinstance(exc, Changed) else f"{root.show((job.folder,))}: {exc}")
    return errors


def _recheck(root: Root, job: RepoJob, phase: str) -> None:
    """What another process may have changed in the repo since the plan (a download of a revision that
    shares a blob, a branch pointed at a commit being deleted): checked before each phase, by descriptor."""
    if job.seen is None or not (job.refs or job.snapshots or job.blobs):
        return
    if phase == "snapshots":  # no ref left may name a commit whose snapshot goes now
        try:
            for where, _, data in root.files((job.folder, "refs"), read=256):
                named = (data or b"").decode(errors="replace").strip()
                if named in job.commits:
                    raise Changed(f"{root.show((job.folder, 'refs', where))}: refused: it names {named}, which the "
                                  "plan deletes (a branch or tag points to it again)")
        except FileNotFoundError:
            pass
    elif phase == "blobs":  # a blob a snapshot links to now (a revision downloaded since the plan) stays
        try:
            left = root.listdir((job.folder, "snapshots"))
            used = {os.path.basename(link) for _, link, _ in root.files((job.folder, "snapshots")) if link}
        except FileNotFoundError:
            left, used = [], set()
        if left:
            job.whole = False
        job.blobs = [(rel, seen) for rel, seen in job.blobs if rel[-1] not in used]


def _sweep(shared: list[tuple[Rel, Seen | None]], root: Root) -> dict[Rel, str]:
    """huggingface_hub's own collection of shared payloads no repo symlink references any more, each after
    the store folders and the payload are checked against the plan (the library works by path). Returns
    the payloads refused, with why."""
    if not shared:
        return {}
    from huggingface_hub.utils._shared_blobs import sweep_shared_blob

    errors: dict[Rel, str] = {}
    for rel, seen in dict(shared).items():
        try:
            pfd = root.parent(rel)  # checks that the cache's path still leads to the planned folder, too
            try:
                gone = seen is None or root.check(pfd, rel, seen) is None
            finally:
                os.close(pfd)
            if not gone:
                sweep_shared_blob(Path(root.path, *rel), cache_dir=Path(root.path))
            _drop_leftovers(root, rel)
        except (Changed, OSError) as exc:
            errors[rel] = str(exc) if isinstance(exc, Changed) else f"{root.show(rel)}: {exc}"
    return errors


def _drop_leftovers(root: Root, rel: Rel) -> None:
    """What a sweep killed between its steps leaves beside a payload: `<hash>.refs.<8 hex>.tmp` (a manifest
    rewrite), or the manifest of a payload already collected. Removed under the library's lock for that
    payload, the manifest only while no payload is there (a download publishing it again holds that lock)."""
    try:
        from huggingface_hub.utils._shared_blobs import _shared_blob_lock
    except ImportError:
        return
    temp = re.compile(re.escape(rel[-1]) + r"\.refs\.[0-9a-f]{8}\.tmp$")
    with _shared_blob_lock(Path(root.path, *rel)):
        pfd = root.parent(rel)
        try:
            names = os.listdir(pfd)
            doomed = [n for n in names if temp.match(n)]
            if rel[-1] not in names and rel[-1] + ".refs" in names:
                doomed.append(rel[-1] + ".refs")
            for name in doomed:
                if stat.S_ISREG(os.stat(name, dir_fd=pfd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=pfd)
        finally:
            os.close(pfd)


def remove_folder(root: Root, rel: Rel, seen: Seen | None) -> list[str]:
    """Move a folder under .locks/ (one atomic rename inside the cache), then remove it there."""
    if seen is None:
        return []
    root.makedirs((".locks",))
    trash = (".locks", trash_name())
    if not root.rename(rel, seen, trash):
        return []
    errors: list[str] = []
    root.rmtree(trash, seen, errors)
    return errors


def write_journal(root: Root, jobs: list[RepoJob]) -> Rel | None:
    entries = [job.journal() for job in jobs if not job.problem]
    if not entries:
        return None
    root.makedirs((".locks",))
    rel = (".locks", f"{JOURNAL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.json")
    doc = {"schema": JOURNAL_SCHEMA, "created": time.time(), "pid": os.getpid(), "repos": entries}
    safefs.write_new(root, rel, json.dumps(doc, indent=1).encode())
    return rel


def drop_journal(root: Root, rel: Rel) -> list[str]:
    try:
        pfd = root.parent(rel)
        try:
            st = os.stat(rel[-1], dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                os.unlink(rel[-1], dir_fd=pfd)
        finally:
            os.close(pfd)
    except FileNotFoundError:
        pass
    except (Changed, OSError) as exc:
        return [f"{root.show(rel)}: {exc}"]
    return []
