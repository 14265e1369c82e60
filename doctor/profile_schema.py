"""The shape of a profile, and a validator whose errors name the file and key path."""
from __future__ import annotations

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


NUMBER = (int, float)
CHECK_ENTRY = {"id": str, "params": MapOf(object), "severity": Choice(("warn", "fail")), "enabled": bool}

SCHEMA: dict[str, Any] = {
    "kind": Choice(("machine", "job", "base")),
    "description": str,
    "extends": ListOf(str),
    "machine": {
        "provider": str,
        "gpu": {
            "required": bool, "count": int, "models": ListOf(str), "name": str, "memory_gib": NUMBER,
            "memory_tolerance_pct": NUMBER, "compute_capability": str, "arch": str,
        },
        "ram_gib": NUMBER,
        "disk_gib": NUMBER,
    },
    "job": {
        "name": str,
        "workload": {
            "model": str,
            "method": Choice(("inference", "full", "lora", "qlora", "hessian")),
            "dtype": Choice(("fp32", "fp16", "bf16")),
            "quantization": Choice(("none", "nf4", "int8", "awq", "gptq")),
            "batch": int, "sequence": int, "grad_accum": int, "gradient_checkpointing": bool,
            "images_per_sample": int, "world_size": int, "total_batch_size": int, "dataloader_workers": int,
            "attn_implementation": Choice(("eager", "sdpa", "flash_attention_2", "flash_attention_3")),
            "depth": int, "optimizer": str, "lora_rank": int, "lora_targets": str, "double_quant": bool,
            "image_size": int, "mixed_precision": bool, "context": int,
        },
        "software": {"python": str, "packages": MapOf(str), "build_extensions": bool},
        "storage": MapOf({"path": str, "gib": NUMBER, "count": int, "repo": str, "note": str}),
        "deepspeed": {"config": str},
        "notes": ListOf(str),
    },
    "checks": ListOf(CHECK_ENTRY),
}

TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", NUMBER: "a number", object: "a value"}


def describe(spec: Any) -> str:
    if isinstance(spec, dict):
        return "a mapping"
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


def validate(value: Any, spec: Any, source: str, path: str = "") -> None:
    """Raise InputError for the first unknown key or wrong type under `path`."""
    where = path or "(top level)"
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise InputError(source, where, f"expected a mapping, got {type(value).__name__}")
        for key, sub in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in spec:
                raise unknown_key(source, child, key, sorted(spec))
            validate(sub, spec[key], source, child)
    elif isinstance(spec, Choice):
        if value not in spec.options:
            raise InputError(source, where, f"is {value!r}; expected {describe(spec)}")
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
        raise InputError(source, where, f"expected {describe(spec)}, got {type(value).__name__} {value!r}")


def lookup(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(found, value) for a dotted key path such as 'machine.gpu.model'."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node
