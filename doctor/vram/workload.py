"""A job's workload as `doctor estimate` reads it: from a profile's job.workload, and back to the command-line
flags that reproduce it (so every `doctor estimate` command doctor prints keeps the job's batch, sequence,
method and the rest, and changes only what it proposes)."""
from __future__ import annotations

import shlex
from typing import Any

from .estimator import OPTIMIZERS, Workload

ATTN_ALIASES = {"flash_attention_2": "flash", "flash_attention_3": "flash"}
# Workload field -> the estimate flag that sets it (booleans: the flag that turns them on, and off where needed)
FLAGS = {"method": "--method", "dtype": "--dtype", "batch": "--batch", "seq": "--seq", "grad_accum": "--grad-accum",
         "attention": "--attention", "optimizer": "--optimizer", "lora_rank": "--lora-rank",
         "lora_targets": "--lora-targets", "adapter_dtype": "--adapter-dtype", "quant": "--quant",
         "images": "--images", "image_size": "--image-size", "context": "--context"}
PROFILE_KEYS = {"--quant": "quantization", "--double-quant": "double_quant", "--attention": "attn_implementation",
                "--context": "context", "--method": "method"}
SWITCHES = {"checkpointing": ("--grad-checkpointing", None), "double_quant": ("--double-quant", None),
            "amp": ("--amp", "--no-amp")}


def workload_from_job(job: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(model, Workload fields) from a profile's job.workload."""
    w = job.get("workload") or {}
    model = w.get("model")
    if w.get("depth") and not model:
        model = f"nanochat-d{w['depth']}"
    fields: dict[str, Any] = {}
    method = w.get("method")
    if method:
        fields["method"] = method
    for key, field in (("dtype", "dtype"), ("batch", "batch"), ("sequence", "seq"), ("grad_accum", "grad_accum"),
                       ("gradient_checkpointing", "checkpointing"), ("images_per_sample", "images"),
                       ("image_size", "image_size"), ("lora_rank", "lora_rank"), ("lora_targets", "lora_targets"),
                       ("double_quant", "double_quant"), ("mixed_precision", "amp"), ("context", "context")):
        if w.get(key) is not None:
            fields[field] = w[key]
    if w.get("quantization"):
        fields["quant"] = w["quantization"]
    if w.get("attn_implementation"):
        fields["attention"] = ATTN_ALIASES.get(w["attn_implementation"], w["attn_implementation"])
    if w.get("optimizer"):
        opt = str(w["optimizer"]).lower().replace("-", "_")
        fields["optimizer"] = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw_fused", "adamw_hf": "adamw_loop",
                               "adamw_bnb_8bit": "adamw_8bit", "paged_adamw_8bit": "adamw_8bit",
                               "muon+adamw": "muon"}.get(opt, opt)
        if fields["optimizer"] not in OPTIMIZERS:
            fields.pop("optimizer")
    return model, fields



def to_flags(model: str, fields: dict[str, Any]) -> str:
    """`--model M --method qlora --batch 1 ...`: the flags that give `doctor estimate` exactly these fields."""
    parts = ["--model", model]
    for field, value in fields.items():
        if field in FLAGS and value is not None:
            parts += [FLAGS[field], str(value)]
        elif field in SWITCHES:
            on, off = SWITCHES[field]
            flag = on if value else off
            if flag:
                parts.append(flag)
    return " ".join(shlex.quote(p) for p in parts)


def contradictions(wl: Workload) -> list[tuple[str, str, str]]:
    """(flag, value, what is expected) for knobs that cannot hold together; PROFILE_KEYS names the profile key
    of each flag (job.workload.quantization = --quant, sequence = --seq, attn_implementation = --attention)."""
    out = []
    if wl.method == "qlora" and wl.quant not in ("none", "nf4"):
        out.append(("--quant", wl.quant, "QLoRA trains on an NF4 base; expected nf4"))
    if wl.quant in ("awq", "gptq") and wl.method != "inference":
        out.append(("--quant", wl.quant, "AWQ/GPTQ kernels serve inference; expected --method inference"))
    if wl.double_quant and wl.quant not in ("nf4",) and wl.method != "qlora":
        out.append(("--double-quant", str(wl.quant), "double quantization applies to NF4 (bitsandbytes 4-bit) "
                                                    "weights only; expected --quant nf4 or --method qlora"))
    if wl.attention == "flash" and wl.dtype == "fp32" and not wl.amp:
        out.append(("--attention", "flash", "FlashAttention runs in fp16/bf16 only; with --dtype fp32 use sdpa "
                                            "or eager, or train with --amp"))
    if wl.context is not None and wl.context < wl.seq:
        out.append(("--context", str(wl.context), f"is shorter than the prompt (--seq {wl.seq}); expected the "
                                                  "KV-cache length, prompt plus generated tokens"))
    if wl.context is not None and wl.method != "inference":
        out.append(("--context", str(wl.context), "sets the KV cache of generation; expected --method inference"))
    return out


def describe(wl: Workload) -> str:
    """One line naming the workload: method, dtype, batch, sequence and what else is set."""
    parts = [wl.method, wl.dtype + (" AMP" if wl.amp else ""), f"batch {wl.batch}", f"seq {wl.seq}"]
    if wl.grad_accum > 1:
        parts.append(f"accum {wl.grad_accum}")
    if wl.checkpointing:
        parts.append("grad checkpointing")
    if wl.method != "inference":
        parts.append(wl.optimizer)
    if wl.method in ("lora", "qlora"):
        parts.append(f"LoRA r={wl.lora_rank} ({wl.lora_targets})")
    if wl.quant != "none" or wl.method == "qlora":
        parts.append((wl.quant if wl.quant != "none" else "nf4") + (" + double quant" if wl.double_quant else ""))
    parts.append(f"attention {wl.attention}")
    if wl.images:
        parts.append(f"{wl.images} image(s) {wl.image_size}px")
    return ", ".join(parts)
