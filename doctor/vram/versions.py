"""Library versions that change a job's memory: which behaviour of transformers, peft and bitsandbytes an estimate
applies, from the sourced rows of doctor/data/vram.yaml (`versions`). A version doctor is not told is taken as the
current behaviour, and the note says which assumption was taken and for which versions it holds."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import refdata
from ..errors import InputError

# package -> the Workload field (and `doctor estimate` flag) holding its installed version
FIELDS = {"transformers": "transformers_version", "peft": "peft_version", "bitsandbytes": "bitsandbytes_version",
          "torchao": "torchao_version"}


def rows() -> dict[str, Any]:
    return refdata.load("vram")["versions"]


def check(source: str, text: object) -> str:
    """`text` as a PEP 440 version string; InputError (exit 2) naming `source` otherwise."""
    from packaging.version import InvalidVersion, Version

    try:
        Version(str(text))
    except (InvalidVersion, ValueError):   # ValueError: a release number past int()'s 4300 digits
        raise InputError(source, str(text)[:60], "is not a version; expected a PEP 440 version such as 4.57.1") from None
    return str(text)


def older(version: str | None, since: str) -> bool | None:
    """True when `version` is before `since`, False from it on, None when the version is unknown."""
    from packaging.version import Version

    if version is None:
        return None
    return Version(version) < Version(since)


def from_facts(facts: dict[str, Any]) -> dict[str, str]:
    """Workload fields {transformers_version: ..., ...} from a facts snapshot's python.distributions (the inspected
    interpreter's installed packages); packages it does not list are left out (unknown). A value that is not a
    version is left out too: the note then says the version is unknown."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    dists = (facts.get("python") or {}).get("distributions")
    if not isinstance(dists, dict):
        return {}
    found = {canonicalize_name(str(k)): v for k, v in dists.items()}
    out = {}
    for package, field in FIELDS.items():
        value = found.get(package)
        if isinstance(value, str):
            try:
                Version(value)
            except (InvalidVersion, ValueError):   # ValueError: a release number past int()'s 4300 digits
                continue
            out[field] = value
    return out


def deepspeed_from_facts(facts: dict[str, Any]) -> str | None:
    """The snapshot's installed DeepSpeed version (a PEP 440 string), or None."""
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    dists = (facts.get("python") or {}).get("distributions")
    if not isinstance(dists, dict):
        return None
    value = {canonicalize_name(str(k)): v for k, v in dists.items()}.get("deepspeed")
    if not isinstance(value, str):
        return None
    try:
        Version(value)
    except (InvalidVersion, ValueError):   # ValueError: a release number past int()'s 4300 digits
        return None
    return value


def with_deepspeed(fields: dict[str, Any], version: str | None) -> dict[str, Any]:
    """`fields` with DeepSpeed's version in its knobs (distributed.py reads ds_knobs["version"]: ZeRO-1/2 optimizer
    offload stages updated parameters through a pinned CPU buffer from 0.17.0, PR #7309, and copied the fp32
    partition to the GPU before)."""
    if version is None:
        return fields
    return {**fields, "ds_knobs": {**(fields.get("ds_knobs") or {}), "version": version}}


