"""DeepSpeed's pinned CPU blocks rounded up to powers of two by PyTorch's caching host allocator (`pinned_rounding`,
doctor/vram/distributed.py _deepspeed_pinned). Figures below are worked by hand from llama-2-7b's shapes
(hidden 4096, intermediate 11008, 32 layers, vocab 32000, untied head: 6,738,415,616 parameters) and the DeepSpeed
lines quoted in the term's source (stage_1_and_2.py / stage3.py, v0.19.5)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from doctor.vram.arch import from_config
from doctor.vram.estimator import Workload, distributed_memory

MODELS = Path(__file__).parents[1] / "doctor" / "data" / "models"
LLAMA = from_config(json.loads((MODELS / "llama-2-7b.json").read_text()), name="llama-2-7b")
T = 6_738_415_616
EMB = 32000 * 4096
GIB = 2**30
ZERO2 = Workload(dtype="bf16", zero=2, world_size=1, offload_optimizer="cpu", ds_knobs={"pin_memory": True})


def _up(n: int) -> int:
    """The least power of two >= n, by doubling (independent of the code under test)."""
    k = 1
    while k < n:
        k *= 2
    return k


def _pinned(wl: Workload, params: int | None = None):
    mem = distributed_memory(None if params else LLAMA, wl, params)
    return mem, mem.cpu.get("pinned_rounding")


def test_llama_7b_zero2_offload_pins_power_of_two_blocks():
    """One GPU: the fp32 master partition (4 B x 6,738,415,616 = 25.10 GiB) takes a 32 GiB block, and so does the
    fp32 gradient partition; the bf16 staging copy (12.55 GiB) a 16 GiB one; the bf16 gradient staging buffer
    (the embedding, 32000 x 4096 x 2 B = 250 MiB) a 256 MiB one."""
    assert T == LLAMA.params
    mem, term = _pinned(ZERO2)
    assert term is not None and term.pinned and not term.states
    assert _up(4 * T) == 32 * GIB and _up(2 * T) == 16 * GIB and _up(2 * EMB) == 256 * 2**20
    want = 2 * (32 * GIB - 4 * T) + (16 * GIB - 2 * T) + (256 * 2**20 - 2 * EMB)
    assert term.bytes == want == 18_521_481_216
    assert "25.10 GiB -> 32.00 GiB" in term.formula and "CachingHostAllocator.h" in term.source
    assert any("one optimizer param group" in n for n in mem.notes)
    # not a model state: DeepSpeed's estimator comparison (cpu_states) is the same without pinning
    unpinned, none = _pinned(replace(ZERO2, ds_knobs={"pin_memory": False, "version": "0.19.5"}))
    assert none is None and mem.cpu_states == unpinned.cpu_states
    assert mem.cpu_training - unpinned.cpu_training == pytest.approx(want)


def test_two_gpus_halve_the_partitions_and_count_both_ranks():
    """World size 2 on one node: each rank's partitions hold ceil(T / 4) x 2 = 3,369,207,808 elements (the group
    aligned to 2 x world size); 4 B x that = 12.55 GiB -> 16 GiB, 2 B -> 8 GiB; two ranks' blocks per node."""
    part = 3_369_207_808
    _, term = _pinned(replace(ZERO2, world_size=2))
    assert _up(4 * part) == 16 * GIB and _up(2 * part) == 8 * GIB
    want = 2 * (2 * (16 * GIB - 4 * part) + (8 * GIB - 2 * part) + (256 * 2**20 - 2 * EMB))
    assert term.bytes == want


def test_pin_memory_false_pins_nothing_from_0_18_3_but_the_master_partition_before():
    """PR #5301 (v0.14.1) pinned the fp32 master partition under any CPU offload; PR #7689 (v0.18.3) gated it on
    pin_memory again. v0.16.9 also predates the bit16 staging buffer (PR #7309, v0.17.0)."""
    off = {"pin_memory": False}
    for version in ("0.18.3", "0.19.5", "0.14.0"):
        assert _pinned(replace(ZERO2, ds_knobs={**off, "version": version}))[1] is None
    _, term = _pinned(replace(ZERO2, ds_knobs={**off, "version": "0.17.5"}))
    assert term.bytes == 32 * GIB - 4 * T
    _, term = _pinned(replace(ZERO2, ds_knobs={"pin_memory": True, "version": "0.16.9"}))
    assert term.bytes == 2 * (32 * GIB - 4 * T) + (256 * 2**20 - 2 * EMB)   # no bit16 staging block
    mem, term = _pinned(replace(ZERO2, ds_knobs=off))
    assert term is None and any("0.14.1 to 0.18.2 pin it anyway" in n for n in mem.notes)


