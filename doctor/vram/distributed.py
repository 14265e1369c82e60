"""Distributed training memory: DeepSpeed ZeRO stages 0-3 and PyTorch FSDP, with CPU / NVMe offload.

Pure arithmetic over counts (no torch, no deepspeed import). `memory()` gives GPU bytes per rank, CPU bytes per
node (steady state, while the model is loaded, and at FSDP's lazy init) and NVMe bytes per node, each as named
terms that carry their formula and the source it comes from. `deepspeed_estimate_zero2` /
`deepspeed_estimate_zero3` reproduce DeepSpeed's own estimator functions, arithmetic unchanged, so that doctor's
model-states figures can be held to them (tests/test_vram_distributed.py).

Sources:
- DeepSpeed, docs/code-docs/source/memory.rst ("Memory Requirements", https://deepspeed.readthedocs.io/en/latest/
  memory.html): the 2 / 4 / 16 / 18 bytes-per-parameter model states and the 1.5x `additional_buffer_factor`.
- deepspeed/runtime/zero/stage_1_and_2.py (DeepSpeedZeroOptimizer) and stage3.py (DeepSpeedZeroOptimizer_Stage3):
  the buffers the estimator leaves out (reduce buckets, pinned bit16 staging, CPU gradient accumulation, ZeRO-3's
  CPU gradient partitions in the accumulation dtype).
- ATen/core/CachingHostAllocator.h: every pinned block rounded up to a power of two (PINNED_ROUND_SRC).
- deepspeed/runtime/zero/config.py and offload_config.py: the defaults of every knob read here.
- PyTorch FSDP (torch/distributed/fsdp/api.py ShardingStrategy, CPUOffload; _flat_param.py pins the CPU shard and
  CPU gradient): https://docs.pytorch.org/docs/stable/fsdp.html
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

ENGINES = ("deepspeed", "fsdp")
FSDP_STRATEGIES = ("full", "shard-grad-op", "hybrid", "hybrid-zero2", "no-shard")
OFFLOAD = ("none", "cpu", "nvme")
BUFFER_FACTOR = 1.5   # DeepSpeed's additional_buffer_factor default (both estimator functions)

DS_MEMORY_DOC = "DeepSpeed memory.rst (https://deepspeed.readthedocs.io/en/latest/memory.html)"
ZERO2_FN = "deepspeed/runtime/zero/stage_1_and_2.py: estimate_zero2_model_states_mem_needs"
ZERO3_FN = "deepspeed/runtime/zero/stage3.py: estimate_zero3_model_states_mem_needs"
STAGE12 = "deepspeed/runtime/zero/stage_1_and_2.py: DeepSpeedZeroOptimizer"
STAGE3 = "deepspeed/runtime/zero/stage3.py: DeepSpeedZeroOptimizer_Stage3"
RAM_EFFICIENT_SRC = ("accelerate utils/dataclasses.py FullyShardedDataParallelPlugin: cpu_ram_efficient_loading 'only "
                     "the first process loads the pretrained model checkpoint while all other processes have empty "
                     "weights' (forces sync_module_states); transformers modeling_utils.py: 'if is_fsdp_enabled() "
                     "and not is_local_dist_rank_0()' -> meta")
FSDP_DOC = "PyTorch FSDP (https://docs.pytorch.org/docs/stable/fsdp.html; torch/distributed/fsdp/_flat_param.py)"
# FSDP1 CPUOffload(offload_params=True), read in torch 2.13's torch/distributed/fsdp (the same lines since 2.0)
CPU_GRAD_SRC = ("torch/distributed/fsdp/_flat_param.py FlatParamHandle.init_flat_param_attributes: 'flat_param."
                "_local_shard = flat_param._local_shard.pin_memory()' and 'flat_param._cpu_grad = torch.zeros_like("
                "flat_param._local_shard, device=cpu_device).pin_memory()' for every flat parameter, frozen ones too")
PINNED_ROUND_SRC = ("ATen/core/CachingHostAllocator.h (torch 2.13 include/): 'Round up the allocation to the nearest "
                    "power of two to improve reuse' (c10::llvm::PowerOf2Ceil) for sizes up to pinned_max_round_"
                    "threshold and pinned_max_cached_size, both SIZE_MAX by default (c10/core/AllocatorConfig.h); "
                    "pin_memory() allocates there")
LAZY_INIT_SRC = ("torch/distributed/fsdp/_runtime_utils.py _share_state_and_init_handle_attrs: init_flat_param_"
                 "attributes() for every handle at the lazy init; the unpinned shard stays flat_param.data until the "
                 "unit's first pre_unshard(): 'self.flat_param_to(self.device, non_blocking=True)' (_flat_param.py)")

# memory.ram's allowance per rank for the rest of each process (Python, torch / CUDA libraries, host-side CUDA state, a
# DataLoader's prefetch): doctor's assumption, not a measurement; the check takes the RSS a user measures instead
PROCESS_ALLOWANCE_GIB = 4.0

# deepspeed/runtime/zero/config.py (DeepSpeedZeroConfig) and offload_config.py defaults
DS_DEFAULTS: dict[str, Any] = {
    "reduce_bucket_size": 500_000_000, "allgather_bucket_size": 500_000_000, "contiguous_gradients": True,
    "overlap_comm": None,                 # None: True for stage 3 only (config.py overlap_comm_valid)
    "stage3_prefetch_bucket_size": 50_000_000, "stage3_max_live_parameters": 1_000_000_000,
    "stage3_param_persistence_threshold": 100_000, "sub_group_size": 1_000_000_000,
    "pin_memory": True,   # from DeepSpeed 0.19.5; earlier releases default to False (PIN_DEFAULT_SINCE)
    "param_buffer_count": 5, "param_buffer_size": 100_000_000,
    "param_max_in_cpu": 1_000_000_000, "optimizer_buffer_count": 4, "nvme_path": None,
    "aio_intra_op_parallelism": 1,   # swap_tensor/constants.py AIO_INTRA_OP_PARALLELISM_DEFAULT
}
AIO_ALIGNED_BYTES = 1024   # deepspeed/runtime/swap_tensor/utils.py: swap sizes align to this x intra_op_parallelism
# DeepSpeed PR #8212 (first released in v0.19.4): the NVMe swap buffers come from the aio handle's page-locked
# allocator (csrc/pin_memory/page_alloc.cpp ds_page_aligned_alloc: posix_memalign, then mlock) instead of
# get_accelerator().pin_memory(...) (torch's caching host allocator, rounded up to a power of two); both lock them
# whatever offload_*.pin_memory says
SWAP_MLOCK_SINCE = (0, 19, 4)
SWAP_SRC = ("deepspeed/runtime/swap_tensor/utils.py SwapBufferManager ('aio_handle.new_cpu_locked_tensor(num_elems, "
            "...)'; before v0.19.4 'get_accelerator().pin_memory(torch.zeros(num_elems, ...))')")
PARAM_SWAP_SRC = ("deepspeed/runtime/swap_tensor/partitioned_param_swapper.py _configure_aio: 'self.buffers = "
                  "self.aio_read_handle.new_cpu_locked_tensor(...)' (before v0.19.4 'get_accelerator().pin_memory("
                  "self.buffers)') of aligned_elements_per_buffer x param_buffer_count")
REUSE_SRC = ("deepspeed/runtime/zero/stage3.py _create_fp16_partitions_with_defragmentation: where a sub-group has no "
             "flat CPU buffer (past offload_param.max_in_cpu), "
             "'reserve_partitioned_swap_space(largest_partition_numel)' with largest_partition_numel = "
             "[t.ds_numel for t in sub_group] of the sub-group with the most partition elements: each parameter's "
             "whole numel, not its partition (partitioned_param_swapper.py: "
             "new_cpu_locked_tensor(sum of _io_aligned_numel), before v0.19.4 get_accelerator().pin_memory)")


STAGING_SINCE = (0, 17, 0)   # DeepSpeed PR #7309 (first released in v0.17.0): pinned bit16 CPU staging buffer
PIN_DEFAULT_SINCE = (0, 19, 5)   # offload_config.py 'pin_memory: bool = True' (PR #8207); 'False' up to v0.19.4


def version_tuple(version: Any) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version string such as '0.17.1+cu128'; None where it is not one."""
    if not isinstance(version, str):
        return None
    parts = []
    for piece in version.split("+")[0].split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts + [0] * (3 - len(parts))) if parts else None


# ---------------------------------------------------------------------------------------------------------------
# DeepSpeed's estimator functions, reproduced (same arithmetic, same rounding)


