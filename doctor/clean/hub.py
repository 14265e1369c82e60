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


def _missing_shards(snapshot: Path, names: set[str]) -> list[str]:
    """Shards a `*.index.json` in the snapshot names that the snapshot lacks (an interrupted download)."""
    missing: set[str] = set()
    for index in [n for n in names if n.endswith(".index.json")]:
        try:
            weight_map = json.loads((snapshot / index).read_text()).get("weight_map") or {}
        except (OSError, ValueError, AttributeError):
            missing.add(f"{index} (unreadable)")
            continue
        missing.update(f for f in set(weight_map.values()) if f not in names)
    return sorted(missing)


def _shared_target(blob: Path, root: str) -> Path | None:
    try:
        from huggingface_hub.utils._shared_blobs import shared_blob_target
    except ImportError:  # huggingface_hub 1.x: no shared store
        return None
    return shared_blob_target(blob, root)


def _outside(repo: Any, root: str) -> list[str]:
    """Paths a deletion of this repo would touch that huggingface_hub did not write there: outside the cache,
    outside the repo's own blobs/ (a crafted link into another repo), or a blob symlink that does not lead to
    the shared store."""
    if not inside(str(repo.repo_path), root) or repo.repo_path.is_symlink():
        return [str(repo.repo_path)]
    blobs_dir = repo.repo_path / "blobs"
    found: list[str] = []
    checked: set[Path] = set()
    for rev in repo.revisions:
        for f in rev.files:
            blob = f.blob_path
            if blob in checked:
                continue
            checked.add(blob)
            if blob.parent == blobs_dir:
                try:
                    is_link = stat.S_ISLNK(os.lstat(blob).st_mode)
                except OSError:
                    is_link = False
                if is_link and _shared_target(blob, root) is None:
                    found.append(f"{blob} -> {os.readlink(blob)}")
            elif rev.snapshot_path not in blob.parents or not inside(str(blob), root):
                found.append(str(blob))
            if len(found) >= 5:
                return found
    return found


def held_under(holders: Holders, root: str) -> dict[str, list[str]]:
    """The held paths inside the cache: usually none, which spares resolving every blob."""
    base = root.rstrip("/") + "/"
    return {p: w for p, w in holders.paths.items() if p.startswith(base)}


def repo_holders(repo: Any, held: dict[str, list[str]]) -> list[str]:
    """Processes holding a file of this repo (`held` from `held_under`): under its folder, or its blobs'
    real paths (a shared-store payload, or a mapped safetensors file seen through its snapshot symlink)."""
    if not held:
        return []
    prefix = os.path.realpath(repo.repo_path).rstrip("/") + "/"
    found = list(dict.fromkeys(w for p, who in held.items() if p.startswith(prefix) for w in who))
    if all(p.startswith(prefix) for p in held):
        return found
    blobs = {os.path.realpath(f.blob_path) for r in repo.revisions for f in r.files}
    return found + [w for p in sorted(blobs & held.keys()) for w in held[p] if w not in found]


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


def summarise(info: Any, root: str, holders: Holders | None = None) -> dict[str, Any]:
    """The hub section of the facts: repos and revisions with what planning needs."""
    repos = []
    held = held_under(holders, root) if holders is not None else {}
    for repo in sorted(info.repos, key=lambda r: (-r.size_on_disk, str(r.repo_path))):
        revisions = []
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            cut = len(str(rev.snapshot_path)) + 1
            rel_names = {str(f.file_path)[cut:] for f in rev.files}
            names = {n.rsplit("/", 1)[-1] for n in rel_names}
            revisions.append({
                "commit": rev.commit_hash, "refs": sorted(rev.refs), "size_bytes": rev.size_on_disk,
                "freed_bytes": strategy(info, repo, [rev.commit_hash]).expected_freed_size,
                "last_access": max((f.blob_last_accessed for f in rev.files), default=rev.last_modified),
                "files": len(rev.files), "has_config": "config.json" in names,
                "weights": sorted(n for n in rel_names if n.endswith((".safetensors", ".bin")))[:5],
                "missing_shards": _missing_shards(rev.snapshot_path, rel_names)})
        in_use = repo_holders(repo, held)
        why_not = not_hub(repo.repo_path)
        entry = {"repo_id": repo.repo_id, "repo_type": repo.repo_type, "path": str(repo.repo_path),
                 "size_bytes": repo.size_on_disk, "last_access": repo.last_accessed,
                 "freed_bytes": revisions[0]["freed_bytes"] if len(revisions) == 1 else
                 strategy(info, repo, [r.commit_hash for r in repo.revisions]).expected_freed_size
                 if repo.revisions else 0,
                 "in_use": in_use[:10], "outside": _outside(repo, root), "revisions": revisions}
        if why_not:
            entry["not_hub"] = why_not
        else:
            extra = foreign(repo.repo_path)
            if extra:
                entry["foreign"] = extra[:10]
        repos.append(entry)
    incomplete = sorted(getattr(info, "incomplete_files", ()), key=lambda f: str(f.file_path))
    return {"exists": True, "path": root, "size_bytes": info.size_on_disk, "repos": repos,
            "incomplete_files": len(incomplete), "incomplete_bytes": sum(f.size_on_disk for f in incomplete),
            "warnings": [" ".join(str(w).split()) for w in info.warnings][:10], "warning_count": len(info.warnings),
            "in_use_scan": holders.to_dict() if holders is not None else None}


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
