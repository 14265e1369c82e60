"""Resolve `--model`: a built-in name, a path to a config.json (or its folder), or a Hub id via the HF cache."""
from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError, did_you_mean
from ..loading import CONFIG_BYTES, read_json
from .arch import Arch, from_config

# Hub ids of the shipped configs (doctor/data/models/<name>.json is that repository's config.json).
HUB_IDS = {
    "opt-125m": "facebook/opt-125m", "opt-350m": "facebook/opt-350m", "opt-1.3b": "facebook/opt-1.3b",
    "opt-2.7b": "facebook/opt-2.7b", "opt-6.7b": "facebook/opt-6.7b", "opt-13b": "facebook/opt-13b",
    "opt-30b": "facebook/opt-30b", "llama-2-7b": "meta-llama/Llama-2-7b-hf", "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "bert-large-uncased": "google-bert/bert-large-uncased",
    "qwen3-vl-32b-instruct": "Qwen/Qwen3-VL-32B-Instruct",
    "mamba-2.8b": "state-spaces/mamba-2.8b-hf",
}
NANOCHAT = re.compile(r"nanochat-d(\d+)$")


def builtin_names() -> list[str]:
    return sorted(HUB_IDS) + ["nanochat-d<depth>"]


def _builtin(name: str) -> dict[str, Any] | None:
    key = name.lower()
    for short, hub in HUB_IDS.items():
        if key in (short, hub.lower(), hub.lower().split("/")[-1]):
            text = resources.files("doctor").joinpath("data", "models", f"{short}.json").read_text(encoding="utf-8")
            return json.loads(text)
    m = NANOCHAT.match(key)
    if m:   # nanochat's base_train.py: width = 64 * depth, heads of 128, vocab 65,536 (its tokenizer)
        return {"model_type": "nanochat", "n_layer": int(m.group(1)), "_name_or_path": name}
    return None


def _read(path: Path, label: str) -> dict[str, Any]:
    data = read_json(path, CONFIG_BYTES, "Hugging Face config.json")
    if not isinstance(data, dict):
        raise InputError(label, None, "expected a JSON object (a Hugging Face config.json)")
    return data


def _from_hub_cache(repo: str, offline: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        try:   # the cached copy first: no request to the Hub when the config is already here
            return Path(hf_hub_download(repo, "config.json", local_files_only=True))
        except LocalEntryNotFoundError:
            if offline:
                raise
        return Path(hf_hub_download(repo, "config.json"))
    except LocalEntryNotFoundError:
        how = ("it is not in the Hugging Face cache and --offline forbids downloading it"
               if offline else "it is not in the cache and the Hub could not be reached")
        raise InputError("--model", repo, f"{how}; run `hf download {repo} config.json` on a machine with access, "
                         "or pass --model PATH/TO/config.json") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise InputError("--model", repo, f"cannot fetch config.json ({type(exc).__name__}: {exc}); "
                         "pass --model PATH/TO/config.json") from None


def load_config(model: str, offline: bool = False) -> tuple[dict[str, Any], str]:
    """(config.json as a dict, where it came from) for `model`; bad names and unreadable configs are InputError."""
    cfg = _builtin(model)
    if cfg is not None:
        return cfg, f"doctor/data/models ({model})"
    path = Path(os.path.expanduser(model))   # os.path's leaves ~unknown-user as it is (Path's raises)
    try:
        if path.is_dir():
            path = path / "config.json"
        exists = path.exists()
    except (OSError, ValueError):   # a name too long to be a path, a NUL: not a file, so a model name or nothing
        exists = False
    if path.suffix == ".json" or exists:
        if not exists:
            raise InputError(str(path), None, "no such file; expected a Hugging Face config.json")
        return _read(path, str(path)), str(path)
    if model.startswith(("./", "../", "/", "~")):   # a path, never a Hub id
        raise InputError(model, None, "no such file or folder; expected a Hugging Face config.json or its folder")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        path = _from_hub_cache(model, offline)
        return _read(path, str(path)), f"{model} (Hugging Face cache: {path})"
    raise InputError("--model", model, f"unknown model; {did_you_mean(model, HUB_IDS)}expected one of "
                     f"{', '.join(builtin_names())}, a path to a config.json, or a Hub id such as org/name")


def resolve(model: str, offline: bool = False) -> Arch:
    """The Arch for `model`; bad names and unreadable configs are InputError (exit 2)."""
    cfg, source = load_config(model, offline)
    return from_config(cfg, name=model, source=source)
