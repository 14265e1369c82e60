"""Peak GPU memory of a training or inference step, as a named breakdown (pure arithmetic; no torch).

The peak is the larger of two moments: the start of backward (all saved activations, the loss's logits
spike, one block's backward working set) and the optimizer step (all gradients plus the step's temporaries),
each on top of weights and optimizer state, plus what the process holds outside PyTorch's allocator.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .. import refdata
from . import activations as act
from .arch import Arch, Linear

METHODS = ("inference", "full", "lora", "qlora", "hessian")
DTYPES = {"fp32": 4, "fp16": 2, "bf16": 2}
ATTENTION = ("eager", "sdpa", "flash")
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_loop", "adamw_8bit", "sgd", "adafactor", "muon")
QUANT = ("none", "nf4", "int8", "awq", "gptq")
DEFAULT_LORA = {"opt": ("q_proj", "v_proj"), "bert": ("query", "value"), "nanochat": ("c_q", "c_v")}
MIB = 2**20


@dataclass(frozen=True)
class Workload:
    """One job's knobs. `batch` is the micro-batch; `seq` counts text tokens per sample."""

    method: str = "full"
    dtype: str = "bf16"
    amp: bool = False                  # fp32 master weights + autocast (HF Trainer fp16=True / bf16=True)
    batch: int = 1
    seq: int = 512
    grad_accum: int = 1
    checkpointing: bool = False
    attention: str = "sdpa"
    optimizer: str = "adamw"
    lora_rank: int = 8
    lora_targets: str = "default"      # default | all-linear | comma-separated module names
    adapter_dtype: str = "fp32"        # PEFT upcasts adapters to fp32 (autocast_adapter_dtype=True)
    quant: str = "none"
    double_quant: bool = False
    images: int = 0                    # images per sample (vision-language models)
    image_size: int = 448              # pixels per side after the processor's resize
    context: int | None = None         # inference: KV-cache length (prompt + generated); default seq
    grads_persist: bool = False        # zero_grad(set_to_none=False): gradients stay allocated between steps
    dropout: bool = True               # the model's dropout layers run (training)
    cuda_context_mib: float | None = None   # measured context of the same set-up, overrides the reference data
    sm: float | None = None            # compute capability, picks the cuBLAS workspace size


@dataclass
class Estimate:
    """Bytes by component at the peak moment; `breakdown` adds up to `peak_bytes`."""

    peak_bytes: int
    breakdown: dict[str, int]
    low_bytes: int
    high_bytes: int
    phase: str
    params: int
    trainable: int
    tokens: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "low_bytes": self.low_bytes, "high_bytes": self.high_bytes,
                "peak_phase": self.phase, "breakdown": dict(self.breakdown), "params": self.params,
                "trainable_params": self.trainable, "tokens_per_micro_batch": self.tokens, "notes": list(self.notes)}


def overheads() -> dict[str, Any]:
    return refdata.load("vram")


def lora_targets(arch: Arch, wl: Workload) -> frozenset[str]:
    if wl.method not in ("lora", "qlora"):
        return frozenset()
    if wl.lora_targets == "all-linear":
        names = {lin.name for lin in arch.block.linears}
        if arch.vision:
            names |= {lin.name for lin in arch.vision.block.linears}
        return frozenset(names)
    if wl.lora_targets == "default":
        return frozenset(DEFAULT_LORA.get(arch.family, ("q_proj", "v_proj")))
    return frozenset(n.strip() for n in wl.lora_targets.split(",") if n.strip())


def _quant_bytes(quant: str, double: bool, lin: Linear) -> float:
    """Bytes per parameter of a quantized linear, from each format's storage layout."""
    if quant == "nf4":   # 4-bit codes + per-64 absmax: fp32, or 8-bit with a per-256-block fp32 second level
        return 0.5 + (1 / 64 + 4 / (64 * 256) if double else 4 / 64)
    if quant == "int8":  # LLM.int8: int8 weight + fp32 scale per output row
        return 1 + 4 / lin.fan_in
    if quant == "awq":   # packed int4 + fp16 scale and int4 zero per group of 128 input channels
        return 0.5 + 2.5 / 128
    if quant == "gptq":  # as AWQ plus an int32 group index per input channel
        return 0.5 + 2.5 / 128 + 4 / lin.fan_out
    raise ValueError(quant)


