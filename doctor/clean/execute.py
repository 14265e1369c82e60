"""Carry out a confirmed plan: under a lock per root, re-check what processes hold, delete in a
crash-safe order, then verify by looking again (a rescan of the hub cache, the paths, free space)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator

from ..errors import InputError
from . import hub, trees
from .inventory import Inventory
from .inuse import scan as scan_holders


def lock_path(root: str) -> str:
    digest = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:16]
    return os.path.join(tempfile.gettempdir(), f"doctor-clean-cache-{digest}.lock")


@contextmanager
def locked(roots: list[str]) -> Iterator[None]:
    """One lock per root, taken without waiting: a second run refuses instead of deleting too."""
    from filelock import FileLock, Timeout

    with ExitStack() as stack:
        for root in sorted(set(roots)):
            lock = FileLock(lock_path(root), mode=0o666)
            try:
                stack.enter_context(lock.acquire(timeout=0))
            except Timeout:
                raise InputError("doctor clean-cache", None,
                                 f"another doctor clean-cache is running on {root} (lock {lock_path(root)}); "
                                 "wait for it to finish, then plan again") from None
            except OSError as exc:
                raise InputError(lock_path(root), None, f"cannot take the lock: {exc.strerror or exc}") from None
        yield


def _still_free(item: dict[str, Any], inv: Inventory, holders: Any) -> list[str]:
    """Holders that appeared since the plan (a job started while the user read it)."""
    if item["kind"] in ("hub", "hub-repo") and inv.hub_info is not None:
        repo = next((r for r in inv.hub_info.repos if str(r.repo_path) == item["repo_path"]), None)
        return hub.repo_holders(repo, hub.held_under(holders, inv.hub_root or "/")) if repo is not None else []
    return holders.under(os.path.realpath(item["path"]))


def run(plan: dict[str, Any], inv: Inventory) -> dict[str, Any]:
    """Delete the plan's items; returns per-item outcome, errors, and measured free space per filesystem."""
    holders = scan_holders()
    done, skipped, errors = [], [], []
    todo = []
    for item in plan["items"]:
        now_held = _still_free(item, inv, holders)
        if now_held:
            skipped.append({**item, "reason": "opened since the plan by " + ", ".join(now_held[:3])})
        else:
            todo.append(item)
    commits = [c for item in todo if item["kind"] in ("hub", "hub-repo")
               for c in (item.get("commits") or [item["commit"]])]
    for item in todo:
        if item["kind"] == "incomplete":
            try:
                if trees.inside(item["path"], item["root"]):
                    os.unlink(item["path"])
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{item['path']}: {exc.strerror or exc}")
    empty = tuple(item["path"] for item in todo if item["kind"] == "hub-empty")
    if commits or empty:
        errors += hub.delete(inv.hub_info, inv.hub_root, commits, empty)
    for item in todo:
        kind = item["kind"]
        if kind == "leftover" and item["root"] == inv.hub_root:
            errors += hub.remove_trash(item["path"])
        elif kind not in ("hub", "hub-repo", "hub-empty", "incomplete"):
            errors += trees.remove(item["path"], item["root"])
    remaining = _remaining(todo, inv, commits)
    for item in todo:
        (skipped if item["path"] in remaining else done).append(item)
    for item in skipped:
        if item["path"] in remaining:
            item["reason"] = "still present after deletion (see errors)"
    return {"deleted": done, "not_deleted": skipped, "errors": errors, "free_after": _free_now(inv)}


def _remaining(todo: list[dict[str, Any]], inv: Inventory, commits: list[str]) -> set[str]:
    left = {i["path"] for i in todo if i["kind"] not in ("hub", "hub-repo") and os.path.lexists(i["path"])}
    if commits and inv.hub_root:
        info, _ = hub.scan_info(inv.hub_root)
        present = {rev.commit_hash for repo in (info.repos if info else ()) for rev in repo.revisions}
        left |= {i["path"] for i in todo if i["kind"] in ("hub", "hub-repo")
                 and present & set(i.get("commits") or [i["commit"]])}
    return left


def _free_now(inv: Inventory) -> dict[int, int]:
    out = {}
    for dev, fs in inv.filesystems.items():
        try:
            st = os.statvfs(fs["mountpoint"])
            out[dev] = st.f_bavail * st.f_frsize
        except OSError:
            pass
    return out