def test_unset_pin_memory_follows_the_version_default():
    """offload_config.py: 'pin_memory: bool = False' up to v0.19.4, 'True' from v0.19.5 (PR #8207)."""
    assert _pinned(replace(ZERO2, ds_knobs={"version": "0.19.4"}))[1] is None
    assert _pinned(replace(ZERO2, ds_knobs={"version": "0.19.5"}))[1].bytes == 18_521_481_216
    mem, term = _pinned(replace(ZERO2, ds_knobs={}))
    assert term.bytes == 18_521_481_216 and any("default since 0.19.5" in n for n in mem.notes)


def test_gradient_accumulation_pins_one_block_per_parameter():
    """accumulated_grads_in_cpu: a bf16 buffer of each parameter's numel. Per layer the 32 MiB attention
    projections are powers of two; gate / up / down (2 B x 45,088,768 = 86 MiB) take 128 MiB each (96 of them);
    the embedding and the head (250 MiB) 256 MiB each; the norms (8 KiB per layer) are powers of two."""
    _, one = _pinned(ZERO2)
    _, four = _pinned(replace(ZERO2, grad_accum=4))
    mlp = 2 * 11008 * 4096
    assert _up(mlp) == 128 * 2**20
    assert four.bytes - one.bytes == 96 * (128 * 2**20 - mlp) + 2 * (256 * 2**20 - 2 * EMB) == 4_240_441_344


def test_zero3_sub_group_size_splits_the_pinned_gradient_blocks():
    """ZeRO-3 optimizer offload, one GPU: the bf16 grad_partitions_flat_buffer (12.55 GiB -> 16 GiB) and one fp32
    gradient buffer per sub-group. With sub_group_size 1e9 the first sub-group closes at the tensor that reaches it:
    the embedding (131,072,000) + 4 layers of 202,383,360 = 940,605,440, then layer 5's q, k, v, o (16,777,216 each)
    -> 1,007,714,304 elements (3.75 GiB -> 4 GiB). Without the split, one fp32 block of 25.10 GiB -> 32 GiB."""
    z3 = replace(ZERO2, zero=3)
    _, split = _pinned(z3)
    assert "fp32 sub-group gradient (4 B x 1,007,714,304): 3.75 GiB -> 4.00 GiB" in split.formula
    _, whole = _pinned(replace(z3, ds_knobs={"pin_memory": True, "sub_group_size": 10**12}))
    assert whole.bytes == (16 * GIB - 2 * T) + (32 * GIB - 4 * T)
    assert split.bytes != whole.bytes
    # the fp32 master partition is '.clone().detach()' (pageable) under ZeRO-3: no block of its own
    assert "master" not in split.formula


def test_zero3_parameter_offload_pins_its_flat_buffer_whatever_pin_memory():
    """_create_param_groups_fp16_flat_cpu_memory pins one bf16 flat buffer per param group unconditionally."""
    wl = Workload(dtype="bf16", zero=3, world_size=1, offload_params="cpu", ds_knobs={"pin_memory": False})
    _, term = _pinned(wl)
    assert term.bytes == 16 * GIB - 2 * T


def test_no_model_config_counts_no_rounding_and_says_so():
    mem, term = _pinned(ZERO2, params=7_000_000_000)
    assert term is None
    assert any("trainable tensors are not listed" in n for n in mem.notes)


