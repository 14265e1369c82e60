"""Peak GPU memory of a training or inference step, as a named breakdown (pure arithmetic; no torch).

The peak is the larger of two moments: the start of backward (all saved activations, the loss's logits
spike, one block's backward working set) and the optimizer step (all gradients plus the step's temporaries),
each on top of weights and optimizer state, plus what the process holds outside PyTorch's allocator.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from .. import refdata
from ..errors import InputError
from . import activations as act
from . import distributed as dist
from . import versions
from .arch import Arch, Linear

METHODS = ("inference", "full", "lora", "qlora", "hessian")
DTYPES = {"fp32": 4, "fp16": 2, "bf16": 2}
ATTENTION = ("eager", "sdpa", "flash")
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_loop", "adamw_8bit", "paged_adamw", "paged_adamw_8bit", "sgd", "adafactor",
              "muon", "lion", "lion_8bit")
QUANT = ("none", "nf4", "int8", "awq", "gptq")
DEFAULT_LORA = {"opt": ("q_proj", "v_proj"), "bert": ("query", "value"), "nanochat": ("c_q", "c_v"),
                "nemotron_h": ("q_proj", "k_proj", "v_proj", "o_proj")}   # peft/utils/constants.py (0.21)
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
    lora_dropout: float = 0.0          # LoRA dropout probability (PEFT LoraConfig default 0.0)
    adapter_dtype: str = "fp32"        # PEFT upcasts adapters to fp32 (autocast_adapter_dtype=True)
    adapter_dtype_given: bool = False  # set by the job (flag / profile), not by peft's version (versions.resolve)
    quant: str = "none"
    double_quant: bool = False
    images: int = 0                    # images per sample (vision-language models)
    image_size: int = 448              # pixels per side after the processor's resize
    context: int | None = None         # inference: KV-cache length (prompt + generated); default seq
    grads_persist: bool = False        # zero_grad(set_to_none=False): gradients stay allocated between steps
    dropout: bool = True               # the model's dropout layers run (training)
    cuda_context_mib: float | None = None   # measured context of the same set-up, overrides the reference data
    sm: float | None = None            # compute capability, picks the cuBLAS workspace size
    # distributed training (doctor/vram/distributed.py): DeepSpeed ZeRO stage, or an FSDP strategy, over world_size
    zero: int | None = None            # DeepSpeed ZeRO stage 0-3 (None: not DeepSpeed)
    fsdp: str | None = None            # full | shard-grad-op | hybrid | hybrid-zero2 | no-shard
    world_size: int = 1                # GPUs in all
    gpus_per_node: int | None = None   # None: all on one node
    offload_optimizer: str = "none"    # none | cpu | nvme
    offload_params: str = "none"       # none | cpu | nvme
    zero_init: bool = True             # ZeRO-3 builds the model partitioned (deepspeed.zero.Init)
    deepspeed_config: str | None = None   # the DeepSpeed JSON the knobs below were read from
    # how each rank builds the model on the CPU before DeepSpeed / FSDP takes it (distributed.py `model_load`):
    # accelerate's fsdp_cpu_ram_efficient_loading (local rank 0 loads, the rest on meta; accelerate's default False)
    # and from_pretrained's dtype (None: the library default - fp32 before transformers 5, the checkpoint's dtype,
    # dtype="auto", from 5.0); a 4-bit base is loaded quantized (its packed bytes) under FSDP / ZeRO-3
    ram_efficient_loading: bool = False
    load_dtype: str | None = None
    ds_knobs: dict[str, Any] = field(default_factory=dict)   # its bucket sizes, pin_memory, nvme_path, ...
    # installed library versions where they change memory (doctor/vram/versions.py; None: unknown, the current
    # behaviour is assumed and the notes say so)
    transformers_version: str | None = None
    peft_version: str | None = None
    bitsandbytes_version: str | None = None
    chunked_ce: bool = False           # fused linear cross-entropy (Liger): logits computed in chunks, never whole
    # inference: the heads a static KV cache is sized by - "kv" (grouped-query: the key/value heads, as transformers
    # and LitGPT cache) or "query" (k and v expanded to the query heads before the cache update, as torchtune's
    # CausalSelfAttention did until its GQA-sized cache)
    kv_cache_heads: str = "kv"
    # FSDP gradient memory (doctor/vram/distributed.py _fsdp): accumulation inside FSDP.no_sync() (Lightning Fabric's
    # no_backward_sync) keeps every rank's gradients unsharded; LoRA's frozen base in the same flat parameters as its
    # adapters (use_orig_params=True, a block-wrap policy: LitGPT) gets gradient memory for the frozen weights too
    fsdp_no_sync: bool = False
    fsdp_frozen_grads: bool = False
    # the loss's cross-entropy on the half-precision logits, without the fp32 upcast transformers' loss makes
    # (LitGPT's chunked lm_head + chunked_cross_entropy): the logits and log_softmax's output, both in the dtype
    half_ce: bool = False
    # whose model code runs the training step: "hf" (transformers / peft, what doctor's activations follow),
    # "litgpt" (LitGPT's own GPT at commit 8641822: bf16 RMSNorm, fused qkv LoRA; activations.litgpt_decoder) or
    # "torchtune" (its single-device recipes: the step as transformers', and the QLoRA model build replayed through
    # the caching allocator where torchao quantizes each weight whole, nf4_build.py)
    implementation: str = "hf"
    torchao_version: str | None = None


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
    terms: dict[str, dict[str, Any]] = field(default_factory=dict)   # formula and source of distributed terms
    cpu: dict[str, Any] | None = None          # distributed: CPU RAM per node (distributed.Memory.cpu_block)
    sharding: str | None = None
    paged_bytes: int = 0                       # paged optimizer states: may move to CPU RAM when the GPU runs short

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "low_bytes": self.low_bytes, "high_bytes": self.high_bytes,
                "peak_phase": self.phase, "breakdown": dict(self.breakdown), "params": self.params,
                "trainable_params": self.trainable, "tokens_per_micro_batch": self.tokens, "notes": list(self.notes),
                "sharding": self.sharding, "gpu_terms": dict(self.terms), "cpu": self.cpu,
                "paged_optimizer_bytes": self.paged_bytes}


def overheads() -> dict[str, Any]:
    return refdata.load("vram")


def ssm_state_bytes(arch: Arch, batch: int, p: int) -> float:
    """A Mamba model's generation state: per layer a conv state (batch, conv channels, d_conv) and an SSM state
    (Mamba-1: batch, d_inner, d_state; Mamba-2: batch, heads, head_dim, d_state), in the model's dtype - constant
    in the context length (transformers' MambaCache / Mamba2 cache; mamba_ssm allocate_inference_cache)."""
    total = 0.0
    for b, n in arch.kinds:   # a hybrid model: its Mamba layers only
        s = b.ssm
        if s is not None:
            ssm = s.d_inner * s.d_state if s.version == 1 else s.heads * s.head_dim * s.d_state
            total += n * batch * (s.conv_dim * s.d_conv + ssm) * p
    return total


def lora_targets(arch: Arch, wl: Workload) -> frozenset[str]:
    if wl.method not in ("lora", "qlora"):
        return frozenset()
    if wl.lora_targets == "all-linear":
        names = {lin.name for b, _ in arch.kinds for lin in b.linears}
        if arch.vision:
            names |= {lin.name for lin in arch.vision.block.linears}
        return frozenset(names)
    if wl.lora_targets == "default":
        if any(b.ssm for b, _ in arch.kinds) and arch.family not in DEFAULT_LORA:   # peft's mapping: no Mamba row
            raise InputError(arch.source or "--lora-targets", "lora_targets", f"PEFT has no default LoRA targets for "
                             f"{arch.family}; expected module names such as in_proj (--lora-targets in_proj)")
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
    rows = [(lin, n) for b, n in arch.kinds for lin in b.linears]
    if arch.vision:
        rows += [(lin, arch.vision.depth) for lin in arch.vision.block.linears]
        rows += [(lin, 1) for lin in arch.vision.merger_linears]
    return rows


def _weights(arch: Arch, wl: Workload, wbytes: int) -> tuple[float, float]:
    """(weight bytes, largest dequantized linear) — quantized linears stored packed, the rest in the dtype."""
    if wl.quant == "none":
        return arch.params * wbytes, 0.0
    if wl.implementation == "torchtune" and wl.quant == "nf4":   # torchao NF4 on the LoRA linears only
        from .nf4_build import dequant_peak, nf4_bytes, nf4_shapes

        targets = lora_targets(arch, wl)
        odd = nf4_shapes(arch, targets)
        if odd:
            raise InputError("--implementation", "torchtune", odd)
        rows = [(lin, n) for b, n in arch.kinds for lin in b.linears if lin.name in targets]
        packed = sum(nf4_bytes(lin) * n for lin, n in rows)
        quantized = sum(lin.fan_in * lin.fan_out * n for lin, n in rows)   # a bias stays in the dtype
        largest = max((dequant_peak(lin) for lin, _ in rows), default=0)
        return packed + (arch.params - quantized) * wbytes, largest
    rows = _linears(arch) if wl.quant in ("nf4", "int8") else [(lin, n) for b, n in arch.kinds for lin in b.linears]
    quantized = sum(lin.params * n for lin, n in rows)
    packed = sum(lin.params * n * _quant_bytes(wl.quant, wl.double_quant, lin) for lin, n in rows)
    largest = max(lin.params for lin, _ in rows) * DTYPES[wl.dtype]
    return packed + (arch.params - quantized) * wbytes, largest


def quant_state_bytes(arch: Arch, wl: Workload) -> float:
    """Bytes of a 4-bit base's quantization statistics (absmax, and with double quant its second level): the part
    of _quant_bytes beyond the 0.5 B of packed codes. bitsandbytes keeps them in Params4bit.quant_state, beside the
    parameter's data, not in it."""
    if wl.quant != "nf4":
        return 0.0
    return sum(lin.params * n * (_quant_bytes("nf4", wl.double_quant, lin) - 0.5) for lin, n in _linears(arch))


QUANT_STATE_SRC = ("transformers modeling_utils.py _load_state_dict_into_meta_model (4.4x), under FSDP / ZeRO-3: "
                   "'value = type(value)(value.data.to(param_to), **val_kwargs, **value.__dict__)' moves only the "
                   "packed codes off the GPU; the quant_state in value.__dict__ (bitsandbytes quantize_4bit ran on the "
                   "GPU) stays there, and FSDP / DeepSpeed shard parameter data only")


def _trainable(arch: Arch, wl: Workload, targets: frozenset[str]) -> tuple[int, list[int]]:
    """(trainable parameter count, sizes of the trainable tensors)."""
    if wl.method in ("full", "hessian"):
        sizes = [lin.fan_in * lin.fan_out for lin, _ in _linears(arch)]
        return arch.params, sizes + [arch.vocab * arch.block.hidden]
    if wl.method == "inference":
        return 0, []
    r = wl.lora_rank
    total, sizes = 0, []
    heads = [(arch.head, 1)] if arch.head is not None and arch.head.name in targets else []   # LoRA on the output
    for lin, n in _linears(arch) + heads:
        if lin.name in targets:
            total += n * r * (lin.fan_in + lin.fan_out)
            sizes.append(r * max(lin.fan_in, lin.fan_out))
    return total, sizes


# Optimizer state, from each implementation's state initialisation:
# - torch.optim.AdamW (foreach default on CUDA, fused, per-parameter loop): exp_avg and exp_avg_sq, zeros_like(p) -
#   the parameter's dtype (torch/optim/adamw.py, _init_group).
# - bitsandbytes 8-bit AdamW / Lion (bnb.optim.AdamW8bit, PagedAdamW8bit, Lion8bit; Optimizer2State / Optimizer1State
#   init_state): uint8 states with an fp32 absmax per block of 256, a shared 256-entry fp32 quantile map, and full fp32
#   states for tensors under min_8bit_size = 4096 elements. Measured on CPU with bitsandbytes 0.50.2 after one step
#   (tests/test_vram_optimizers.py): 2.0332 B/param for AdamW8bit on a 1024x1024 weight, 8 B/param on a 100-element
#   vector; Lion8bit 1.0166 and 4. Its 32-bit optimizers (AdamW, PagedAdamW, Lion) keep fp32 states whatever the
#   parameter dtype. Paged variants allocate the states in CUDA unified memory, which the driver pages out to CPU RAM
#   when the GPU runs short (bitsandbytes docs, "Paged optimizers":
#   https://huggingface.co/docs/bitsandbytes/main/en/explanations/optimizers#paged-optimizers).
# - transformers' Adafactor (defaults: relative_step, beta1=None - no first moment): for tensors of 2+ dims a row and
#   a column second moment, else a full one, all fp32; the step upcasts a half gradient and parameter to fp32 and
#   builds grad**2 + eps, one parameter at a time (transformers/optimization.py Adafactor.step).
# - Muon (Keller Jordan's reference, https://github.com/KellerJordan/Muon muon.py, MuonWithAuxAdam): one
#   momentum_buffer (zeros_like(p)) per 2-D hidden weight; embeddings, the LM head, gains and biases use AdamW
#   (exp_avg, exp_avg_sq). Its step orthogonalizes one matrix at a time by Newton-Schulz in bf16: X, A = X X^T,
#   A A, B and B X live together.
# - Lion (lion-pytorch and bitsandbytes Lion): one exp_avg per parameter.
BNB_8BIT_MIN = 4096          # bitsandbytes Optimizer8bit min_8bit_size
BNB_BLOCK = 256              # bitsandbytes block-wise optimizer quantization block (absmax per block, fp32)
PAGED = ("paged_adamw", "paged_adamw_8bit")
BNB_FP32_STATES = ("paged_adamw", "lion")    # bitsandbytes 32-bit optimizers: fp32 states for any parameter dtype


def _tensors(arch: Arch, wl: Workload) -> tuple[list[tuple[int, int, int, str]], int]:
    """(trainable tensors doctor knows the shape of, as (rows, cols, count, kind) with cols 0 for a vector and kind
    hidden | embedding | head | bias, and the count of trainable parameters outside them - norms, gains, position
    embeddings, convolutions)."""
    out: list[tuple[int, int, int, str]] = []
    trainable, _ = _trainable(arch, wl, lora_targets(arch, wl))
    if wl.method in ("full", "hessian"):
        for lin, n in _linears(arch):
            out.append((lin.fan_out, lin.fan_in, n, "hidden"))
            if lin.bias:
                out.append((lin.fan_out, 0, n, "bias"))
        out.append((arch.vocab, arch.block.hidden, 1, "embedding"))
        if arch.head:
            out.append((arch.head.fan_out, arch.head.fan_in, 1, "head"))
    elif wl.method in ("lora", "qlora"):
        targets = lora_targets(arch, wl)
        for lin, n in _linears(arch):
            if lin.name in targets:
                out += [(wl.lora_rank, lin.fan_in, n, "hidden"), (lin.fan_out, wl.lora_rank, n, "hidden")]
    known = sum(r * max(c, 1) * n for r, c, n, _ in out)
    return out, max(0, trainable - known)


def _bnb_8bit(tensors: list[tuple[int, int, int, str]], rest: int, states: int) -> float:
    """bitsandbytes 8-bit state bytes: `states` uint8 states + fp32 absmax per 256 for tensors of 4096+ elements,
    fp32 states for smaller ones and for the parameters whose shapes doctor does not list (at most 6 B/param too
    many on those: norms, gains), plus the shared quantile maps."""
    total = 0.0
    for r, c, n, _ in tensors:
        numel = r * max(c, 1)
        total += n * (states * (numel + -(-numel // BNB_BLOCK) * 4) if numel >= BNB_8BIT_MIN else states * 4 * numel)
    return total + rest * states * 4 + states * 256 * 4


def _optimizer(wl: Workload, arch: Arch, trainable: int, sizes: list[int], sbytes: int) -> tuple[float, float, str]:
    """(state bytes, step temporaries, note) for the optimizer over the trainable parameters; `sbytes` is the
    trainable parameters' dtype (torch keeps its states in it)."""
    largest = max(sizes, default=0)
    opt = wl.optimizer
    if opt in ("adamw", "adamw_fused", "adamw_loop"):
        temp = {"adamw": trainable * sbytes, "adamw_fused": 0, "adamw_loop": largest * sbytes}[opt]
        return 2 * trainable * sbytes, temp, {
            "adamw": "AdamW foreach (PyTorch's default on CUDA): the step holds one parameter-sized buffer",
            "adamw_fused": "fused AdamW: no step temporaries",
            "adamw_loop": "per-parameter AdamW loop: the step's temporaries are one parameter's size"}[opt]
    if opt == "sgd":
        return trainable * sbytes, 0, "SGD with momentum: one buffer"
    tensors, rest = _tensors(arch, wl)
    if opt in ("adamw_8bit", "paged_adamw_8bit", "lion_8bit"):
        n = 1 if opt == "lion_8bit" else 2
        note = (f"bitsandbytes 8-bit {'Lion' if n == 1 else 'AdamW'}: {n} uint8 state(s) + fp32 absmax per 256 "
                "(fp32 states for tensors under 4096 elements)")
        if opt in PAGED:
            note += "; paged: the states can move to CPU RAM when the GPU runs short (slower steps)"
        return _bnb_8bit(tensors, rest, n), 0, note
    if opt == "paged_adamw":
        return trainable * 8, 0, ("bitsandbytes paged AdamW (32-bit): fp32 exp_avg and exp_avg_sq; paged: they can "
                                  "move to CPU RAM when the GPU runs short (slower steps)")
    if opt == "lion":
        return trainable * 4, 0, "Lion (bitsandbytes 32-bit): one fp32 momentum per parameter, fused step"
    if opt == "adafactor":
        factored = sum(n * (r + c) for r, c, n, _ in tensors if c)
        full = trainable - sum(n * r * c for r, c, n, _ in tensors if c)
        biggest = max((r * max(c, 1) for r, c, _, _ in tensors), default=largest)
        temp = biggest * 4 * (2 + (2 if sbytes < 4 else 0))
        return (factored + full) * 4, temp, ("Adafactor (transformers' defaults): fp32 row + column second moments "
                                             "per matrix, full ones for vectors, no first moment")
    if opt != "muon":
        raise ValueError(f"optimizer {opt!r}; expected one of {', '.join(OPTIMIZERS)}")
    # muon: one momentum buffer per 2-D hidden weight, AdamW for embeddings, head, gains and biases
    hidden = [(r, c, n) for r, c, n, kind in tensors if kind == "hidden" and c]
    muon = sum(r * c * n for r, c, n in hidden)
    big = max(hidden, key=lambda x: x[0] * x[1], default=(0, 0, 0))
    m, k = min(big[0], big[1]), max(big[0], big[1])
    temp = 2 * (3 * m * k + 3 * m * m)   # bf16 Newton-Schulz of the largest matrix: X, X/|X|, B X; A, A A, B
    return (muon + 2 * (trainable - muon)) * sbytes, temp, \
        "Muon: one momentum buffer per 2-D hidden weight; AdamW for embeddings, head, gains and biases"


def sharding_of(wl: Workload) -> dist.Sharding | None:
    """The workload's distribution, or None for one GPU without DeepSpeed / FSDP."""
    if wl.fsdp is None and wl.zero is None and wl.world_size <= 1:
        return None
    engine = "fsdp" if wl.fsdp else ("deepspeed" if wl.zero is not None else "ddp")
    return dist.Sharding(engine=engine, zero=wl.zero or 0, fsdp=wl.fsdp or "full", world_size=wl.world_size,
                         gpus_per_node=wl.gpus_per_node, offload_optimizer=wl.offload_optimizer,
                         offload_params=wl.offload_params, zero_init=wl.zero_init, knobs=dict(wl.ds_knobs),
                         source=wl.deepspeed_config or "", no_sync=wl.fsdp_no_sync,
                         frozen_grads=wl.fsdp_frozen_grads and wl.method in ("lora", "qlora"),
                         ram_efficient_loading=wl.ram_efficient_loading and engine == "fsdp")


LOAD_DTYPE_SRC = ("transformers PreTrainedModel.from_pretrained: before 5.0 the model is created in torch's default "
                  "dtype (fp32) unless torch_dtype is given; 5.x: 'if dtype is None: dtype = \"auto\"' (the "
                  "checkpoint's dtype)")
QUANT_LOAD_SRC = ("transformers modeling_utils.py _load_state_dict_into_meta_model (4.4x): 'For quantized modules with "
                  "FSDP/DeepSpeed Stage 3, we need to quantize the parameter on the GPU and then cast it to CPU' "
                  "(param_to = 'meta' off local rank 0 under FSDP)")


def load_bytes_of(wl: Workload, notes: list[str]) -> int:
    """Bytes per parameter of the model as from_pretrained creates it on the CPU (notes say what was assumed)."""
    if wl.load_dtype is not None:
        return DTYPES[wl.load_dtype]
    old = versions.older(wl.transformers_version, "5.0.0.dev0")
    if old:
        return 4
    why = ("transformers' version is unknown: counted as fp32, from_pretrained's default before 5.0 (5.x loads in "
           "the checkpoint's dtype, dtype='auto')" if old is None else
           f"transformers {wl.transformers_version} loads in the checkpoint's dtype (dtype='auto'), which doctor "
           "does not know: counted as fp32, the largest")
    notes.append(f"the model's load dtype is unset; {why}; pass --load-dtype (job.workload.load_dtype), the job's "
                 f"from_pretrained dtype ({LOAD_DTYPE_SRC})")
    return 4


def largest_layer(arch: Arch) -> int:
    """DeepSpeed's largest_layer_params (stage3.py model_to_params): the most parameters one module holds itself -
    the token embedding, the LM head, or the widest linear."""
    sizes = [arch.vocab * arch.block.hidden, arch.head.params if arch.head else 0]
    sizes += [lin.params for lin, _ in _linears(arch)]
    return max(sizes)


def largest_unit(arch: Arch) -> int:
    """FSDP's largest wrapped unit under a transformer-block wrap policy: a block, or the root (embeddings, head,
    final norm and whatever no block holds)."""
    blocks = sum(n * b.params for b, n in arch.kinds)
    blocks += arch.vision.depth * arch.vision.block.params if arch.vision else 0
    units = [b.params for b, _ in arch.kinds] + [arch.params - blocks]
    units += [arch.vision.block.params] if arch.vision else []
    return max(units)


FSDP_WRAP_SRC = ("accelerate FSDP TRANSFORMER_BASED_WRAP (one unit per block, the root holds the rest); peft "
                 "utils/other.py fsdp_auto_wrap_policy: lambda_policy_fn wraps each leaf whose weight requires grad "
                 "(lora_A / lora_B) as its own unit")


def fsdp_units(arch: Arch, wl: Workload, wbytes: int, abytes: int, weights: float,
               adapters_apart: bool) -> tuple[tuple[float, int, int], ...]:
    """FSDP flat parameters as (bytes, bytes per element, how many) under a transformer-block wrap (FSDP_WRAP_SRC):
    each block, each LoRA matrix apart when `adapters_apart` (else in its block), and the root with the rest of
    `weights` (the same total as distributed_memory's). Quantized linears count their packed codes only."""
    quant, r = wl.quant, wl.lora_rank
    targets = lora_targets(arch, wl) if wl.method in ("lora", "qlora") else frozenset()

    def packed(lin: Linear, vision: bool) -> float:
        if quant == "none" or (vision and quant not in ("nf4", "int8")):
            return lin.params * wbytes
        return lin.params * (0.5 if quant == "nf4" else _quant_bytes(quant, wl.double_quant, lin))

    units: list[tuple[float, int, int]] = []
    apart: list[tuple[float, int, int]] = []
    blocks = [(b, n, False) for b, n in arch.kinds]
    blocks += [(arch.vision.block, arch.vision.depth, True)] if arch.vision else []
    loose = [(lin, 1) for lin in arch.vision.merger_linears] if arch.vision else []
    for b, n, vision in blocks:
        rest = b.params - sum(lin.params for lin in b.linears)   # norms and the like, in the dtype
        size = sum(packed(lin, vision) for lin in b.linears) + rest * wbytes
        for lin in b.linears:
            if lin.name in targets:
                if adapters_apart:
                    apart += [(r * lin.fan_in * abytes, abytes, n), (r * lin.fan_out * abytes, abytes, n)]
                else:
                    size += r * (lin.fan_in + lin.fan_out) * abytes
        units.append((size, wbytes, n))
    apart += [(r * d * abytes, abytes, k) for lin, k in loose if lin.name in targets and adapters_apart
              for d in (lin.fan_in, lin.fan_out)]
    root = weights - sum(b * n for b, _, n in units + apart)
    return (*units, *apart, (max(root, 0.0), wbytes, 1))


MAX_TENSORS = 2_000_000   # beyond this many trainable tensors they are not listed (a config with 10^9 layers)


def trainable_tensors(arch: Arch, wl: Workload, targets: frozenset[str], trainable: int) -> tuple[int, ...]:
    """Trainable tensors' element counts in model.parameters() order (DeepSpeed's pinned blocks): vision tower,
    embeddings, blocks (each block's norm weights together), final norm, head; () where they do not add up to
    `trainable` or there are more than MAX_TENSORS."""
    full, r, v = wl.method in ("full", "hessian"), wl.lora_rank, arch.vision

    def lins(ls: tuple[Linear, ...]) -> list[int]:
        return [x for lin in ls for x in ((lin.fan_in * lin.fan_out, lin.fan_out * lin.bias) if full else
                                           (r * lin.fan_in, r * lin.fan_out) if lin.name in targets else ())]

    per_block = [(b, n, len(lins(b.linears)) + 1) for b, n in arch.kinds]
    count = sum(n * k for _, n, k in per_block) + ((v.depth + 1) * (len(v.block.linears) * 2 + 1) if v else 0)
    if count > MAX_TENSORS:
        return ()
    out: list[int] = [v.embed_params] * full if v else []
    for _ in range(v.depth if v else 0):
        out += lins(v.block.linears) + [v.block.other_params] * full
    out += (lins(v.merger_linears) + [v.merger_other] * full) if v else []
    emb = arch.vocab * arch.block.hidden
    out += ([emb, arch.embed_params - emb] if arch.embed_params >= emb else [arch.embed_params]) * full
    for b, n, _ in per_block:
        block = lins(b.linears) + [b.other_params] * full
        for _ in range(n):
            out += block
    out += ([arch.final_params] + lins((arch.head,) if arch.head else ())) * full
    kept = tuple(x for x in out if x > 0)
    return kept if sum(kept) == trainable else ()


# bytes per parameter of optimizer state for a model doctor has no config for (fp32 parameters; torch's optimizers
# scale with the parameter dtype, bitsandbytes' do not: BNB_FP32_STATES and the 8-bit ones)
STATE_BYTES = {"adamw": 8, "adamw_fused": 8, "adamw_loop": 8, "adamw_8bit": 2 + 8 / 256, "sgd": 4,
               "paged_adamw": 8, "paged_adamw_8bit": 2 + 8 / 256, "lion": 4, "lion_8bit": 1 + 4 / 256}
FIXED_STATE_BYTES = ("adamw_8bit", "paged_adamw_8bit", "lion_8bit") + BNB_FP32_STATES


def distributed_memory(arch: Arch | None, wl: Workload, params: int | None = None) -> dist.Memory | None:
    """Per-rank GPU, per-node CPU and NVMe model states and buffers of a sharded training workload. Without an
    Arch (a model doctor cannot build), `params` gives the count: the largest layer is then unknown (0) and
    optimizer states come from bytes per parameter (AdamW 8, 8-bit AdamW 2 + absmax, SGD 4)."""
    sh = sharding_of(wl)
    if sh is None or wl.method == "inference":
        return None
    p = DTYPES[wl.dtype]
    fsdp = sh.engine == "fsdp"
    amp = wl.amp and fsdp
    if arch is not None:
        targets = lora_targets(arch, wl)
        trainable, sizes = _trainable(arch, wl, targets)
        frozen = wl.method in ("lora", "qlora")
        quant = wl.quant if wl.quant != "none" else ("nf4" if wl.method == "qlora" else "none")
        base = replace(wl, quant=quant)
        abytes = DTYPES.get(wl.adapter_dtype, 4)
        sbytes = (4 if amp else (abytes if frozen else p)) if fsdp else 4   # FSDP: states in the shards' dtype
        qstate = quant_state_bytes(arch, base) if sh.engine == "fsdp" or sh.zero == 3 else 0.0
        weights = _weights(arch, base, 4 if amp else p)[0] - qstate + (trainable * abytes if frozen else 0)
        states, step_temp, _ = _optimizer(base, arch, trainable, sizes, sbytes)
        units = fsdp_units(arch, base, 4 if amp else p, abytes, weights, frozen and not sh.frozen_grads) if fsdp else ()
        counts = dist.Counts(arch.params, trainable, largest_layer(arch), largest_unit(arch), largest_layer(arch),
                             units, trainable_tensors(arch, wl, targets, trainable) if sh.engine == "deepspeed" else ())
        tb = abytes if frozen else (4 if amp else p)
    else:
        if not params or wl.optimizer not in STATE_BYTES:
            return None
        trainable = params
        per_state = STATE_BYTES[wl.optimizer] * (p / 4 if fsdp and not amp and wl.optimizer not in FIXED_STATE_BYTES
                                                 else 1)
        weights, states, tb = params * (4 if amp else p), params * per_state, 4 if amp else p
        qstate = 0.0
        counts = dist.Counts(params, params)
    master = 0 if fsdp else 4
    prec = dist.Precision(weights=weights, param_bytes=tb, state_bytes=states, master_bytes=master,
                          grad_bytes=4, compute_bytes=p, grad_accum=wl.grad_accum)
    notes: list[str] = []
    lb = load_bytes_of(wl, notes)
    sh = replace(sh, load_bytes=lb)
    quant = wl.quant if wl.quant != "none" else ("nf4" if wl.method == "qlora" else "none")
    if arch is not None and quant == "nf4" and (fsdp or (sh.zero == 3 and not sh.zero_init)):
        packed = _weights(arch, replace(wl, quant=quant), lb)[0] - qstate
        sh = replace(sh, load_model_bytes=packed, load_source=QUANT_LOAD_SRC,
                     load_what=f"the 4-bit base as packed, quantized on the GPU and kept on the CPU; the rest in {lb} B")
    if arch is not None or sh.knobs:
        knobs, auto_notes = dist.resolve_auto(sh.knobs, arch.block.hidden if arch is not None else None, sh.zero)
        sh = replace(sh, knobs=knobs)
        notes += auto_notes
    mem = dist.memory(counts, prec, sh)
    if arch is not None and fsdp and sh.offload_params == "none" and step_temp:   # the optimizer steps on the GPU
        mem.step["optimizer_step_temporaries"] = dist.Term(
            step_temp / sh.shards, f"{step_temp / 2**30:.2f} GiB / {sh.shards} shards: {wl.optimizer}'s step "
            f"temporaries over the flat parameter shards ({sbytes} B)", "estimator._optimizer (torch.optim foreach "
            "AdamW: one parameter-sized buffer per step)", False)
    if qstate:   # whole on every rank's GPU, whatever the sharding or parameter offload
        mem.gpu["quant_state"] = dist.Term(qstate, f"{qstate / 2**30:.2f} GiB of 4-bit absmax statistics, whole on "
                                           "each rank (not sharded, not offloaded)", QUANT_STATE_SRC, False)
    mem.notes += notes
    return mem


def chunked_ce_rows(arch: Arch, tokens: int) -> int:
    """Rows of logits Liger's fused linear cross-entropy computes at a time: next_power_of_2(ceil(BT / ceil(V / H)))
    (doctor/data/vram.yaml chunked_ce)."""
    inc = -(-arch.head_outputs // arch.block.hidden)
    return 1 << max(0, (-(-tokens // inc) - 1).bit_length())


def chunked_ce_bytes(arch: Arch, tokens: int, p: int, amp: bool) -> tuple[float, float]:
    """(loss-time bytes, of which grad_input kept for backward) of the fused linear cross-entropy: one chunk of
    logits (its gradient computed in place, half under autocast), grad_input (BT x H, the input's dtype) and the
    per-token fp32 loss."""
    rows = min(tokens, chunked_ce_rows(arch, tokens))
    kept = tokens * arch.block.hidden * (4 if amp else p)
    return rows * arch.head_outputs * (2 if amp else p) + kept + tokens * 4, kept


def _frozen_base(arch: Arch, wl: Workload, amp: bool, dequant: float, notes: list[str]) -> tuple[str, float]:
    """(what a frozen quantized linear keeps for backward - activations.Ctx.frozen_keep -, the backward's transient
    dequantized weights) of a LoRA / QLoRA job, with the notes naming the library behaviour applied."""
    if wl.method not in ("lora", "qlora"):
        return "", dequant
    if versions.floating_base(wl.method, wl.quant, wl.fsdp, wl.zero):
        base = "fp32" if amp else wl.dtype
        why = ("" if wl.method == "lora" else " (FSDP / ZeRO-3 keep the 4-bit weights in a float "
               "bnb_4bit_quant_storage, which older peft gives the adapters)")
        if wl.adapter_dtype_given:
            notes.append(versions.given_adapter_note(wl.adapter_dtype, base) + why)
        else:
            notes.append(versions.peft_adapter_dtype(wl.peft_version, base)[1]
                         + f"; adapters here: {wl.adapter_dtype}" + why)
        if wl.fsdp is not None and wl.adapter_dtype != "fp32":
            notes.append(versions.fsdp_upcast_note())
    rows = refdata.load("vram")["quantized_lora"]
    if wl.quant == "nf4" and wl.implementation == "torchtune":
        notes.append("torchao's linear_nf4 (LinearNF4.forward: \"ctx.nf4_weight = weight\") keeps the NF4 weight, not "
                     "the input, for backward, and dequantizes the whole weight to the input's dtype in forward and "
                     "backward")
        return "", dequant
    if wl.quant == "nf4":
        kept = versions.bnb_keeps_input(wl.bitsandbytes_version)
        notes.append(kept.note)
        return ("input" if kept.old else ""), dequant
    if wl.quant == "int8" and rows["int8"]["keeps_input"]:
        notes.append("LoRA on an LLM.int8 base (bitsandbytes MatMul8bitLt): each int8 linear keeps its input until "
                     "backward")
        return "input", dequant
    if wl.quant == "awq":
        largest = max(lin.params for b, _ in arch.kinds for lin in b.linears)
        notes.append("LoRA on an AWQ base (AutoAWQ WQLinear_GEMM): each quantized linear saves an fp16 copy of its "
                     f"input; its backward dequantizes the weight and repeats it batch ({wl.batch}) times")
        keep = "input" if wl.dtype == "fp16" and not amp else "half"
        copies = wl.batch if rows["awq"]["backward_weight_copies"] == "batch" else 0
        return keep, dequant + copies * largest * (4 if amp else DTYPES[wl.dtype])
    if wl.quant == "gptq":
        notes.append("LoRA on a GPTQ base (GPTQModel QuantLinearFunction): the quantized linears keep no input; "
                     "backward dequantizes one weight at a time")
        return "", dequant
    return "", dequant


LEARNED_POSITIONS = ("opt", "bert")   # an embedding table of max_position_embeddings rows (OPTLearnedPositional-
# Embedding, BertEmbeddings.position_embeddings): a longer sequence indexes past it


def estimate(arch: Arch, wl: Workload) -> Estimate:
    """Peak GPU memory of one step of `wl` on `arch`, each term with its formula and source."""
    est = _estimate(arch, wl)
    est.terms = _documented(est, arch)
    length, positions = max(wl.seq, wl.context or 0), arch.extra.get("max_positions")
    if positions and length > positions:
        est.notes.insert(0, f"{length:,} tokens is past the config's max_position_embeddings {positions:,}: " + (
            f"{arch.family}'s learned position embeddings have no row for it, so the forward fails (index error)"
            if arch.family in LEARNED_POSITIONS else "the model runs past it but was not trained at that length"))
    return est


def _estimate(arch: Arch, wl: Workload) -> Estimate:
    data = overheads()
    p = DTYPES[wl.dtype]
    # autocast (fp32 weights, half compute); DeepSpeed's bf16/fp16 and FSDP's MixedPrecision store half weights and
    # activations themselves, their fp32 copies are counted by doctor/vram/distributed.py
    amp = wl.amp and wl.method not in ("inference",) and wl.zero is None and wl.fsdp is None
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

    notes: list[str] = []
    weights, dequant = _weights(arch, wl, wbytes)
    if wl.implementation == "torchtune":
        weights += _torchtune_rope(arch, wl, notes)
    trainable, sizes = _trainable(arch, wl, targets)
    tbytes = abytes if frozen_base else wbytes
    adapters = trainable * abytes if frozen_base else 0
    breakdown: dict[str, float] = {"weights": weights, "lora_adapters": adapters}

    ctx_mib = wl.cuda_context_mib if wl.cuda_context_mib is not None else data["cuda_context"]["mib"]
    workspace = data["cublas_workspace"]["hopper_bytes" if (wl.sm or 0) >= 9.0 else "bytes"]
    overhead = {"cuda_context": ctx_mib * MIB, "cublas_workspace": workspace}

    if not training:
        ctx_len = wl.context or wl.seq
        heads = (lambda k: k.heads) if wl.kv_cache_heads == "query" else (lambda k: k.kv_heads)
        kv = 2 * sum(n * heads(k) * k.head_dim for k, n in arch.kinds) * wl.batch * ctx_len * p   # attention layers
        actx = act.Ctx(p, False, frozenset(), frozenset(), 0, abytes, wl.attention, llm_tokens_per_sample, False, False)
        work = max(act.working_set(actx, k, tokens, llm_tokens_per_sample) for k, _ in arch.kinds) + dequant
        cache = versions.kv_cache(arch.family, wl.transformers_version) if kv else None
        if cache is not None and cache.old:   # legacy tuple cache: the previous step's whole cache beside the new one
            breakdown["legacy_kv_copy"] = kv
        else:   # DynamicCache grows by cat: one layer's cache copied
            work += 2 * max(k.kv_heads * k.head_dim for k, _ in arch.kinds) * wl.batch * ctx_len * p
        if cache is not None:
            notes.append(cache.note)
        if arch.vision and vision_tokens:
            vctx = replace(actx, seq=vision_tokens // max(1, wl.images))
            work = max(work, act.working_set(vctx, arch.vision.block, vision_tokens * wl.batch, vctx.seq))
        logits = wl.batch * arch.head_outputs * (4 + p)                # generate keeps the last position, upcast
        breakdown.update(kv_cache=kv, activations=0, logits=logits, transient=work, gradients=0, optimizer_states=0)
        # the cache at its full context beside the prompt's working set: exact for a static cache, which holds
        # the whole context from the prefill on; an upper bound for a growing DynamicCache
        phase = "generation: full-context cache + prefill working set"
        if any(k.ssm for k, _ in arch.kinds):
            state = ssm_state_bytes(arch, wl.batch, p)
            breakdown.update(ssm_state=state)
            mamba = sum(n for k, n in arch.kinds if k.ssm)
            notes.append(f"SSM inference state (conv + ssm state per Mamba layer, the same for any context length): "
                         f"{state / 2**30:.3f} GiB for batch {wl.batch} over {mamba} layers; " + (
                             f"KV cache for {ctx_len} tokens x batch {wl.batch} in the {arch.attention_layers} "
                             f"attention layers only: {kv / 2**30:.2f} GiB" if kv else "no KV cache"))
        else:
            notes.append(f"KV cache for {ctx_len} tokens x batch {wl.batch}: {kv / 2**30:.2f} GiB" + (
                " (k and v expanded to the query heads before caching)" if wl.kv_cache_heads == "query" else ""))
        return _finish(arch, wl, breakdown, overhead, phase, trainable, tokens, notes, rounding_tensors=arch.layers * 4)

    full = wl.method in ("full", "hessian")
    keep, dequant = _frozen_base(arch, wl, amp, dequant, notes)
    ctx = act.Ctx(p=p, amp=amp, trainable=frozenset({"*"}) if full else frozenset(), lora=targets,
                  lora_rank=wl.lora_rank, adapter_bytes=abytes, attention=wl.attention, seq=llm_tokens_per_sample,
                  dropout=wl.dropout and any(k.dropout for k, _ in arch.kinds), full=full, frozen_keep=keep,
                  lora_dropout=wl.lora_dropout > 0)
    layer_bytes = _litgpt_layer(arch, wl, targets) if wl.implementation == "litgpt" else act.per_token
    per_layer = max(layer_bytes(ctx, k) * tokens for k, _ in arch.kinds)   # the largest layer (recomputed one)
    all_layers = sum(n * (layer_bytes(ctx, k) * tokens) for k, n in arch.kinds)
    if wl.implementation == "litgpt":
        notes.append("LitGPT's model code (bf16 RMSNorm, fused qkv with LoRA dropout, RoPE copies of q and k)")
    r = 4 if amp else p
    h = arch.block.hidden
    edges = tokens * (h * r + 4 * h + 8 + (h * p if full or arch.head is None else 0))  # embeddings, final norm, head input
    ckpt = wl.checkpointing and wl.method != "hessian"
    if ckpt:
        activ = arch.layers * tokens * h * r + per_layer + edges
        notes.append("gradient checkpointing: each block keeps only its input; one block is recomputed in backward")
    else:
        activ = all_layers + edges
    if amp:   # autocast caches a half copy of every weight it casts until the forward ends (checkpointed or not)
        activ += 2 * (sum(n * sum(lin.params for lin in k.linears) for k, n in arch.kinds)
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
    if wl.half_ce:   # the logits (kept by the caller through backward) and log_softmax's saved output, both in p
        logits = tokens * arch.head_outputs * 2 * (2 if amp else p)   # autocast: the head runs in half
        notes.append("cross-entropy on the half-precision logits (no fp32 upcast): the logits and log_softmax's "
                     "output are kept, both in the compute dtype")
    if wl.chunked_ce:
        logits, kept_input = chunked_ce_bytes(arch, tokens, p, amp)
        if full or arch.head is None:   # the fused loss keeps grad_input, not the head's input
            activ -= tokens * h * p
        notes.append(f"fused linear cross-entropy (Liger): logits in chunks of {chunked_ce_rows(arch, tokens)} rows, "
                     f"gradients in place; grad_input ({kept_input / 2**30:.2f} GiB) kept for backward" + (
                         "" if arch.family in data["chunked_ce"]["patched_families"] else
                         f"; Liger's model patches do not cover {arch.family}: the loss must call "
                         "LigerFusedLinearCrossEntropyLoss itself"))
    work = max(act.working_set(ctx, k, tokens, llm_tokens_per_sample) for k, _ in arch.kinds) + dequant
    grads = trainable * tbytes
    states, step_temp, opt_note = _optimizer(wl, arch, trainable, sizes, tbytes)
    notes.append(opt_note)
    if wl.method == "hessian":   # the terms and their derivation: doctor/vram/second_order.py
        # imported here, not at the top: second_order builds on this module's Estimate
        from . import second_order as so

        notes.remove(opt_note)
        hvp = so.hvp_terms(arch, wl, tokens, p, r)
        notes.extend(so.hvp_notes(arch, wl))
        breakdown.update({k: t.bytes for k, t in hvp.items()})
        est = _finish(arch, wl, breakdown, overhead, "second backward (HVP)", arch.params, tokens, notes,
                      rounding_tensors=arch.layers * 16)
        est.terms = {k: t.to_dict() for k, t in hvp.items()}
        return est
    sharded = distributed_memory(arch, wl)
    if sharded is not None:
        if sharded.sharding.engine == "deepspeed":   # DeepSpeed steps its own Adam (FusedAdam, or CPU Adam)
            notes.remove(opt_note)
        return _sharded(arch, wl, sharded, activ, logits, work, step_temp, trainable, tbytes, overhead, tokens,
                        notes, ckpt)
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
    est = _finish(arch, wl, breakdown, overhead, phase, trainable, tokens, notes,
                  rounding_tensors=(1 if ckpt else arch.layers) * 16 + arch.layers * 2)
    if wl.implementation == "torchtune":
        est = _torchtune_build(arch, wl, est, targets)
    if wl.optimizer in PAGED and est.phase == BUILD_PHASE:
        notes.append("paged optimizer: paging its state does not lower this peak - the model build runs before the "
                     "optimizer exists")
    elif wl.optimizer in PAGED:
        est.paged_bytes = round(states)
        notes.append(f"paged optimizer: {states / 2**30:.2f} GiB of state can page out to CPU RAM, so the GPU needs "
                     f"at least {(est.peak_bytes - states) / 2**30:.2f} GiB (steps slow down while it pages)")
    return est


BUILD_PHASE = "model build: torchtune QLoRA, NF4 quantized whole"


def lora_matches_nothing(wl: Workload, est: Estimate) -> bool:
    """A LoRA job whose targets name no linear module of the model: nothing would train (the command refuses it)."""
    return wl.method in ("lora", "qlora") and est.trainable == 0


def _torchtune_rope(arch: Arch, wl: Workload, notes: list[str]) -> int:
    """torchtune's per-layer RoPE buffers (fp32 theta and cos/sin cache of its builder's max_seq_len), counted with
    the weights; 0 with a note for a family doctor has no torchtune builder length for. On torchtune 0.1 (torchao
    < 0.2) a --seq past that length, which its attention refuses, or a generation --context past it plus one, which
    its generate() refuses, is an InputError; on other or unknown releases a note."""
    from .nf4_build import POSITIONS, replays, rope_bytes

    cap = POSITIONS.get(arch.family)
    if cap is not None:
        builders = f"torchtune 0.1's {arch.family} builders set max_seq_len={cap}"
        if wl.method == "inference" and wl.context and wl.seq <= cap:   # the last new token is never fed back
            flag, length, limit = "--context", wl.context, cap + 1
            why = (f"{builders}, and its generate() raises ValueError when the prompt and the new tokens, less one, "
                   "exceed it (torchtune v0.1.1 torchtune/utils/_generation.py: \"Models maximum seq length "
                   "{model.max_seq_len} should be >= {(prompt_length + max_generated_tokens)} - 1\")")
        else:
            flag, length, limit = "--seq", wl.seq, cap
            why = (f"{builders}, and its attention raises ValueError for a longer input (torchtune v0.1.1 "
                   "torchtune/modules/attention.py: \"seq_len ({seq_len}) of input tensor should be smaller than "
                   "max_seq_len\")")
        if length > limit:
            if replays(wl.torchao_version):
                raise InputError(flag, str(length), f"{why}; expected {flag} {limit} or less")
            notes.append(f"{flag} {length} is more than torchtune 0.1 allows ({why}); could not decide for this "
                         "torchtune, whose builder lengths doctor does not know"
                         + ("" if wl.torchao_version else " (no --torchao-version)"))
    found = rope_bytes(arch)
    if found is None:
        notes.append(f"torchtune's RoPE caches are not counted: no torchtune 0.1 builder length for {arch.family}")
        return 0
    notes.append(f"torchtune keeps a RoPE cache in every layer (fp32): {found / 2**30:.2f} GiB, counted with the "
                 "weights")
    return found


def _torchtune_build(arch: Arch, wl: Workload, est: Estimate, targets: frozenset[str]) -> Estimate:
    """`est` with torchtune 0.1's QLoRA model build (nf4_build.py) where torchao quantizes each weight whole: the
    segments the build reserves stay for the run, so the peak is the build's when it reserves more than the step."""
    from . import nf4_build

    if wl.quant != "nf4" or wl.method not in ("lora", "qlora"):   # torchtune's QLoRA: LoRA on an NF4 base
        return est
    since = nf4_build.data()["chunked_since"]
    whole = nf4_build.replays(wl.torchao_version)
    if whole is None:
        est.notes.append(f"torchao version unknown or a development build of {since}: torchtune's QLoRA model build "
                         f"is not replayed; before {since} "
                         "torchao quantizes each weight whole (an n x 16 temporary per weight) and the build can "
                         "reserve more than the step - give --torchao-version or --facts")
        return est
    if not whole:
        est.notes.append(f"torchao {wl.torchao_version} (a {since} release or later) quantizes in chunks of 1024**2 "
                         "elements: the model build's transients are small and are not replayed")
        return est
    why = nf4_build.supported(arch, targets)
    if why:
        est.notes.append(f"could not replay the QLoRA model build: {why}")
        return est
    # the checkpoint's dtype changes only a conversion copy per weight: the larger of the two replays
    b = max((nf4_build.replay(arch, targets, wl.lora_rank, d) for d in ("fp16", "bf16")),
            key=lambda x: (x.peak_reserved, x.peak_allocated))
    ctx = est.breakdown["cuda_context"]
    step = est.peak_bytes - ctx
    what = (f"model build (torchtune 0.1, torchao {wl.torchao_version} < {since}: each LoRA linear's weight "
            f"quantized whole when built, deep-copied and loaded): peaks at {gib(b.peak_allocated)} allocated and "
            f"reserves {gib(b.peak_reserved)} in {b.segments} segments (the caching allocator's defaults: "
            "PYTORCH_CUDA_ALLOC_CONF unset)")
    if b.peak_reserved <= step:
        est.notes.append(what + ", less than the step")
        return est
    est.notes.append(what + f"; the caching allocator keeps those segments, and the step ({gib(step)} without the "
                     "CUDA context) is taken to run inside them (the replay does not follow the step's allocations)")
    # allocated peaks at the build or in the step, whichever is higher; reserved is the build's
    step_alloc = step - est.breakdown.get("allocator_rounding", 0)
    first = ("nf4_build_peak", b.peak_allocated) if b.peak_allocated >= step_alloc else ("step_allocated", step_alloc)
    breakdown = {first[0]: first[1], "build_fragmentation": b.peak_reserved - first[1], "cuda_context": ctx}
    peak = sum(breakdown.values())
    below, above = _context_range(wl)
    low, high = peak - below, peak + above
    terms = {
        "nf4_build_peak": {"formula": "peak allocated of the replayed build (doctor/vram/nf4_build.py)",
                           "source": nf4_build.data()["source"]},
        "step_allocated": {"formula": "the step's estimate less the CUDA context and the allocator's rounding: more "
                                      "than the build's peak allocated, inside the build's segments"},
        "build_fragmentation": {"formula": "the build's peak reserved less the peak allocated (the build's or the "
                                           "step's): free space the build's segments keep",
                                "source": "c10/cuda/CUDACachingAllocator.cpp (doctor/vram/allocator.py)"}}
    terms = {k: v for k, v in terms.items() if k in breakdown}
    return replace(est, peak_bytes=peak, breakdown=breakdown, low_bytes=int(low), high_bytes=int(high),
                   phase=BUILD_PHASE, terms={**est.terms, **terms})


def _litgpt_layer(arch: Arch, wl: Workload, targets: frozenset[str]) -> Any:
    """activations.litgpt_decoder, for the set-ups it follows: LoRA / QLoRA on a multi-head-attention Llama block with
    adapters on q, k, v only; InputError (exit 2) otherwise."""
    where = "--implementation"
    if wl.method not in ("lora", "qlora"):
        raise InputError(where, "litgpt", f"is modelled for LoRA / QLoRA; expected --method lora or "
                         f"qlora, not {wl.method}")
    for b, _ in arch.kinds:
        if b.kind != "decoder" or not b.gated or b.kv_heads != b.heads or b.qk_norm:
            raise InputError(where, "litgpt", "is modelled for Llama blocks with multi-head attention "
                             "(kv heads = heads); expected such a model")
        if targets - {lin.name for lin in b.linears[:3]}:
            raise InputError(where, "litgpt", "is modelled with LoRA on the fused qkv only; expected "
                             "--lora-targets among " + ",".join(lin.name for lin in b.linears[:3]))
    return act.litgpt_decoder


BACKWARD_ONLY = ("params_unsharded", "grads_unsharded", "largest_layer_gathered", "prefetch_bucket")


def _sharded(arch: Arch, wl: Workload, mem: dist.Memory, activ: float, logits: float, work: float,
             step_temp: float, trainable: int, tbytes: int, overhead: dict[str, float], tokens: int,
             notes: list[str], ckpt: bool) -> Estimate:
    """The peak per rank of a sharded (or data-parallel) step: the persistent state per rank (distributed.py's
    terms) plus the larger of the backward moment (activations, logits, working set) and the optimizer step's own
    terms (its temporaries; DeepSpeed < 0.17's fp32 partition copy), plus the process overheads."""
    sh = mem.sharding
    parts: dict[str, float] = {}
    terms: dict[str, dict[str, Any]] = {}
    if sh.engine == "ddp":   # replicated state: the single-GPU figures, plus DDP's gradient buckets
        w, _ = _weights(arch, wl, 4 if wl.amp else DTYPES[wl.dtype])
        states = _optimizer(wl, arch, trainable, [], tbytes)[0]
        parts.update(weights=w, gradients=trainable * tbytes, optimizer_states=states,
                     ddp_buckets=trainable * tbytes)
        terms["ddp_buckets"] = {"formula": f"{tbytes} B x {trainable:,} trainable (a second copy of the gradients)",
                                "source": "torch.nn.parallel.DistributedDataParallel docs: gradient_as_bucket_view="
                                          "False (default) copies gradients into allreduce buckets"}
    for name, term in mem.gpu.items():
        parts[name] = term.bytes
        terms[name] = {k: v for k, v in term.to_dict().items() if k != "bytes"}
    # the step's own terms replace the backward's activations, logits and working set (freed before step())
    at_step = {name: term.bytes for name, term in mem.step.items()}
    terms.update({name: {k: v for k, v in term.to_dict().items() if k != "bytes"} for name, term in mem.step.items()})
    if sh.engine == "ddp" and step_temp:
        at_step["optimizer_step_temporaries"] = step_temp
        terms["optimizer_step_temporaries"] = {"formula": f"{step_temp / 2**30:.2f} GiB: {wl.optimizer}'s step "
                                               "temporaries, as on one GPU", "source": "estimator._optimizer"}
    # what the backward holds and frees before the step: FSDP's unsharded units, ZeRO-3's gathered layer and its
    # prefetch bucket (all resharded / released at the end of backward)
    gathered = sum(parts.get(k, 0.0) for k in BACKWARD_ONLY)
    if sum(at_step.values()) > activ + logits + work + gathered:
        for k in BACKWARD_ONLY:
            parts.pop(k, None)
        parts.update(at_step)
        phase = "optimizer step"
    else:
        parts.update(activations=activ, logits=logits, transient=work)
        phase = "start of backward"
    terms = {k: v for k, v in terms.items() if k in parts}
    notes.append(f"sharding: {sh.describe()}" + (f" (from {sh.source})" if sh.source else ""))
    if sh.engine == "deepspeed":
        notes.append("model states counted whole at the peak, as DeepSpeed's estimator counts them")
    notes.extend(mem.notes)
    cpu = mem.cpu_block()
    cpu["deepspeed_estimator"] = dist.deepspeed_figures(
        dist.Counts(arch.params, trainable, largest_layer(arch), largest_unit(arch), largest_layer(arch)), sh)
    est = _finish(arch, wl, parts, overhead, phase, trainable, tokens, notes,
                  rounding_tensors=(1 if ckpt else arch.layers) * 16 + arch.layers * 2)
    est.terms, est.cpu, est.sharding = terms, cpu, sh.describe()
    return est


# what each single-GPU term counts and where its model is (a term distributed.py / second_order.py / nf4_build.py
# computes carries its own formula); `per`: the count the figure is divided by in the formula
TERM_DOCS: dict[str, tuple[str, str, str]] = {
    "weights": ("params", "every parameter in its stored dtype (4-bit and 8-bit bases: packed bytes plus their "
                "quantization statistics)", "estimator._weights; doctor/data/vram.yaml quantized formats"),
    "lora_adapters": ("trainable", "the LoRA A and B matrices in the adapter dtype", "estimator._trainable (peft "
                      "LoraConfig target_modules)"),
    "gradients": ("trainable", "the trainable parameters' gradients (at the start of backward only those produced "
                  "first: the head's and one layer's, unless accumulation keeps them all)", "estimator.estimate"),
    "optimizer_states": ("trainable", "the optimizer's state (see its note)", "estimator._optimizer"),
    "activations": ("tokens", "tensors autograd saves for backward, over every layer (one block under gradient "
                    "checkpointing)", "doctor/vram/activations.py (docs/estimate.md)"),
    "logits": ("tokens", "the head's logits, the loss's fp32 upcast and their gradient (generation: the last "
               "position's)", "estimator.estimate (transformers ForCausalLMLoss: logits.float())"),
    "chunked_ce": ("tokens", "one logit chunk of the fused linear cross-entropy, its grad_input and the loss",
                   "estimator.chunked_ce_bytes (Liger-Kernel fused_linear_cross_entropy)"),
    "transient": ("tokens", "the largest working set at the peak moment: one block's backward (or the optimizer "
                  "step's temporaries, or generation's growing cache copy)", "activations.working_set; "
                  "estimator._optimizer"),
    "kv_cache": ("tokens", "keys and values of every attention layer for the whole context", "estimator.estimate "
                 "(transformers DynamicCache)"),
    "legacy_kv_copy": ("tokens", "the previous step's whole KV cache beside the new one", "versions.kv_cache "
                       "(doctor/data/vram.yaml generate_dynamic_cache)"),
    "ssm_state": ("", "each Mamba layer's conv and SSM state, constant in the context", "estimator.ssm_state_bytes"),
    "quant_state": ("", "4-bit absmax statistics", "estimator.quant_state_bytes"),
    "allocator_rounding": ("", "1 MiB on average per large tensor (the caching allocator's 2 MiB blocks)",
                           "doctor/data/vram.yaml allocator"),
    "cuda_context": ("", "the CUDA context, a measured reference (or the job's own measured figure)",
                     "doctor/data/vram.yaml cuda_context"),
    "cublas_workspace": ("", "cuBLAS's workspace for the compute capability", "doctor/data/vram.yaml "
                         "cublas_workspace"),
}


def _documented(est: Estimate, arch: Arch) -> dict[str, dict[str, Any]]:
    """est.terms with a formula and source for every breakdown term that has none (the single-GPU terms)."""
    counts = {"params": (arch.params, "parameters"), "trainable": (est.trainable, "trainable parameters"),
              "tokens": (est.tokens, "tokens")}
    out = dict(est.terms)
    for name, value in est.breakdown.items():
        if name in out or name not in TERM_DOCS:
            continue
        per, what, source = TERM_DOCS[name]
        n, unit = counts.get(per, (0, ""))
        formula = f"{value / n:,.4g} B x {n:,} {unit}: {what}" if n else what
        out[name] = {"formula": formula, "source": source}
    return out


def _finish(arch: Arch, wl: Workload, parts: dict[str, float], overhead: dict[str, float], phase: str,
            trainable: int, tokens: int, notes: list[str], rounding_tensors: int) -> Estimate:
    """Add allocator rounding and the process overheads; bound the estimate by the overheads' measured range."""
    data = overheads()
    if wl.chunked_ce and "logits" in parts:   # the fused loss's own term, named as such in the breakdown
        parts = {("chunked_ce" if k == "logits" else k): v for k, v in parts.items()}
    # PyTorch's caching allocator rounds large blocks up to 2 MiB: on average 1 MiB lost per large tensor
    rounding = rounding_tensors * data["allocator"]["round_large_bytes"] / 2
    breakdown = {k: round(v) for k, v in parts.items() if v}
    breakdown["allocator_rounding"] = int(rounding)
    breakdown.update({k: int(v) for k, v in overhead.items()})
    peak = sum(breakdown.values())
    below, above = _context_range(wl)
    low, high = peak - below - int(rounding), peak + above + int(rounding)
    return Estimate(peak, breakdown, low, high, phase, arch.params, trainable, tokens, notes)


def _context_range(wl: Workload) -> tuple[float, float]:
    """How far the CUDA context can sit below and above the reference figure (0 when the job measured its own)."""
    if wl.cuda_context_mib is not None:
        return 0.0, 0.0
    ctx = overheads()["cuda_context"]
    return (ctx["mib"] - ctx["low_mib"]) * MIB, (ctx["high_mib"] - ctx["mib"]) * MIB


def fits(est: Estimate, capacity: int, headroom_pct: float = 10.0) -> str:
    """'fits', 'tight' (under `headroom_pct`% of `capacity` left) or 'does not fit': the verdict of both
    `doctor estimate` and the vram.budget check."""
    if est.peak_bytes > capacity:
        return "does not fit"
    return "tight" if capacity - est.peak_bytes < headroom_pct / 100 * capacity else "fits"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
