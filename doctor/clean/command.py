"""`doctor clean-cache`: inventory, plan under policies, confirm (default No), delete, verify.
Exit codes: 0 done / nothing to do / dry run; 1 the target cannot be reached or a deletion failed;
2 bad input, or refused (no TTY and no --yes, declined, another run holds the lock)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from typing import Any

from ..args import whole
from ..errors import InputError
from ..model import ExitCode
from ..units import human_bytes, parse_duration, parse_size
from .trees import OTHER_KINDS, cache_roots


def add_parser(sub: Any) -> None:
    p = sub.add_parser("clean-cache", help="reclaim disk from the Hugging Face caches and old checkpoints, safely",
                       description="Without a policy flag: report what each cache holds. With one: show the plan, "
                                   "ask (default No), delete. Exit 0 done / nothing to do / dry run; 1 the "
                                   "--free-target cannot be reached or a deletion failed; 2 bad input or refused.")
    p.add_argument("--cache-dir", metavar="DIR", help="hub cache to clean (default: HF_HUB_CACHE / HF_HOME/hub); "
                                                      "refused unless it looks like one (see --force-cache-dir)")
    p.add_argument("--force-cache-dir", action="store_true",
                   help="use --cache-dir even though it holds entries huggingface_hub never writes in a hub cache "
                        "(e.g. a parent folder); even then only folders with the hub's own layout (blobs/, "
                        "snapshots/, refs/) count as cache entries")
    p.add_argument("--older-than", metavar="AGE", help="hub revisions (and --include'd caches) last accessed "
                                                        "longer ago than AGE, e.g. 30d, 12h")
    p.add_argument("--free-target", metavar="SIZE", help="delete least recently used first until the hub cache's "
                                                         "filesystem has SIZE free, e.g. 100GB or 80GiB")
    p.add_argument("--detached", action="store_true", help="hub revisions no branch or tag points to")
    p.add_argument("--incomplete", action="store_true", help="interrupted downloads (*.incomplete)")
    p.add_argument("--keep", action="append", default=[], metavar="PATTERN",
                   help="never delete matching repo ids or paths (glob, e.g. 'Qwen/*'); repeat")
    p.add_argument("--profile", "-p", action="append", default=[], metavar="NAME|FILE",
                   help="keep the job's models (job.workload.model, storage repos); its checkpoint folder is inventoried")
    p.add_argument("--checkpoints", action="append", default=[], metavar="DIR",
                   help="folder of checkpoint-N / global_stepN folders; needs --keep-last")
    p.add_argument("--keep-last", type=whole(0, 10**6), metavar="N", help="keep the newest N checkpoints (and the best one)")
    p.add_argument("--best", metavar="NAME", help="checkpoint folder to keep as the best one "
                                                  "(default: the Trainer's best_model_checkpoint)")
    p.add_argument("--include", action="append", default=[], metavar="KIND",
                   help=f"let the policies delete from these caches too: {', '.join(OTHER_KINDS)}, all")
    p.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p.add_argument("--format", choices=("console", "json"), default="console")


def _include(values: list[str]) -> frozenset[str]:
    kinds: set[str] = set()
    for value in values:
        for kind in (k.strip() for k in value.split(",") if k.strip()):
            if kind == "all":
                kinds.update(OTHER_KINDS)
            elif kind in OTHER_KINDS:
                kinds.add(kind)
            else:
                raise InputError("--include", kind, f"unknown cache; expected one of {', '.join(OTHER_KINDS)}, all")
    return frozenset(kinds)


def _profile(refs: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """The job's models (kept) and checkpoint folders (inventoried) from the profiles."""
    if not refs:
        return (), []
    from ..profile import load
    from ..registry import discover

    profile = load(refs, discover(), offline=None)   # no model config needed to clean
    models: list[str] = []
    found, model = profile.value("job.workload.model")
    if found and isinstance(model, str):
        models.append(model)
    _, storage = profile.value("job.storage")
    folders = []
    for key, entry in (storage or {}).items():
        if entry.get("repo"):
            models.append(entry["repo"])
        if "checkpoint" in key and "{" not in entry.get("path", "{"):
            folders.append(os.path.abspath(os.path.expanduser(entry["path"])))
    return tuple(dict.fromkeys(models)), [f for f in folders if os.path.isdir(f)]


def policy_from(args: argparse.Namespace, keep_models: tuple[str, ...]) -> Any:
    from .plan import Policy

    if args.keep_last is not None and args.keep_last < 0:
        raise InputError("--keep-last", str(args.keep_last), "expected 0 or more")
    if args.checkpoints and args.keep_last is None:
        raise InputError("--checkpoints", None, "needs --keep-last N (how many of the newest checkpoints to keep)")
    if args.keep_last is not None and not args.checkpoints:
        raise InputError("--keep-last", None, "needs --checkpoints DIR (the folder holding checkpoint-N folders)")
    for folder in args.checkpoints:
        if not os.path.isdir(folder):
            raise InputError("--checkpoints", folder, "is not a folder")
    if args.cache_dir is not None and not os.path.isdir(args.cache_dir):
        raise InputError("--cache-dir", args.cache_dir, "is not a folder")
    if args.cache_dir is not None and not args.force_cache_dir:
        from .hub import cache_dir_problem

        problem = cache_dir_problem(os.path.abspath(os.path.expanduser(args.cache_dir)))
        if problem:
            raise InputError("--cache-dir", args.cache_dir, problem)
    target = parse_size(args.free_target, "--free-target") if args.free_target else None
    return Policy(older_than_s=parse_duration(args.older_than, "--older-than") if args.older_than else None,
                  older_than=args.older_than or "", free_target=target, free_target_text=args.free_target or "",
                  detached=args.detached, incomplete=args.incomplete, keep=tuple(args.keep), keep_models=keep_models,
                  include=_include(args.include), keep_last=args.keep_last)


