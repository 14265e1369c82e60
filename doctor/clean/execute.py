"""Carry out a confirmed plan: under a lock that lives beside each root, record what every path is when the
plan is shown (`prepare`), re-check what processes hold, then delete in a crash-safe order, each path
re-walked from its root without following a symlink and compared with the plan just before it goes; a
journal beside the hub cache lets the next run finish a deletion that was killed; then verify by looking
again (a rescan of the hub cache, the paths, free space)."""
from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import InputError
from . import hub, safefs, trees
from .inventory import Inventory
from .inuse import scan as scan_holders
from .safefs import Changed, Rel, Root, Seen

HUB_LOCK = (".locks", "doctor-clean-cache.lock")  # scan_cache_dir skips .locks/; huggingface_hub locks there too
PHASE_HOOK: Callable[[str], None] | None = None  # called at the start of each phase (tests swap paths there)


def lock_path(root: str, is_hub: bool = False) -> str:
    """The lock lives in the cache itself, so every run on it contends for the same file, whatever the
    machine (a cache on NFS), the user or their TMPDIR."""
    return os.path.join(root, *HUB_LOCK) if is_hub else os.path.join(root, trees.LOCK_NAME)


@contextmanager
def locked(roots: list[str], hub_root: str | None = None) -> Iterator[None]:
    """One lock per root, taken without waiting: a second run refuses instead of deleting too."""
    from filelock import FileLock, Timeout

    wanted = {(os.path.realpath(r), False) for r in roots if os.path.isdir(r)}
    if hub_root is not None and os.path.isdir(hub_root):
        wanted.discard((os.path.realpath(hub_root), False))
        wanted.add((os.path.realpath(hub_root), True))
    with ExitStack() as stack:
        for root, is_hub in sorted(wanted):
            path = lock_path(root, is_hub)
            try:
                if is_hub:
                    locks = os.path.dirname(path)
                    try:
                        os.mkdir(locks)
                    except FileExistsError:
                        pass
                    if not os.path.isdir(locks) or os.path.islink(locks):
                        raise InputError(locks, None, "is not a plain folder (a symlink?); refusing to lock or "
                                                      "delete in this cache")
                stack.enter_context(FileLock(path, mode=0o666).acquire(timeout=0))
            except Timeout:
                raise InputError("doctor clean-cache", None,
                                 f"another doctor clean-cache is running on {root} (lock {path}); "
                                 "wait for it to finish, then plan again") from None
            except OSError as exc:
                raise InputError(path, None, f"cannot take the lock: {exc.strerror or exc}") from None
        yield


@dataclass
class Action:
    item: dict[str, Any]
    how: str  # "unlink", "rmtree", "trash" (rename beside, then remove), "folder" (rename under .locks/), "repo"
    root: str
    rel: Rel = ()
    seen: Seen | None = None
    problem: str | None = None


@dataclass
class Prepared:
    """What every path of the plan was when the plan was shown."""

    roots: dict[str, tuple[Seen | None, dict[Rel, Seen]]] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    jobs: list[hub.RepoJob] = field(default_factory=list)
    journals: dict[str, list[str]] = field(default_factory=dict)  # of interrupted runs: journal -> its items


def _root_of(prepared: Prepared, root: str) -> dict[Rel, Seen]:
    if root not in prepared.roots:
        prepared.roots[root] = (safefs.look(root), {})
    return prepared.roots[root][1]


