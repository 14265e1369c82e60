"""What can be reclaimed, per root and filesystem: the hub cache (huggingface_hub's scan), the other
caches, checkpoint folders, leftovers of an interrupted run; with the processes that hold files."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hub, trees
from .inuse import Holders, scan as scan_holders


@dataclass
class Inventory:
    units: list[dict[str, Any]] = field(default_factory=list)
    filesystems: dict[int, dict[str, Any]] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)  # label -> real path
    caches: list[dict[str, Any]] = field(default_factory=list)  # per root: what it holds
    notes: list[str] = field(default_factory=list)
    hub_info: Any = None
    hub_root: str | None = None
    hub_device: int | None = None
    holders: Holders = field(default_factory=Holders)
    journals: dict[str, list[str]] = field(default_factory=dict)  # interrupted runs' journals -> their units


def _filesystem(inv: Inventory, root: str) -> int | None:
    from ..filesystems import filesystem

    try:
        fs = filesystem(root)
    except OSError as exc:
        inv.notes.append(f"{root}: cannot read its filesystem: {exc.strerror or exc}")
        return None
    dev = fs["device"]
    if dev not in inv.filesystems:
        held = inv.holders.deleted.get(dev, [])
        inv.filesystems[dev] = {"mountpoint": fs["mountpoint"], "free_bytes": fs["free_bytes"],
                                "total_bytes": fs["total_bytes"], "held_deleted_bytes": inv.holders.held_deleted_bytes(dev),
                                "held_by": sorted({h for _, h, _ in held})[:5]}
    return dev


def _held(inv: Inventory, unit: dict[str, Any], device: int | None) -> dict[str, Any]:
    unit["device"] = device
    unit.setdefault("in_use", inv.holders.under(os.path.realpath(unit["path"])) if not unit.get("outside") else [])
    return unit


def _hub(inv: Inventory, hub_dir: str, now: float) -> None:
    info, error = hub.scan_info(hub_dir)
    if error:
        inv.notes.append(error)
    if info is None:
        inv.caches.append({"kind": "hub", "path": hub_dir, "exists": False, "bytes": 0})
        return
    root = os.path.realpath(hub_dir)
    inv.hub_info, inv.hub_root, inv.roots["hub"] = info, root, root
    dev = inv.hub_device = _filesystem(inv, root)
    facts = hub.summarise(info, root, inv.holders)
    unfinished, journals, notes = hub.unfinished(info, root)
    inv.notes += notes
    inv.journals = {j: paths for j, paths in journals.items() if paths}
    absorbed = {(u["repo_path"], c) for u in unfinished for c in u["commits"]} | {
        (u["repo_path"], None) for u in unfinished}
    inv.units += [u for u in hub.units(facts, dev) if (u["repo_path"], u["commit"]) not in absorbed]
    inv.units += [_held(inv, {**u, "in_use": _repo_held(inv, u["repo_path"])}, dev) for u in unfinished]
    for repo in facts["repos"]:
        if repo.get("not_hub"):
            inv.notes.append(f"not a hub cache entry, never deleted: {repo['path']} ({repo['not_hub']})")
    skipped, incomplete_bytes = 0, 0
    for f in sorted(getattr(info, "incomplete_files", ()), key=lambda f: str(f.file_path)):
        why = hub.incomplete_problem(f.file_path)
        if why:
            skipped += 1
            if skipped <= 5:
                inv.notes.append(f"not an interrupted hub download, never deleted: {f.file_path} ({why})")
            continue
        try:
            mtime = f.file_path.stat().st_mtime
        except OSError:
            mtime = now
        incomplete_bytes += f.size_on_disk
        inv.units.append(_held(inv, {"kind": "incomplete", "root": root, "path": str(f.file_path),
                                     "bytes": f.size_on_disk, "last_access": mtime, "errors": [],
                                     "outside": [] if trees.inside(str(f.file_path), root) else [str(f.file_path)]},
                               dev))
    if skipped > 5:
        inv.notes.append(f"… and {skipped - 5} more *.incomplete files outside hub repo folders, never deleted")
    for repo in info.repos:
        if not repo.revisions and (str(repo.repo_path), None) not in absorbed and not hub.not_hub(repo.repo_path):
            size, last, errors = trees.tree_size(str(repo.repo_path))
            inv.units.append(_held(inv, {"kind": "hub-empty", "root": root, "path": str(repo.repo_path),
                                         "repo_id": repo.repo_id, "bytes": size, "last_access": last,
                                         "errors": errors, "outside": [],
                                         "foreign": hub.foreign(repo.repo_path)}, dev))
    for path in hub.leftovers(root) + [Path(j) for j, paths in journals.items() if not paths]:
        size, last, errors = trees.tree_size(str(path))
        inv.units.append(_held(inv, {"kind": "leftover", "root": root, "path": str(path), "bytes": size,
                                     "last_access": last, "errors": [], "outside": []}, dev))
    inv.notes += [f"hub cache entry skipped by huggingface_hub's scan (never deleted): {w}"
                  for w in facts["warnings"]]
    inv.caches.append({"kind": "hub", "path": root, "exists": True, "bytes": info.size_on_disk,
                       "repos": len(info.repos), "revisions": sum(len(r.revisions) for r in info.repos),
                       "detached": sum(1 for r in info.repos for v in r.revisions if not v.refs),
                       "incomplete_bytes": incomplete_bytes})


def _repo_held(inv: Inventory, repo_path: str) -> list[str]:
    repo = next((r for r in inv.hub_info.repos if str(r.repo_path) == repo_path), None)
    if repo is None:
        return inv.holders.under(repo_path)
    return hub.repo_holders(repo, hub.held_under(inv.holders, inv.hub_root or "/"))


def _tree_root(inv: Inventory, kind: str, root: str, found: list[dict[str, Any]]) -> None:
    real = os.path.realpath(root)
    dev = _filesystem(inv, real)
    inv.roots[kind if kind != "checkpoint" else f"checkpoints {real}"] = real
    units = [_held(inv, u, dev) for u in found + trees.leftover_units(real)]
    inv.units += units
    inv.caches.append({"kind": kind, "path": real, "exists": True, "bytes": sum(u["bytes"] for u in units),
                       "entries": len(units)})


def take(hub_dir: str, checkpoint_dirs: list[str], keep_last: int | None, best: str | None, now: float,
         environ: dict[str, str] | None = None) -> Inventory:
    """Everything under the named roots; nothing outside them is read beyond `realpath` of their parents."""
    inv = Inventory(holders=scan_holders())
    if inv.holders.denied:
        inv.notes.append(f"{len(inv.holders.denied)} process(es) could not be inspected (AccessDenied: another user, or a sandbox),"
                         f" so files they hold may be planned: {', '.join(inv.holders.denied[:3])}"
                         + ("…" if len(inv.holders.denied) > 3 else ""))
    _hub(inv, hub_dir, now)
    for kind, root in trees.cache_roots(environ).items():
        if os.path.isdir(root):
            _tree_root(inv, kind, root, trees.other_cache_units(kind, os.path.realpath(root)))
        else:
            inv.caches.append({"kind": kind, "path": root, "exists": False, "bytes": 0})
    for folder in checkpoint_dirs:
        _tree_root(inv, "checkpoint", folder, trees.checkpoint_units(folder, keep_last, best))
    for dev, fs in inv.filesystems.items():
        if fs["held_deleted_bytes"]:
            inv.notes.append(f"{fs['mountpoint']}: {fs['held_deleted_bytes']:,} bytes are deleted files still open "
                             f"({', '.join(fs['held_by'])}): they free only when those processes exit")
    return inv
