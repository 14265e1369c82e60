"""The shape of a profile, and a validator whose errors name the file and key path."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import InputError, did_you_mean


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]


@dataclass(frozen=True)
class ListOf:
    item: Any


@dataclass(frozen=True)
class MapOf:
    value: Any


@dataclass(frozen=True)
class Num:
    """A number (an integer where `integer`) from `low` to `high`; `above` excludes `low` itself."""

    low: float
    high: float
    integer: bool = False
    above: bool = False


@dataclass(frozen=True)
class Matching:
    """A string matching `pattern` (described by `what`)."""

    pattern: str
    what: str


@dataclass(frozen=True)
class Required:
    """A mapping whose `keys` must all be present, and of whose `exclusive` keys at most one is."""

    spec: dict[str, Any]
    keys: tuple[str, ...]
    exclusive: tuple[str, ...] = ()


class Specifier:
    """A PEP 440 version specifier ('>=4.57', '' for any version), checked with `packaging`."""


NUMBER = (int, float)
COUNT = Num(1, 1_000_000, integer=True)
SIZE_GIB = Num(0, 1_000_000, above=True)
# the link ids of doctor/data/interconnect.yaml (tests/test_distributed.py keeps the two the same)
INTERCONNECT_LINKS = ("nvlink-v100", "nvlink-a100", "nvlink-a800", "nvlink-h100", "nvlink-h800", "pcie3-x16",
                      "pcie4-x16", "pcie5-x16", "ib-edr", "ib-hdr", "ib-ndr", "eth-100g", "eth-200g", "eth-400g")
CHECK_ENTRY = {"id": str, "params": MapOf(object), "severity": Choice(("warn", "fail")), "enabled": bool}

SCHEMA: dict[str, Any] = {
    "kind": Choice(("machine", "job", "base")),
    "description": str,
    "extends": ListOf(str),
    "machine": {
        "provider": str,
        "gpu": {
            "required": bool, "count": Num(1, 4096, integer=True), "models": ListOf(str), "name": str,
            "memory_gib": SIZE_GIB, "memory_tolerance_pct": Num(0, 100),
            "compute_capability": Matching(r"\d{1,2}\.\d", "a compute capability such as \"8.0\""), "arch": str,
        },
        "ram_gib": SIZE_GIB,
        "disk_gib": SIZE_GIB,
        # `doctor check --distributed`: the links the all-reduce crosses (ids of doctor/data/interconnect.yaml),
        # or a floor of its own; judged by distributed.allreduce
        "interconnect": {"intra_node": Choice(INTERCONNECT_LINKS), "inter_node": Choice(INTERCONNECT_LINKS),
                         "inter_node_ports": Num(1, 64, integer=True), "min_busbw_gbps": Num(0, 100_000, above=True)},
    },
    "job": {
        "name": str,
        "workload": {
            "model": str,
            "method": Choice(("inference", "full", "lora", "qlora", "hessian")),
            "dtype": Choice(("fp32", "fp16", "bf16")),
            "quantization": Choice(("none", "nf4", "int8", "awq", "gptq")),
            "batch": COUNT, "sequence": Num(1, 100_000_000, integer=True), "grad_accum": COUNT,
            "gradient_checkpointing": bool, "images_per_sample": Num(0, 10_000, integer=True), "world_size": COUNT,
            "total_batch_size": Num(1, 10**12, integer=True), "dataloader_workers": Num(0, 4096, integer=True),
            "attn_implementation": Choice(("eager", "sdpa", "flash_attention_2", "flash_attention_3")),
            "depth": Num(1, 10_000, integer=True), "optimizer": str, "lora_rank": Num(1, 1 << 16, integer=True),
            "lora_targets": str, "double_quant": bool, "image_size": Num(1, 100_000, integer=True),
            "mixed_precision": bool, "context": Num(1, 100_000_000, integer=True),
            # distributed training (doctor/vram/distributed.py); a job.deepspeed.config's zero_optimization wins
            "gpus_per_node": Num(1, 4096, integer=True), "zero_stage": Num(0, 3, integer=True),
            "fsdp": Choice(("full", "shard-grad-op", "hybrid", "hybrid-zero2", "no-shard")),
            "offload_optimizer": Choice(("none", "cpu", "nvme")), "offload_params": Choice(("none", "cpu", "nvme")),
            "zero_init": bool,
            # how the model is built on the CPU: accelerate's fsdp_cpu_ram_efficient_loading; from_pretrained's dtype
            "ram_efficient_loading": bool, "load_dtype": Choice(("fp32", "fp16", "bf16")),
            "params": Num(1, 10**13, integer=True),   # parameter count of a model doctor cannot build from a config
        },
        "software": {"python": Specifier, "packages": MapOf(Specifier), "build_extensions": bool},
        # gib: the size as typed; contents: doctor computes a checkpoint's size from job.workload
        # (doctor/vram/checkpoint.py), gib overriding it; count: copies kept; save_total_limit: HF Trainer's (+1)
        "storage": MapOf(Required({"path": str, "gib": Num(0, 1_000_000), "count": COUNT, "repo": str, "note": str,
                                   "contents": Choice(("model", "model+optimizer")), "save_total_limit": COUNT},
                                  ("path",), exclusive=("count", "save_total_limit"))),
        "deepspeed": {"config": str},
        "notes": ListOf(str),
    },
    "checks": ListOf(CHECK_ENTRY),
}

TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", NUMBER: "a number", object: "a value"}


def describe(spec: Any) -> str:
    if isinstance(spec, (dict, Required)):
        return "a mapping"
    if isinstance(spec, Num):
        kind = "a whole number" if spec.integer else "a number"
        return f"{kind} {'above' if spec.above else 'from'} {spec.low:g}" + (f" to {spec.high:g}" if spec.high else "")
    if isinstance(spec, Matching):
        return spec.what
    if spec is Specifier:
        return "a version specifier such as '>=4.57' (PEP 440)"
    if isinstance(spec, Choice):
        return "one of " + ", ".join(spec.options)
    if isinstance(spec, ListOf):
        return "a list"
    if isinstance(spec, MapOf):
        return "a mapping"
    return TYPE_WORDS.get(spec, str(spec))


def _is(value: Any, spec: Any) -> bool:
    if spec is object:
        return True
    if isinstance(value, bool) and spec is not bool:
        return False
    return isinstance(value, spec)


def unknown_key(source: str, path: str, key: Any, allowed: list[str]) -> InputError:
    return InputError(source, path, f"unknown key; {did_you_mean(key, allowed)}expected one of: {', '.join(allowed)}")


def _short(value: Any) -> str:
    from .loading import excerpt

    return excerpt(value)


def validate(value: Any, spec: Any, source: str, path: str = "") -> None:
    """Raise InputError for the first unknown key, missing required key, wrong type or value out of range."""
    where = path or "(top level)"
    if isinstance(spec, Required):
        if not isinstance(value, dict):
            raise InputError(source, where, f"expected a mapping, got {type(value).__name__}")
        for key in spec.keys:
            if key not in value:
                raise InputError(source, f"{path}.{key}" if path else key, f"missing; expected {describe(spec.spec[key])}")
        given = [k for k in spec.exclusive if k in value]
        if len(given) > 1:
            raise InputError(source, f"{path}.{given[1]}" if path else given[1],
                             f"set together with {given[0]}; expected only one of {', '.join(spec.exclusive)}")
        validate(value, spec.spec, source, path)
    elif isinstance(spec, Num):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (not spec.integer or isinstance(value, int))
        if ok:
            ok = (isinstance(value, int) or math.isfinite(value)) and (value > spec.low if spec.above else value >= spec.low) and value <= spec.high
        if not ok:
            raise InputError(source, where, f"is {_short(value)}; expected {describe(spec)}")
    elif isinstance(spec, Matching):
        if not isinstance(value, str) or not re.fullmatch(spec.pattern, value):
            raise InputError(source, where, f"is {_short(value)}; expected {spec.what}")
    elif spec is Specifier:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(value) if isinstance(value, str) else None
        except InvalidSpecifier:
            raise InputError(source, where, f"is {_short(value)}; expected {describe(spec)}") from None
        if not isinstance(value, str):
            raise InputError(source, where, f"is {_short(value)}; expected {describe(spec)}")
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            raise InputError(source, where, f"expected a mapping, got {type(value).__name__}")
        for key, sub in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in spec:
                raise unknown_key(source, child, key, sorted(spec))
            validate(sub, spec[key], source, child)
    elif isinstance(spec, Choice):
        if not isinstance(value, (str, int, float, bool)) or value not in spec.options:
            raise InputError(source, where, f"is {_short(value)}; expected {describe(spec)}")
    elif isinstance(spec, ListOf):
        if not isinstance(value, list):
            raise InputError(source, where, f"expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            validate(item, spec.item, source, f"{path}[{i}]")
    elif isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise InputError(source, where, f"expected a mapping, got {type(value).__name__}")
        for key, sub in value.items():
            if not isinstance(key, str):
                raise InputError(source, f"{path}.{key}", "keys must be strings")
            validate(sub, spec.value, source, f"{path}.{key}")
    elif not _is(value, spec):
        raise InputError(source, where, f"expected {describe(spec)}, got {type(value).__name__} {_short(value)}")


def lookup(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(found, value) for a dotted key path such as 'machine.gpu.model'."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node