def deepspeed_estimate_zero2(total_params: float, num_gpus_per_node: int = 1, num_nodes: int = 1,
                             cpu_offload: bool = True, additional_buffer_factor: float = 1.5) -> tuple[int, int]:
    """(cpu_mem per node, gpu_mem per GPU) exactly as DeepSpeed's
    deepspeed/runtime/zero/stage_1_and_2.py: estimate_zero2_model_states_mem_needs (since PR #5099, 2024-06:
    2 bytes fp16 params + 18 bytes per parameter partitioned)."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def deepspeed_estimate_zero3(total_params: float, largest_layer_params: float, num_gpus_per_node: int = 1,
                             num_nodes: int = 1, cpu_offload: bool = True, cpu_offload_params: bool = True,
                             zero_init: bool = True, additional_buffer_factor: float = 1.5) -> tuple[int, int, float]:
    """(cpu_mem per node, gpu_mem per GPU, largest_layer_memory) exactly as DeepSpeed's
    deepspeed/runtime/zero/stage3.py: estimate_zero3_model_states_mem_needs."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = (4 * largest_layer_params)
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            if zero_init:
                cpu_mem = total_params * 18 * gpus_factor * additional_buffer_factor
            else:
                cpu_mem = total_params * max(4 * num_gpus_per_node, 18 * gpus_factor) * additional_buffer_factor
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            if zero_init:
                cpu_mem = total_params * 16 * gpus_factor * additional_buffer_factor
            else:
                cpu_mem = total_params * max(4 * num_gpus_per_node, 16 * gpus_factor) * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        if zero_init:
            cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
        else:
            cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


# ---------------------------------------------------------------------------------------------------------------
# inputs


@dataclass(frozen=True)
class Counts:
    """What the formulas need from the model. `largest_layer`: DeepSpeed's largest_layer_params (the most
    parameters one module holds itself: stage3.py model_to_params); `largest_unit`: FSDP's largest wrapped unit
    (a transformer block, or the root's embeddings + head); `largest_param`: the largest single tensor."""

    params: int
    trainable: int
    largest_layer: int = 0
    largest_unit: int = 0
    largest_param: int = 0
    # FSDP flat parameters as (bytes unsharded, bytes per element, how many): each is sharded and, under CPU
    # offload, pinned whole per rank; () where the wrap is unknown (no model config)
    units: tuple[tuple[float, int, int], ...] = ()
    # DeepSpeed: element counts of the trainable tensors in model.parameters() order (the order ZeRO flattens them
    # and cuts ZeRO-3 sub-groups in); () where unknown (no model config)
    tensors: tuple[int, ...] = ()


@dataclass(frozen=True)
class Precision:
    """Bytes of each kind of state. `weights`: the model's parameters as they sit on the GPU, all of them
    (bf16: 2 per parameter; quantized bases pack less); `param_bytes`: per trainable parameter in that dtype;
    `state_bytes`: optimizer state over all trainable parameters; `master_bytes`: fp32 master copy per trainable
    parameter (DeepSpeed ZeRO always keeps one; 0 where the parameters are their own master)."""

    weights: float
    param_bytes: int
    state_bytes: float
    master_bytes: int = 4
    grad_bytes: int = 4          # DeepSpeed's fp32 gradient partition (memory.rst: "4b grads")
    compute_bytes: int = 2       # FSDP: the dtype parameters are unsharded (gathered) in
    grad_accum: int = 1


@dataclass(frozen=True)
class Sharding:
    """How a job is spread: engine, ZeRO stage or FSDP strategy, world size (GPUs in all), GPUs per node,
    offload targets, and the DeepSpeed config's buffer knobs (defaults: deepspeed/runtime/zero/config.py)."""

    engine: str = "deepspeed"            # deepspeed | fsdp | ddp
    zero: int = 0
    fsdp: str = "full"
    world_size: int = 1
    gpus_per_node: int | None = None     # None: all GPUs on one node
    offload_optimizer: str = "none"
    offload_params: str = "none"
    zero_init: bool = True               # ZeRO-3 builds the model partitioned (deepspeed.zero.Init)
    load_bytes: int = 4                  # bytes per parameter of the model as created on the CPU (fp32 default)
    # one copy of the model as loaded on the CPU, where it is not load_bytes x params (a 4-bit base quantized on the
    # way in); 0: load_bytes x params. `load_what` names it in the term's formula
    load_model_bytes: float = 0.0
    load_what: str = ""
    load_source: str = ""
    # accelerate's fsdp_cpu_ram_efficient_loading: only local rank 0 of each node loads the checkpoint, the others
    # build on the meta device and receive the weights through sync_module_states (default False)
    ram_efficient_loading: bool = False
    # FSDP gradients (see _fsdp): accumulation inside FSDP.no_sync() keeps them unsharded; frozen parameters sharing
    # a flat parameter with trainable ones (use_orig_params=True, one unit per block) get gradient memory too
    no_sync: bool = False
    frozen_grads: bool = False
    knobs: dict[str, Any] = field(default_factory=dict)   # DeepSpeed config values (DS_DEFAULTS keys)
    source: str = ""                     # the DeepSpeed config it was read from

    def knob(self, name: str) -> Any:
        value = self.knobs.get(name)
        return DS_DEFAULTS[name] if value is None or value == "auto" else value

    def auto_note(self, name: str) -> str:
        """' ("auto": hidden_size^2 = 8192^2)' where the knob's value was resolved from "auto", else ''."""
        how = (self.knobs.get("auto_resolved") or {}).get(name)
        return f' ("auto": {how})' if how else ""

    def one_copy(self, params: int) -> tuple[float, str]:
        """(bytes, formula) of one copy of the model as built on the CPU."""
        if self.load_model_bytes:
            return self.load_model_bytes, f"{_b(self.load_model_bytes)} ({self.load_what})"
        return self.load_bytes * params, f"{self.load_bytes} B x {params:,}"

    def load_src(self, source: str) -> str:
        return f"{source}; {self.load_source}" if self.load_source else source

    @property
    def per_node(self) -> int:
        return max(1, min(self.gpus_per_node or self.world_size, self.world_size))

    @property
    def nodes(self) -> int:
        return max(1, math.ceil(self.world_size / self.per_node))

    @property
    def shards(self) -> int:
        """Ranks one copy of the sharded state is spread over."""
        if self.engine == "fsdp":
            return {"no-shard": 1, "hybrid": self.per_node, "hybrid-zero2": self.per_node}.get(self.fsdp,
                                                                                              self.world_size)
        return self.world_size if self.engine == "deepspeed" and self.zero >= 1 else 1

    def describe(self) -> str:
        if self.engine == "fsdp":
            what = f"FSDP {self.fsdp}" + (", CPUOffload(offload_params=True)" if self.offload_params != "none" else "")
            what += (", accumulation in no_sync" if self.no_sync else "") + (
                ", frozen weights in the trainable flat parameters" if self.frozen_grads else "")
        elif self.engine == "deepspeed":
            what = f"DeepSpeed ZeRO-{self.zero}"
            if self.offload_optimizer != "none":
                what += f", optimizer offload to {self.offload_optimizer}"
            if self.offload_params != "none":
                what += f", parameter offload to {self.offload_params}"
        else:
            what = "data parallel (DDP)"
        nodes = f"{self.nodes} node(s) x {self.per_node} GPU(s)"
        return f"{what}; world size {self.world_size} = {nodes}"


# ---------------------------------------------------------------------------------------------------------------
# result


@dataclass(frozen=True)
class Term:
    """Bytes with the formula that gave them and where that formula comes from. `states`: one of the model
    states DeepSpeed's estimator counts (parameters, gradients, optimizer states); buffers are not."""

    bytes: float
    formula: str
    source: str
    states: bool = True
    pinned: bool = False
    locked: bool = False   # mlock()ed by the job itself: counts against RLIMIT_MEMLOCK (cudaHostAlloc does not)

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": round(self.bytes), "formula": self.formula, "source": self.source,
                "model_state": self.states, "pinned": self.pinned, "mlocked": self.locked}


