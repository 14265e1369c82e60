"""Where the Hugging Face caches are, resolved as huggingface_hub and datasets resolve them (shared by the
hf and disk probes and `doctor clean-cache`)."""
from __future__ import annotations

import os


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
