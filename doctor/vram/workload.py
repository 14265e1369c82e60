"""A job's workload as `doctor estimate` reads it: from a profile's job.workload, and back to the command-line
flags that reproduce it (so every `doctor estimate` command doctor prints keeps the job's batch, sequence,
method and the rest, and changes only what it proposes)."""
from __future__ import annotations

import json
import shlex
from typing import Any

from ..errors import InputError
from .distributed import deepspeed_problems, explicit_precision, from_deepspeed_config
from .estimator import OPTIMIZERS, Workload, sharding_of

ATTN_ALIASES = {"flash_attention_2": "flash", "flash_attention_3": "flash"}
# Workload field -> the estimate flag that sets it (booleans: the flag that turns them on, and off where needed)
FLAGS = {"method": "--method", "dtype": "--dtype", "batch": "--batch", "seq": "--seq", "grad_accum": "--grad-accum",
         "attention": "--attention", "optimizer": "--optimizer", "lora_rank": "--lora-rank",
         "lora_targets": "--lora-targets", "adapter_dtype": "--adapter-dtype", "quant": "--quant",
         "images": "--images", "image_size": "--image-size", "context": "--context",
         "deepspeed_config": "--deepspeed-config", "zero": "--zero", "fsdp": "--fsdp", "world_size": "--world-size",
         "gpus_per_node": "--gpus-per-node", "offload_optimizer": "--offload-optimizer",
         "offload_params": "--offload-params", "transformers_version": "--transformers-version",
         "peft_version": "--peft-version", "bitsandbytes_version": "--bitsandbytes-version",
         "kv_cache_heads": "--kv-cache-heads", "lora_dropout": "--lora-dropout",
         "implementation": "--implementation", "load_dtype": "--load-dtype", "torchao_version": "--torchao-version"}
PROFILE_KEYS = {"--quant": "quantization", "--double-quant": "double_quant", "--attention": "attn_implementation",
                "--context": "context", "--method": "method", "--zero": "zero_stage", "--fsdp": "fsdp",
                "--world-size": "world_size", "--gpus-per-node": "gpus_per_node",
                "--offload-optimizer": "offload_optimizer", "--offload-params": "offload_params",
                "--ram-efficient-loading": "ram_efficient_loading", "--load-dtype": "load_dtype",
                "--images": "images_per_sample", "--image-size": "image_size", "--lora-targets": "lora_targets"}
SWITCHES = {"checkpointing": ("--grad-checkpointing", None), "double_quant": ("--double-quant", None),
            "amp": ("--amp", "--no-amp"), "zero_init": (None, "--no-zero-init"), "chunked_ce": ("--chunked-ce", None),
            "fsdp_no_sync": ("--fsdp-no-sync", None), "fsdp_frozen_grads": ("--fsdp-frozen-grads", None),
            "half_ce": ("--half-ce", None), "ram_efficient_loading": ("--ram-efficient-loading", None)}
# job.workload keys of distributed training -> Workload fields
SHARDING_KEYS = (("world_size", "world_size"), ("gpus_per_node", "gpus_per_node"), ("zero_stage", "zero"),
                 ("fsdp", "fsdp"), ("offload_optimizer", "offload_optimizer"), ("offload_params", "offload_params"),
                 ("zero_init", "zero_init"), ("ram_efficient_loading", "ram_efficient_loading"),
                 ("load_dtype", "load_dtype"))


# HF TrainingArguments.optim names (transformers/training_args.py OptimizerNames) -> doctor's optimizer names
OPTIMIZER_NAMES = {"adamw_torch": "adamw", "adamw_torch_fused": "adamw_fused", "adamw_hf": "adamw_loop",
                   "adamw_bnb_8bit": "adamw_8bit", "paged_adamw_32bit": "paged_adamw", "lion_32bit": "lion",
                   "paged_lion_32bit": "lion", "paged_lion_8bit": "lion_8bit", "muon+adamw": "muon"}