@dataclass
class Memory:
    """GPU per rank, CPU per node (training, and while loading the model), NVMe per node."""

    sharding: Sharding
    gpu: dict[str, Term] = field(default_factory=dict)
    cpu: dict[str, Term] = field(default_factory=dict)
    load: dict[str, Term] = field(default_factory=dict)
    # FSDP CPU offload's lazy init: each unpinned shard beside its pinned copy until the unit's first forward
    init: dict[str, Term] = field(default_factory=dict)
    nvme: dict[str, Term] = field(default_factory=dict)
    # GPU terms alive only inside optimizer.step(), after the backward has freed the activations: the GPU peak is
    # the larger of the backward's and the step's moment (estimator._sharded)
    step: dict[str, Term] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def moments(self) -> dict[str, dict[str, Term]]:
        """CPU terms per node at each moment that can be the peak, training first."""
        return {"training": self.cpu, "model load": self.load, **({"FSDP lazy init": self.init} if self.init else {})}

    @property
    def peak_moment(self) -> str:
        return max(self.moments().items(), key=lambda kv: sum(t.bytes for t in kv[1].values()))[0]

    @property
    def gpu_states(self) -> float:
        return sum(t.bytes for t in self.gpu.values() if t.states)

    @property
    def cpu_states(self) -> float:
        """The CPU model states per node as DeepSpeed's estimator counts them (before its 1.5x): the larger of
        the model load and the offloaded states; under ZeRO-3's zero.Init (one layer built at a time) the load
        counts only where nothing is offloaded (memory.rst, ZeRO-3 cases 1-3 "With zero.Init")."""
        states = sum(t.bytes for t in self.cpu.values() if t.states)
        s = self.sharding
        if s.engine == "deepspeed" and s.zero == 3 and s.zero_init and states:
            return states
        return max(sum(t.bytes for t in self.load.values()), states)

    @property
    def cpu_training(self) -> float:
        return sum(t.bytes for t in self.cpu.values())

    @property
    def cpu_load(self) -> float:
        return sum(t.bytes for t in self.load.values())

    @property
    def cpu_init(self) -> float:
        return sum(t.bytes for t in self.init.values())

    @property
    def cpu_bytes(self) -> float:
        """CPU RAM per node at its peak: training state with its buffers, the model load, or FSDP's lazy init,
        whichever is largest (the model created on the CPU is freed once it moves to the GPUs, before the optimizer
        state exists)."""
        return max(self.cpu_training, self.cpu_load, self.cpu_init)

    @property
    def pinned_bytes(self) -> float:
        return sum(t.bytes for t in self.cpu.values() if t.pinned)

    @property
    def locked_per_rank(self) -> float:
        """Bytes each rank mlock()s (DeepSpeed's NVMe swap buffers from 0.19.4): what RLIMIT_MEMLOCK must allow."""
        return sum(t.bytes for t in self.cpu.values() if t.locked) / self.sharding.per_node

    @property
    def nvme_bytes(self) -> float:
        return sum(t.bytes for t in self.nvme.values())

    def cpu_block(self) -> dict[str, Any]:
        """The JSON `cpu` block: per-node bytes, the breakdown by term, and each term's formula and source."""
        s = self.sharding
        peak = self.peak_moment
        return {
            "per_node_bytes": round(self.cpu_bytes), "peak_moment": peak,
            "breakdown": {k: round(t.bytes) for k, t in self.moments()[peak].items()},
            "training_bytes": round(self.cpu_training), "load_bytes": round(self.cpu_load),
            "init_bytes": round(self.cpu_init),
            "pinned_bytes": round(self.pinned_bytes), "mlocked_per_rank_bytes": round(self.locked_per_rank),
            "model_states_bytes": round(self.cpu_states),
            "nvme_per_node_bytes": round(self.nvme_bytes),
            "nvme_path": s.knob("nvme_path") if self.nvme else None,
            "gpus_per_node": s.per_node, "nodes": s.nodes, "world_size": s.world_size, "sharding": s.describe(),
            "terms": {f"{where}.{k}": t.to_dict() for where, terms in (("cpu", self.cpu), ("load", self.load),
                                                                        ("init", self.init), ("nvme", self.nvme))
                      for k, t in terms.items()},
        }


def _b(x: float) -> str:
    return f"{x / 2**30:.2f} GiB"


# ---------------------------------------------------------------------------------------------------------------
# DeepSpeed

# ZeRO-3 under optimizer offload (cpu or nvme) keeps every rank's gradient partitions on the CPU in the gradient
# accumulation dtype, beside the fp32 gradients DeepSpeed's estimator counts (deepspeedai/DeepSpeed@edaa7221, the same
# lines in v0.12.0 and v0.16.0)
GRAD_FLAT_SRC = (f"{STAGE3}.__init__: 'self.grad_partitions_flat_buffer: Tensor = torch.zeros(sum(p.partition_numel() "
                 "for p in all_params), dtype=self.gradient_accumulation_dtype, device=self.device)' (self.device is "
                 "cpu under any optimizer offload), pinned 'if self.offload_optimizer_pin_memory'; engine.py get_data_"
                 "types: 'if self._config.grad_accum_dtype is None: grad_accum_dtype = model_dtype'")
GRAD_NVME_SRC = (f"{STAGE3}._offload_grad_partition_at_boundary, for a swappable sub-group: 'offload_fp32_gradients[i]"
                 ".append(grad_buffer.to(dtype=self.master_weights_and_grads_dtype))', then optimizer_swapper.swap_out_"
                 "gradients; swap_tensor/optimizer_utils.py get_or_create_gradient_paths: '{self.param_id}_gradient_"
                 "{offset}_{length}.tensor.swp' (a parameter's partition under min_aio_bytes, 1 MiB, stays in GPU "
                 "memory as 'swap_info.unswapped_gradients[offset] = tensor' until the step: not counted apart)")
GRAD_ACCUM_BYTES = {"fp32": 4, "float32": 4, "float": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2}


def _grad_accum(s: Sharding, p: int) -> tuple[int, str]:
    """(bytes, what) of DeepSpeed's gradient accumulation dtype: the ds_knobs' grad_accum_dtype where set, else the
    model dtype (p bytes)."""
    name = str(s.knobs.get("grad_accum_dtype") or "").lower()
    if name in GRAD_ACCUM_BYTES:
        return GRAD_ACCUM_BYTES[name], f"data_types.grad_accum_dtype {name}"
    return p, "the model dtype"


def _master_pinned(version: tuple[int, ...] | None, pin: bool) -> bool:
    """Whether ZeRO-1/2 pins the fp32 master partition under CPU offload: always from 0.14.1 to 0.18.2 (PR #5301),
    never before, and with offload_optimizer.pin_memory from 0.18.3 (PR #7689); an unknown version counts as new."""
    lo, hi = MASTER_PIN_ALWAYS
    return (version is not None and lo <= version < hi) or (pin and (version is None or version >= hi))


def _per_rank(sizes: tuple[int, ...], part: int, ranks: int, each: Any) -> list[int]:
    """Per ZeRO-1/2 rank, the sum of each(numel) over the tensors its partition [rank x part, (rank + 1) x part)
    of the flat group touches (stage_1_and_2.py get_partition_info; a tensor straddling two partitions counts in
    both). One pass over the tensors, so a long list with many ranks stays fast."""
    out, start = [0] * ranks, 0
    for n in sizes:
        if n > 0 and part > 0:
            first, last = start // part, (start + n - 1) // part
            for r in range(first, min(last, ranks - 1) + 1):
                out[r] += each(n)
        start += n
    return out


def _fullest_node(per_rank: list[int], g: int) -> int:
    """The largest sum over one node's g consecutive ranks."""
    return max(sum(per_rank[first:first + g]) for first in range(0, len(per_rank), g)) if per_rank else 0


def _sub_groups(parts: list[int], cut: float) -> list[tuple[int, int]]:
    """ZeRO-3's sub-groups as [first, end) ranges over the trainable tensors' partitions (stage3.py
    _create_fp16_sub_groups): one group where sub_group_size covers them all, else tensors added until the group
    holds sub_group_size partition elements or more."""
    if cut >= sum(parts):
        return [(0, len(parts))] if parts else []
    out, first, run = [], 0, 0
    for i, n in enumerate(parts):
        run += n
        if run >= cut or i == len(parts) - 1:
            out.append((first, i + 1))
            first, run = i + 1, 0
    return out