def prepare(plan: dict[str, Any], inv: Inventory) -> Prepared:
    """lstat every path the plan deletes (and every folder on the way), before the confirmation."""
    planned = {item["path"] for item in plan["items"]}
    out = Prepared(journals={j: paths for j, paths in inv.journals.items() if set(paths) <= planned})
    per_repo: dict[str, list[dict[str, Any]]] = {}
    for item in plan["items"]:
        kind, root = item["kind"], item["root"]
        dirs = _root_of(out, root)
        if kind in ("hub", "hub-repo", "unfinished"):
            per_repo.setdefault(item["repo_path"], []).append(item)
            continue
        action = Action(item, "", root)
        try:
            action.rel = hub._rel(root, item["path"])
            for i in range(1, len(action.rel)):
                seen = safefs.look(os.path.join(root, *action.rel[:i]))
                if seen is None or seen.kind != "dir":
                    raise Changed(f"{os.path.join(root, *action.rel[:i])}: refused: not a plain folder")
                dirs.setdefault(action.rel[:i], seen)
            action.seen = safefs.look(item["path"])
            if action.seen is None:
                raise Changed(f"{item['path']}: already gone")
            if action.seen.kind not in ("dir", "file"):
                raise Changed(f"{item['path']}: refused: a {action.seen.kind} (symlinks are never followed nor "
                              "deleted)")
            if kind == "incomplete":
                action.how = "unlink"
            elif kind == "hub-empty":
                action.how = "folder"
            elif kind == "leftover":
                action.how = "rmtree"
            else:
                action.how = "trash"
        except Changed as exc:
            action.problem = str(exc)
        out.actions.append(action)
    for repo_path, items in per_repo.items():
        root = items[0]["root"]
        commits = sorted({c for i in items for c in (i.get("commits") or ([i["commit"]] if i.get("commit") else []))})
        unf = [i for i in items if i["kind"] == "unfinished"]
        job = hub.prepare_repo(inv.hub_info, root, repo_path, commits, [i["path"] for i in items],
                               extra_blobs=[b for i in unf for b in i.get("blobs", [])],
                               whole_ok=not unf or all(i.get("whole") for i in unf) or
                               any(i["kind"] == "hub-repo" for i in items),
                               extra_shared=[os.path.relpath(s, root) for i in unf for s in i.get("shared", [])],
                               dirs=_root_of(out, root))
        out.jobs.append(job)
    return out


def _still_free(item: dict[str, Any], inv: Inventory, holders: Any) -> list[str]:
    """Holders that appeared since the plan (a job started while the user read it)."""
    if item["kind"] in ("hub", "hub-repo", "unfinished") and inv.hub_info is not None:
        repo = next((r for r in inv.hub_info.repos if str(r.repo_path) == item["repo_path"]), None)
        if repo is not None:
            return hub.repo_holders(repo, hub.held_under(holders, inv.hub_root or "/"))
    return holders.under(os.path.realpath(item["path"]))


def _phase(name: str) -> None:
    if PHASE_HOOK is not None:
        PHASE_HOOK(name)


def run(plan: dict[str, Any], inv: Inventory, prepared: Prepared | None = None) -> dict[str, Any]:
    """Delete the plan's items; returns per-item outcome, errors, and measured free space per filesystem."""
    prepared = prepared if prepared is not None else prepare(plan, inv)
    holders = scan_holders()
    done, skipped, errors = [], [], []
    held: set[str] = set()
    for item in plan["items"]:
        now_held = _still_free(item, inv, holders)
        if now_held:
            held.add(item["path"])
            skipped.append({**item, "reason": "opened since the plan by " + ", ".join(now_held[:3])})
    failed: dict[str, str] = {}  # item path -> why it was not deleted
    with ExitStack() as stack:
        opened: dict[str, Root | None] = {}
        for root, (seen, dirs) in prepared.roots.items():
            try:
                opened[root] = stack.enter_context(Root(root, seen, dirs))
            except Changed as exc:
                opened[root] = None
                errors.append(str(exc))

        def refuse(item: dict[str, Any], why: str, report: bool = True) -> None:
            failed.setdefault(item["path"], why)
            if report:
                errors.append(why)

        _phase("incomplete")
        for action in prepared.actions:
            if action.how == "unlink" and action.item["path"] not in held:
                _act(action, opened.get(action.root), refuse)
        jobs = [j for j in prepared.jobs if not any(p in held for p in j.paths)]
        hub_root = opened.get(inv.hub_root or "")
        if jobs:
            finished = [j for j, paths in prepared.journals.items() if not held & set(paths)]
            errors += _hub(jobs, hub_root, finished, refuse)
        _phase("folders")
        for action in prepared.actions:
            if action.how != "unlink" and action.item["path"] not in held:
                _act(action, opened.get(action.root), refuse)
    remaining = _remaining([i for i in plan["items"] if i["path"] not in held], inv)
    for item in plan["items"]:
        if item["path"] in held:
            continue
        if item["path"] in failed or item["path"] in remaining:
            skipped.append({**item, "reason": failed.get(item["path"]) or "still present after deletion (see errors)"})
        else:
            done.append(item)
    return {"deleted": done, "not_deleted": skipped, "errors": list(dict.fromkeys(errors)),
            "free_after": _free_now(inv)}


