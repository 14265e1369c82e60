"""Hugging Face cache facts: where the caches are (resolved as huggingface_hub and datasets resolve
them) and what the hub cache holds, via huggingface_hub's own `scan_cache_dir`."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..probing import ProbeContext, probe

ENV_VARS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE",
            "XDG_CACHE_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def locations(environ: dict[str, str] | None = None) -> dict[str, str]:
    """HF_HOME, the hub cache and the datasets cache, by the libraries' documented precedence:
    HF_HOME else $XDG_CACHE_HOME/huggingface else ~/.cache/huggingface; HF_HUB_CACHE else
    HUGGINGFACE_HUB_CACHE else $HF_HOME/hub; HF_DATASETS_CACHE else $HF_HOME/datasets."""
    env = os.environ if environ is None else environ
    xdg = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = os.path.expanduser(env.get("HF_HOME") or os.path.join(xdg, "huggingface"))
    hub = os.path.expanduser(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub"))
    datasets = os.path.expanduser(env.get("HF_DATASETS_CACHE") or os.path.join(home, "datasets"))
    return {"hf_home": home, "hf_hub_cache": hub, "hf_datasets_cache": datasets}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


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


def scan(hub_cache: str) -> dict[str, Any]:
    """huggingface_hub.scan_cache_dir, reduced to what checks need."""
    if not os.path.isdir(hub_cache):  # nothing to scan: spare the import
        return {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0, "warnings": []}
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(hub_cache)
    except CacheNotFound:
        return {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0, "warnings": []}
    repos = []
    for repo in sorted(info.repos, key=lambda r: -r.size_on_disk):
        revisions = []
        for rev in repo.revisions:
            names = {f.file_name for f in rev.files}
            rel_names = {str(f.file_path.relative_to(rev.snapshot_path)) for f in rev.files}
            revisions.append({"commit": rev.commit_hash, "refs": sorted(rev.refs), "size_bytes": rev.size_on_disk,
                              "files": len(rev.files), "has_config": "config.json" in names,
                              "weights": sorted(n for n in rel_names if n.endswith((".safetensors", ".bin")))[:5],
                              "missing_shards": _missing_shards(rev.snapshot_path, rel_names)})
        repos.append({"repo_id": repo.repo_id, "repo_type": repo.repo_type, "size_bytes": repo.size_on_disk,
                      "revisions": revisions})
    incomplete = list(getattr(info, "incomplete_files", ()) or ())
    return {"exists": True, "size_bytes": info.size_on_disk, "repos": repos,
            "incomplete_files": len(incomplete), "incomplete_bytes": sum(f.size_on_disk for f in incomplete),
            "warnings": [str(w) for w in info.warnings][:10]}


def collect(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    from importlib.metadata import version

    where = locations(env)
    endpoint = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return {**where, "endpoint": endpoint, "endpoint_from_env": bool(env.get("HF_ENDPOINT")),
            "offline": _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE")),
            "env": {k: env.get(k) for k in ENV_VARS if k in env},
            "huggingface_hub_version": version("huggingface_hub"),
            "hub": scan(where["hf_hub_cache"])}


@probe("hf", timeout_s=20)
def probe_hf(_: ProbeContext, __: float) -> dict[str, Any]:
    return collect()