def test_a_config_with_a_billion_layers_lists_no_tensors_and_returns_at_once():
    """trainable_tensors stops before enumerating 10^9 blocks (bad input a user can give as a config.json)."""
    import time

    arch = from_config({"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "num_hidden_layers": 10**9, "vocab_size": 128})
    t0 = time.perf_counter()
    mem = distributed_memory(arch, Workload(method="full", dtype="bf16", zero=2, offload_optimizer="cpu",
                                            world_size=8))
    assert time.perf_counter() - t0 < 5
    assert mem is not None and "pinned_rounding" not in mem.cpu
    assert any("trainable tensors are not listed" in n for n in mem.notes)


# --------------------------------------------------------------------------------------------------------------
# which terms are pinned, ZeRO-3's gradient partitions in the accumulation dtype, and ZeRO-1/2's per-tensor
# accumulation buffers (DeepSpeed lines quoted in doctor/vram/distributed.py GRAD_FLAT_SRC, GRAD_NVME_SRC,
# DS_PIN3_SRC and the offload_grad_accumulation term's source; deepspeedai/DeepSpeed@edaa7221)

Z3 = Workload(dtype="bf16", zero=3, world_size=8, offload_optimizer="cpu", offload_params="cpu",
              ds_knobs={"pin_memory": True, "version": "0.19.5"})
# llama-2-7b's tensors in model.parameters() order: q, k, v, o (4096 x 4096), gate, up, down (11008 x 4096), two
# norms (4096 each) per layer; the embedding and the head (32000 x 4096), the final norm (4096)
LAYER = [4096 * 4096] * 4 + [11008 * 4096] * 3 + [4096, 4096]


def test_zero3_master_partition_is_pageable_and_zero2s_follows_the_version():
    """stage3.py: 'self.fp32_partitioned_groups_flat.append(converted.clone().detach())', never pinned. ZeRO-1/2:
    pinned under any CPU offload from 0.14.1 to 0.18.2 (PR #5301), never before, with pin_memory from 0.18.3."""
    mem = distributed_memory(LLAMA, Z3)
    assert not mem.cpu["master_params_fp32"].pinned and mem.cpu["grads_fp32"].pinned
    assert mem.pinned_bytes == sum(t.bytes for k, t in mem.cpu.items() if k != "master_params_fp32"
                                   and k != "optimizer_states")
    for version, pin, pinned in (("0.14.0", True, False), ("0.14.1", False, True), ("0.18.2", False, True),
                                 ("0.18.3", False, False), ("0.19.5", True, True), ("0.19.5", False, False)):
        z2 = distributed_memory(LLAMA, replace(ZERO2, ds_knobs={"pin_memory": pin, "version": version}))
        assert z2.cpu["master_params_fp32"].pinned is pinned, (version, pin)


def test_zero3_cpu_offload_adds_the_flat_gradient_buffer_in_the_model_dtype():
    """grad_partitions_flat_buffer: sum(p.partition_numel()) = sum of ceil(numel / 3) over the trainable tensors on
    3 ranks: per layer 4 x 5,592,406 + 3 x 15,029,590 + 2,731 (Counts.tensors takes a block's two 4096 norms as one
    tensor of 8192; DeepSpeed's 2 x 1,366 is one element more per layer, 32 in all) = 67,461,125; embedding and
    head 43,690,667 each, final norm 1,366; bf16 2 B each, pinned, x 3 ranks. Not a model state: cpu_states (held
    to DeepSpeed's estimator) is the same figure as without the term; the fp32 gradients (4 B) stay as the
    estimator's term."""
    assert -(-4096 * 4096 // 3) == 5_592_406 and -(-11008 * 4096 // 3) == 15_029_590 and -(-8192 // 3) == 2_731
    flat = 32 * (4 * 5_592_406 + 3 * 15_029_590 + 2_731) + 2 * 43_690_667 + 1_366
    assert flat == 2_246_138_700 > T // 3
    mem = distributed_memory(LLAMA, replace(Z3, world_size=3))
    term = mem.cpu["grad_partitions_flat"]
    assert term.bytes == 2 * flat * 3 and term.pinned and not term.states
    assert mem.cpu_states == pytest.approx(18 * T, rel=1e-6)   # estimate_zero3: total_params * 18 * gpus_factor
    assert mem.cpu["grads_fp32"].bytes == pytest.approx(4 * T)
    # data_types.grad_accum_dtype fp32 makes it 4 B; pin_memory false leaves it pageable
    fp32 = distributed_memory(LLAMA, replace(Z3, world_size=3, ds_knobs={"grad_accum_dtype": "fp32",
                                                                          "pin_memory": False, "version": "0.19.5"}))
    assert fp32.cpu["grad_partitions_flat"].bytes == 4 * flat * 3 and not fp32.cpu["grad_partitions_flat"].pinned
    # no model config: trainable / N
    bare = distributed_memory(None, Z3, 7_000_000_000)
    assert bare.cpu["grad_partitions_flat"].bytes == pytest.approx(2 * 7e9 / 8 * 8)
    # the estimate grew by the buffer; ZeRO-3 without optimizer offload keeps it on the GPU
    assert "grad_partitions_flat" not in distributed_memory(LLAMA, replace(Z3, offload_optimizer="none",
                                                                           offload_params="none")).cpu


def test_zero3_nvme_offload_swaps_the_fp32_gradients_and_keeps_the_bit16_ones_in_ram():
    """_offload_grad_partition_at_boundary: a swappable sub-group's fp32 gradients go to swap_out_gradients (files
    '{param_id}_gradient_{offset}_{length}.tensor.swp' on nvme_path): NVMe holds 4 + 4 + 8 B per parameter of the
    rank's partition; RAM the 2 B grad_partitions_flat_buffer."""
    wl = replace(Z3, offload_optimizer="nvme", offload_params="none", ds_knobs={"nvme_path": "/nvme"})
    mem = distributed_memory(LLAMA, wl)
    assert "grads_fp32" not in mem.cpu and mem.nvme["grads_fp32"].bytes == pytest.approx(4 * T)
    assert mem.nvme_bytes == pytest.approx(16 * T)
    assert mem.cpu["grad_partitions_flat"].bytes == 2 * T   # T / 8 exact for every tensor
    assert "swap_out_gradients" in mem.nvme["grads_fp32"].source


def test_zero2_accumulation_buffer_of_a_straddling_tensor_is_held_by_both_ranks():
    """Four tensors of 5, 10, 9 elements on 2 ranks: partitions of ceil(24 / 4) x 2 = 12; rank 0 holds the 5 and
    the 10 (which straddles), rank 1 the 10 and the 9: 34 elements x 2 B on one node of two, 19 x 2 B on the
    fuller of two one-GPU nodes; without the tensor list, 2 B x 24 / 2 x GPUs/node as before."""
    from doctor.vram.distributed import Counts, Precision, Sharding, memory

    pr = Precision(weights=48, param_bytes=2, state_bytes=8 * 24, grad_accum=4)
    s = Sharding(zero=2, world_size=2, offload_optimizer="cpu", knobs={"pin_memory": False, "version": "0.19.5"})
    c = Counts(24, 24, tensors=(5, 10, 9))
    assert memory(c, pr, s).cpu["offload_grad_accumulation"].bytes == 2 * 34
    assert memory(c, pr, replace(s, gpus_per_node=1)).cpu["offload_grad_accumulation"].bytes == 2 * 19
    assert memory(replace(c, tensors=()), pr, s).cpu["offload_grad_accumulation"].bytes == 2 * 24 / 2 * 2


def test_llama_7b_zero2_accumulation_on_8_ranks_counts_the_seven_straddling_tensors_twice():
    """Partitions of ceil(T / 16) x 2 = 842,301,952 elements; the boundaries fall inside layer 3's gate, 7's up,
    11's down, 16's q, 20's k, 24's o and 28's gate (offsets from the embedding, 131,072,000, and 202,383,360 per
    layer): one node of 8 holds T + 4 x 45,088,768 + 3 x 16,777,216 elements of bf16 buffers."""
    assert sum(LAYER) == 202_383_360 and 2 * EMB + 4096 + 32 * sum(LAYER) == T
    mem = distributed_memory(LLAMA, replace(ZERO2, world_size=8, grad_accum=4))
    held = T + 4 * 11008 * 4096 + 3 * 4096 * 4096
    assert mem.cpu["offload_grad_accumulation"].bytes == 2 * held == 13_938_204_672
    assert 2 * held > 2 * T   # the old 2 B x T / N x 8 figure


def test_deepspeed_config_data_types_grad_accum_dtype_sizes_the_zero3_gradient_partitions():
    """A config's "data_types": {"grad_accum_dtype": "fp32"} (as DeepSpeed-Chat writes for bf16) makes ZeRO-3's CPU
    gradient partitions 4 B per parameter instead of the model dtype's 2 B; an unknown value is a note."""
    from doctor.vram.distributed import from_deepspeed_config

    base = {"bf16": {"enabled": True}, "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    fields, notes = from_deepspeed_config(dict(base, data_types={"grad_accum_dtype": "fp32"}))
    assert fields["ds_knobs"]["grad_accum_dtype"] == "fp32" and not notes
    arch = from_config({"model_type": "llama", "hidden_size": 64, "intermediate_size": 176, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 128})
    wl = Workload(method="full", dtype="bf16", zero=3, offload_optimizer="cpu", world_size=2)
    two = distributed_memory(arch, wl).cpu["grad_partitions_flat"].bytes
    fp32 = replace(wl, ds_knobs={"grad_accum_dtype": "fp32"})
    four = distributed_memory(arch, fp32).cpu["grad_partitions_flat"].bytes
    assert four == 2 * two > 0
    _, notes = from_deepspeed_config(dict(base, data_types={"grad_accum_dtype": "int3"}))
    assert any("grad_accum_dtype" in n for n in notes)


NVME = Workload(dtype="bf16", zero=3, world_size=8, offload_optimizer="nvme", offload_params="nvme",
                ds_knobs={"nvme_path": "/nvme", "version": "0.19.5"})


def test_zero3_nvme_parameter_offload_reserves_a_swap_out_buffer_of_whole_parameters():
    """stage3.py reserve_partitioned_swap_space: once a sub-group has no flat CPU buffer (past max_in_cpu), one
    page-locked buffer of the whole numel (ds_numel, not the partition) of the largest sub-group's parameters. On 8
    ranks llama-2-7b's partitions (T / 8 = 842,301,952) form one sub-group under sub_group_size 1e9: with max_in_cpu
    1e8 that group gets no flat buffer, and the reserve is every parameter whole (each a multiple of the 512-element
    alignment): 2 B x T per rank, 8 ranks per node."""
    mem = distributed_memory(LLAMA, replace(NVME, ds_knobs=dict(NVME.ds_knobs, param_max_in_cpu=10**8)))
    term = mem.cpu["param_swap_out_buffer"]
    assert term.bytes == 2 * T * 8 == 107_814_649_856 and term.pinned and not term.states
    assert "ds_numel" in term.source
    # the default max_in_cpu (1e9) holds the whole partition: no reserve
    assert "param_swap_out_buffer" not in distributed_memory(LLAMA, NVME).cpu


def test_the_swap_out_buffer_is_the_largest_sub_group():
    """One GPU (partition = whole tensor): max_in_cpu 1e9 leaves the first sub-group (1,007,714,304 elements, see
    test_zero3_sub_group_size_splits_the_pinned_gradient_blocks) without a flat buffer; the reserve is the largest
    sub-group, which closes at the first tensor that brings it to sub_group_size: at least 1e9 elements, at most 1e9
    plus the largest tensor (the 131,072,000-element embedding or head)."""
    mem = distributed_memory(LLAMA, replace(NVME, world_size=1))
    numel = mem.cpu["param_swap_out_buffer"].bytes / 2
    assert 1_007_714_304 <= numel <= 10**9 + 131_072_000


def test_nvme_swap_buffers_are_locked_whatever_pin_memory_and_rounded_only_before_0_19_4():
    """The swap buffers come from the aio handle's page-locked allocator (posix_memalign + mlock, exact size) since
    v0.19.4 (PR #8212), from torch's pin_memory before (a power of two): pinned either way. The parameter swap
    buffers: 5 x 100,000,000 elements, each aligned up to 512 (1024 B / 2 B): 5 x 100,000,256 x 2 B = 1,000,002,560 B,
    a 1 GiB block before 0.19.4."""
    for version in ("0.19.5", "0.19.3"):
        mem = distributed_memory(LLAMA, replace(NVME, ds_knobs=dict(NVME.ds_knobs, pin_memory=False, version=version)))
        assert mem.cpu["param_swap_buffers"].pinned and mem.cpu["optimizer_swap_buffers"].pinned
        assert mem.cpu["param_swap_buffers"].bytes == 1_000_002_560 * 8
        rounding = mem.cpu["pinned_rounding"].formula
        assert ("parameter swap buffers (2 B x 500,001,280): 0.93 GiB -> 1.00 GiB" in rounding) == (version == "0.19.3")
        assert ("optimizer swap buffer" in rounding) == (version == "0.19.3")


def test_aio_intra_op_parallelism_widens_the_swap_alignment():
    """aio.intra_op_parallelism 4: swap sizes align to 4 x 1024 B = 2048 bf16 elements; 1e8 -> 100,001,792."""
    from doctor.vram.distributed import from_deepspeed_config

    fields, _ = from_deepspeed_config({"zero_optimization": {"stage": 3, "offload_param": {"device": "nvme",
                                       "nvme_path": "/nvme"}}, "aio": {"intra_op_parallelism": 4}})
    assert fields["ds_knobs"]["aio_intra_op_parallelism"] == 4
    mem = distributed_memory(LLAMA, replace(NVME, ds_knobs=dict(NVME.ds_knobs, aio_intra_op_parallelism=4)))
    assert mem.cpu["param_swap_buffers"].bytes == 5 * 100_001_792 * 2 * 8