def _aligned(numel: int, elem: int, s: Sharding) -> int:
    """`numel` rounded up to the NVMe swap alignment: AIO_ALIGNED_BYTES x aio.intra_op_parallelism, in elements of
    `elem` bytes (swap_tensor/utils.py and partitioned_param_swapper.py _io_aligned_numel)."""
    step = max(1, AIO_ALIGNED_BYTES * int(s.knob("aio_intra_op_parallelism")) // elem)
    return -(-int(numel) // step) * step


def _swap_out_reserve(c: Counts, s: Sharding, p: int) -> tuple[int, str] | None:
    """(elements, how) of the page-locked buffer ZeRO-3 reserves to swap updated parameters out to NVMe
    (REUSE_SRC), or None where every sub-group has a flat CPU buffer (the rank's partitions fit in
    offload_param.max_in_cpu). Needs the trainable tensors' sizes (Counts.tensors)."""
    N = s.world_size
    parts = [-(-n // N) for n in c.tensors]
    flat = sum(parts)
    cap = float(s.knob("param_max_in_cpu"))
    room = flat if flat <= cap else max(1.0, cap)   # _create_param_groups_fp16_flat_cpu_memory (one param group)
    groups = _sub_groups(parts, float(s.knob("sub_group_size")))
    offset, missing = 0, False
    for a, b in groups:
        total = sum(parts[a:b])
        missing = missing or offset + total > room
        offset += total
    if not missing:
        return None
    best, most = None, 0
    for a, b in groups:   # the first sub-group with the most partition elements ('if total_elements > max_...')
        total = sum(parts[a:b])
        if total > most:
            best, most = (a, b), total
    if best is None:
        return None
    a, b = best
    numel = sum(_aligned(n, p, s) for n in c.tensors[a:b])
    return numel, (f"sum of the whole numel of the {b - a:,} tensors of the largest sub-group ({most:,} partition "
                   f"elements), each aligned to {AIO_ALIGNED_BYTES} B x aio.intra_op_parallelism")


def _deepspeed(c: Counts, pr: Precision, s: Sharding) -> Memory:
    mem = Memory(s)
    P, T, N, g, stage = c.params, c.trainable, s.world_size, s.per_node, s.zero
    p, m, gb = pr.param_bytes, pr.master_bytes, pr.grad_bytes
    off_opt, off_par = s.offload_optimizer, s.offload_params
    pin = bool(s.knob("pin_memory"))
    version = version_tuple(s.knobs.get("version"))
    if s.knobs.get("pin_memory") in (None, "auto") and (off_opt, off_par) != ("none", "none"):
        if version is not None and version < PIN_DEFAULT_SINCE:
            pin = False
        elif version is None:
            mem.notes.append("offload pin_memory is unset and DeepSpeed's version unknown: counted as true, the "
                             "default since 0.19.5 (offload_config.py 'pin_memory: bool = True', PR #8207); earlier "
                             "releases default to false")
    if stage < 3 and off_opt == "nvme":
        off_opt = "cpu"
        mem.notes.append("ZeRO-1/2 treat offload_optimizer.device nvme as CPU offload (stage_1_and_2.py: "
                         "cpu_offload = device != none); NVMe swapping is ZeRO-3's (ZeRO-Infinity)")
    shards = N if stage >= 1 else 1
    doc = DS_MEMORY_DOC
    # the NVMe swap buffers: mlock()ed from 0.19.4 (SWAP_MLOCK_SINCE), torch-pinned before; unknown counts as new
    mlock = version is None or version >= SWAP_MLOCK_SINCE
    if stage == 3 and "nvme" in (off_opt, off_par) and version is None:
        mem.notes.append("DeepSpeed's version is unknown: counted as >= 0.19.4, whose NVMe swap buffers are mlock()ed "
                         "(csrc/pin_memory/page_alloc.cpp), so RLIMIT_MEMLOCK must hold them; earlier releases pin "
                         "them with torch's pin_memory, rounded up to powers of two")
    gpu, cpu, load, nvme = mem.gpu, mem.cpu, mem.load, mem.nvme

    # parameters in their training dtype
    if stage == 3:
        gathered = 2 * p * c.largest_layer
        gpu["largest_layer_gathered"] = Term(gathered, f"2 x {p} B x {c.largest_layer:,} largest-layer params "
                                             "(its parameters and gradients gathered)", f"{doc}: largest_layer_memory")
        # offload_param cpu: the trainable partitions move into one flat buffer per param group, pinned whatever
        # pin_memory (DS_PIN3_SRC); frozen partitions are pinned with offload_param.pin_memory (partition_parameters
        # .py: 'if device == OffloadDeviceEnum.cpu and self.pin_memory')
        part = Term(pr.weights / shards, f"{_b(pr.weights)} parameters / {shards} ranks", f"{doc}: 2b fp16 params",
                    pinned=off_par != "none" and (pin or T >= P))
        if off_par == "none":
            gpu["params_partition"] = part
        elif off_par == "cpu":
            cpu["params_partition"] = replace(part, bytes=part.bytes * g, formula=part.formula + f" x {g} GPUs/node")
        else:
            nvme["params_partition"] = replace(part, bytes=part.bytes * g, formula=part.formula + f" x {g} GPUs/node",
                                               pinned=False)
            in_cpu = min(float(s.knob("param_max_in_cpu")), P / shards) * p * g
            cpu["params_in_cpu"] = Term(in_cpu, f"min(offload_param.max_in_cpu, params/rank) x {p} B x {g}",
                                        f"{STAGE3}._create_param_groups_fp16_flat_cpu_memory", False, pin or T >= P)
            # page-locked whatever pin_memory says (SWAP_MLOCK_SINCE)
            each = _aligned(int(float(s.knob("param_buffer_size"))), p, s)
            bufs = int(s.knob("param_buffer_count")) * each * p * g
            cpu["param_swap_buffers"] = Term(bufs, f"offload_param.buffer_count x buffer_size aligned ({each:,}) x "
                                             f"{p} B x {g}", PARAM_SWAP_SRC, False, True, mlock)
            if c.tensors:
                reserve = _swap_out_reserve(c, s, p)
                if reserve:
                    numel, how = reserve
                    cpu["param_swap_out_buffer"] = Term(numel * p * g, f"{p} B x {numel:,} ({how}) x {g} GPUs/node",
                                                        REUSE_SRC, False, True, mlock)
            elif P / shards > float(s.knob("param_max_in_cpu")):
                mem.notes.append("the trainable tensors are not listed (no model config, or over 2,000,000 of them): "
                                 "the page-locked buffer ZeRO-3 reserves to swap parameters out to NVMe (the whole "
                                 "numel of its largest sub-group's tensors, stage3.py reserve_partitioned_swap_space) "
                                 "is not counted")
    else:
        gpu["params"] = Term(pr.weights, f"{_b(pr.weights)}: every parameter in its training dtype",
                             f"{doc}: ZeRO-2 '2 * params'")

    # gradients in the training dtype (ZeRO-0/1 keep them whole, ZeRO-2 partitions them)
    if stage <= 1:
        gpu["grads"] = Term(p * T, f"{p} B x {T:,} trainable", f"{doc}; ZeRO-1 partitions optimizer states only")
    elif stage == 2 and off_opt == "none":
        gpu["grads_partition"] = Term(p * T / N, f"{p} B x {T:,} / {N}", f"{ZERO2_FN}: 2_grads_16bit")

    # fp32 master weights, fp32 gradients, optimizer states: on the GPU, or on the CPU / NVMe when offloaded
    where = {"none": gpu, "cpu": cpu, "nvme": nvme}[off_opt]
    node = g if off_opt != "none" else 1
    per = f" / {shards} ranks" + (f" x {g} GPUs/node" if node > 1 else "")
    if m:   # pinned: ZeRO-1/2 as _master_pinned says; ZeRO-3's is '.clone().detach()' (DS_PIN3_SRC), pageable
        where["master_params_fp32"] = Term(m * T / shards * node, f"{m} B x {T:,}{per}", f"{doc}: 4b params",
                                           pinned=stage < 3 and off_opt == "cpu" and _master_pinned(version, pin))
    # ZeRO-3 NVMe offload swaps the fp32 gradients out beside the fp32 partition and the optimizer state (RAM keeps
    # grad_partitions_flat below); elsewhere they sit with the optimizer state, pinned with pin_memory under CPU
    # offload (ZeRO-1/2 single_grad_partition, ZeRO-3 subgroup_gradient_buffer)
    where["grads_fp32"] = Term(gb * T / shards * node, f"{gb} B x {T:,}{per}", f"{doc}: 4b grads" + (
        f"; {GRAD_NVME_SRC}" if off_opt == "nvme" else ""), pinned=pin and off_opt == "cpu")
    if stage == 3 and off_opt != "none":
        # not a model state: memory.rst / estimate_zero3_model_states_mem_needs count the fp32 gradients only
        # (16 B / 18 B per parameter), so cpu_states stays comparable with DeepSpeed's estimator
        ga, what = _grad_accum(s, p)
        if c.tensors:
            flat: float = sum(-(-n // N) for n in c.tensors)
            how = f"{flat:,.0f} = sum of ceil(numel / {N}) over the trainable tensors"
        else:
            flat, how = T / N, f"{T:,} / {N}"
        cpu["grad_partitions_flat"] = Term(ga * flat * g, f"{ga} B ({what}) x {how} x {g} GPUs/node",
                                           GRAD_FLAT_SRC, False, pin)
    where["optimizer_states"] = Term(pr.state_bytes / shards * node, f"{_b(pr.state_bytes)} optimizer state{per}",
                                     f"{doc}: 8b momentum and variance (Adam)")
    if off_opt == "nvme":   # page-locked whatever pin_memory says (SWAP_MLOCK_SINCE)
        count = int(s.knob("optimizer_buffer_count"))
        if c.tensors:   # stage3.py _configure_tensor_swapping: largest_numel=max(fp16_partitioned_groups_flat_numel)
            parts = [-(-n // N) for n in c.tensors]
            largest = _aligned(max(sum(parts[a:b]) for a, b in _sub_groups(parts, float(s.knob("sub_group_size")))),
                               4, s)
            what = f"the largest sub-group's {largest:,} partition elements (aligned)"
        else:
            largest, what = min(float(s.knob("sub_group_size")), T / shards), "min(sub_group_size, params/rank)"
        cpu["optimizer_swap_buffers"] = Term(count * largest * 4 * g, f"offload_optimizer.buffer_count {count} x "
                                             f"{what} x 4 B x {g}", SWAP_SRC, False, True, mlock)

    # buffers DeepSpeed's estimator leaves out
    bucket = float(s.knob("reduce_bucket_size"))
    overlap = s.knob("overlap_comm") if s.knobs.get("overlap_comm") is not None else stage == 3
    if stage in (1, 2) and (s.knob("contiguous_gradients") or off_opt != "none"):
        n = 2 if overlap else 1
        gpu["reduce_buckets"] = Term(n * bucket * p, f"{n} x reduce_bucket_size {bucket:,.0f}"
                                     f"{s.auto_note('reduce_bucket_size')} x {p} B",
                                     f"{STAGE12}.setup_buckets (ipg buffers; 2 with overlap_comm)", False)
    if stage == 3 and s.knob("contiguous_gradients"):
        gpu["reduce_bucket"] = Term(bucket * p, f"reduce_bucket_size {bucket:,.0f}"
                                    f"{s.auto_note('reduce_bucket_size')} x {p} B",
                                    f"{STAGE3}.__init__ (IPG bucket buffer)", False)
    if stage == 3:
        pre = min(float(s.knob("stage3_prefetch_bucket_size")), float(s.knob("stage3_max_live_parameters")), P)
        gpu["prefetch_bucket"] = Term(pre * p, f"min(stage3_prefetch_bucket_size {pre:,.0f}"
                                      f"{s.auto_note('stage3_prefetch_bucket_size')}, max_live_parameters, "
                                      f"params) x {p} B",
                                      "deepspeed/runtime/zero/partitioned_param_coordinator.py (parameters gathered "
                                      "ahead of use)", False)
    if stage in (1, 2) and off_opt != "none":
        version = version_tuple(s.knobs.get("version"))
        if version is None or version >= STAGING_SINCE:
            cpu["offload_bit16_staging"] = Term(p * T / N * g, f"{p} B x {T:,} / {N} x {g}",
                                                f"{STAGE12}.__init__ param_buffer_of_bit16_for_cpu_offload_groups "
                                                "(DeepSpeed >= 0.17.0, PR #7309)", False, pin)
            if version is None:
                mem.notes.append("DeepSpeed's version is unknown: counted as >= 0.17.0, which stages updated "
                                 "parameters through a pinned CPU copy of each rank's partition; earlier versions "
                                 "copy the fp32 partition to the GPU instead (PR #7309)")
        else:
            mem.step["offload_fp32_partition_copy"] = Term(
                4 * T / N, f"4 B x {T:,} / {N} (the fp32 partition copied to the GPU at each step; DeepSpeed "
                f"{s.knobs['version']})", f"{STAGE12}.step before PR #7309 (DeepSpeed < 0.17.0): "
                "fp32_partition.to(device)", False)
        if pr.grad_accum > 1:   # one buffer of param.numel() per tensor the rank's partition touches
            accum, how = p * T / N * g, f"{p} B x {T:,} / {N} x {g}"
            if c.tensors:
                part = math.ceil(sum(c.tensors) / (2 * N)) * 2
                held = _fullest_node(_per_rank(c.tensors, part, N, lambda n: n), g)
                accum, how = p * held, (f"{p} B x {held:,}: the whole numel of each tensor a rank's partition "
                                        f"touches (one straddling two partitions counts in both), summed over the "
                                        f"fullest node's {g} ranks")
            cpu["offload_grad_accumulation"] = Term(accum, f"{how} (gradient accumulation {pr.grad_accum} > 1)",
                                                    f"{STAGE12}.async_accumulate_grad_in_cpu_via_gpu: 'buffer = "
                                                    "torch.zeros(param.numel(), dtype=param.dtype, device=self.device)"
                                                    "' per parameter in the rank's partition (accumulated_grads_in_"
                                                    "cpu; get_partition_info, 'alignment = self.nccl_start_alignment_"
                                                    "factor * dist.get_world_size(...)', factor 2)", False, pin)
        if c.largest_param:
            gpu["offload_grad_staging"] = Term(c.largest_param * p, f"largest parameter {c.largest_param:,} x {p} B",
                                               f"{STAGE12}.__init__ temp_grad_buffer_for_gpu_offload", False)
            cpu["offload_grad_staging"] = Term(c.largest_param * p * g, f"largest parameter x {p} B x {g}",
                                               f"{STAGE12}.__init__ temp_grad_buffer_for_cpu_offload", False, pin)
        else:
            mem.notes.append("the largest parameter tensor is unknown (no model config): the offload gradient "
                             "staging buffers (one such tensor each on GPU and CPU) are not counted")
    _deepspeed_pinned(mem, c, pr, s, off_opt, off_par, pin)

    # the model as created on the CPU before deepspeed.initialize moves it: each rank builds it whole in fp32,
    # or, under ZeRO-3's zero.Init, one module at a time (memory.rst "4 (in 4*n_gpus)")
    lb = s.load_bytes
    if stage == 3 and s.zero_init:
        load["model_load"] = Term(lb * c.largest_layer * g, f"{lb} B x {c.largest_layer:,} largest layer x {g} ranks "
                                  "(zero.Init)", f"{doc}: 'largest_layer_params * 4 * n_gpus'")
    else:
        one, what = s.one_copy(P)
        load["model_load"] = Term(one * g, f"{what} x {g} ranks (each builds the whole model)",
                                  s.load_src(f"{doc}: 'params * 4 * n_gpus'"))
    if c.largest_layer == 0 and stage == 3:
        mem.notes.append("the largest layer is unknown (no model config): its gathered bytes are counted as 0")
    return mem


# DeepSpeed's pinned CPU blocks (get_accelerator().pin_memory(t): 'return tensor.pin_memory()' for CUDA,
# accelerator/cuda_accelerator.py v0.14-v0.19.4, abstract_accelerator.py _pin_memory since v0.19.5), read in
# deepspeedai/DeepSpeed@edaa7221 (v0.19.5+27) and the tags named
MASTER_PIN_ALWAYS = ((0, 14, 1), (0, 18, 3))   # PR #5301 pinned the fp32 master partition under any CPU offload;
# PR #7689 ("stage 1-2: don't pin memory if not configured", v0.18.3) put it back under offload_optimizer.pin_memory
DS_PIN12_SRC = (f"{STAGE12}.__init__ (v0.19.5): 'aligned_numel = int(math.ceil(orig_group_numel / alignment)) * "
                "alignment' (alignment = 2 x dp world size) split into dp equal partitions; per param group 'if self."
                "cpu_offload_pin_memory: weights_partition = get_accelerator().pin_memory(weights_partition)' (fp32), "
                "'temp_pinned = get_accelerator().pin_memory(temp_buffer_bit16)'; initialize_optimizer_states: 'single_"
                "partition_of_fp32_groups[i].grad = get_accelerator().pin_memory(single_grad_partition) if self.cpu_"
                "offload_pin_memory'; 'temp_grad_buffer_for_cpu_offload = torch.zeros(largest_param_numel, ..., dtype="
                "self.dtype)' pinned likewise; async_accumulate_grad_in_cpu_via_gpu: 'torch.zeros(param.numel(), dtype="
                "param.dtype, ...)' pinned per parameter in the rank's partition")
DS_PIN3_SRC = (f"{STAGE3} (v0.19.5): partition_numel = ceil(numel / dp) per parameter (partition_parameters.py "
               "_padding_size); 'grad_partitions_flat_buffer = torch.zeros(sum(p.partition_numel() ...), dtype=self."
               "gradient_accumulation_dtype' (the model dtype unless data_types.grad_accum_dtype: engine.py "
               "get_data_types), pinned 'if self.offload_optimizer_pin_memory'; initialize_optimizer_states: "
               "'subgroup_gradient_buffer = get_accelerator().pin_memory(subgroup_gradient_buffer)' (fp32, one per "
               "sub-group: _create_fp16_sub_groups cuts at 'local_sub_group_size >= sub_group_size'); offload_param: "
               "_create_param_groups_fp16_flat_cpu_memory pins one flat buffer per param group, whatever pin_memory; "
               "the fp32 master partition is '.clone().detach()', not pinned")
ONE_GROUP_NOTE = ("pinned blocks counted for one optimizer param group of all trainable parameters, as with a "
                  "DeepSpeed config that has an \"optimizer\" block (transformers deepspeed_optim_sched: "
                  "'optimizer = DummyOptim(params=model_parameters)'); without one the Trainer's own optimizer makes "
                  "a second, small group of the biases and norm weights (Trainer.get_decay_parameter_names), pinned "
                  "as blocks of its own")


def _deepspeed_pinned(mem: Memory, c: Counts, pr: Precision, s: Sharding, off_opt: str, off_par: str,
                      pin: bool) -> None:
    """`pinned_rounding`: the caching host allocator rounds each block DeepSpeed pins up to a power of two, and a
    pinned block is resident whole. Per rank from the trainable tensors' sizes (Counts.tensors), times GPUs/node."""
    stage, N, g = s.zero, s.world_size, s.per_node
    p, m = pr.param_bytes, pr.master_bytes or 4
    version = version_tuple(s.knobs.get("version"))
    kinds: list[str] = []   # what is pinned, before the sizes are needed
    if stage in (1, 2) and off_opt != "none":
        kinds += (["master"] if _master_pinned(version, pin) else []) + (["staging"] if pin and (
            version is None or version >= STAGING_SINCE) else []) + (["grads", "temp"] if pin else [])
        kinds += ["accum"] if pin and pr.grad_accum > 1 else []
        if not pin and version is None:
            mem.notes.append("DeepSpeed's version is unknown: counted as >= 0.18.3, which leaves the fp32 master "
                             "partition unpinned with pin_memory false; 0.14.1 to 0.18.2 pin it anyway (PR #5301, "
                             "undone by PR #7689)")
    elif stage == 3:
        kinds += (["flat_grads"] if pin and off_opt != "none" else []) + (["sub_grads"] if pin and off_opt == "cpu"
                                                                          else [])
        kinds += ["params_flat"] if off_par in ("cpu", "nvme") else []
        if version is not None and version < SWAP_MLOCK_SINCE:   # swap buffers pinned by torch, not mlocked
            kinds += (["param_swap"] if off_par == "nvme" else []) + (["opt_swap"] if off_opt == "nvme" else [])
    if not kinds:
        return
    if not c.tensors:
        mem.notes.append("the trainable tensors are not listed (no model config, or over 2,000,000 of them): the "
                         "pinned host allocator's power-of-two rounding of DeepSpeed's pinned blocks is not counted")
        return
    sizes, total = c.tensors, sum(c.tensors)
    blocks: list[tuple[str, int]] = []   # (what, bytes), the same on every rank
    if stage in (1, 2):
        part = math.ceil(total / (2 * N)) * 2
        named = {"master": (f"fp32 master partition ({m} B x {part:,})", m * part),
                 "staging": (f"bit16 staging ({p} B x {part:,})", p * part),
                 "grads": (f"fp32 gradient partition ({m} B x {part:,})", m * part),
                 "temp": (f"gradient staging ({p} B x largest tensor {max(sizes):,})", p * max(sizes))}
        blocks = [named[k] for k in kinds if k in named]
        src = DS_PIN12_SRC
    else:
        parts = [math.ceil(n / N) for n in sizes]
        flat = sum(parts)
        if "flat_grads" in kinds:
            ga = _grad_accum(s, p)[0]
            blocks.append((f"grad_partitions_flat_buffer ({ga} B x {flat:,})", ga * flat))
        if "sub_grads" in kinds:
            subs = [sum(parts[a:b]) for a, b in _sub_groups(parts, float(s.knob("sub_group_size")))]
            blocks += [(f"fp32 sub-group gradient ({m} B x {n:,})", m * n) for n in subs]
        if "params_flat" in kinds:   # under NVMe offload at most offload_param.max_in_cpu elements
            room = flat if off_par == "cpu" or flat <= float(s.knob("param_max_in_cpu")) else \
                int(float(s.knob("param_max_in_cpu")))
            if room > 0:
                blocks.append((f"bit16 parameter flat buffer ({p} B x {room:,})", p * room))
        # the swap buffers pinned by torch (before 0.19.4): each rank's share of the terms _deepspeed counted
        opt_count = int(s.knob("optimizer_buffer_count"))
        for kind, key, what, elem, count in (
                ("param_swap", "param_swap_buffers", "parameter swap buffers", p, 1),
                ("param_swap", "param_swap_out_buffer", "parameter swap-out buffer", p, 1),
                ("opt_swap", "optimizer_swap_buffers", "optimizer swap buffer", 4, opt_count)):
            if kind in kinds and key in mem.cpu:
                each = round(mem.cpu[key].bytes / g / count)
                blocks += [(f"{what} ({elem} B x {each // elem:,})", each)] * count
        src = DS_PIN3_SRC
    extra = g * sum(pow2_ceil(b) - b for _, b in blocks)
    shown = "; ".join(f"{w}: {_b(b)} -> {_b(pow2_ceil(b))}" for w, b in blocks[:6])
    shown += f"; {len(blocks) - 6} more" if len(blocks) > 6 else ""
    formula = f"{g} GPUs/node x sum(PowerOf2Ceil(block) - block) over each rank's pinned blocks ({shown})"
    if "accum" in kinds:   # per parameter of the rank's partition, so per rank: the fullest node counts
        fullest = _fullest_node(_per_rank(sizes, part, N, lambda n: pow2_ceil(p * n) - p * n), g)
        extra += fullest
        formula += (f" + {_b(fullest)} for the gradient accumulation buffers ({p} B x each tensor in a rank's "
                    f"partition, the fullest node's {g} ranks)")
    mem.cpu["pinned_rounding"] = Term(extra, formula, f"{PINNED_ROUND_SRC}; {src}", False, True)
    mem.notes.append(ONE_GROUP_NOTE)
    if "sub_grads" in kinds:
        mem.notes.append("ZeRO-3 sub-groups cut in module order (embeddings, blocks, final norm, head), each block's "
                         "norm weights taken together; sub_group_size " f"{float(s.knob('sub_group_size')):,.0f}")


# ---------------------------------------------------------------------------------------------------------------
# FSDP


def _fsdp(c: Counts, pr: Precision, s: Sharding) -> Memory:
    mem = Memory(s)
    P, T, g = c.params, c.trainable, s.per_node
    S = s.shards
    ps, pc = pr.param_bytes, pr.compute_bytes
    gpu, cpu, load = mem.gpu, mem.cpu, mem.load
    off = s.offload_params != "none"
    where, node = (cpu, g) if off else (gpu, 1)
    per = f" / {S} shards" + (f" x {g} GPUs/node" if node > 1 else "")
    strategy = {"full": "FULL_SHARD", "shard-grad-op": "SHARD_GRAD_OP", "hybrid": "HYBRID_SHARD (FULL_SHARD within "
                "a node)", "hybrid-zero2": "_HYBRID_SHARD_ZERO2 (SHARD_GRAD_OP within a node)",
                "no-shard": "NO_SHARD (replicated, like DDP)"}[s.fsdp]
    src = f"{FSDP_DOC}: ShardingStrategy.{strategy}"
    where["params_shard"] = Term(pr.weights / S * node, f"{_b(pr.weights)}{per}", src, pinned=off)
    # frozen parameters in the trainable ones' flat parameters: the unit's gradient covers all of its parameters, in
    # the flat parameter's one dtype (FSDP flattens tensors of a uniform dtype): the base's
    G, what, src_g = T, f"{T:,} trainable", src
    if s.frozen_grads:
        G, what, ps = P + T, f"{P + T:,} (frozen ones too)", pc
        src_g = (f"{src}; torch/distributed/fsdp/_wrap_utils.py: a module with both requires_grad=True and False "
                 "parameters under use_orig_params=True: 'the gradient memory usage will be higher than expected "
                 "({total_param_numel} numel instead of {nonfrozen_param_numel} numel before sharding via "
                 "reduce-scatter)'")
        mem.notes.append("frozen and trainable parameters share FSDP flat parameters (use_orig_params=True): the "
                         "gradients cover the frozen ones too")
    no_sync = s.no_sync and pr.grad_accum > 1
    if no_sync:   # on the GPU even with CPUOffload: "the gradients will not be offloaded to CPU when inside the
        # context manager. Instead, they will only be offloaded right after the eventual sync" (no_sync's docstring)
        gpu["grads"] = Term(ps * G, f"{ps} B x {what}, unsharded", src_g + (
            "; FullyShardedDataParallel.no_sync: 'FSDP will accumulate the full model gradients (instead of gradient "
            "shards) until the eventual sync'"))
        mem.notes.append(f"gradient accumulation inside FSDP.no_sync(): every rank keeps the unsharded gradients "
                         f"({_b(ps * G)}) until the synchronizing micro-batch")
    if off:   # a pinned CPU buffer as large as each flat parameter's shard, whatever requires grad
        where["grads_shard"] = Term(pr.weights / S * node, f"{_b(pr.weights)}{per} (one pinned gradient buffer per "
                                    "flat parameter shard, in its dtype, frozen ones included)", CPU_GRAD_SRC,
                                    pinned=True)
    elif not no_sync:   # the synchronized shard (on the GPU it takes the unsharded gradients' place)
        where["grads_shard"] = Term(ps * G / S * node, f"{ps} B x {what}{per}", src_g)
    where["optimizer_states"] = Term(pr.state_bytes / S * node, f"{_b(pr.state_bytes)}{per}", src)
    unit = c.largest_unit
    if s.fsdp in ("full", "hybrid"):
        gpu["params_unsharded"] = Term(2 * unit * pc, f"2 x {unit:,} largest-unit params x {pc} B (the unit "
                                       "computing and the one prefetched; limit_all_gathers)", src, False)
        gpu["grads_unsharded"] = Term(unit * pc, f"{unit:,} x {pc} B (a unit's gradient before its reduce-scatter)",
                                      src, False)
    elif s.fsdp in ("shard-grad-op", "hybrid-zero2"):
        gpu["params_unsharded"] = Term(P * pc, f"{P:,} x {pc} B (parameters stay unsharded from forward to the "
                                       "end of backward)", src, False)
        gpu["grads_unsharded"] = Term(unit * pc, f"{unit:,} x {pc} B", src, False)
    one, what = s.one_copy(P)
    if s.ram_efficient_loading:   # transformers: is_fsdp_enabled() and not is_local_dist_rank_0() -> meta device
        load["model_load"] = Term(one, f"{what} x 1 rank (local rank 0 loads, the other {g - 1} build on meta)",
                                  s.load_src(RAM_EFFICIENT_SRC), False)
    else:
        load["model_load"] = Term(one * g, f"{what} x {g} ranks (each builds the model before wrapping it)",
                                  s.load_src(f"{DS_MEMORY_DOC}: 'params * 4 * n_gpus'; accelerate "
                                             "FullyShardedDataParallelPlugin: cpu_ram_efficient_loading defaults to "
                                             "False (FSDP_CPU_RAM_EFFICIENT_LOADING unset)"), False)
    if off:
        _fsdp_offload(mem, c, pr, s)
        mem.notes.append("FSDP CPUOffload(offload_params=True) keeps the parameter and gradient shards on the CPU "
                         "(pinned) and runs the optimizer step there")
    if c.largest_unit == 0:
        mem.notes.append("the largest FSDP unit is unknown (no model config): its unsharded bytes are counted as 0")
    return mem


def pow2_ceil(n: int) -> int:
    """c10::llvm::PowerOf2Ceil: the least power of two >= n (0 for 0)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


def _fsdp_offload(mem: Memory, c: Counts, pr: Precision, s: Sharding) -> None:
    """CPUOffload's pinned blocks, rounded up to powers of two, and its lazy init, when every unpinned shard still
    sits beside its pinned copy (the peak when the optimizer state is small, as with LoRA)."""
    S, g, cpu = s.shards, s.per_node, mem.cpu
    if c.units:   # FSDP pads each flat parameter to a multiple of its shards; each rank pins its own shard
        shards = [(math.ceil(b / e / S) * e, n) for b, e, n in c.units]
        extra = sum((pow2_ceil(int(a)) - a) * n for a, n in shards)
        count = sum(n for _, n in shards)
        cpu["pinned_rounding"] = Term(2 * extra * g, f"2 x sum(PowerOf2Ceil(shard) - shard) over {count:,} flat "
                                      f"parameters x {g} GPUs/node (each parameter shard and its gradient buffer)",
                                      PINNED_ROUND_SRC, False, True)
    else:
        mem.notes.append("the FSDP units are unknown (no model config): the pinned host allocator's power-of-two "
                         "rounding of each shard is not counted")
    mem.init["unpinned_shards"] = Term(pr.weights / S * g, f"{_b(pr.weights)} / {S} shards x {g} GPUs/node, freed "
                                       "at each unit's first forward", LAZY_INIT_SRC, False)
    mem.init.update({k: cpu[k] for k in ("params_shard", "grads_shard", "pinned_rounding") if k in cpu})


def memory(c: Counts, pr: Precision, s: Sharding) -> Memory:
    """GPU per rank, CPU per node, NVMe per node of one training step's persistent state under `s`."""
    if s.engine == "fsdp":
        return _fsdp(c, pr, s)
    if s.engine == "ddp":   # replicated: per-rank GPU state is the single-GPU figure; each rank loads the model
        mem = Memory(s)
        one, what = s.one_copy(c.params)
        mem.load["model_load"] = Term(one * s.per_node, f"{what} x {s.per_node} ranks",
                                      s.load_src(f"{DS_MEMORY_DOC}: 'params * 4 * n_gpus'"), False)
        return mem
    return _deepspeed(c, pr, s)


def deepspeed_figures(c: Counts, s: Sharding) -> dict[str, Any] | None:
    """DeepSpeed's estimator figures for the same set-up (ZeRO-2 / ZeRO-3 with none / CPU offload), with the
    1.5x buffer shown separately; None where its estimator has no function for the set-up."""
    if s.engine != "deepspeed" or s.zero not in (2, 3) or "nvme" in (s.offload_optimizer, s.offload_params):
        return None
    if s.offload_params != "none" and s.offload_optimizer == "none":   # no such case in the ZeRO-3 function
        return None                                                    # (its all_cold table skips it too)
    kw: dict[str, Any] = {"num_gpus_per_node": s.per_node, "num_nodes": s.nodes}
    if s.zero == 2:
        fn, off = ZERO2_FN, s.offload_optimizer != "none"
        cpu0, gpu = deepspeed_estimate_zero2(c.params, cpu_offload=off, additional_buffer_factor=1, **kw)
        cpu, _ = deepspeed_estimate_zero2(c.params, cpu_offload=off, **kw)
    else:
        fn = ZERO3_FN
        flags = {"cpu_offload": s.offload_optimizer != "none", "cpu_offload_params": s.offload_params != "none",
                 "zero_init": s.zero_init}
        cpu0, gpu, _ = deepspeed_estimate_zero3(c.params, c.largest_layer, additional_buffer_factor=1, **flags, **kw)
        cpu, _, _ = deepspeed_estimate_zero3(c.params, c.largest_layer, **flags, **kw)
    return {"function": fn, "cpu_per_node_bytes": cpu0, "buffer_factor": BUFFER_FACTOR,
            "buffer_bytes": cpu - cpu0, "cpu_per_node_with_buffer_bytes": cpu, "gpu_per_rank_bytes": gpu,
            "counts": {"total_params": c.params, "largest_layer_params": c.largest_layer},
            "note": "model states only (no activations, buckets or staging buffers), as DeepSpeed documents them"}


# ---------------------------------------------------------------------------------------------------------------
# a DeepSpeed JSON config -> sharding knobs


def _int_like(value: Any) -> int | None:
    """A DeepSpeed size: an int, or a float such as 5e8 (DeepSpeed accepts both); 'auto' and the rest -> None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int(value) if 0 <= value <= 1e15 else None


def from_deepspeed_config(config: Any) -> tuple[dict[str, Any], list[str]]:
    """(Workload fields, notes) from a parsed DeepSpeed config: ZeRO stage, offload devices, pin_memory, NVMe
    path, bucket sizes, gradient accumulation and the bf16 / fp16 sections. Values DeepSpeed would not accept
    ("auto" aside) are ignored with a note; the deepspeed.config check judges the file itself."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if not isinstance(config, dict):
        return fields, ["the DeepSpeed config is not a JSON object; its ZeRO settings were not read"]
    zero = config.get("zero_optimization")
    if zero is None:
        zero = {}
    if isinstance(zero, bool):   # DeepSpeed's older form (runtime/zero/config.py read_zero_config_deprecated)
        zero = {"stage": 1 if zero else 0}
    if not isinstance(zero, dict):
        return fields, ["zero_optimization is not an object; stage 0 assumed"]
    stage = zero.get("stage", 0)
    fields["zero"] = stage if isinstance(stage, int) and not isinstance(stage, bool) and 0 <= stage <= 3 else 0
    if fields["zero"] != stage:
        notes.append(f"zero_optimization.stage {str(stage)[:20]!r} is not 0-3; stage 0 assumed")
    knobs: dict[str, Any] = {}
    for key in ("offload_optimizer", "offload_param"):
        sect = zero.get(key)
        if sect is None:
            continue
        if not isinstance(sect, dict):
            notes.append(f"zero_optimization.{key} is not an object; ignored")
            continue
        device = sect.get("device", "none")
        device = device if device in OFFLOAD else "none"
        fields["offload_optimizer" if key == "offload_optimizer" else "offload_params"] = device
        if isinstance(sect.get("pin_memory"), bool):
            knobs["pin_memory"] = sect["pin_memory"] if key == "offload_optimizer" or "pin_memory" not in knobs \
                else knobs["pin_memory"] and sect["pin_memory"]
        if isinstance(sect.get("nvme_path"), str) and device == "nvme":
            knobs["nvme_path"] = sect["nvme_path"]
            # each section's own path: the NVMe figure is one total, which two filesystems would split
            knobs["nvme_paths"] = sorted({*knobs.get("nvme_paths", []), sect["nvme_path"]})
        prefix = "param" if key == "offload_param" else "optimizer"
        for name in ("buffer_count", "buffer_size", "max_in_cpu"):
            value = _int_like(sect.get(name))
            if value is not None and (prefix == "param" or name == "buffer_count"):
                knobs[f"{prefix}_{name}"] = value
    for key in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
                "stage3_max_live_parameters", "stage3_param_persistence_threshold", "sub_group_size"):
        alias = key.removeprefix("stage3_")
        value = zero.get(key, zero.get(alias))
        if value is None:
            continue
        number = _int_like(value)
        if value == "auto" and key in AUTO_KEYS:
            knobs[key] = "auto"   # resolved from the model's hidden size (resolve_auto)
        elif number is None:
            notes.append(f"zero_optimization.{key} is {str(value)[:20]!r}; DeepSpeed's default "
                         f"{DS_DEFAULTS[key]:,} used")
        else:
            knobs[key] = number
    for key in ("overlap_comm", "contiguous_gradients"):
        if isinstance(zero.get(key), bool):
            knobs[key] = zero[key]
    # ZeRO-3 saves a gathered 16-bit model with each checkpoint (doctor/vram/checkpoint.py); config.py alias
    gather = zero.get("stage3_gather_16bit_weights_on_model_save", zero.get("gather_16bit_weights_on_model_save"))
    if isinstance(gather, bool):
        knobs["stage3_gather_16bit_weights_on_model_save"] = gather
    aio = config.get("aio")
    intra = _int_like(aio.get("intra_op_parallelism")) if isinstance(aio, dict) else None
    if intra:
        knobs["aio_intra_op_parallelism"] = intra   # the NVMe swap buffers' alignment (swap_tensor/utils.py)
    enabled = {k: (v.get("enabled") if isinstance(v, dict) else None) for k in ("bf16", "fp16")
               for v in [_precision(config, k)]}
    if enabled["bf16"] is True:
        fields["dtype"] = "bf16"
    elif enabled["fp16"] is True:
        fields["dtype"] = "fp16"
    elif "auto" not in enabled.values() and not isinstance(config.get("amp"), dict):
        fields["dtype"] = "fp32"   # no bf16 / fp16 section enabled: DeepSpeed trains in fp32
    types = config.get("data_types")
    accum = types.get("grad_accum_dtype") if isinstance(types, dict) else None
    if isinstance(accum, str) and accum.lower() in GRAD_ACCUM_BYTES:
        knobs["grad_accum_dtype"] = accum.lower()   # ZeRO-3's CPU gradient partitions (grad_partitions_flat)
    elif accum is not None:
        notes.append(f"data_types.grad_accum_dtype is {str(accum)[:20]!r}; expected fp32, bf16 or fp16: the model "
                     "dtype assumed")
    ga = _int_like(config.get("gradient_accumulation_steps"))
    if ga:
        fields["grad_accum"] = ga
    mb = _int_like(config.get("train_micro_batch_size_per_gpu"))
    if mb:
        fields["batch"] = mb
    fields["ds_knobs"] = knobs
    return fields, notes


# transformers integrations/deepspeed.py HfTrainerDeepSpeedConfig.trainer_config_finalize (and accelerate's
# Accelerator._prepare_deepspeed, the same formulas) fill these "auto" values from model.config.hidden_size
AUTO_KEYS = ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold")
AUTO_SRC = ("transformers src/transformers/integrations/deepspeed.py@02348331 HfTrainerDeepSpeedConfig."
            "trainer_config_finalize: fill_only('zero_optimization.reduce_bucket_size', hidden_size * hidden_size); "
            "ZeRO-3: stage3_prefetch_bucket_size 0.9 * hidden_size * hidden_size (int(...) in transformers 5 and "
            "accelerate's Accelerator._prepare_deepspeed), stage3_param_persistence_threshold 10 * hidden_size")


def resolve_auto(knobs: dict[str, Any], hidden: int | None, stage: int) -> tuple[dict[str, Any], list[str]]:
    """The knobs with HF's "auto" values filled in as transformers / accelerate do, from the model's hidden size
    (`auto_resolved` names each formula). The prefetch and persistence keys are filled under ZeRO-3 only; a value
    left "auto" counts as DeepSpeed's default, with a note."""
    autos = [k for k in AUTO_KEYS if knobs.get(k) == "auto"]
    if not autos:
        return knobs, []
    out = {k: v for k, v in knobs.items() if k not in autos}
    if not hidden:
        return out, [f"zero_optimization.{k} is \"auto\" and the model's hidden size is unknown (no model config): "
                     f"DeepSpeed's default {DS_DEFAULTS[k]:,} counted (HF fills hidden_size-based values)" for k in autos]
    rules = {"reduce_bucket_size": (hidden * hidden, f"hidden_size^2 = {hidden}^2"),
             "stage3_prefetch_bucket_size": (int(0.9 * hidden * hidden), f"int(0.9 x hidden_size^2) = 0.9 x {hidden}^2"),
             "stage3_param_persistence_threshold": (10 * hidden, f"10 x hidden_size = 10 x {hidden}")}
    resolved = dict(out.get("auto_resolved") or {})
    notes = []
    for key in autos:
        if key != "reduce_bucket_size" and stage != 3:
            continue   # fill_only under is_zero3() only; DeepSpeed reads these in ZeRO-3 alone
        out[key], resolved[key] = rules[key]
        notes.append(f"zero_optimization.{key} \"auto\" -> {rules[key][0]:,} ({rules[key][1]}; {AUTO_SRC.split(':')[0]})")
    out["auto_resolved"] = resolved
    return out, notes


BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size",
               "stage3_max_live_parameters", "stage3_param_persistence_threshold", "sub_group_size")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A config value as the file spells it (JSON), cut to 20 characters."""
    text = json.dumps(value)
    return text if len(text) <= 20 else text[:17] + "..."


def _precision(config: dict[str, Any], key: str) -> Any:
    """The bf16 / fp16 section, bf16 under its older name too (runtime/config.py get_bfloat16_config falls back to
    param_dict["bfloat16"])."""
    return config.get(key, config.get("bfloat16")) if key == "bf16" else config.get(key)


def explicit_precision(config: Any) -> bool:
    """Whether the config turns bf16 or fp16 on or off itself (true / false, not "auto" or absent): then DeepSpeed
    trains in that precision whatever the job's own dtype says; absent, the HF Trainer / accelerate adds the section
    from its mixed precision (DeepSpeedPlugin.set_mixed_precision), so the job's dtype stands."""
    return isinstance(config, dict) and any(
        isinstance(sect, dict) and isinstance(sect.get("enabled"), bool)
        for sect in (_precision(config, "bf16"), config.get("fp16")))


def deepspeed_problems(config: Any) -> list[tuple[str, str]]:
    """(key, what is wrong and what DeepSpeed expects) for each value of a DeepSpeed config that DeepSpeed
    refuses (docs/_pages/config-json.md; runtime/config.py asserts, the pydantic zero config's types), so that
    doctor never models a value it had to replace; "auto" (the HF integration fills it) is accepted."""
    if not isinstance(config, dict):
        return [("", f"is a {type(config).__name__}; expected a JSON object (a DeepSpeed config)")]
    out: list[tuple[str, str]] = []
    zero = config.get("zero_optimization")
    if isinstance(zero, bool):   # the older form: true is stage 1
        zero = {"stage": 1 if zero else 0}
    if zero is not None and not isinstance(zero, dict):
        out.append(("zero_optimization", f"is {_shown(zero)}; expected an object such as {{\"stage\": 2}}"))
        zero = None
    zero = zero or {}
    stage = zero.get("stage", 0)
    if not (_whole(stage) and 0 <= stage <= 3):
        out.append(("zero_optimization.stage", f"is {_shown(stage)}; expected the integer 0, 1, 2 or 3"))
    for key in ("offload_optimizer", "offload_param"):
        sect = zero.get(key)
        if sect is None:
            continue
        if not isinstance(sect, dict):
            out.append((f"zero_optimization.{key}", f"is {_shown(sect)}; expected an object such as "
                                                   '{"device": "cpu"}'))
        elif sect.get("device", "none") not in OFFLOAD:
            out.append((f"zero_optimization.{key}.device", f"is {_shown(sect.get('device'))}; expected "
                                                          "\"none\", \"cpu\" or \"nvme\""))
    for key in BUCKET_KEYS:
        value = zero.get(key, zero.get(key.removeprefix("stage3_")))
        if value is not None and value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                                      or value < 0):
            out.append((f"zero_optimization.{key}", f"is {_shown(value)}; expected a number of elements, 0 or "
                                                    "more"))
    enabled = {}
    for key in ("bf16", "fp16"):
        sect = _precision(config, key)
        if sect is None:
            continue
        if not isinstance(sect, dict):
            out.append((key, f"is {_shown(sect)}; expected an object such as {{\"enabled\": true}}"))
            continue
        value = sect.get("enabled", False)
        if not (isinstance(value, bool) or value == "auto"):
            out.append((f"{key}.enabled", f"is {_shown(value)}; expected true, false or \"auto\""))
        enabled[key] = value is True
    if enabled.get("bf16") and enabled.get("fp16"):   # runtime/config.py: "bf16 and fp16 modes cannot be
        # simultaneously enabled"
        out.append(("bf16.enabled", "and fp16.enabled are both true; DeepSpeed allows one of them"))
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        value = config.get(key)
        if value is not None and value != "auto" and not (_whole(value) and value > 0):
            out.append((key, f"is {_shown(value)}; expected a whole number of at least 1 (or \"auto\")"))
    return out


def parse_deepspeed_text(text: str) -> tuple[dict[str, Any], list[str]]:
    """`from_deepspeed_config` over the config's text (what profile loading attaches); unreadable -> no fields."""
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        return {}, ["the DeepSpeed config is not valid JSON (see deepspeed.config); its ZeRO settings were not read"]
    return from_deepspeed_config(config)
