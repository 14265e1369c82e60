"""Hugging Face cache facts: where the caches are (resolved as huggingface_hub and datasets resolve
them) and what the hub cache holds: the repos, revisions, files and sizes huggingface_hub's own
`scan_cache_dir` reports, read in one lean pass over the cache (doctor/clean/walk.py, held equal to the library
by tests/test_scale.py) and reused while the cache's folders are unchanged (doctor/clean/memo.py), so a check
costs little on a cache of 100,000 files and finishes on one of 10,000 repos."""
from __future__ import annotations

import os
from typing import Any

from ..hf_locations import locations
from ..probing import ProbeContext, probe

ENV_VARS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_XET_CACHE",
            "XDG_CACHE_HOME", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def scan(hub_cache: str, in_use: bool = True, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The hub section: what checks and `doctor clean-cache` plans need (see doctor/clean/memo.py)."""
    from ..clean.memo import hub_facts

    return hub_facts(hub_cache, in_use=in_use, environ=environ)


def collect(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    from importlib.metadata import version

    where = locations(env)
    endpoint = (env.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return {**where, "endpoint": endpoint, "endpoint_from_env": bool(env.get("HF_ENDPOINT")),
            "offline": _truthy(env.get("HF_HUB_OFFLINE")) or _truthy(env.get("TRANSFORMERS_OFFLINE")),
            "env": {k: env.get(k) for k in ENV_VARS if k in env},
            "huggingface_hub_version": version("huggingface_hub"),
            "hub": scan(where["hf_hub_cache"], environ=environ)}


@probe("hf", timeout_s=20)
def probe_hf(_: ProbeContext, __: float) -> dict[str, Any]:
    return collect()
