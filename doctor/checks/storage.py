"""Disk space and inodes for the job's storage plan, per filesystem; where the Hugging Face caches
live; whether the job's model is already complete in the cache."""
from __future__ import annotations

import math
import os
from typing import Any

from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

GIB = 2**30
HF_CACHE_URL = "https://huggingface.co/docs/huggingface_hub/guides/manage-cache"


def _gb(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _expand(path: str, facts: dict[str, Any]) -> str | None:
    """The absolute path a plan entry names, or None when it depends on a fact the snapshot lacks
    ({hf_hub_cache} with no cache location, a relative path with no working directory, ~ with no home)."""
    hf = facts.get("hf") or {}
    disk = facts.get("disk") or {}
    where = {k: hf[k] for k in ("hf_home", "hf_hub_cache", "hf_datasets_cache") if hf.get(k)}
    try:
        path = path.format(**where)
    except (KeyError, IndexError, ValueError):
        return None
    if path.startswith("~"):
        if not disk.get("home"):
            return None
        path = disk["home"] + path[1:]
    if not os.path.isabs(path):
        if not disk.get("cwd"):
            return None
        path = os.path.join(disk["cwd"], path)
    return os.path.normpath(path)


def locate(label: str, path: str, facts: dict[str, Any]) -> dict[str, Any] | None:
    """The filesystem a path lands on: as probed, else by the longest mount-point prefix; None when unknown."""
    disk = facts.get("disk") or {}
    probed = (disk.get("paths") or {}).get(label)
    if probed and "total_bytes" in probed:
        return {**probed, "how": "probed"}
    resolved = _expand(path, facts) if path else None
    if resolved is None:
        return None
    best = None
    for m in disk.get("mounts") or []:
        mp = m["mountpoint"].rstrip("/") or "/"
        if (resolved == mp or resolved.startswith(mp.rstrip("/") + "/")) and (
                best is None or len(mp) > len(best["mountpoint"])):
            best = m
    return {**best, "resolved": resolved, "how": "by mount point (path not probed)"} if best else None


def cached_repo(facts: dict[str, Any], repo_id: str) -> dict[str, Any] | None:
    for repo in ((facts.get("hf") or {}).get("hub") or {}).get("repos") or []:
        if repo["repo_id"] == repo_id and repo["repo_type"] == "model":
            return repo
    return None


def complete_revision(repo: dict[str, Any] | None) -> dict[str, Any] | None:
    for rev in (repo or {}).get("revisions") or []:
        if rev.get("has_config") and rev.get("weights") and not rev.get("missing_shards"):
            return rev
    return None


def _taken_at(facts: dict[str, Any]) -> float:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(facts["provenance"]["created"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0


def clean_remedy(facts: dict[str, Any], fs: dict[str, Any], target: float, keep: list[str]) -> tuple[str, str] | None:
    """The exact `doctor clean-cache` command that would bring this filesystem to `target` bytes free by
    deleting least-recently-used hub revisions (the job's own models kept), and what it would free; None
    when the hub cache is not on this filesystem or holds nothing it may delete."""
    from doctor.clean.hub import units
    from doctor.clean.plan import Policy, make_plan

    hf = facts.get("hf") or {}
    hub = hf.get("hub") or {}
    hub_fs = locate("hf_hub_cache", hf.get("hf_hub_cache") or "", facts)
    if not hub.get("repos") or not hub_fs or hub_fs.get("mountpoint") != fs.get("mountpoint"):
        return None
    dev = fs.get("device", 0)
    text = f"{math.ceil(target / GIB * 10) / 10:.1f}GiB"
    policy = Policy(free_target=int(float(text[:-3]) * GIB), free_target_text=text, keep_models=tuple(keep))
    filesystems = {dev: {"mountpoint": fs["mountpoint"], "free_bytes": fs["free_bytes"], "total_bytes": fs["total_bytes"]}}
    result = make_plan(units(hub, dev), policy, filesystems, dev, _taken_at(facts))
    if not result["items"]:
        return None
    env = hf.get("env") or {}
    command = "doctor clean-cache --free-target " + text + "".join(f" --keep {k}" for k in keep) + (
        f" --cache-dir {hf['hf_hub_cache']}" if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
        or env.get("HF_HOME") else "")
    names = ", ".join(dict.fromkeys(i.get("repo_id", "") for i in result["items"][:3]))
    if result["target"]["reachable"]:
        return command, (f"`{command}` frees {_gb(result['total_bytes'])} (least recently used first: {names}…); "
                         "add --dry-run to see its plan first.")
    return command, (f"`{command}` could free at most {_gb(result['total_bytes'])} ({names}…), not enough "
                     "alone.")


def entry_need(label: str, entry: dict[str, Any], workload: dict[str, Any] | None = None,
               deepspeed: dict[str, Any] | None = None) -> tuple[float | None, str, list[str]]:
    """(bytes the entry needs at its peak, how that was reached, detail lines) of one storage plan entry: `gib` x
    `count` as typed, or - where the entry says `contents` and no `gib` - one checkpoint computed from the job's
    workload (doctor/vram/checkpoint.py) x the copies on disk at once. None where it cannot be computed (the
    text says why)."""
    from doctor.vram.checkpoint import Undecided, from_job, peak_count

    count, why = peak_count(entry)
    copies = f" × {count}" if count != 1 else ""
    if entry.get("gib") is not None or not entry.get("contents"):
        gib_ = float(entry.get("gib", 0))
        how = f"{gib_:g} GiB{copies}" + (" (gib as given; overrides the computed size)" if entry.get("contents")
                                          else "")
        return gib_ * count * GIB, how, []
    try:
        size = from_job(entry, workload, deepspeed)
    except Undecided as exc:
        return None, f"{entry['contents']} checkpoint size unknown: {exc}", []
    how = f"{_gb(size.bytes)}{copies} ({entry['contents']}, computed; {why})"
    lines = [f"      {line}" for line in size.lines()] + [f"      note: {n}" for n in size.notes]
    return size.bytes * count, how, lines


def plan(storage: dict[str, Any], facts: dict[str, Any], workload: dict[str, Any] | None = None,
         deepspeed: dict[str, Any] | None = None) -> tuple[dict[Any, dict[str, Any]], list[str], list[str]]:
    """Group the storage plan by filesystem: {device: {fs, need, items}}, plus unplaced entries, plus entries
    whose size cannot be computed (each with why)."""
    groups: dict[Any, dict[str, Any]] = {}
    unplaced, unsized = [], []
    for label, entry in storage.items():
        need, how, lines = entry_need(label, entry, workload, deepspeed)
        if need is None:
            unsized.append(f"{label}: {how}")
            need = 0.0
        repo = entry.get("repo")
        cached = bool(repo and complete_revision(cached_repo(facts, repo)))
        if cached:
            need = 0.0  # already downloaded
        fs = locate(f"storage.{label}", entry["path"], facts)
        if fs is None:
            unplaced.append(label)
            continue
        key = fs.get("device", fs.get("mountpoint"))
        group = groups.setdefault(key, {"fs": fs, "need": 0.0, "items": []})
        group["need"] += need
        group["items"].append(f"{label} {how} at {entry['path']}" + (" (already in the HF cache)" if cached else ""))
        group["items"].extend(lines)
    nvme = _nvme_offload(workload, deepspeed)
    if nvme is not None:   # DeepSpeed's swap files share the disk with the plan's entries
        need, where = nvme
        if need is None:
            unsized.append(f"NVMe offload: {where}")
        else:
            fs = locate("deepspeed nvme_path", where, facts)
            if fs is None:
                unplaced.append("NVMe offload")
            else:
                group = groups.setdefault(fs.get("device", fs.get("mountpoint")), {"fs": fs, "need": 0.0, "items": []})
                group["need"] += need
                group["items"].append(f"DeepSpeed NVMe offload {_gb(need)} per node (memory.ram's figure) at {where}")
    return groups, unplaced, unsized


def _nvme_offload(workload: dict[str, Any] | None, deepspeed: dict[str, Any] | None
                  ) -> tuple[float | None, str] | None:
    """(bytes per node, nvme_path) DeepSpeed swaps to NVMe for the job, (None, why) where it offloads there but
    the size cannot be computed; None where it does not offload to NVMe or names no nvme_path (memory.ram says
    that)."""
    from doctor.errors import InputError
    from doctor.vram.estimator import Workload, distributed_memory
    from doctor.vram.workload import attached_model, workload_from_job

    if not isinstance(workload, dict):
        return None
    model, fields = workload_from_job({"workload": workload, "deepspeed": deepspeed if isinstance(deepspeed, dict)
                                       else {}})
    if "nvme" not in (fields.get("offload_optimizer"), fields.get("offload_params")):
        return None
    knobs = fields.get("ds_knobs") or {}
    path, paths = knobs.get("nvme_path"), knobs.get("nvme_paths") or []
    if not isinstance(path, str):
        return None
    if len(paths) > 1:   # doctor's NVMe figure is one total: it cannot split it between two filesystems
        return None, (f"the optimizer and parameter offloads name two nvme_paths ({', '.join(sorted(paths))}); "
                      "doctor sizes their swap files as one total")
    try:
        arch, params = attached_model(workload, model)
        mem = distributed_memory(arch, Workload(**fields), params)
    except (InputError, TypeError, ValueError) as exc:
        return None, f"cannot size it ({exc})"
    if mem is None:
        return None, "cannot size it: no model config and no job.workload.params"
    return mem.nvme_bytes, path


@check("disk.space", needs=("disk",), binds={"storage": "job.storage", "workload": "job.workload",
                                              "deepspeed": "job.deepspeed"})
def disk_space(facts: dict[str, Any], *, storage: dict[str, Any], margin_pct: float = 10.0,
               workload: dict[str, Any] | None = None, deepspeed: dict[str, Any] | None = None) -> Result:
    """Free space for the job's storage plan (base model, quantized model, checkpoints × kept, dataset,
    HF cache growth), summed per filesystem each path lands on. A checkpoint entry that says `contents`
    (model | model+optimizer) is sized from the job's workload: weights in their saved dtype, plus the
    optimizer's state (and DeepSpeed's fp32 master partitions) where saved. DeepSpeed's NVMe offload files
    (offload_*.nvme_path, memory.ram's figure) count on the filesystem they land on.

    Why: the download or the third checkpoint fills the disk hours into the run; two plan entries on
    the same small system disk each "fit" alone but not together.
    Fix: move the large entries to the data disk (HF_HOME, output_dir), keep fewer checkpoints
    (save_total_limit), or free space: the remedy gives the exact `doctor clean-cache --free-target …`
    command and what it frees when the hub cache shares the filesystem.
    """
    groups, unplaced, unsized = plan(storage, facts, workload, deepspeed)
    details, fails, warns = [], [], []
    for group in groups.values():
        fs, need = group["fs"], group["need"]
        free = fs["free_bytes"]
        head = f"{fs['mountpoint']}: needs {_gb(need)}, {_gb(free)} free of {_gb(fs['total_bytes'])}"
        details.append(head + f" [{fs.get('how')}]")
        details.extend(f"    {item}" for item in group["items"])
        if need > free:
            fails.append(f"{fs['mountpoint']} needs {_gb(need)} but has {_gb(free)} free")
        elif need > free * (1 - margin_pct / 100):
            warns.append(f"{fs['mountpoint']} would be left with {_gb(free - need)} ({_gb(need)} of {_gb(free)})")
    if unplaced:
        details.append(f"no filesystem found for: {', '.join(unplaced)}")
    details.extend(f"not sized: {u}" for u in unsized)
    total = sum(g["need"] for g in groups.values())
    remedy = Remediation("Put the large entries on a filesystem with room (export HF_HOME=<data disk>/huggingface; "
                         "point output_dir there), keep fewer checkpoints (save_total_limit), or free space.",
                         ("df -h", "hf cache ls"), HF_CACHE_URL)
    keep = [e["repo"] for e in storage.values() if e.get("repo")]
    for group in groups.values():
        fs, need = group["fs"], group["need"]
        if need > fs["free_bytes"] * (1 - margin_pct / 100):
            cleaning = clean_remedy(facts, fs, need / (1 - margin_pct / 100), keep)
            if cleaning:
                remedy = Remediation(f"On {fs['mountpoint']}: {cleaning[1]} Or put the large entries on a filesystem "
                                     "with room (export HF_HOME=<data disk>/huggingface; point output_dir there), "
                                     "keep fewer checkpoints (save_total_limit).", (cleaning[0], "df -h"), HF_CACHE_URL)
                break
    if fails:
        return failed("; ".join(fails), remedy, *details)
    if unsized:
        return errored("could not decide: " + "; ".join(unsized), *details)
    if unplaced:
        return errored(f"could not decide: no known filesystem for {', '.join(unplaced)} (the snapshot lacks the "
                       "path's location or the mount it lands on)", *details)
    if warns:
        return warned(f"less than {margin_pct:g}% headroom: " + "; ".join(warns), remedy, *details)
    if not groups:
        return skipped("the storage plan is empty", *details)
    return passed(f"storage plan of {_gb(total)} fits on {len(groups)} filesystem(s)", *details)


@check("disk.inodes", needs=("disk",), binds={"storage": "job.storage"})
def disk_inodes(facts: dict[str, Any], *, storage: dict[str, Any] | None = None, min_free: int = 100_000) -> Result:
    """Free inodes on the filesystems the job writes to (the plan's, else the working dir and HF cache).

    Why: datasets of many small files (images, extracted archives) exhaust inodes while `df -h` still
    shows free space; writes then fail with "No space left on device".
    Fix: pack small files (tar/webdataset/arrow), or use a filesystem with more inodes.
    """
    paths = (facts["disk"].get("paths") or {})
    targets = {f"storage.{k}": v["path"] for k, v in (storage or {}).items()} or {
        k: paths[k]["path"] for k in ("cwd", "hf_hub_cache") if k in paths}
    seen, low, details = set(), [], []
    for label, path in targets.items():
        fs = locate(label, path, facts)
        if not fs or fs.get("mountpoint") in seen:
            continue
        seen.add(fs.get("mountpoint"))
        total, free = fs.get("inodes_total"), fs.get("inodes_free")
        if not total:
            details.append(f"{fs['mountpoint']}: no fixed inode count (e.g. btrfs/xfs dynamic inodes)")
            continue
        details.append(f"{fs['mountpoint']}: {free:,} of {total:,} inodes free")
        if free < min_free:
            low.append(f"{fs['mountpoint']} has {free:,} free inodes")
    if low:
        return failed("; ".join(low), Remediation("Pack small files into archives/shards, or move the data to a "
                                                   "filesystem with free inodes.", ("df -i",)), *details)
    if not seen:
        return skipped("no filesystem to judge")
    return passed(f"enough free inodes on {len(seen)} filesystem(s)", *details)


@check("hf.cache_location", needs=("hf", "disk"), binds={"storage": "job.storage", "workload": "job.workload",
                                                         "deepspeed": "job.deepspeed"})
def hf_cache_location(facts: dict[str, Any], *, storage: dict[str, Any] | None = None,
                      min_free_gib: float = 50.0, workload: dict[str, Any] | None = None,
                      deepspeed: dict[str, Any] | None = None) -> Result:
    """The Hugging Face hub cache (HF_HOME / HF_HUB_CACHE, resolved as huggingface_hub resolves them)
    sits on a filesystem with room, not on a small system disk while a data disk has space.

    Why: the cache defaults to ~/.cache/huggingface on the system disk (30 GB on many rented boxes);
    a 65 GB model download fills it and can take the whole machine down with it.
    Fix: `export HF_HOME=<data disk>/huggingface` before the first download (the exact path is given).
    """
    hf = facts["hf"]
    hub = hf.get("hf_hub_cache")
    fs = locate("hf_hub_cache", hub or "", facts)
    if fs is None:
        return errored(f"could not decide: the HF cache location ({hub or 'unknown'}) is on no filesystem the "
                       "snapshot lists")
    hub_facts = hf.get("hub") or {}
    need = 0.0
    for label, entry in (storage or {}).items():
        if "{hf_hub_cache}" in entry.get("path", "") or "{hf_home}" in entry.get("path", ""):
            if not (entry.get("repo") and complete_revision(cached_repo(facts, entry["repo"]))):
                need += entry_need(label, entry, workload, deepspeed)[0] or 0.0   # unsized: disk.space says so
    want = max(need, min_free_gib * GIB)
    details = [f"HF_HOME: {hf.get('hf_home')}", f"hub cache: {hub} (on {fs['mountpoint']}, {_gb(fs['free_bytes'])} "
               f"free of {_gb(fs['total_bytes'])})",
               f"cache holds {_gb(hub_facts.get('size_bytes') or 0)} in {len(hub_facts.get('repos') or [])} repos"
               + (f", {_gb(hub_facts.get('incomplete_bytes') or 0)} in interrupted downloads"
                  if hub_facts.get("incomplete_bytes") else "")]
    if fs["free_bytes"] >= want:
        return passed(f"HF cache on {fs['mountpoint']} with {_gb(fs['free_bytes'])} free"
                      + (f" (the plan adds {_gb(need)})" if need else ""), *details)
    others = [m for m in (facts["disk"].get("mounts") or [])
              if m["mountpoint"] != fs["mountpoint"] and m["free_bytes"] >= want and m["fstype"] != "tmpfs"]
    best = max(others, key=lambda m: m["free_bytes"], default=None)
    if best:
        target = os.path.join(best["mountpoint"], "huggingface")
        remedy = Remediation(f"Move the cache to {best['mountpoint']} ({_gb(best['free_bytes'])} free) before the "
                             "first download; add the export to the launch script or ~/.bashrc.",
                             (f"export HF_HOME={target}",), HF_CACHE_URL)
    else:
        keep = [e["repo"] for e in (storage or {}).values() if e.get("repo")]
        cleaning = clean_remedy(facts, fs, want, keep)
        remedy = Remediation("No mounted filesystem has that much room: "
                             + (cleaning[1] + " Or attach" if cleaning else "free space (`hf cache rm`) or attach")
                             + " a larger data disk and point HF_HOME at it.",
                             (cleaning[0],) if cleaning else ("hf cache ls",), HF_CACHE_URL)
    summary = (f"HF cache on {fs['mountpoint']} has {_gb(fs['free_bytes'])} free; needs {_gb(want)}"
               + (" for this plan" if need else " (the minimum this check asks for)"))
    return (failed if need > fs["free_bytes"] else warned)(summary, remedy, *details)


@check("hf.model_cached", needs=("hf",), binds={"model": "job.workload.model"})
def hf_model_cached(facts: dict[str, Any], *, model: str) -> Result:
    """Whether the job's model is complete in the hub cache (config, weights, every shard its index
    names; no interrupted download), and whether the job can then run offline.

    Why: an interrupted download leaves a snapshot without some shards; with HF_HUB_OFFLINE=1, or a
    hub that is unreachable, the job fails at from_pretrained after waiting for its GPUs.
    Fix: finish the download before the job (`hf download <model>` resumes it).
    """
    hf = facts["hf"]
    if model.startswith(("/", "./", "~")):
        return skipped(f"{model} is a local path, not a hub model id")
    repo = cached_repo(facts, model)
    offline = hf.get("offline")
    rev = complete_revision(repo)
    remedy = Remediation("Download the model before the job starts (resumes an interrupted download).",
                         (f"hf download {model}",), HF_CACHE_URL)
    if rev:
        return passed(f"{model} is complete in the cache ({_gb(rev['size_bytes'])}, revision {rev['commit'][:10]}"
                      + (", refs " + ", ".join(rev["refs"]) if rev.get("refs") else "") + ")")
    if repo:
        missing = sorted({s for r in repo["revisions"] for s in r.get("missing_shards", [])})
        what = (f"{len(missing)} shards missing ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''})" if missing
                else "no config.json or weights in any revision")
        return (failed if offline else warned)(f"{model} is in the cache but incomplete: {what}", remedy)
    if offline:
        return failed(f"HF_HUB_OFFLINE is set but {model} is not in the cache at {hf.get('hf_hub_cache')}", remedy)
    return passed(f"{model} is not cached yet: the first run downloads it from {hf.get('endpoint')} "
                  "(see network.hub and disk.space)")