def unknown_optimizer(workload: dict[str, Any]) -> str | None:
    """The job's optimizer name where doctor has no state model for it (None when known or unset)."""
    name = workload.get("optimizer")
    if name is None:
        return None
    key = str(name).lower().replace("-", "_")
    return None if OPTIMIZER_NAMES.get(key, key) in OPTIMIZERS else str(name)


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
        fields["optimizer"] = OPTIMIZER_NAMES.get(opt, opt)
        if fields["optimizer"] not in OPTIMIZERS:
            fields.pop("optimizer")   # the vram.budget check says it could not decide (unknown_optimizer)
    for key, field in SHARDING_KEYS:
        if w.get(key) is not None:
            fields[field] = w[key]
    total, batch, seq = w.get("total_batch_size"), fields.get("batch"), fields.get("seq")
    if "grad_accum" not in fields and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                          for v in (total, batch, seq)):
        # a token budget (nanochat: grad_accum_steps = total_batch_size // (device_batch_size x max_seq_len x
        # world_size), asserted exact); inexact, it stays unset: batch.divisibility fails it
        step = batch * seq * (fields.get("world_size") if isinstance(fields.get("world_size"), int) else 1)
        if step > 0 and total % step == 0:
            fields["grad_accum"] = total // step
    ds = job.get("deepspeed")
    loaded = ds.get("loaded") if isinstance(ds, dict) else None
    if isinstance(loaded, dict) and isinstance(loaded.get("text"), str):
        fields.update(deepspeed_fields(loaded["text"], str(loaded.get("path") or ""), fields))
    return model, fields