def _confirm(plan: dict[str, Any], stream: Any) -> bool:
    stream.write(f"Delete {len(plan['items'])} item(s), freeing {human_bytes(plan['total_bytes'])}? [y/N] ")
    stream.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def run(args: argparse.Namespace) -> int:
    from ..hf_locations import locations
    from . import execute, render
    from .inventory import take
    from .plan import make_plan

    keep_models, profile_folders = _profile(args.profile)
    policy = policy_from(args, keep_models)
    hub_dir = os.path.abspath(os.path.expanduser(args.cache_dir or locations()["hf_hub_cache"]))
    folders = list(dict.fromkeys(os.path.abspath(f) for f in args.checkpoints + profile_folders))
    as_json = args.format == "json"
    human = sys.stderr if as_json else sys.stdout
    acting = policy.selects() and not args.dry_run
    if acting and not args.yes and not sys.stdin.isatty():
        raise InputError("doctor clean-cache", None, "refusing to delete without confirmation: stdin is not a "
                         "terminal; add --yes to proceed, or --dry-run to see the plan")
    roots = [*folders, *(root for kind, root in cache_roots().items() if kind in policy.include)]
    with execute.locked(roots, hub_root=hub_dir) if acting else nullcontext():
        now = time.time()
        inv = take(hub_dir, folders, args.keep_last, args.best, now)
        plan = make_plan(inv.units, policy, inv.filesystems, inv.hub_device, now,
                         exact=lambda hub_units: _exact(inv, hub_units))
        # what each path is while the plan is shown: execution re-checks every path against it
        prepared = execute.prepare(plan, inv) if acting and plan["items"] else None
        policy_doc = {"older_than": args.older_than, "free_target": args.free_target, "detached": args.detached,
                      "incomplete": args.incomplete, "keep": args.keep, "keep_models": list(keep_models),
                      "include": sorted(policy.include), "checkpoints": folders, "keep_last": args.keep_last}
        for note in inv.notes:
            human.write(f"note: {render.term(note)}\n")
        if not policy.selects():
            render.inventory_text(inv, human)
            return _finish(as_json, plan, inv, policy_doc, None, args.dry_run, ExitCode.READY)
        render.plan_table(plan, human, now)
        target = plan.get("target")
        if target and not target["reachable"]:
            human.write("nothing deleted: the free-space target cannot be reached (see kept items and --include)\n")
            return _finish(as_json, plan, inv, policy_doc, None, args.dry_run, ExitCode.NOT_READY)
        if not plan["items"]:
            human.write("nothing to delete\n")
            return _finish(as_json, plan, inv, policy_doc, None, args.dry_run, ExitCode.READY)
        if args.dry_run:
            human.write("dry run: nothing deleted\n")
            return _finish(as_json, plan, inv, policy_doc, None, True, ExitCode.READY)
        if not args.yes and not _confirm(plan, human):
            human.write("nothing deleted\n")
            return _finish(as_json, plan, inv, policy_doc, None, False, ExitCode.BAD_INPUT)
        outcome = execute.run(plan, inv, prepared)
    return _report(outcome, plan, inv, policy_doc, as_json, human)


def _report(outcome: dict[str, Any], plan: dict[str, Any], inv: Any, policy_doc: dict[str, Any],
            as_json: bool, human: Any) -> int:
    from .render import term

    for item in outcome["not_deleted"]:
        human.write(f"not deleted: {term(item['path'])}: {term(item['reason'])}\n")
    for error in outcome["errors"][:20]:
        human.write(f"error: {term(error)}\n")
    for fs in plan["filesystems"]:
        measured = outcome["free_after"].get(fs["device"])
        if measured is not None:
            human.write(f"{term(fs['mountpoint'])}: {human_bytes(measured)} free now "
                        f"(was {human_bytes(fs['free_before'])}; "
                        f"planned +{human_bytes(fs['freed'])}, measured +{human_bytes(measured - fs['free_before'])})\n")
    human.write(f"deleted {len(outcome['deleted'])} item(s)\n")
    target = plan.get("target")
    short = bool(target and outcome["free_after"].get(target["device"], 0) < target["bytes"])
    if short:
        human.write(f"the target of {human_bytes(target['bytes'])} free is not reached: space still held by open "
                    "files frees when their processes exit\n")
    code = ExitCode.NOT_READY if outcome["errors"] or outcome["not_deleted"] or short else ExitCode.READY
    return _finish(as_json, plan, inv, policy_doc, outcome, False, code)


def _finish(as_json: bool, plan: dict[str, Any], inv: Any, policy_doc: dict[str, Any], outcome: Any,
            dry_run: bool, code: ExitCode) -> int:
    if as_json:
        from .render import to_json

        sys.stdout.write(to_json(plan, inv, policy_doc, outcome, dry_run))
    return int(code)


def _exact(inv: Any, hub_units: list[dict[str, Any]]) -> int:
    """huggingface_hub's own expected_freed_size for the selected revisions."""
    from .hub import freed

    selection: dict[str, list[str]] = {}
    for u in hub_units:
        selection.setdefault(u["repo_path"], []).append(u["commit"])
    return freed(inv.hub_info, selection)