def with_facts(fields: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """`fields` with the installed transformers / peft / bitsandbytes / DeepSpeed versions of a facts snapshot,
    where `fields` does not set them already."""
    out = {**fields, **{k: v for k, v in from_facts(facts).items() if k not in fields}}   # the job's fields first
    if not (out.get("ds_knobs") or {}).get("version"):
        out = with_deepspeed(out, deepspeed_from_facts(facts))
    return out


@dataclass(frozen=True)
class Applied:
    """One version-dependent behaviour: whether the older behaviour applies, and the note that says so."""

    old: bool
    note: str


def kv_cache(family: str, version: str | None) -> Applied | None:
    """Whether generate() runs on the legacy tuple cache (one whole extra KV cache at each step); None for a family
    the table has no row for (not a transformers generate() model, or no sourced threshold)."""
    row = rows()["generate_dynamic_cache"]
    since = row["since"].get(family)
    if since is None:
        return None
    is_old = older(version, since)
    if is_old is None:
        return Applied(False, f"transformers version unknown: assumed >= {since} (generate keeps a DynamicCache, one "
                              f"layer's copy extra while it grows); before {since} {family} generates on the legacy "
                              "tuple cache, which holds a whole second KV cache at each step - give "
                              "--transformers-version or --facts")
    if is_old:
        return Applied(True, f"transformers {version} < {since}: generate keeps the legacy tuple cache, so the "
                             "previous step's cache lives beside the new one (a whole extra KV cache)")
    return Applied(False, f"transformers {version} >= {since}: generate keeps a DynamicCache (one layer's copy extra "
                          "while it grows)")


def bnb_keeps_input(version: str | None) -> Applied:
    """Whether bitsandbytes' MatMul4Bit keeps each frozen 4-bit linear's input until backward."""
    since = rows()["bnb_4bit_input_kept"]["since"]
    is_old = older(version, since)
    if is_old is None:
        return Applied(False, f"bitsandbytes version unknown: assumed >= {since} (a frozen 4-bit linear keeps no input "
                              f"for backward); before {since} every 4-bit linear's input stays alive until backward - "
                              "give --bitsandbytes-version or --facts")
    if is_old:
        return Applied(True, f"bitsandbytes {version} < {since}: MatMul4Bit keeps every 4-bit linear's input until "
                             "backward (fixed in 0.43.2)")
    return Applied(False, f"bitsandbytes {version} >= {since}: frozen 4-bit linears keep no input for backward")


def peft_adapter_dtype(version: str | None, base_dtype: str) -> tuple[str, str]:
    """(adapter dtype, note) PEFT gives LoRA adapters on a floating-point base of `base_dtype` when the job does not
    set it: fp32 from 0.12.0 (autocast_adapter_dtype=True), the base's dtype before."""
    since = rows()["peft_adapter_fp32"]["since"]
    is_old = older(version, since)
    if is_old is None:
        return "fp32", (f"peft version unknown: assumed >= {since} (adapters upcast to fp32); before {since} they take "
                        f"the base's dtype ({base_dtype}) - give --peft-version, --adapter-dtype or --facts")
    if is_old:
        return base_dtype, f"peft {version} < {since}: adapters take the base's dtype ({base_dtype})"
    return "fp32", f"peft {version} >= {since}: adapters upcast to fp32 (autocast_adapter_dtype=True)"


def given_adapter_note(dtype: str, base_dtype: str) -> str:
    """The note for adapters whose dtype the job sets (--adapter-dtype or the profile): peft's version is moot."""
    since = rows()["peft_adapter_fp32"]["since"]
    return (f"LoRA adapters in {dtype}, as the job sets them; peft's own default is fp32 from {since} and the "
            f"base's dtype ({base_dtype}) before")


def floating_base(method: str, quant: str, fsdp: str | None, zero: int | None) -> bool:
    """Whether LoRA's base weights have a floating-point dtype PEFT's adapters can take: an unquantized base, or a
    4-bit base sharded by FSDP or ZeRO-3, whose bnb_4bit_quant_storage must be the model's float dtype for the
    shards (peft 0.10.0 tuners/lora/layer.py update_layer: "if weight.dtype.is_floating_point ...:
    self.to(weight.device, dtype=weight.dtype)"; on one GPU the 4-bit storage is uint8 and adapters stay fp32)."""
    if method == "qlora" or (method == "lora" and quant == "nf4"):
        return fsdp not in (None, "none") or zero == 3
    return method == "lora" and quant in (None, "none")


def fsdp_upcast_note() -> str:
    """What accelerate does to half-precision trainable FSDP flat parameters (doctor does not know whether a job
    runs under accelerate with mixed precision on: the note says so)."""
    since = rows()["accelerate_fsdp_upcast"]["since"]
    return (f"under accelerate >= {since} with mixed precision on (Trainer's bf16 / fp16), FSDP's trainable flat "
            "parameters are upcast to fp32 whatever peft gives them (accelerate 9557598c, #2674): give "
            "--adapter-dtype fp32 for such a job")


def resolve(fields: dict[str, Any], given: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """`fields` with the adapter dtype PEFT's version gives, where the job does not set it (`given` names the
    fields the user set), on a floating-point base only (floating_base)."""
    if not floating_base(fields.get("method", "full"), fields.get("quant", "none"), fields.get("fsdp"),
                         fields.get("zero")):
        return fields
    if "adapter_dtype" in given or fields.get("adapter_dtype"):
        return {**fields, "adapter_dtype_given": True}
    base = "fp32" if fields.get("amp") else fields.get("dtype", "bf16")
    dtype, _ = peft_adapter_dtype(fields.get("peft_version"), base)
    return {**fields, "adapter_dtype": dtype}
