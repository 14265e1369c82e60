"""Hugging Face cache facts: where the caches are (resolved as huggingface_hub and datasets resolve
them) and what the hub cache holds, via huggingface_hub's own `scan_cache_dir`."""
from __future__ import annotations

import os
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


def scan(hub_cache: str, in_use: bool = True) -> dict[str, Any]:
    """huggingface_hub.scan_cache_dir, reduced to what checks and `doctor clean-cache` plans need."""
    from ..clean.hub import scan_info, summarise

    info, error = scan_info(hub_cache)
    if info is None:
        return {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0,
                "warnings": [error] if error else []}
    holders = None
    if in_use and info.repos:
        from ..clean.inuse import scan as scan_holders

        holders = scan_holders()
    return summarise(info, os.path.realpath(hub_cache), holders)


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