def deepspeed_fields(text: str, path: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Workload fields a DeepSpeed config gives: its ZeRO stage, offload devices and buffer knobs win, and so does
    a bf16 / fp16 section it turns on or off itself (DeepSpeed trains in it; without one the HF Trainer's
    accelerate adds it from the job's mixed precision); its batch, gradient accumulation and otherwise its
    precision fill only what `fields` leaves unset. A stage below 3 drops offload_param (DeepSpeed reads it in
    ZeRO-3 only). A value DeepSpeed refuses is an InputError naming the file and key."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        return {}   # not JSON: the deepspeed.config check's finding (the flag's reader refuses it first)
    problems = deepspeed_problems(config)
    if problems:   # a value DeepSpeed refuses: never modelled as a default in its place
        key, problem = problems[0]
        raise InputError(path or "the DeepSpeed config", key or None, problem)
    found, _ = from_deepspeed_config(config)
    if not found:
        return {}
    out: dict[str, Any] = {"deepspeed_config": path} if path else {}
    for key in ("zero", "offload_optimizer", "offload_params", "ds_knobs"):
        if key in found:
            out[key] = found[key]
    if out.get("zero", 0) < 3:
        out.pop("offload_params", None)
    for key in ("batch", "grad_accum", "dtype"):
        if key in found and (key not in fields or key == "dtype" and explicit_precision(config)):
            out[key] = found[key]
    return out



def _flag_groups(model: str, fields: dict[str, Any]) -> list[list[str]]:
    """Each flag with its value, in order: `[["--model", M], ["--method", "qlora"], ["--amp"], ...]`."""
    groups = [["--model", model]]
    for field, value in fields.items():
        if field == "ds_knobs" and isinstance(value, dict) and value.get("version"):
            groups.append(["--deepspeed-version", str(value["version"])])   # other knobs come with --deepspeed-config
        elif field in FLAGS and value is not None:
            groups.append([FLAGS[field], str(value)])
        elif field in SWITCHES:
            on, off = SWITCHES[field]
            flag = on if value else off
            if flag:
                groups.append([flag])
    return groups


def to_flags(model: str, fields: dict[str, Any]) -> str:
    """`--model M --method qlora --batch 1 ...`: the flags that give `doctor estimate` exactly these fields."""
    return " ".join(shlex.quote(p) for group in _flag_groups(model, fields) for p in group)


def estimate_command(model: str, fields: dict[str, Any], change: str = "") -> str:
    """`doctor estimate ...` for these fields with `change` (flags, as a what-if gives them) in place of the job's
    own value of each flag it sets, so that no flag is given twice."""
    changed = {t for t in shlex.split(change) if t.startswith("--")}
    for on, off in SWITCHES.values():   # --amp replaces --no-amp and the other way round
        if on in changed or off in changed:
            changed |= {on, off} - {None}
    kept = [g for g in _flag_groups(model, fields) if g[0] not in changed]
    return " ".join(["doctor estimate", *(shlex.quote(p) for g in kept for p in g), *([change] if change else [])])


def contradictions(wl: Workload) -> list[tuple[str, str, str]]:
    """(flag, value, what is expected) for knobs that cannot hold together; PROFILE_KEYS names the profile key
    of each flag (job.workload.quantization = --quant, sequence = --seq, attn_implementation = --attention)."""
    out = []
    if wl.method == "qlora" and wl.quant not in ("none", "nf4"):
        out.append(("--quant", wl.quant, "QLoRA trains on an NF4 base; expected nf4"))
    if wl.quant in ("awq", "gptq") and wl.method not in ("inference", "lora"):
        out.append(("--quant", wl.quant, ("an AWQ/GPTQ base serves inference or LoRA on top of it (peft); expected "
                                         "--method inference or --method lora")))
    if wl.double_quant and wl.quant not in ("nf4",) and wl.method != "qlora":
        out.append(("--double-quant", str(wl.quant), ("double quantization applies to NF4 (bitsandbytes 4-bit) "
                                                    "weights only; expected --quant nf4 or --method qlora")))
    if wl.attention == "flash" and wl.dtype == "fp32" and not wl.amp:
        out.append(("--attention", "flash", ("FlashAttention runs in fp16/bf16 only; with --dtype fp32 use sdpa "
                                            "or eager, or train with --amp")))
    if wl.context is not None and wl.context < wl.seq:
        out.append(("--context", str(wl.context), (f"is shorter than the prompt (--seq {wl.seq}); expected the "
                                                  "KV-cache length, prompt plus generated tokens")))
    if wl.context is not None and wl.method != "inference":
        out.append(("--context", str(wl.context), "sets the KV cache of generation; expected --method inference"))
    if wl.implementation not in ("hf", "litgpt", "torchtune"):
        out.append(("--implementation", str(wl.implementation), "expected hf, litgpt or torchtune"))
    elif wl.implementation == "torchtune" and (wl.zero is not None or wl.fsdp is not None or wl.world_size > 1):
        out.append(("--implementation", "torchtune", ("is modelled for torchtune's single-device recipes; expected "
                                                      "no --zero, --fsdp or --world-size")))
    elif wl.implementation == "torchtune" and wl.method in ("lora", "qlora"):
        out += _torchtune_targets(wl.lora_targets)
    if not 0 <= wl.lora_dropout < 1:
        out.append(("--lora-dropout", str(wl.lora_dropout), "expected a probability from 0 up to (not including) 1"))
    if wl.kv_cache_heads not in ("kv", "query"):
        out.append(("--kv-cache-heads", str(wl.kv_cache_heads), "expected kv or query"))
    elif wl.kv_cache_heads == "query" and wl.method != "inference":
        out.append(("--kv-cache-heads", "query", "sizes the KV cache of generation; expected --method inference"))
    if wl.half_ce and (wl.chunked_ce or wl.method in ("inference", "hessian")):
        out.append(("--half-ce", wl.method if not wl.chunked_ce else "--chunked-ce", (
            "sets how a training step's cross-entropy keeps the logits; expected --method full, lora or qlora, "
            "without --chunked-ce")))
    if (wl.fsdp_no_sync or wl.fsdp_frozen_grads) and wl.fsdp is None:
        out.append(("--fsdp-no-sync" if wl.fsdp_no_sync else "--fsdp-frozen-grads", "set",
                    "describes FSDP's gradients; expected --fsdp"))
    if wl.chunked_ce and wl.method in ("inference", "hessian"):
        out.append(("--chunked-ce", wl.method, ("the fused linear cross-entropy replaces a training step's loss (its "
                                               "backward is not differentiable again); expected --method full, lora "
                                               "or qlora")))
    out += _sharding_contradictions(wl)
    return out


def _torchtune_targets(targets: str) -> list[tuple[str, str, str]]:
    """LoRA targets torchtune's LoRA builders cannot express: lora_llama2's lora_attn_modules must name at least one
    attention projection, and apply_lora_to_mlp puts LoRA on the three MLP projections together or on none."""
    from .nf4_build import ATTN, MLP

    if targets in ("default", "all-linear"):
        return []
    names = {n.strip() for n in targets.split(",") if n.strip()}
    if not names & set(ATTN):
        return [("--lora-targets", targets, "torchtune's lora_attn_modules needs at least one of " + ",".join(ATTN))]
    mlp = names & set(MLP)
    if mlp and mlp != set(MLP):
        return [("--lora-targets", targets, ("torchtune's apply_lora_to_mlp adapts gate_proj, up_proj and down_proj "
                                             "together; expected all three or none"))]
    return []


def _sharding_contradictions(wl: Workload) -> list[tuple[str, str, str]]:
    out = []
    if wl.zero is not None and wl.fsdp is not None:
        out.append(("--fsdp", str(wl.fsdp), "DeepSpeed ZeRO and FSDP are two engines; expected one of --zero, --fsdp"))
    if wl.offload_params != "none" and wl.fsdp is None and (wl.zero or 0) < 3:
        out.append(("--offload-params", wl.offload_params, ("DeepSpeed offloads parameters in ZeRO-3 only "
                                                           "(offload_param); expected --zero 3")))
    if wl.offload_optimizer != "none" and not wl.zero:   # DeepSpeed docs/_pages/config-json.md, offload_optimizer:
        # "Valid for ZeRO stage 1, 2, 3"
        why = ("FSDP has no separate optimizer offload: CPUOffload(offload_params=True) moves parameters and "
               "gradients, and with them the optimizer step, to the CPU; expected --offload-params cpu"
               if wl.fsdp else "optimizer offload is DeepSpeed ZeRO's, stages 1 to 3 only; expected --zero 1, 2 or 3")
        out.append(("--offload-optimizer", wl.offload_optimizer, why))
    elif wl.offload_optimizer == "nvme" and wl.zero in (1, 2):   # config-json.md: "NVMe offloading is available
        # only with ZeRO stage 3"
        out.append(("--offload-optimizer", "nvme", "DeepSpeed offloads to NVMe in ZeRO-3 only; expected --zero 3 or "
                                                   "--offload-optimizer cpu"))
    if wl.load_dtype is not None and wl.load_dtype not in ("fp32", "fp16", "bf16"):
        out.append(("--load-dtype", str(wl.load_dtype), "expected fp32, fp16 or bf16 (from_pretrained's dtype)"))
    if wl.ram_efficient_loading and wl.fsdp is None:
        out.append(("--ram-efficient-loading", "set", ("is accelerate's fsdp_cpu_ram_efficient_loading (transformers' "
                                                       "is_fsdp_enabled()); expected --fsdp")))
    if wl.fsdp is not None and wl.offload_params == "nvme":
        out.append(("--offload-params", "nvme", "FSDP's CPUOffload offloads to the CPU only; expected cpu"))
    if wl.gpus_per_node is not None and (wl.gpus_per_node > wl.world_size or wl.world_size % wl.gpus_per_node):
        out.append(("--gpus-per-node", str(wl.gpus_per_node), (f"does not divide the world size {wl.world_size} "
                                                              "into whole nodes")))
    if (wl.zero is not None or wl.fsdp is not None) and wl.method == "inference":
        out.append(("--method", "inference", "ZeRO / FSDP sharding here models training; expected a training method"))
    return out


def describe(wl: Workload) -> str:
    """One line naming the workload: method, dtype, batch, sequence and what else is set."""
    parts = [wl.method, wl.dtype + (" AMP" if wl.amp else ""), f"batch {wl.batch}", f"seq {wl.seq}"]
    if wl.grad_accum > 1:
        parts.append(f"accum {wl.grad_accum}")
    if wl.checkpointing:
        parts.append("grad checkpointing")
    if wl.method not in ("inference", "hessian"):   # a Hessian run steps no optimizer
        parts.append(wl.optimizer)
    if wl.method in ("lora", "qlora"):
        parts.append(f"LoRA r={wl.lora_rank} ({wl.lora_targets})" + (
            f" dropout {wl.lora_dropout:g}" if wl.lora_dropout else ""))
    if wl.quant != "none" or wl.method == "qlora":
        parts.append((wl.quant if wl.quant != "none" else "nf4") + (" + double quant" if wl.double_quant else ""))
    parts.append(f"attention {wl.attention}")
    if wl.images:
        parts.append(f"{wl.images} image(s) {wl.image_size}px")
    if wl.chunked_ce:
        parts.append("fused linear cross-entropy")
    if wl.half_ce:
        parts.append("half-precision cross-entropy")
    if wl.implementation != "hf":
        parts.append(f"{wl.implementation} model code")
    if wl.kv_cache_heads == "query":
        parts.append("KV cache by query heads")
    parts += [f"{lib} {getattr(wl, f'{lib}_version')}" for lib in ("transformers", "peft", "bitsandbytes", "torchao")
              if getattr(wl, f"{lib}_version")]
    if wl.zero is not None or wl.fsdp is not None or wl.world_size > 1:
        sh = sharding_of(wl)
        parts.append(sh.describe() if sh else "")
    return ", ".join(p for p in parts if p)


def model_problems(arch: Any, wl: Workload, est: Any, model: str) -> list[tuple[str, str, str]]:
    """(flag, value, what is expected) for what this model cannot run as set up: LoRA targets that match no
    linear module (peft's get_peft_model raises), images for a text model, an image side the vision processor
    never gives (transformers' Qwen2VLImageProcessor smart_resize: "Both dimensions (height and width) are
    divisible by 'factor'", patch x spatial merge). `doctor estimate` refuses them, vram.budget judges them."""
    from .estimator import lora_matches_nothing

    out = []
    if lora_matches_nothing(wl, est):
        names = sorted({lin.name for block, _ in arch.kinds for lin in block.linears})   # every layer kind
        out.append(("--lora-targets", str(wl.lora_targets), f"matches no linear module of {model}; expected names "
                    f"among {', '.join(names)}, or all-linear"))
    if wl.images and arch.vision is None:
        out.append(("--images", str(wl.images), f"{model} has no vision tower; expected 0 for a text model"))
    step = arch.vision.patch * arch.vision.merge if arch.vision is not None else 0
    if wl.images and step and wl.image_size % step:
        out.append(("--image-size", str(wl.image_size), f"is no side {model}'s processor gives; expected a "
                    f"multiple of {step} (patch x merge: smart_resize makes both sides divisible by it)"))
    return out


def shown_model(workload: dict[str, Any] | None, model: str) -> str:
    """The model as a printed `doctor estimate --model` names it: a config file beside the profile by its absolute
    path (the command runs from any folder), a built-in name or Hub id as given."""
    resolved = (workload or {}).get("resolved_config") or {}
    path = resolved.get("path") if isinstance(resolved, dict) else None
    return path if isinstance(path, str) else model


def attached_model(workload: dict[str, Any], model: Any) -> tuple[Any, int | None]:
    """(the Arch of the model config attached to the profile at load, job.workload.resolved_config, or None;
    job.workload.params when it is a positive integer, else None). Raises InputError when the attached config
    cannot be read as an architecture doctor models."""
    from .arch import from_config

    resolved = workload.get("resolved_config") or {}
    arch = None
    if isinstance(resolved, dict) and isinstance(resolved.get("config"), dict):
        arch = from_config(resolved["config"], name=str(model), source=str(resolved.get("source")))
    count = workload.get("params")
    return arch, count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None
