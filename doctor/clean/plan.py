"""The plan: which inventoried units the policies select, which of those are kept and why, least recently
used first up to a free-space target, and free space before / after per filesystem. A pure function of
the inventory, so `doctor check` computes the same command and amount from a facts snapshot."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable

from ..units import human_age, human_bytes

FRESH_INCOMPLETE_S = 600  # an .incomplete file written this recently may belong to a running download
AGE_KINDS = ("hub", "datasets", "xet", "torch-hub", "pip")


@dataclass(frozen=True)
class Policy:
    older_than_s: float | None = None
    older_than: str = ""
    free_target: int | None = None
    free_target_text: str = ""
    detached: bool = False
    incomplete: bool = False
    keep: tuple[str, ...] = ()
    keep_models: tuple[str, ...] = ()
    include: frozenset[str] = frozenset()
    keep_last: int | None = None

    def selects(self) -> bool:
        return bool(self.older_than_s is not None or self.free_target is not None or self.detached
                    or self.incomplete or self.keep_last is not None)


def _matches(unit: dict[str, Any], pattern: str) -> bool:
    names = [unit.get("repo_id") or "", unit["path"], unit["path"].rstrip("/").rsplit("/", 1)[-1]]
    return any(n and fnmatch.fnmatchcase(n, pattern) for n in names)


def blocked(unit: dict[str, Any], policy: Policy, now: float) -> str | None:
    """Why a unit a policy selected is kept anyway, or None."""
    if unit.get("outside"):
        return f"not touched: reaches outside {unit['root']} ({unit['outside'][0]})"
    if unit.get("in_use"):
        return "in use by " + ", ".join(unit["in_use"][:3]) + ("…" if len(unit["in_use"]) > 3 else "")
    if unit.get("errors"):
        return f"not fully readable, left alone: {unit['errors'][0]}"
    if unit["kind"] == "hub-empty" and unit.get("foreign"):
        return (f"not touched: the folder also holds {', '.join(repr(n) for n in unit['foreign'][:3])}, which "
                "huggingface_hub does not write there")
    if unit.get("repo_id") and unit["repo_id"] in policy.keep_models:
        return "the profile's job uses this model"
    for pattern in policy.keep:
        if _matches(unit, pattern):
            return f"kept by --keep {pattern}"
    if unit["kind"] == "incomplete" and now - unit["last_access"] < FRESH_INCOMPLETE_S:
        return f"written {human_age(now - unit['last_access'])} ago: a download may still be running"
    if unit["kind"] == "checkpoint" and unit.get("keep"):
        return unit["keep"]
    return None


def selected_by(unit: dict[str, Any], policy: Policy, now: float) -> str | None:
    """Which policy selects a unit, in words, or None."""
    kind = unit["kind"]
    if kind == "leftover":
        return "left by an interrupted doctor clean-cache" if policy.selects() else None
    if kind == "unfinished":
        return ("finishes the deletion an interrupted doctor clean-cache began (its journal)"
                if policy.selects() else None)
    if kind == "incomplete" and policy.incomplete:
        return "interrupted download (--incomplete)"
    if kind == "hub-empty" and (policy.detached or policy.incomplete):
        return "repo folder with no revision left (an interrupted deletion)"
    if kind == "hub" and policy.detached and unit.get("detached"):
        return "detached revision: no branch or tag points to it (--detached)"
    if kind == "checkpoint" and policy.keep_last is not None:
        return f"older than the newest {policy.keep_last} (--keep-last {policy.keep_last})"
    if (policy.older_than_s is not None and (kind == "hub" or kind in policy.include)
            and now - unit["last_access"] > policy.older_than_s):
        return f"last accessed {human_age(now - unit['last_access'])} ago (--older-than {policy.older_than})"
    return None


def estimate(units: list[dict[str, Any]]) -> int:
    """Bytes a set of units frees: hub revisions by the library's per-revision `expected_freed_size`, a whole
    repo by its own (blobs shared between its revisions count once); a lower bound across repos that share
    blobs, which the live plan replaces with the exact figure."""
    total, per_repo = 0, {}
    for u in units:
        if u["kind"] == "hub":
            per_repo.setdefault(u["repo_path"], []).append(u)
        else:
            total += u["bytes"]
    for revs in per_repo.values():
        total += revs[0]["repo_bytes"] if len(revs) == revs[0]["repo_revisions"] else sum(u["bytes"] for u in revs)
    return total


def _lru(candidates: list[dict[str, Any]], chosen: list[dict[str, Any]], need: int, target: str,
         now: float) -> list[dict[str, Any]]:
    """Least recently used first until the estimate covers `need` bytes: `estimate(chosen + added) - estimate(
    chosen)` kept up to date one unit at a time (a repo's figure switches to its whole-repo bytes when its
    last revision is added), so the plan is linear in the units, not quadratic."""
    added: list[dict[str, Any]] = []
    repos: dict[str, list[int]] = {}  # repo path -> [revisions in the plan, their summed bytes]
    for u in chosen:
        if u["kind"] == "hub":
            entry = repos.setdefault(u["repo_path"], [0, 0])
            entry[0] += 1
            entry[1] += u["bytes"]

    def share(u: dict[str, Any], count: int, total: int) -> int:
        return u["repo_bytes"] if count == u["repo_revisions"] else total

    gained = 0
    for u in sorted(candidates, key=lambda u: (u["last_access"], u["path"])):
        if gained >= need:
            break
        added.append({**u, "reason": f"least recently used (last access {human_age(now - u['last_access'])} ago) "
                                     f"for --free-target {target}"})
        if u["kind"] != "hub":
            gained += u["bytes"]
            continue
        entry = repos.setdefault(u["repo_path"], [0, 0])
        before = share(u, *entry) if entry[0] else 0
        entry[0] += 1
        entry[1] += u["bytes"]
        gained += share(u, *entry) - before
    return added


def make_plan(units: list[dict[str, Any]], policy: Policy, filesystems: dict[int, dict[str, Any]],
              target_device: int | None, now: float,
              exact: Callable[[list[dict[str, Any]]], int] | None = None) -> dict[str, Any]:
    """items (to delete, with reason), kept (selected but kept, with reason), per-filesystem projection,
    total bytes and, with --free-target, whether the target is reachable."""
    items, kept, rest = [], [], []
    for unit in units:
        why = selected_by(unit, policy, now)
        stop = blocked(unit, policy, now)
        if why and stop:
            kept.append({**unit, "reason": stop})
        elif why:
            items.append({**unit, "reason": why})
        elif not stop and (unit["kind"] == "hub" or unit["kind"] in policy.include):
            rest.append(unit)
    target = None
    if policy.free_target is not None and target_device is not None:
        fs = filesystems.get(target_device) or {}
        on_target = [u for u in items if u.get("device") == target_device]
        need = policy.free_target - fs.get("free_bytes", 0) - estimate(on_target)
        if need > 0:
            items += _lru([u for u in rest if u.get("device") == target_device], on_target, need,
                          policy.free_target_text or human_bytes(policy.free_target), now)
        target = {"bytes": policy.free_target, "device": target_device, "mountpoint": fs.get("mountpoint")}
    hub = [u for u in items if u["kind"] == "hub"]
    hub_bytes = exact(hub) if exact and hub else estimate(hub)
    projection = []
    for dev, fs in sorted(filesystems.items(), key=lambda kv: kv[1].get("mountpoint") or ""):
        on = [u for u in items if u.get("device") == dev]
        freed = estimate([u for u in on if u["kind"] != "hub"]) + (hub_bytes if any(u["kind"] == "hub" for u in on) else 0)
        if not on and dev != target_device:
            continue
        projection.append({"mountpoint": fs.get("mountpoint"), "device": dev, "free_before": fs.get("free_bytes", 0),
                           "freed": freed, "free_after": fs.get("free_bytes", 0) + freed,
                           "total_bytes": fs.get("total_bytes"), "held_deleted_bytes": fs.get("held_deleted_bytes", 0)})
    if target is not None:
        after = next((p["free_after"] for p in projection if p["device"] == target_device), 0)
        target.update(free_after=after, reachable=after >= policy.free_target)
    total = hub_bytes + estimate([u for u in items if u["kind"] != "hub"])
    return {"items": _group(items), "kept": _group(kept), "total_bytes": total, "filesystems": projection,
            "target": target}


def _group(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Hub revisions that cover their whole repo become one repo entry."""
    out, per_repo = [], {}
    for u in units:
        if u["kind"] == "hub":
            per_repo.setdefault(u["repo_path"], []).append(u)
        else:
            out.append(u)
    for revs in per_repo.values():
        first = revs[0]
        if len(revs) == first["repo_revisions"] and len(revs) > 0:
            reasons = list(dict.fromkeys(u["reason"] for u in revs))
            if first.get("foreign"):
                reasons.append(f"the folder stays: it also holds {', '.join(repr(n) for n in first['foreign'][:3])}, "
                               "which huggingface_hub does not write there")
            out.append({**first, "kind": "hub-repo", "path": first["repo_path"], "bytes": first["repo_bytes"],
                        "commits": [u["commit"] for u in revs], "reason": "; ".join(reasons),
                        "last_access": max(u["last_access"] for u in revs)})
        else:
            out.extend(revs)
    return out