def _act(action: Action, root: Root | None, refuse: Callable[..., None]) -> None:
    item = action.item
    if action.problem:
        if not action.problem.endswith("already gone"):
            refuse(item, action.problem)
        return
    if root is None:
        refuse(item, f"{item['path']}: refused: its root {action.root} changed since the plan was shown")
        return
    assert action.seen is not None
    errors: list[str] = []
    try:
        if action.how == "unlink":
            root.unlink(action.rel, action.seen)
        elif action.how == "rmtree":
            root.rmtree(action.rel, action.seen, errors)
        elif action.how == "folder":
            errors += hub.remove_folder(root, action.rel, action.seen)
        else:
            errors += trees.remove(root, action.rel, action.seen)
    except Changed as exc:
        errors.append(str(exc))
    except OSError as exc:
        errors.append(f"{item['path']}: {exc.strerror or exc}")
    if errors:
        refuse(item, errors[0])


def _hub(jobs: list[hub.RepoJob], root: Root | None, finished: list[str], refuse: Callable[..., None]) -> list[str]:
    """The hub jobs, bracketed by a journal: written before the first deletion, removed once all went."""
    if root is None:
        for job in jobs:
            for path in job.paths:
                refuse({"path": path}, f"{path}: refused: the hub cache folder changed since the plan was shown")
        return []
    try:
        journal = hub.write_journal(root, jobs)
    except (Changed, OSError) as exc:
        for job in jobs:
            for path in job.paths:
                refuse({"path": path}, f"{path}: not deleted: cannot write the journal beside the cache: {exc}")
        return []
    errors = hub.delete(jobs, root, hook=_phase)
    for job in jobs:
        if job.failed:
            why = job.problem or next((e for e in errors if job.folder in e), "a path was refused (see errors)")
            for path in job.paths:
                refuse({"path": path}, why, report=False)
    if not any(job.failed for job in jobs):  # else the journals stay, and the next run finishes from them
        for rel in ([journal] if journal else []) + [hub._rel(root.path, p) for p in finished]:
            errors += hub.drop_journal(root, rel)
    return errors


def _remaining(todo: list[dict[str, Any]], inv: Inventory) -> set[str]:
    left = {i["path"] for i in todo if i["kind"] not in ("hub", "hub-repo", "unfinished")
            and os.path.lexists(i["path"])}
    hub_items = [i for i in todo if i["kind"] in ("hub", "hub-repo", "unfinished")]
    if hub_items and inv.hub_root:
        info, _ = hub.scan_info(inv.hub_root)
        present = {(str(repo.repo_path), rev.commit_hash)
                   for repo in (info.repos if info else ()) for rev in repo.revisions}
        for i in hub_items:
            commits = i.get("commits") or ([i["commit"]] if i.get("commit") else [])
            if any((i["repo_path"], c) in present for c in commits):
                left.add(i["path"])
            elif i["kind"] == "hub-repo" and os.path.lexists(i["repo_path"]) and not i.get("foreign"):
                left.add(i["path"])
            elif i["kind"] == "unfinished" and ((i.get("whole") and os.path.lexists(i["repo_path"])) or any(
                    os.path.lexists(Path(i["repo_path"], "blobs", b)) for b in i.get("blobs", []))):
                left.add(i["path"])
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