def _linears(arch: Arch) -> list[tuple[Linear, int]]:
    """(linear, how many) for every linear a 4-bit loader converts."""
    rows = [(lin, arch.layers) for lin in arch.block.linears]
    if arch.vision:
        rows += [(lin, arch.vision.depth) for lin in arch.vision.block.linears]
        rows += [(lin, 1) for lin in arch.vision.merger_linears]
    return rows


def _weights(arch: Arch, wl: Workload, wbytes: int) -> tuple[float, float]:
    """(weight bytes, largest dequantized linear) — quantized linears stored packed, the rest in the dtype."""
    if wl.quant == "none":
        return arch.params * wbytes, 0.0
    rows = _linears(arch) if wl.quant in ("nf4", "int8") else [(lin, arch.layers) for lin in arch.block.linears]
    quantized = sum(lin.params * n for lin, n in rows)
    packed = sum(lin.params * n * _quant_bytes(wl.quant, wl.double_quant, lin) for lin, n in rows)
    largest = max(lin.params for lin, _ in rows) * DTYPES[wl.dtype]
    return packed + (arch.params - quantized) * wbytes, largest


def _trainable(arch: Arch, wl: Workload, targets: frozenset[str]) -> tuple[int, list[int]]:
    """(trainable parameter count, sizes of the trainable tensors)."""
    if wl.method in ("full", "hessian"):
        sizes = [lin.fan_in * lin.fan_out for lin, _ in _linears(arch)]
        return arch.params, sizes + [arch.vocab * arch.block.hidden]
    if wl.method == "inference":
        return 0, []
    r = wl.lora_rank
    total, sizes = 0, []
    for lin, n in _linears(arch):
        if lin.name in targets:
            total += n * r * (lin.fan_in + lin.fan_out)
            sizes.append(r * max(lin.fan_in, lin.fan_out))
    return total, sizes


def _optimizer(wl: Workload, arch: Arch, trainable: int, sizes: list[int], sbytes: int) -> tuple[float, float, str]:
    """(state bytes, step temporaries, note) for the optimizer over the trainable parameters."""
    largest = max(sizes, default=0)
    opt = wl.optimizer
    if opt in ("adamw", "adamw_fused", "adamw_loop"):
        temp = {"adamw": trainable * sbytes, "adamw_fused": 0, "adamw_loop": largest * sbytes}[opt]
        return 2 * trainable * sbytes, temp, {
            "adamw": "AdamW foreach (PyTorch's default on CUDA): the step holds one parameter-sized buffer",
            "adamw_fused": "fused AdamW: no step temporaries",
            "adamw_loop": "per-parameter AdamW loop: the step's temporaries are one parameter's size"}[opt]
    if opt == "adamw_8bit":
        return trainable * (2 + 2 * 4 / 256), 0, "bitsandbytes 8-bit AdamW: 1 byte per state + fp32 absmax per 256"
    if opt == "sgd":
        return trainable * sbytes, 0, "SGD with momentum: one buffer"
    if opt == "adafactor":
        if wl.method in ("full", "hessian"):
            h = arch.block.hidden
            factored = arch.layers * sum(lin.fan_in + lin.fan_out for lin in arch.block.linears) + arch.vocab + h
            other = trainable - sum(lin.fan_in * lin.fan_out for lin in arch.block.linears) * arch.layers - arch.vocab * h
            return (factored + max(0, other)) * 4, 2 * largest * 4, "Adafactor: factored second moment, no first moment"
        return trainable * 4, 2 * largest * 4, "Adafactor on small adapters keeps full second moments"
    # muon: one momentum buffer for the blocks' matrices, AdamW (2 states) for embeddings and head
    matrices = arch.layers * sum(lin.fan_in * lin.fan_out for lin in arch.block.linears)
    return (matrices + 2 * (trainable - matrices)) * sbytes, matrices * sbytes, \
        "Muon: one momentum buffer per matrix (+ its orthogonalized update); AdamW for embeddings and head"


