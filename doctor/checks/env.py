"""Environment variables that decide which GPUs the job sees and how torch allocates their memory."""
from __future__ import annotations

import re
from typing import Any

from doctor.model import Remediation, Result, failed, passed, skipped, warned
from doctor.registry import check

from .common import devices

CUDA_ENV_URL = "https://docs.nvidia.com/cuda/cuda-c-programming-guide/index.html#cuda-environment-variables"
ALLOC_URL = "https://pytorch.org/docs/stable/notes/cuda.html#optimizing-memory-usage-with-pytorch-cuda-alloc-conf"
# c10/cuda/CUDAAllocatorConfig.cpp: options the caching allocator parses; any other key raises
# "Unrecognized CachingAllocator option" at the first CUDA allocation.
ALLOC_KEYS = {
    "backend": r"native|cudaMallocAsync",
    "max_split_size_mb": r"\d+",
    "max_non_split_rounding_mb": r"\d+",
    "roundup_power2_divisions": r"\d+|\[[^\]]*\]",
    "garbage_collection_threshold": r"[0-9.]+",
    "expandable_segments": r"True|False",
    "release_lock_on_cudamalloc": r"True|False",
    "pinned_use_cuda_host_register": r"True|False",
    "pinned_num_register_threads": r"\d+",
    "pinned_use_background_threads": r"True|False",
    "pinned_reserve_segment_size_mb": r"\d+",
    "per_process_memory_fraction": r"[0-9.]+",
    "graph_capture_record_stream_reuse": r"True|False",
}


def _variables(facts: dict[str, Any]) -> dict[str, str]:
    env = (facts.get("env") or {}).get("variables")
    if env is None:  # older snapshots carry the GPU variables in the gpu section
        env = {k: v for k, v in ((facts.get("gpu") or {}).get("env") or {}).items() if v is not None}
    return env


def resolve_visible(value: str, devs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str | None]:
    """CUDA's reading of CUDA_VISIBLE_DEVICES: indices, GPU-UUID prefixes or MIG ids, stopping at the
    first entry that matches nothing. Returns (visible GPUs, the problem if any)."""
    seen: list[dict[str, Any]] = []
    if not value.strip():
        return seen, "it is set but empty, which hides every GPU"
    for raw in value.split(","):
        token = raw.strip()
        if token.startswith("MIG-"):
            if not any((d.get("mig") or {}).get("current") for d in devs):
                return seen, f"'{token}' is a MIG instance id but no GPU has MIG mode enabled"
            return seen, None  # MIG instances are not listed in the facts: accepted as given
        if re.fullmatch(r"-?\d+", token):
            idx = int(token)
            if idx < 0 or idx >= len(devs):
                return seen, (f"index {idx} does not exist ({len(devs)} GPUs: 0..{len(devs) - 1})" if idx >= 0
                              else f"'{token}' hides every GPU")
            match = [devs[idx]]
        else:
            want = token.upper() if token.upper().startswith("GPU-") else "GPU-" + token.upper()
            match = [d for d in devs if (d.get("uuid") or "").upper().startswith(want)]
            if len(match) != 1:
                return seen, (f"'{token}' matches no GPU UUID" if not match else f"'{token}' matches several GPUs")
        if match[0] in seen:
            return seen, f"'{token}' names a GPU twice"
        seen.append(match[0])
    return seen, None


