"""Plain folders: the other caches (datasets, Xet, torch hub, pip) and checkpoint folders, sized without
following a symlink, and removed by an atomic rename inside their root before the tree is deleted."""
from __future__ import annotations

import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any


TRASH_PREFIX = ".doctor-trash-"
LOCK_NAME = ".doctor-clean-cache.lock"  # the lock of a folder root (checkpoints, other caches) lives in it
CHECKPOINT = re.compile(r"^(checkpoint|global_step)-?(\d+)$")
OTHER_KINDS = ("datasets", "xet", "torch-hub", "pip")


def inside(path: str, root: str) -> bool:
    """`path` lies under `root` once its parent's symlinks are resolved (the last hop is not followed)."""
    parent = os.path.realpath(os.path.dirname(path))
    name = os.path.basename(path)
    return (parent == root or parent.startswith(root.rstrip("/") + "/")) and name not in ("", ".", "..")


def cache_roots(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Where each library puts its cache, by its documented precedence."""
    from ..hf_locations import locations

    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = locations(env)
    return {"datasets": where["hf_datasets_cache"],
            "xet": os.path.expanduser(env.get("HF_XET_CACHE") or os.path.join(where["hf_home"], "xet")),
            "torch-hub": os.path.join(os.path.expanduser(env.get("TORCH_HOME") or os.path.join(xdg, "torch")), "hub"),
            "pip": os.path.expanduser(env.get("PIP_CACHE_DIR") or os.path.join(xdg, "pip"))}


def tree_size(path: str) -> tuple[int, float, list[str]]:
    """(bytes, last access, errors) of a file or folder: files' atime and mtime, folders' mtime; symlinks
    are not followed and count no bytes; each inode once."""
    total, last, errors = 0, 0.0, []
    seen: set[tuple[int, int]] = set()
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = os.lstat(current)
        except OSError as exc:
            errors.append(f"{current}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):  # a folder's atime moves whenever it is listed (this scan too)
            last = max(last, st.st_mtime)
            try:
                with os.scandir(current) as it:
                    stack.extend(e.path for e in it)
            except OSError as exc:
                errors.append(f"{current}: {exc.strerror or exc}")
            continue
        last = max(last, st.st_atime, st.st_mtime)
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size if not stat.S_ISLNK(st.st_mode) else 0
    return total, last, errors


def _unit(kind: str, root: str, path: str, **extra: Any) -> dict[str, Any]:
    unit: dict[str, Any] = {"kind": kind, "root": root, "path": path, **extra}
    if os.path.islink(path):
        unit.update(bytes=0, last_access=0.0, errors=[], outside=[f"{path} -> {os.readlink(path)}"])
        return unit
    unit["bytes"], unit["last_access"], unit["errors"] = tree_size(path)
    unit["outside"] = [] if inside(path, root) else [path]
    return unit


def children(root: str) -> list[str]:
    try:
        with os.scandir(root) as it:
            return sorted(e.path for e in it)
    except OSError:
        return []


def other_cache_units(kind: str, root: str) -> list[dict[str, Any]]:
    """One unit per top-level entry (torch hub: also per downloaded checkpoint file)."""
    units = []
    for path in children(root):
        name = os.path.basename(path)
        if name.startswith(TRASH_PREFIX) or name == LOCK_NAME:
            continue
        if kind == "torch-hub" and name == "checkpoints" and not os.path.islink(path):
            units.extend(_unit(kind, root, p) for p in children(path)
                         if not os.path.basename(p).startswith(TRASH_PREFIX))
            continue
        units.append(_unit(kind, root, path))
    return units


def _best_from_trainer_state(folders: list[tuple[int, str]]) -> str | None:
    """`best_model_checkpoint` from the newest trainer_state.json (the HF Trainer writes it there)."""
    for _, path in sorted(folders, reverse=True):
        state = Path(path) / "trainer_state.json"
        if state.is_file():
            try:
                best = json.loads(state.read_text()).get("best_model_checkpoint")
            except (OSError, ValueError, AttributeError):
                return None
            return os.path.basename(best.rstrip("/")) if isinstance(best, str) and best else None
    return None


def _deepspeed_latest(folder: str) -> str | None:
    try:
        return Path(folder, "latest").read_text().strip() or None
    except OSError:
        return None


def checkpoint_units(folder: str, keep_last: int | None, best: str | None) -> list[dict[str, Any]]:
    """`checkpoint-N` (Trainer) and `global_stepN` (DeepSpeed) folders, newest first, each with why it is
    kept: among the newest `keep_last`, the best one (named, or the Trainer's best_model_checkpoint),
    DeepSpeed's `latest` tag."""
    root = os.path.realpath(folder)
    found = [(int(m.group(2)), p) for p in children(root)
             if (m := CHECKPOINT.match(os.path.basename(p))) and (os.path.isdir(p) or os.path.islink(p))]
    found.sort(reverse=True)
    best_name = best or _best_from_trainer_state(found)
    latest = _deepspeed_latest(root)
    units = []
    for rank, (step, path) in enumerate(found):
        name = os.path.basename(path)
        keep = None
        if keep_last is None:
            keep = "no --keep-last given"
        elif rank < keep_last:
            keep = f"one of the newest {keep_last}"
        elif name == best_name:
            keep = "the best checkpoint" + (" (--best)" if best else " (trainer_state.json best_model_checkpoint)")
        elif name == latest:
            keep = "DeepSpeed's `latest` tag names it"
        units.append(_unit("checkpoint", root, path, step=step, keep=keep))
    return units


def leftover_units(root: str) -> list[dict[str, Any]]:
    inner = os.path.join(root, "checkpoints")  # torch hub's files are renamed beside themselves, in there
    found = children(root) + (children(inner) if os.path.isdir(inner) and not os.path.islink(inner) else [])
    return [_unit("leftover", root, p) for p in found if os.path.basename(p).startswith(TRASH_PREFIX)]


def trash_rel(rel: tuple[str, ...]) -> tuple[str, ...]:
    """A trash name beside the entry, in the same folder: the rename is atomic and stays inside the root."""
    return rel[:-1] + (f"{TRASH_PREFIX}{secrets.token_hex(4)}-{rel[-1]}",)


def remove(root: Any, rel: tuple[str, ...], seen: Any) -> list[str]:
    """Rename into a trash name in the same folder (atomic), then delete it: an interrupted run leaves either
    the whole entry or a `.doctor-trash-*` leftover the next run removes. `root` is an open safefs.Root, so
    the entry and every folder on its way are re-checked against the plan and never followed if a symlink."""
    if seen.kind not in ("dir", "file"):
        return [f"{root.show(rel)}: refused: a {seen.kind} (symlinks are never followed nor deleted)"]
    trash = trash_rel(rel)
    if not root.rename(rel, seen, trash):
        return []
    errors: list[str] = []
    root.rmtree(trash, seen, errors)
    return errors
