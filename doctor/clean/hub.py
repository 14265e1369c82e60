"""The Hugging Face hub cache through huggingface_hub's own cache API: scan, per-revision facts for
planning (last access, bytes a deletion frees by the library's own `expected_freed_size`), and a
crash-safe execution of its delete strategy."""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

from .inuse import Holders
from .trees import inside

TRASH_PREFIX = "doctor-trash-"  # under <hub>/.locks/, which scan_cache_dir skips


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


def _outside(repo: Any, root: str) -> list[str]:
    """Paths a deletion of this repo would touch that lie outside the cache (crafted or foreign symlinks)."""
    if not inside(str(repo.repo_path), root) or repo.repo_path.is_symlink():
        return [str(repo.repo_path)]
    by_parent: dict[str, list[str]] = {}
    for rev in repo.revisions:
        for f in rev.files:
            blob = str(f.blob_path)
            by_parent.setdefault(os.path.dirname(blob), []).append(blob)
    return [p for parent, paths in by_parent.items() if not inside(os.path.join(parent, "x"), root) for p in paths][:5]


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
    """Planning units from the hub facts: one per revision, carrying its repo's figures."""
    out = []
    for repo in hub.get("repos") or []:
        for rev in repo.get("revisions") or []:
            if "freed_bytes" not in rev:  # a facts snapshot older than schema 1.3
                continue
            out.append({"kind": "hub", "root": hub.get("path"), "device": device,
                        "path": f"{repo['path']}/snapshots/{rev['commit']}", "repo_path": repo["path"],
                        "repo_id": repo["repo_id"], "repo_type": repo["repo_type"], "commit": rev["commit"],
                        "refs": rev["refs"], "detached": not rev["refs"], "bytes": rev["freed_bytes"],
                        "last_access": rev["last_access"], "in_use": repo.get("in_use") or [],
                        "outside": repo.get("outside") or [], "errors": [], "repo_bytes": repo["freed_bytes"],
                        "repo_revisions": len(repo["revisions"])})
    return out


def summarise(info: Any, root: str, holders: Holders | None = None) -> dict[str, Any]:
    """The hub section of the facts: repos and revisions with what planning needs."""
    repos = []
    held = held_under(holders, root) if holders is not None else {}
    for repo in sorted(info.repos, key=lambda r: -r.size_on_disk):
        revisions = []
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            cut = len(str(rev.snapshot_path)) + 1
            rel_names = {str(f.file_path)[cut:] for f in rev.files}
            names = {n.rsplit("/", 1)[-1] for n in rel_names}
            revisions.append({
                "commit": rev.commit_hash, "refs": sorted(rev.refs), "size_bytes": rev.size_on_disk,
                "freed_bytes": info.delete_revisions(rev.commit_hash).expected_freed_size,
                "last_access": max((f.blob_last_accessed for f in rev.files), default=rev.last_modified),
                "files": len(rev.files), "has_config": "config.json" in names,
                "weights": sorted(n for n in rel_names if n.endswith((".safetensors", ".bin")))[:5],
                "missing_shards": _missing_shards(rev.snapshot_path, rel_names)})
        in_use = repo_holders(repo, held)
        repos.append({"repo_id": repo.repo_id, "repo_type": repo.repo_type, "path": str(repo.repo_path),
                      "size_bytes": repo.size_on_disk, "last_access": repo.last_accessed,
                      "freed_bytes": revisions[0]["freed_bytes"] if len(revisions) == 1 else
                      info.delete_revisions(*(r.commit_hash for r in repo.revisions)).expected_freed_size
                      if repo.revisions else 0,
                      "in_use": in_use[:10], "outside": _outside(repo, root), "revisions": revisions})
    incomplete = sorted(getattr(info, "incomplete_files", ()), key=lambda f: str(f.file_path))
    return {"exists": True, "path": root, "size_bytes": info.size_on_disk, "repos": repos,
            "incomplete_files": len(incomplete), "incomplete_bytes": sum(f.size_on_disk for f in incomplete),
            "warnings": [" ".join(str(w).split()) for w in info.warnings][:10], "warning_count": len(info.warnings),
            "in_use_scan": holders.to_dict() if holders is not None else None}


def trash_dir(hub_root: str) -> Path:
    return Path(hub_root) / ".locks" / f"{TRASH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


def leftovers(hub_root: str) -> list[Path]:
    """Trash left by an interrupted run (renamed repo folders under .locks/)."""
    try:
        return sorted(p for p in (Path(hub_root) / ".locks").iterdir() if p.name.startswith(TRASH_PREFIX))
    except OSError:
        return []


def delete(info: Any, hub_root: str, commits: list[str], empty_repos: tuple[str, ...] = ()) -> list[str]:
    """Delete revisions with huggingface_hub's strategy, executed in an order where every prefix leaves a
    cache that `scan_cache_dir` reads without warnings: refs, then snapshots, then blobs (the library
    sweeps shared-store payloads then), then each emptied repo folder moved atomically out of the scan's
    sight (.locks/) before it is removed. A phase that leaves a path behind (the library logs a
    PermissionError instead of raising) stops the rest. Returns errors; never raises for one path."""
    strategy = info.delete_revisions(*commits)
    wanted = set(commits)
    whole = [repo.repo_path for repo in info.repos if repo.repo_path in strategy.repos]
    whole += [Path(p) for p in empty_repos]
    refs, snapshots, blobs = set(strategy.refs), set(strategy.snapshots), set(strategy.blobs)
    for repo in info.repos:
        if repo.repo_path not in strategy.repos:
            continue
        for rev in repo.revisions:
            if rev.commit_hash in wanted:
                refs.update(repo.repo_path / "refs" / ref for ref in rev.refs)
                snapshots.add(rev.snapshot_path)
    for repo_path in whole:
        try:
            blobs.update((repo_path / "blobs").iterdir())
        except OSError:
            pass
    empty = replace(strategy, expected_freed_size=0, blobs=frozenset(), refs=frozenset(), repos=frozenset(),
                    snapshots=frozenset())
    for name, paths in (("refs", refs), ("snapshots", snapshots), ("blobs", blobs)):
        try:
            replace(empty, **{name: frozenset(paths)}).execute()
        except OSError as exc:
            return [f"{type(exc).__name__}: {exc}"]  # later phases would break what is left; the cache still scans
        left = sorted(str(p) for p in paths if os.path.lexists(p))
        if left:
            return [f"could not delete {len(left)} {name} path(s), e.g. {left[0]}; stopped before the next phase"]
    errors: list[str] = []
    for repo_path in whole:
        errors.extend(remove_repo_folder(repo_path, hub_root))
    return errors


def remove_repo_folder(repo_path: Path, hub_root: str) -> list[str]:
    """Move a repo folder under .locks/ (one atomic rename), then remove it there."""
    trash = trash_dir(hub_root)
    try:
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(repo_path, trash)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{repo_path}: {type(exc).__name__}: {exc.strerror or exc}"]
    return remove_trash(trash)


def remove_trash(path: Path) -> list[str]:
    from .trees import rmtree

    errors: list[str] = []
    rmtree(str(path), errors)
    return errors