@check("env.cuda_visible_devices", needs_gpu=True, binds={"count": "machine.gpu.count"})
def env_cuda_visible_devices(facts: dict[str, Any], *, count: int | None = None) -> Result:
    """CUDA_VISIBLE_DEVICES (indices, UUIDs or MIG ids) resolves to GPUs that exist; CUDA_DEVICE_ORDER
    is PCI_BUS_ID when GPUs of different models share the machine.

    Why: CUDA silently drops every entry after the first invalid one, so a stale `CUDA_VISIBLE_DEVICES=4,5`
    on a 4-GPU box leaves the job with no GPU and "CUDA is not available"; with mixed GPUs CUDA
    numbers the fastest first, so index 0 is not nvidia-smi's GPU 0.
    Fix: set CUDA_VISIBLE_DEVICES to indices or UUIDs from `nvidia-smi -L`; export CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """
    env = _variables(facts)
    devs = devices(facts["gpu"])
    value = env.get("CUDA_VISIBLE_DEVICES")
    order = env.get("CUDA_DEVICE_ORDER")
    if not devs:
        return skipped("no NVIDIA GPU; see gpu.present")
    models = {d.get("name") for d in devs}
    details = [f"CUDA_VISIBLE_DEVICES={value!r}" if value is not None else "CUDA_VISIBLE_DEVICES unset (all GPUs)",
               f"CUDA_DEVICE_ORDER={order or 'unset (FASTEST_FIRST)'}"]
    remedy = Remediation("List the GPUs with `nvidia-smi -L` and name existing ones by index or UUID.",
                         ("nvidia-smi -L", "export CUDA_VISIBLE_DEVICES=0"), CUDA_ENV_URL)
    if value is not None:
        visible, problem = resolve_visible(value, devs)
        if problem:
            kept = f"CUDA keeps only the {len(visible)} GPU(s) before it" if visible else "the job sees no GPU"
            return failed(f"CUDA_VISIBLE_DEVICES={value!r}: {problem}; {kept}", remedy, *details)
        if count is not None and visible and len(visible) < count:
            return failed(f"CUDA_VISIBLE_DEVICES={value!r} exposes {len(visible)} GPU(s); the profile needs {count}",
                          remedy, *details)
    if len(models) > 1 and order != "PCI_BUS_ID":
        return warned("GPUs of different models with CUDA_DEVICE_ORDER unset: CUDA index 0 is the fastest GPU, "
                      "not nvidia-smi's GPU 0",
                      Remediation("Make CUDA number GPUs like nvidia-smi.", ("export CUDA_DEVICE_ORDER=PCI_BUS_ID",),
                                  CUDA_ENV_URL), *details)
    return passed("all GPUs visible" if value is None else f"CUDA_VISIBLE_DEVICES={value!r} resolves", *details)


def parse_alloc_conf(value: str) -> list[str]:
    """Problems in a PYTORCH_CUDA_ALLOC_CONF value, as torch's allocator would reject it."""
    problems = []
    for item in re.split(r",(?![^\[]*\])", value.strip()):
        if not item.strip():
            continue
        key, sep, val = item.strip().partition(":")
        key, val = key.strip(), val.strip()
        if key not in ALLOC_KEYS:
            problems.append(f"unknown option '{key}' (torch raises 'Unrecognized CachingAllocator option')")
        elif not sep or not re.fullmatch(ALLOC_KEYS[key], val):
            problems.append(f"{key}:{val or '?'} is not a valid value")
        elif key == "max_split_size_mb" and int(val) <= 20:
            problems.append(f"max_split_size_mb:{val} must be > 20")
        elif key == "garbage_collection_threshold" and not 0 < float(val) < 1:
            problems.append(f"garbage_collection_threshold:{val} must be between 0 and 1")
    return problems


@check("env.alloc_conf", needs=("env",))
def env_alloc_conf(facts: dict[str, Any]) -> Result:
    """PYTORCH_CUDA_ALLOC_CONF (and its newer name PYTORCH_ALLOC_CONF) parses as torch's caching allocator
    parses it.

    Why: a typo ("expandable_segment:True") or an out-of-range value raises a RuntimeError at the first
    CUDA allocation, after the job has loaded data and model.
    Fix: use the documented `key:value,key:value` options (the bad one is named).
    """
    env = _variables(facts)
    values = {k: env[k] for k in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF") if env.get(k)}
    if not values:
        return passed("PYTORCH_CUDA_ALLOC_CONF is not set (torch defaults)")
    problems = [f"{k}: {p}" for k, v in values.items() for p in parse_alloc_conf(v)]
    if problems:
        return failed("; ".join(problems), Remediation("Fix or unset the variable.",
                                                       tuple(f"unset {k}" for k in values), ALLOC_URL),
                      *(f"{k}={v}" for k, v in values.items()))
    return passed("; ".join(f"{k}={v} parses" for k, v in values.items()))
