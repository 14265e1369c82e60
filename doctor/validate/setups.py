"""The VRAM matrix of `doctor validate`: set-ups built from shipped model configs with random weights, each
measured on the device and estimated by `doctor estimate`'s model for the very same config and workload."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from typing import Any

from ..vram.arch import from_config
from ..vram.estimator import Estimate, Workload, estimate, lora_targets

DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout")
# The same architectures scaled down for --device cpu: the whole path runs in seconds (figures unjudged).
TINY = {"opt": {"hidden_size": 64, "word_embed_proj_dim": 64, "ffn_dim": 256, "num_attention_heads": 4,
                "num_hidden_layers": 2, "vocab_size": 512, "max_position_embeddings": 256},
        "llama": {"hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4, "num_key_value_heads": 4,
                  "num_hidden_layers": 2, "vocab_size": 512, "max_position_embeddings": 256}}


@dataclass(frozen=True)
class Setup:
    """One row of the matrix: a shipped model config and the workload knobs both sides share."""

    id: str
    model: str                      # doctor/data/models/<model>.json
    method: str
    dtype: str = "bf16"
    batch: int = 1
    seq: int = 512
    checkpointing: bool = False
    attention: str = "sdpa"
    optimizer: str = "adamw"
    amp: bool = False
    lora_rank: int = 8
    quant: str = "none"
    context: int | None = None
    dropout: bool = True
    needs: tuple[str, ...] = field(default=())   # packages beyond torch + transformers


# Ordered by what they teach: when the time budget runs out, the last rows are the ones left out.
GPU_SETUPS = (
    Setup("opt-125m-full-adamw", "opt-125m", "full", batch=8, seq=512),
    Setup("opt-125m-full-adamw-gc", "opt-125m", "full", batch=8, seq=512, checkpointing=True),
    Setup("opt-1.3b-full-adamw", "opt-1.3b", "full", batch=4, seq=1024),
    Setup("opt-1.3b-full-adamw-gc", "opt-1.3b", "full", batch=4, seq=1024, checkpointing=True),
    Setup("opt-1.3b-lora-r16", "opt-1.3b", "lora", batch=4, seq=1024, lora_rank=16, needs=("peft",)),
    Setup("llama-2-7b-lora-r8-gc", "llama-2-7b", "lora", batch=2, seq=1024, checkpointing=True, needs=("peft",)),
    Setup("llama-2-7b-infer-ctx1024", "llama-2-7b", "inference", batch=8, seq=1008, context=1024),
    Setup("llama-2-7b-infer-ctx4096", "llama-2-7b", "inference", batch=8, seq=4080, context=4096),
    Setup("opt-125m-hvp", "opt-125m", "hessian", dtype="fp32", batch=4, seq=512, attention="eager", dropout=False),
    Setup("opt-350m-amp-full-eager", "opt-350m", "full", amp=True, batch=8, seq=1024, attention="eager"),
    Setup("opt-1.3b-qlora-r16-gc", "opt-1.3b", "qlora", batch=4, seq=1024, checkpointing=True, lora_rank=16,
          quant="nf4", needs=("peft", "bitsandbytes")),
    Setup("opt-1.3b-infer-ctx2048", "opt-1.3b", "inference", dtype="fp16", batch=16, seq=2032, context=2048),
)


def tiny(setup: Setup) -> Setup:
    """The CPU version of a set-up: short sequences, a small batch, rank 4."""
    ctx = None if setup.context is None else 48
    return replace(setup, batch=2, seq=32, context=ctx, lora_rank=4)


def config(setup: Setup, small: bool) -> dict[str, Any]:
    """The config both sides build from: the shipped one (scaled down on CPU), dropout off where asked."""
    text = resources.files("doctor").joinpath("data", "models", f"{setup.model}.json").read_text(encoding="utf-8")
    cfg = json.loads(text)
    if small:
        cfg.update(TINY[cfg["model_type"]])
    if not setup.dropout:
        cfg.update({k: 0.0 for k in DROPOUT_KEYS if k in cfg})
    return cfg


def workload(setup: Setup, sm: float | None) -> Workload:
    names = {f.name for f in fields(Workload)}
    knobs = {k: v for k, v in setup.__dict__.items() if k in names}
    return Workload(**knobs, sm=sm)


def plan(small: bool, sm: float | None) -> list[dict[str, Any]]:
    """Each set-up as the worker reads it (config, knobs, LoRA modules) with doctor's estimate beside it."""
    out = []
    for base in GPU_SETUPS:
        setup = tiny(base) if small else base
        cfg = config(setup, small)
        arch = from_config(cfg, name=setup.model, source=f"doctor/data/models/{setup.model}.json")
        wl = workload(setup, sm)
        modules = sorted(lora_targets(arch, wl))
        if modules:
            wl = replace(wl, lora_targets=",".join(modules))
        est: Estimate = estimate(arch, wl)
        spec = {**setup.__dict__, "needs": list(setup.needs), "config": cfg, "lora_modules": modules}
        out.append({"spec": spec, "estimate": est.to_dict()})
    return out