def estimate(arch: Arch, wl: Workload) -> Estimate:
    """Peak GPU memory of one step of `wl` on `arch`."""
    data = overheads()
    p = DTYPES[wl.dtype]
    amp = wl.amp and wl.method not in ("inference",)
    wbytes = 4 if amp else p
    targets = lora_targets(arch, wl)
    abytes = DTYPES.get(wl.adapter_dtype, 4)
    training = wl.method != "inference"
    frozen_base = wl.method in ("lora", "qlora")
    quant = wl.quant if wl.quant != "none" else ("nf4" if wl.method == "qlora" else "none")
    wl = replace(wl, quant=quant)

    vision_tokens = 0
    if arch.vision and wl.images:
        side = max(1, wl.image_size // arch.vision.patch)
        vision_tokens = side * side * wl.images
    llm_tokens_per_sample = wl.seq + (vision_tokens // (arch.vision.merge ** 2) if arch.vision else 0)
    tokens = wl.batch * llm_tokens_per_sample

    weights, dequant = _weights(arch, wl, wbytes)
    trainable, sizes = _trainable(arch, wl, targets)
    tbytes = abytes if frozen_base else wbytes
    adapters = trainable * abytes if frozen_base else 0
    breakdown: dict[str, float] = {"weights": weights, "lora_adapters": adapters}
    notes: list[str] = []

    ctx_mib = wl.cuda_context_mib if wl.cuda_context_mib is not None else data["cuda_context"]["mib"]
    workspace = data["cublas_workspace"]["hopper_bytes" if (wl.sm or 0) >= 9.0 else "bytes"]
    overhead = {"cuda_context": ctx_mib * MIB, "cublas_workspace": workspace}

    if not training:
        ctx_len = wl.context or wl.seq
        b = arch.block
        kv = 2 * arch.layers * b.kv_heads * b.head_dim * wl.batch * ctx_len * p
        actx = act.Ctx(p, False, frozenset(), frozenset(), 0, abytes, wl.attention, llm_tokens_per_sample, False, False)
        work = act.working_set(actx, b, tokens, llm_tokens_per_sample) + dequant
        work += 2 * b.kv_heads * b.head_dim * wl.batch * ctx_len * p   # DynamicCache grows by cat: one layer copied
        if arch.vision and vision_tokens:
            vctx = replace(actx, seq=vision_tokens // max(1, wl.images))
            work = max(work, act.working_set(vctx, arch.vision.block, vision_tokens * wl.batch, vctx.seq))
        logits = wl.batch * arch.head_outputs * (4 + p)                # generate keeps the last position, upcast
        breakdown.update(kv_cache=kv, activations=0, logits=logits, transient=work, gradients=0, optimizer_states=0)
        phase = "prefill"
        notes.append(f"KV cache for {ctx_len} tokens x batch {wl.batch}: {kv / 2**30:.2f} GiB")
        return _finish(arch, wl, breakdown, overhead, phase, trainable, tokens, notes, rounding_tensors=arch.layers * 4)

    full = wl.method in ("full", "hessian")
    ctx = act.Ctx(p=p, amp=amp, trainable=frozenset({"*"}) if full else frozenset(), lora=targets,
                  lora_rank=wl.lora_rank, adapter_bytes=abytes, attention=wl.attention, seq=llm_tokens_per_sample,
                  dropout=wl.dropout and arch.block.dropout, full=full)
    per_layer = act.per_token(ctx, arch.block) * tokens
    r = 4 if amp else p
    h = arch.block.hidden
    edges = tokens * (h * r + 4 * h + 8 + (h * p if full or arch.head is None else 0))  # embeddings, final norm, head input
    ckpt = wl.checkpointing and wl.method != "hessian"
    if ckpt:
        activ = arch.layers * tokens * h * r + per_layer + edges
        notes.append("gradient checkpointing: each block keeps only its input; one block is recomputed in backward")
    else:
        activ = arch.layers * per_layer + edges
    if amp:   # autocast caches a half copy of every weight it casts until the forward ends (checkpointed or not)
        activ += 2 * (arch.layers * sum(lin.params for lin in arch.block.linears)
                      + (arch.head.params if arch.head else arch.vocab * h))
    if arch.vision and vision_tokens:
        vision_train = any(lin.name in targets for lin in arch.vision.block.linears) or full
        vctx = replace(ctx, seq=vision_tokens // max(1, wl.images), dropout=False)
        vper = act.per_token(vctx, arch.vision.block) * vision_tokens * wl.batch
        if vision_train:
            activ += vper * (1 if ckpt else arch.vision.depth) + (
                arch.vision.depth * vision_tokens * wl.batch * arch.vision.block.hidden * p if ckpt else 0)
        notes.append(f"{wl.images} image(s) of {wl.image_size}px: {vision_tokens // max(1, wl.images)} patches each, "
                     f"{vision_tokens // max(1, wl.images) // arch.vision.merge ** 2} tokens each in the language model")
    logits = tokens * arch.head_outputs * (8 + p + (p if p != 4 else 0))
    work = act.working_set(ctx, arch.block, tokens, llm_tokens_per_sample) + dequant
    grads = trainable * tbytes
    states, step_temp, opt_note = _optimizer(wl, arch, trainable, sizes, tbytes)
    notes.append(opt_note)
    if wl.method == "hessian":
        states, step_temp = 0.0, 0.0
        activ *= 2                                   # create_graph=True keeps the first backward's graph too
        grads_live = 3 * arch.params * p             # gradients (part of the graph), the vector v and Hv
        notes.append("Hessian-vector product: double backward keeps forward and backward graphs; checkpointing "
                     "does not shrink them")
        breakdown.update(gradients=grads_live, optimizer_states=0, activations=activ, logits=logits, transient=work)
        return _finish(arch, wl, breakdown, overhead, "double backward", arch.params, tokens, notes,
                       rounding_tensors=arch.layers * 16)
    keep_grads = wl.grads_persist or wl.grad_accum > 1
    early_grads = grads if keep_grads else min(grads, grads / max(1, arch.layers) + (
        arch.head.params * tbytes if arch.head and full else 0))
    backward = activ + logits + work + early_grads
    step = grads + step_temp
    breakdown.update(optimizer_states=states)
    if backward >= step:
        breakdown.update(gradients=early_grads, activations=activ, logits=logits, transient=work)
        phase = "start of backward"
    else:
        breakdown.update(gradients=grads, activations=0, logits=0, transient=step_temp)
        phase = "optimizer step"
    if keep_grads:
        notes.append("gradients stay allocated across micro-batches (accumulation or set_to_none=False)")
    return _finish(arch, wl, breakdown, overhead, phase, trainable, tokens, notes,
                   rounding_tensors=(1 if ckpt else arch.layers) * 16 + arch.layers * 2)


def _finish(arch: Arch, wl: Workload, parts: dict[str, float], overhead: dict[str, float], phase: str,
            trainable: int, tokens: int, notes: list[str], rounding_tensors: int) -> Estimate:
    """Add allocator rounding and the process overheads; bound the estimate by the overheads' measured range."""
    data = overheads()
    # PyTorch's caching allocator rounds large blocks up to 2 MiB: on average 1 MiB lost per large tensor
    rounding = rounding_tensors * data["allocator"]["round_large_bytes"] / 2
    breakdown = {k: int(round(v)) for k, v in parts.items() if v}
    breakdown["allocator_rounding"] = int(rounding)
    breakdown.update({k: int(v) for k, v in overhead.items()})
    peak = sum(breakdown.values())
    ctx = data["cuda_context"]
    measured = wl.cuda_context_mib is not None
    low = peak - (0 if measured else (ctx["mib"] - ctx["low_mib"]) * MIB) - int(rounding)
    high = peak + (0 if measured else (ctx["high_mib"] - ctx["mib"]) * MIB) + int(rounding)
    return Estimate(peak, breakdown, low, high, phase, arch.params, trainable, tokens, notes)


def fits(est: Estimate, capacity: int, headroom_pct: float = 10.0) -> str:
    """'fits', 'tight' (under `headroom_pct`% of `capacity` left) or 'does not fit': the verdict of both
    `doctor estimate` and the vram.budget check."""
    if est.peak_bytes > capacity:
        return "does not fit"
    return "tight" if capacity - est.peak_bytes < headroom_pct / 100 * capacity else "fits"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
