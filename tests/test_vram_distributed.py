"""Distributed training memory (doctor/vram/distributed.py): doctor's per-rank GPU and per-node CPU model states
held to DeepSpeed's own estimator functions over a grid of models x ZeRO stages x offload x world sizes x nodes;
the seed ZeRO-2 offload job judged by memory.ram on the AutoDL A800 box; `doctor estimate`'s distributed flags;
and the resources checks on malformed facts."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import factsbuilder as fb
import pytest

from doctor.cli import main
from doctor.model import Status
from doctor.profile import load
from doctor.runner import evaluate
from doctor.vram.arch import Arch, from_config
from doctor.vram.distributed import parse_deepspeed_text
from doctor.vram.estimator import Workload, distributed_memory, estimate, largest_layer

MODELS = Path(__file__).parents[1] / "doctor" / "data" / "models"
GIB = 2**30

# Llama-2-70B's config.json as published (https://huggingface.co/meta-llama/Llama-2-70b-hf/blob/main/config.json)
LLAMA2_70B = {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
              "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 4096, "tie_word_embeddings": False}


def _arch(name: str) -> Arch:
    if name == "llama-2-70b":
        return from_config(LLAMA2_70B, name=name)
    return from_config(json.loads((MODELS / f"{name}.json").read_text()), name=name)


ARCHS = {name: _arch(name) for name in ("opt-125m", "opt-1.3b", "llama-2-7b", "llama-2-70b")}


# --------------------------------------------------------------------------------------------------------------
# DeepSpeed's estimator functions, written out here from DeepSpeed's source (not imported from doctor), so the
# grid fails if doctor's model drifts. DeepSpeed master (deepspeedai/DeepSpeed, 2026-08):
#   deepspeed/runtime/zero/stage_1_and_2.py: estimate_zero2_model_states_mem_needs
#   deepspeed/runtime/zero/stage3.py: estimate_zero3_model_states_mem_needs
# both with additional_buffer_factor=1, i.e. before the 1.5x buffer.


def ds_zero2(total_params: int, num_gpus_per_node: int, num_nodes: int, cpu_offload: bool) -> tuple[float, float]:
    """(cpu_mem per node, gpu_mem per GPU), stage_1_and_2.py: estimate_zero2_model_states_mem_needs."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16)
    else:
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node
    return cpu_mem, gpu_mem


def ds_zero3(total_params: int, largest_layer_params: int, num_gpus_per_node: int, num_nodes: int,
             cpu_offload: bool, cpu_offload_params: bool, zero_init: bool) -> tuple[float, float]:
    """(cpu_mem per node, gpu_mem per GPU), stage3.py: estimate_zero3_model_states_mem_needs."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            cpu_mem = total_params * (18 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 18 * gpus_factor))
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            cpu_mem = total_params * (16 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 16 * gpus_factor))
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        cpu_mem = (largest_layer_params if zero_init else total_params) * 4 * num_gpus_per_node
    return cpu_mem, gpu_mem


def _model_to_params_largest_layer(name: str) -> int:
    """DeepSpeed's stage3.py model_to_params largest_layer_params for these families: the most parameters one module
    holds itself, here the token embedding or the untied LM head (vocab x hidden), wider than any block Linear."""
    cfg = LLAMA2_70B if name == "llama-2-70b" else json.loads((MODELS / f"{name}.json").read_text())
    hidden = cfg.get("hidden_size") or cfg["word_embed_proj_dim"]
    return cfg["vocab_size"] * hidden


# (world size, GPUs per node): one GPU; one node of 8; 2 nodes of 4; 8 nodes of 8
LAYOUTS = ((1, 1), (8, 8), (8, 4), (64, 8))
SETUPS = (  # (stage, offload_optimizer, offload_params, zero_init)
    (2, "none", "none", True), (2, "cpu", "none", True),
    (3, "none", "none", True), (3, "none", "none", False), (3, "cpu", "none", True), (3, "cpu", "none", False),
    (3, "cpu", "cpu", True), (3, "cpu", "cpu", False))
GRID = [(m, s, lay) for m in ARCHS for s in SETUPS for lay in LAYOUTS]


def _doctor(name: str, setup: tuple, layout: tuple[int, int]):
    stage, opt, par, init = setup
    wl = Workload(method="full", dtype="bf16", optimizer="adamw", zero=stage, world_size=layout[0],
                  gpus_per_node=layout[1], offload_optimizer=opt, offload_params=par, zero_init=init)
    mem = distributed_memory(ARCHS[name], wl)
    assert mem is not None
    return mem


def _deepspeed(name: str, setup: tuple, layout: tuple[int, int]) -> tuple[float, float]:
    stage, opt, par, init = setup
    world, per_node = layout
    nodes = world // per_node
    P = ARCHS[name].params
    if stage == 2:
        return ds_zero2(P, per_node, nodes, opt == "cpu")
    return ds_zero3(P, _model_to_params_largest_layer(name), per_node, nodes, opt == "cpu", par == "cpu", init)


def _zero2_offload_across_nodes(setup: tuple, layout: tuple[int, int]) -> bool:
    return setup[0] == 2 and setup[1] == "cpu" and layout[0] > layout[1]


def test_largest_layer_is_deepspeeds_model_to_params():
    for name, arch in ARCHS.items():
        assert largest_layer(arch) == _model_to_params_largest_layer(name), name


@pytest.mark.parametrize("name,setup,layout", GRID, ids=[f"{m}-z{s[0]}-opt{s[1]}-par{s[2]}-init{int(s[3])}-"
                                                         f"{lay[0]}x{lay[1]}" for m, s, lay in GRID])
def test_model_states_match_deepspeeds_estimator(name, setup, layout):
    """GPU per rank and CPU per node model states within 1% of DeepSpeed's estimator, before its 1.5x buffer.
    One documented exception: ZeRO-2 with CPU offload across nodes, where estimate_zero2_model_states_mem_needs
    counts the whole 16 B/param of offloaded state on every node and the model load for all GPUs of all nodes;
    ZeRO partitions that state over every rank (DeepSpeedZeroOptimizer: single_partition_of_fp32_groups is 1/N)
    and each node loads the model once per local rank, as DeepSpeed's own ZeRO-3 function counts it
    (gpus_factor = 1 / num_nodes, 4 * num_gpus_per_node): the per-node figure is held to that arithmetic."""
    mem = _doctor(name, setup, layout)
    ds_cpu, ds_gpu = _deepspeed(name, setup, layout)
    assert mem.gpu_states == pytest.approx(ds_gpu, rel=0.01)
    if _zero2_offload_across_nodes(setup, layout):
        world, per_node = layout
        P = ARCHS[name].params
        assert mem.cpu_states == pytest.approx(P * max(4 * per_node, 16 * per_node / world), rel=0.01)
        assert mem.cpu_states < ds_cpu
    else:
        assert mem.cpu_states == pytest.approx(ds_cpu, rel=0.01)


def test_grid_max_relative_error_and_buffer_shown_apart():
    """The grid's worst relative error (comparable rows) is under 1%; DeepSpeed's 1.5x buffer is reported
    separately from its figure, never folded into doctor's."""
    from doctor.vram.distributed import Counts, deepspeed_figures
    from doctor.vram.estimator import sharding_of

    worst = 0.0
    for name, setup, layout in GRID:
        if _zero2_offload_across_nodes(setup, layout):
            continue
        mem = _doctor(name, setup, layout)
        ds_cpu, ds_gpu = _deepspeed(name, setup, layout)
        worst = max(worst, abs(mem.gpu_states / ds_gpu - 1), abs(mem.cpu_states / ds_cpu - 1))
    assert worst < 0.01
    arch = ARCHS["llama-2-7b"]
    wl = Workload(zero=3, world_size=8, offload_optimizer="cpu", offload_params="cpu")
    fig = deepspeed_figures(Counts(arch.params, arch.params, largest_layer(arch)), sharding_of(wl))
    assert fig["cpu_per_node_with_buffer_bytes"] - fig["cpu_per_node_bytes"] == fig["buffer_bytes"]
    assert fig["buffer_bytes"] == pytest.approx(0.5 * fig["cpu_per_node_bytes"], rel=1e-6)


def test_deepspeed_documented_t5_3b_rows():
    """memory.rst's printed examples (t5-3b, 2851e6 params, 32e6 largest layer, 1 node x 8 GPUs, with the 1.5x
    buffer) through doctor's reproduction of the estimator functions: 127.45 GB | 5.31 GB (ZeRO-2 offload),
    15.93 GB GPU without; ZeRO-3: 71.69 / 63.72 / 1.43 GB CPU and 0.12 / 0.78 / 6.09 GB GPU (GiB printed as GB)."""
    from doctor.vram.distributed import deepspeed_estimate_zero2, deepspeed_estimate_zero3

    cpu, gpu = deepspeed_estimate_zero2(2851e6, 8, 1, cpu_offload=True)
    assert (round(cpu / GIB, 2), round(gpu / GIB, 2)) == (127.45, 5.31)
    # memory.rst predates PR #5099's 2 + 18 / N; the current function gives 2 * 2851e6 + 18 * 2851e6 / 8 bytes
    assert deepspeed_estimate_zero2(2851e6, 8, 1, cpu_offload=False)[1] == 2 * 2851e6 + int(18 * 2851e6 / 8)
    rows = [(True, True, True, 71.69, 0.12), (True, False, True, 63.72, 0.78), (False, False, True, 1.43, 6.09)]
    for off, off_p, init, want_cpu, want_gpu in rows:
        c, g, _ = deepspeed_estimate_zero3(2851e6, 32e6, 8, 1, off, off_p, init)
        assert (round(c / GIB, 2), round(g / GIB, 2)) == (want_cpu, want_gpu)


# --------------------------------------------------------------------------------------------------------------
# the seed ZeRO-2 offload job on the AutoDL A800 box (100 GiB cgroup limit of a 1 TiB host)


def _seed_ram(facts: dict[str, Any]):
    from doctor.registry import discover

    reg = discover()
    rep = evaluate(facts, load(["autodl-a800", "mamba-7b-zero2"], reg), reg)
    return {r.check_id: r for r in rep.results}["memory.ram"]


def test_seed_zero2_offload_fails_memory_ram_on_the_100gb_box():
    """7e9 params (the profile), fp32 (its DeepSpeed config has no bf16/fp16 section), ZeRO-2, offload_optimizer
    cpu, gradient_accumulation_steps 4: per node 4 B master + 4 B fp32 grads + 8 B Adam (memory.rst) + the pinned
    staging copy of the parameters (4 B, fp32) + the CPU accumulation buffer (4 B; stage_1_and_2.py)."""
    r = _seed_ram(fb.autodl_box())
    P, limit = 7_000_000_000, 100 * GIB
    training = P * (4 + 4 + 8) + P * 4 + P * 4
    need = training + 4 * GIB     # memory.ram's default process allowance, one rank
    assert r.status is Status.FAIL
    assert r.summary == (f"the job needs {need / GIB:.1f} GiB of CPU RAM per node ({training / GIB:.1f} GiB training "
                         f"state + 4.0 GiB allowance) but this machine gives it {limit / GIB:.1f} GiB")
    assert any(f"{P * 16 / GIB:.1f} GiB per node, x1.5 buffer = {P * 24 / GIB:.1f} GiB" in d for d in r.details)
    text = r.remediation.text
    # each alternative with its own figure: ZeRO-3 + parameter offload (fp32: 4 B param partition + 16 B + the 4 B
    # grad_partitions_flat_buffer in the model dtype, stage3.py), 8-bit states (2 B + absmax instead of 8 B), bf16
    # (the staging and accumulation copies halve), a bigger machine
    z3 = P * (4 + 16 + 4) + 4 * GIB
    assert f"ZeRO-3 with parameter offload to CPU: {z3 / GIB:.1f} GiB CPU per node" in text
    assert "8-bit optimizer states" in text and "bf16 training" in text
    # the machine holds the job beside the 2 GiB the box's other processes use now (cgroup usage)
    assert (f"a machine with {-(-int(need + 2 * GIB) // 10**9)} GB of RAM per node: {need / GIB:.1f} GiB CPU per "
            "node") in text and "with the 2.0 GiB other processes hold here" in text
    assert "ZeRO-3 with optimizer offload to NVMe" in text and "(fits" in text


def test_seed_zero2_offload_passes_on_a_box_with_enough_ram():
    facts = fb.autodl_box()
    facts["resources"]["memory"]["cgroup"]["limit_bytes"] = 256 * GIB
    r = _seed_ram(facts)
    assert r.status is Status.PASS and "of CPU RAM per node" in r.summary


@pytest.mark.parametrize("edit", ["no cgroup, no host total", "host total a string"])
def test_memory_ram_missing_ram_fact_is_undecided(edit):
    facts = fb.autodl_box()
    mem = facts["resources"]["memory"]
    mem["cgroup"] = None
    mem["host_total_bytes"] = None if edit.startswith("no") else "100G"
    r = _seed_ram(facts)
    assert r.status is Status.ERROR and r.summary.startswith("could not decide: resources.memory.host_total_bytes")


# --------------------------------------------------------------------------------------------------------------
# resources checks on hostile facts: never raise, never pass/fail on a missing value

ALL = ("memory.ram", "cpu.quota", "shm.size", "limits.ulimits")
# case -> (what replaces facts["resources"] (a dict merges over the A800 box's), the checks that must be undecided)
HOSTILE: dict[str, tuple[Any, tuple[str, ...]]] = {
    "resources empty": ({}, ALL[:2]),           # shm.size / limits.ulimits: absent sections are skips
    "resources None": (None, ALL),
    "resources a list": ([1, 2], ALL),
    "memory None": ({"memory": None}, ("memory.ram",)),
    "memory None everywhere": ({"memory": {"host_total_bytes": None, "host_available_bytes": None,
                                           "cgroup": {"limit_bytes": None}}}, ("memory.ram",)),
    "cgroup a string": ({"memory": {"host_total_bytes": GIB, "host_available_bytes": GIB, "cgroup": "max"}},
                        ("memory.ram",)),
    "memory negative": ({"memory": {"host_total_bytes": -1, "host_available_bytes": GIB}}, ("memory.ram",)),
    "memory nan": ({"memory": {"host_total_bytes": float("nan"), "host_available_bytes": GIB}}, ("memory.ram",)),
    "cpu an int": ({"cpu": 8}, ("cpu.quota",)),
    "cpu empty": ({"cpu": {}}, ("cpu.quota",)),
    "cpu None everywhere": ({"cpu": {"logical": None, "affinity": None, "cgroup": None}}, ("cpu.quota",)),
    "cpu logical a string": ({"cpu": {"logical": "8", "affinity": 8}}, ("cpu.quota",)),
    "shm a string": ({"shm": "64M"}, ("shm.size",)),
    "shm total a string": ({"shm": {"total_bytes": "64M"}}, ("shm.size",)),
    "ulimits a list": ({"ulimits": [1024, 4096]}, ("limits.ulimits",)),
    "memlock strings": ({"ulimits": {"nofile": [65536, 65536], "memlock_bytes": ["64K", "64K"]}},
                        ("limits.ulimits",)),
    "nofile an int": ({"ulimits": {"nofile": 1024}}, ("limits.ulimits",)),
    "rdma a string": ({"ulimits": {"nofile": [65536, 65536]}, "rdma_devices": "mlx5_0"}, ("limits.ulimits",)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("check_id", ALL)
def test_resources_checks_on_malformed_facts_are_undecided_not_raised(case, check_id):
    """Never an exception, never a verdict on a missing or malformed fact: ERROR 'could not decide: <fact> ...'."""
    from doctor.checks import resources

    func = {"memory.ram": resources.memory_ram, "cpu.quota": resources.cpu_quota, "shm.size": resources.shm_size,
            "limits.ulimits": resources.limits_ulimits}[check_id]
    bad, undecided = HOSTILE[case]
    res = {**fb.autodl_box()["resources"], **bad} if isinstance(bad, dict) and bad else bad
    facts = {"resources": res, "gpu": "x", "env": [], "disk": 3, "python": {"distributions": None}}
    kwargs = {"workload": {"params": 7_000_000_000, "zero_stage": 2, "offload_optimizer": "cpu"}} \
        if check_id == "memory.ram" else {}
    r = func(facts, **kwargs)
    if check_id in undecided:
        assert r.status is Status.ERROR and r.summary.startswith("could not decide: resources"), r.summary
    else:
        assert r.status is not Status.ERROR, r.summary


# --------------------------------------------------------------------------------------------------------------
# doctor estimate's distributed flags


def _estimate_json(capsys, *argv: str) -> dict[str, Any]:
    assert main(["estimate", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_estimate_zero3_param_offload_flags_name_each_term(capsys):
    out = _estimate_json(capsys, "--model", str(MODELS / "llama-2-7b.json"), "--zero", "3", "--offload-params", "cpu",
                         "--offload-optimizer", "cpu", "--world-size", "8")
    est = out["estimate"] if "estimate" in out else out
    cpu = est["cpu"]
    P = ARCHS["llama-2-7b"].params
    assert cpu["model_states_bytes"] == pytest.approx(18 * P, rel=0.01)     # ZeRO-3 case 2, zero.Init, one node
    assert {"cpu.params_partition", "cpu.master_params_fp32", "cpu.grads_fp32", "cpu.optimizer_states"} <= set(
        cpu["terms"])
    assert all(t["formula"] and t["source"] for t in cpu["terms"].values())
    assert cpu["deepspeed_estimator"]["buffer_factor"] == 1.5
    assert "largest_layer_gathered" in est["gpu_terms"] and "params" not in est["breakdown"]


@pytest.mark.parametrize("name", ["x" * 3000, "bad\0name", "/"])
def test_estimate_deepspeed_config_unopenable_is_bad_input(capsys, name):
    """ENAMETOOLONG, an embedded NUL, a directory: exit 2, one line naming the flag and what is expected."""
    assert main(["estimate", "--model", str(MODELS / "opt-125m.json"), "--deepspeed-config", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith("doctor: --deepspeed-config: ") and "DeepSpeed JSON config" in err
    assert err.count("\n") == 1 and len(err) < 1200


def test_deepspeed_config_sets_the_sharding(tmp_path):
    fields, notes = parse_deepspeed_text(json.dumps({"zero_optimization": {"stage": 3, "offload_param": {
        "device": "cpu", "pin_memory": False}, "reduce_bucket_size": "auto", "allgather_bucket_size": "auto"},
        "bf16": {"enabled": True}}))
    assert fields["zero"] == 3 and fields["offload_params"] == "cpu" and fields["dtype"] == "bf16"
    # reduce_bucket_size "auto" is kept for the model's hidden size (resolve_auto); HF fills no allgather "auto"
    assert fields["ds_knobs"]["pin_memory"] is False and fields["ds_knobs"]["reduce_bucket_size"] == "auto"
    assert any("allgather_bucket_size" in n for n in notes) and not any("reduce_bucket_size" in n for n in notes)


def test_bit16_staging_follows_the_deepspeed_version():
    """DeepSpeed >= 0.17.0 (PR #7309) stages the updated parameters through a pinned CPU bit16 buffer per rank's
    partition; earlier versions copy the fp32 partition to the GPU instead (a transient 4 B/param there)."""
    arch = ARCHS["opt-1.3b"]
    wl = Workload(zero=2, world_size=8, offload_optimizer="cpu")
    new = distributed_memory(arch, replace(wl, ds_knobs={"version": "0.17.1"}))
    old = distributed_memory(arch, replace(wl, ds_knobs={"version": "0.16.9"}))
    unknown = distributed_memory(arch, wl)
    P = arch.params
    assert new.cpu["offload_bit16_staging"].bytes == pytest.approx(2 * P / 8 * 8)
    assert "offload_bit16_staging" not in old.cpu
    assert old.step["offload_fp32_partition_copy"].bytes == pytest.approx(4 * P / 8)   # at the step only
    assert "offload_bit16_staging" in unknown.cpu
    assert new.cpu_states == old.cpu_states


@pytest.mark.parametrize("strategy,layout,shards", [("full", (8, 4), 8), ("hybrid", (8, 4), 4),
                                                    ("no-shard", (8, 8), 1)])
def test_fsdp_shards_state_over_its_sharding_group(strategy, layout, shards):
    """FSDP (torch/distributed/fsdp/api.py ShardingStrategy): FULL_SHARD splits parameters, gradients and
    optimizer state over every rank, HYBRID_SHARD over the ranks of one node, NO_SHARD keeps them whole. Pure bf16
    parameters: torch.optim.AdamW keeps exp_avg and exp_avg_sq in the parameter's dtype (zeros_like), 2 x 2 B."""
    arch = ARCHS["opt-1.3b"]
    P = arch.params
    wl = Workload(dtype="bf16", optimizer="adamw", fsdp=strategy, world_size=layout[0], gpus_per_node=layout[1])
    mem = distributed_memory(arch, wl)
    assert mem.gpu["params_shard"].bytes == pytest.approx(2 * P / shards, rel=1e-3)
    assert mem.gpu["grads_shard"].bytes == pytest.approx(2 * P / shards, rel=1e-3)
    assert mem.gpu["optimizer_states"].bytes == pytest.approx(2 * 2 * P / shards, rel=1e-3)
    assert mem.cpu_load == 4 * P * layout[1]      # each local rank builds the model in fp32 (memory.rst 4 * n_gpus)


@pytest.mark.parametrize("free_gib", [195, 20])
def test_nvme_offload_is_judged_against_the_path_free_space(free_gib):
    """ZeRO-3 optimizer offload to NVMe (ZeRO-Infinity): the fp32 master partition, the fp32 gradients and the Adam
    states, 16 B per parameter over all ranks, are swapped to offload_optimizer.nvme_path (its filesystem's free space
    comes from the disk facts; stage3.py _offload_grad_partition_at_boundary -> swap_out_gradients); CPU RAM keeps the
    gradient partitions in the model dtype (stage3.py: grad_partitions_flat_buffer on cpu, bf16: 2 B)."""
    from doctor.checks.resources import memory_ram

    facts = fb.autodl_box()
    facts["disk"]["mounts"][1]["free_bytes"] = free_gib * GIB
    config = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme",
                                                                      "nvme_path": "/root/autodl-tmp/nvme"}},
              "bf16": {"enabled": True}}
    P = 7_000_000_000
    r = memory_ram(facts, workload={"params": P, "optimizer": "adamw", "dtype": "bf16"},
                   deepspeed={"loaded": {"path": "ds.json", "text": json.dumps(config)}})
    need = 16 * P / GIB
    if free_gib * GIB > 16 * P:
        assert r.status is Status.PASS
        assert any(f"NVMe offload: {need:.1f} GiB on /root/autodl-tmp/nvme" in d for d in r.details)
        assert any(f"CPU per node, grad_partitions_flat: {2 * P / GIB:.1f} GiB" in d for d in r.details)
        assert not any("CPU per node, grads_fp32" in d for d in r.details)
    else:
        assert r.status is Status.FAIL
        assert f"NVMe offload needs {need:.1f} GiB on /root/autodl-tmp/nvme but /root/autodl-tmp has " \
               f"{free_gib:.1f} GiB free" in r.summary


def test_memory_ram_reads_the_profiles_loading_keys():
    """job.workload.ram_efficient_loading / load_dtype reach memory.ram: eight FSDP ranks each building a 7B model in
    fp32 need 8 x 28 GB on the node; accelerate's fsdp_cpu_ram_efficient_loading builds one copy, bf16 halves it."""
    from doctor.checks.resources import memory_ram

    P = 7_000_000_000
    base = {"params": P, "optimizer": "adamw", "dtype": "bf16", "fsdp": "full", "world_size": 8,
            "load_dtype": "fp32"}
    every = memory_ram(fb.autodl_box(), workload=base)
    once = memory_ram(fb.autodl_box(), workload={**base, "ram_efficient_loading": True, "load_dtype": "bf16"})
    assert every.status is Status.FAIL and f"{8 * 4 * P / GIB:.1f} GiB" in every.summary
    assert once.status is Status.PASS and f"{2 * P / GIB:.1f} GiB" in once.summary


# --------------------------------------------------------------------------------------------------------------
# DeepSpeed >= 0.19.4 mlock()s its NVMe swap buffers: RLIMIT_MEMLOCK (or CAP_IPC_LOCK) must allow them

NVME_JOB = {"model": "llama-2-7b", "method": "full", "dtype": "bf16", "zero_stage": 3, "world_size": 8,
            "offload_optimizer": "nvme", "offload_params": "nvme"}


def _memlock_ram(memlock: list[Any], cap: bool | None, version: str = "0.19.5"):
    from doctor.checks.resources import memory_ram

    facts = fb.autodl_box(packages={"deepspeed": version})
    facts["resources"]["memory"]["cgroup"]["limit_bytes"] = 4096 * GIB   # RAM is not the question here
    facts["resources"]["ulimits"]["memlock_bytes"] = memlock
    facts["resources"]["cap_ipc_lock"] = cap
    config = json.loads((Path(__file__).parents[1] / "doctor/data/models/llama-2-7b.json").read_text())
    return memory_ram(facts, workload=dict(NVME_JOB, resolved_config={"config": config, "source": "llama-2-7b.json"}))


def test_nvme_swap_buffers_past_the_memlock_limit_fail_without_cap_ipc_lock():
    """Per rank: 5 x 100,000,256 x 2 B parameter swap buffers + 4 x 842,301,952 (aligned to 256 fp32 elements:
    842,302,208) x 4 B optimizer swap buffers = 13.5 GiB mlock()ed, against an 8 MiB limit (Linux's default)."""
    per_rank = 5 * 100_000_256 * 2 + 4 * 842_302_208 * 4
    r = _memlock_ram([8 << 20, 8 << 20], False)
    assert r.status is Status.FAIL, r.summary
    assert f"mlock()s {per_rank / GIB:.1f} GiB per rank" in r.summary and "lacks CAP_IPC_LOCK" in r.summary
    assert "the memlock limit is 8.0 MiB" in r.summary
    assert r.remediation.commands == ("ulimit -l unlimited",)
    import subprocess   # the command runs as printed in the launching shell (up to the hard limit, as it says)
    ran = subprocess.run(["bash", "-c", r.remediation.commands[0] + " && ulimit -l"], capture_output=True, text=True)
    assert (ran.returncode, ran.stdout.strip()) == (0, "unlimited") or "not permitted" in ran.stderr, ran
    # the same limit with CAP_IPC_LOCK, an unlimited or a large enough limit: RAM decides (and it fits)
    for memlock, cap in (([8 << 20, 8 << 20], True), ([None, None], False), ([per_rank + 1, None], False)):
        assert _memlock_ram(memlock, cap).status is Status.PASS
    # whether the process may lock past the limit is unknown: no verdict on it, said in the details
    for cap in (None, "no", 0):   # unknown, or not a boolean
        unknown = _memlock_ram([8 << 20, 8 << 20], cap)
        assert unknown.status is Status.PASS and any("could not decide whether it may" in d for d in unknown.details)


def test_deepspeed_before_0_19_4_pins_the_swap_buffers_with_torch_not_mlock():
    r = _memlock_ram([8 << 20, 8 << 20], False, version="0.19.3")
    assert r.status is Status.PASS and not any("mlock()s" in d for d in r.details)


def test_step_only_terms_replace_the_backward_moment_never_add_to_it():
    """optimizer.step() runs after the backward has freed the activations: its own GPU terms (foreach temporaries,
    DeepSpeed < 0.17's fp32 partition copy) make a second moment, and the peak is the larger of the two."""
    arch = ARCHS["llama-2-7b"]
    one = estimate(arch, Workload(method="full", seq=512))
    ddp = estimate(arch, Workload(method="full", seq=512, world_size=2))
    P = arch.params
    # DDP: the single-GPU step (weights, gradients, states, foreach buffer) plus its gradient buckets
    assert ddp.phase == one.phase == "optimizer step"
    assert ddp.breakdown["optimizer_step_temporaries"] == pytest.approx(2 * P, abs=2)
    assert ddp.peak_bytes - one.peak_bytes == pytest.approx(ddp.breakdown["ddp_buckets"], abs=2)
    # ZeRO-2 offload before 0.17: the 4 B / param copy at the step, never beside the backward's activations
    wl = Workload(method="full", batch=2, seq=1024, grad_accum=4, zero=2, offload_optimizer="cpu")
    old = estimate(arch, replace(wl, ds_knobs={"version": "0.16.4"}))
    new = estimate(arch, replace(wl, ds_knobs={"version": "0.17.0"}))
    assert new.phase == "start of backward" and "offload_fp32_partition_copy" not in new.breakdown
    assert old.phase == "optimizer step"
    assert "activations" not in old.breakdown
    assert old.breakdown["offload_fp32_partition_copy"] == pytest.approx(4 * P, abs=2)
    assert old.peak_bytes < new.peak_bytes + old.breakdown["offload_fp32_partition_copy"]
    small = estimate(arch, replace(wl, batch=32, seq=4096, ds_knobs={"version": "0.16.4"}))   # activations win
    assert small.phase == "start of backward" and "offload_fp32_partition_copy" not in small.breakdown


def test_fsdp_step_temporaries_take_the_flat_shards_dtype():
    """Under FSDP MixedPrecision (--amp) the shards the optimizer steps are fp32: foreach AdamW's buffer is 4 B per
    parameter of the shard; without amp they are in the training dtype."""
    arch = ARCHS["llama-2-7b"]
    P = arch.params
    for amp, width in ((True, 4), (False, 2)):
        mem = distributed_memory(arch, Workload(method="full", amp=amp, fsdp="full", world_size=8))
        assert mem.step["optimizer_step_temporaries"].bytes == pytest.approx(width * P / 8, abs=2)
    offload = distributed_memory(arch, Workload(method="full", fsdp="full", world_size=8, offload_params="cpu"))
    assert not offload.step   # the optimizer steps on the CPU


@pytest.mark.parametrize("argv,problem", [
    (["--zero", "0", "--offload-optimizer", "cpu"], "stages 1 to 3 only"),
    (["--zero", "2", "--offload-optimizer", "nvme"], "NVMe in ZeRO-3 only"),
])
def test_optimizer_offload_outside_the_stages_deepspeed_allows_is_refused(argv, problem, capsys):
    """DeepSpeed's config docs (docs/_pages/config-json.md): offload_optimizer is "Valid for ZeRO stage 1, 2, 3";
    "NVMe offloading is available only with ZeRO stage 3"."""
    assert main(["estimate", "--model", "opt-1.3b", *argv]) == 2
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize("config,key", [
    ({"zero_optimization": {"stage": "3"}}, "zero_optimization.stage"),
    ({"zero_optimization": {"stage": 7}}, "zero_optimization.stage"),
    ({"zero_optimization": [3]}, "zero_optimization"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": "cpu"}}, "zero_optimization.offload_optimizer"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "CPU"}}},
     "zero_optimization.offload_optimizer.device"),
    ({"bf16": {"enabled": "true"}}, "bf16.enabled"),
    ({"bf16": {"enabled": True}, "fp16": {"enabled": True}}, "bf16.enabled"),
    ({"train_micro_batch_size_per_gpu": -4}, "train_micro_batch_size_per_gpu"),
    ({"gradient_accumulation_steps": 2.5}, "gradient_accumulation_steps"),
    ({"zero_optimization": {"stage": 3, "reduce_bucket_size": -5}}, "zero_optimization.reduce_bucket_size"),
])
def test_a_deepspeed_value_deepspeed_refuses_is_never_replaced_by_a_default(config, key, tmp_path, capsys, registry):
    """estimate and check (the job's DeepSpeed file is read with the profile): exit 2 naming the file and key
    (before, "3" or a list became ZeRO-0 and a "CPU" device no offload, silently); a deepspeed.config check run on
    such a file by itself fails on it."""
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(config))
    assert main(["estimate", "--model", "opt-1.3b", "--method", "full", "--deepspeed-config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"doctor: {path}: {key}: ") and len(err.splitlines()) == 1, err
    (tmp_path / "job.yaml").write_text(json.dumps({"kind": "job", "extends": ["base"], "job": {
        "workload": {"model": "opt-1.3b", "method": "full", "world_size": 1}, "deepspeed": {"config": "ds.json"}}}))
    assert main(["check", "--profile", str(tmp_path / "job.yaml"), "--offline", "--no-bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"ds.json: {key}: " in err and len(err.splitlines()) == 1, err
    from doctor.checks.job_config import deepspeed_config

    r = deepspeed_config({}, deepspeed={"loaded": {"path": str(path), "text": json.dumps(config)}})
    assert r.status is Status.FAIL and key in r.summary, r.summary


def test_a_check_meeting_input_it_cannot_judge_says_so_instead_of_crashing(registry, tmp_path):
    """A Mamba model with LoRA and no targets (PEFT has no default for mamba): vram.budget could not decide, and
    says why, instead of reporting an InputError as a crash of the check."""
    (tmp_path / "job.yaml").write_text(json.dumps({"kind": "job", "extends": ["base"], "job": {
        "workload": {"model": "mamba-2.8b", "method": "lora"}}}))
    rep = evaluate(fb.autodl_box(), load(["autodl-a800", str(tmp_path / "job.yaml")], registry), registry)
    r = {x.check_id: x for x in rep.results}["vram.budget"]
    assert r.status is Status.ERROR and r.summary.startswith("could not decide:") and "LoRA targets" in r.summary


def test_the_deepspeed_configs_precision_is_the_jobs_dtype():
    """DeepSpeed trains in its config's precision whatever job.workload.dtype says (the seed's bf16 remedy,
    applied to the DeepSpeed file, must change the figure); an "auto" section leaves the workload's dtype."""
    from doctor.vram.workload import workload_from_job

    def dtype(ds: dict[str, Any], job_dtype: str = "fp32") -> str:
        job = {"workload": {"model": "opt-1.3b", "method": "full", "dtype": job_dtype},
               "deepspeed": {"loaded": {"path": "ds.json", "text": json.dumps(ds)}}}
        return workload_from_job(job)[1]["dtype"]

    assert dtype({"bf16": {"enabled": True}, "zero_optimization": {"stage": 2}}) == "bf16"
    assert dtype({"fp16": {"enabled": True}}) == "fp16"
    assert dtype({"bfloat16": {"enabled": True}}) == "bf16"   # runtime/config.py: the older name of the section
    assert dtype({"bf16": {"enabled": "auto"}}) == "fp32"
    # no section: under the HF Trainer accelerate adds one from its mixed precision, so the job's dtype stands
    assert dtype({"zero_optimization": {"stage": 2}}, "bf16") == "bf16"
    assert dtype({"bf16": {"enabled": False}}, "bf16") == "fp32"   # turned off in the file: DeepSpeed trains fp32


def test_the_deepspeed_config_flag_and_the_profile_give_the_same_precision(tmp_path, capsys):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"fp16": {"enabled": True}, "zero_optimization": {"stage": 2}}))
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"kind": "job", "job": {"workload": {"model": "opt-125m", "method": "full",
                                                                   "dtype": "bf16"}}}))
    for argv in (["--profile", str(job), "--deepspeed-config", str(ds)],
                 ["--model", "opt-125m", "--dtype", "fp16", "--deepspeed-config", str(ds)]):
        assert main(["estimate", *argv, "--format", "json"]) in (0, 1)
        assert json.loads(capsys.readouterr().out)["workload"]["dtype"] == "fp16", argv
    assert main(["estimate", "--profile", str(job), "--deepspeed-config", str(ds), "--dtype", "bf16",
                 "--format", "json"]) in (0, 1)   # a --dtype flag still wins (what-ifs give one)
    assert json.loads(capsys.readouterr().out)["workload"]["dtype"] == "bf16"
    for config, ok in (({"zero_optimization": True}, True), ({"bf16": True}, False)):
        ds.write_text(json.dumps(config))
        code = main(["estimate", "--model", "opt-125m", "--deepspeed-config", str(ds)])
        err = capsys.readouterr().err
        assert (code in (0, 1)) if ok else (code == 2 and 'expected an object such as {"enabled": true}' in err), err


def test_nvme_offload_on_a_full_disk_points_at_the_one_with_room():
    from doctor.checks.resources import memory_ram

    facts = fb.autodl_box()   # / has 22 GiB free, /root/autodl-tmp much more
    config = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme"}},
              "bf16": {"enabled": True}}
    r = memory_ram(facts, workload={"params": 7_000_000_000, "optimizer": "adamw", "dtype": "bf16"},
                   deepspeed={"loaded": {"path": "ds.json", "text": json.dumps(config)}})
    assert r.status is Status.FAIL and "point offload_*.nvme_path to /root/autodl-tmp/ds_nvme" in r.summary, r.summary


def test_the_step_moment_holds_no_unit_the_backward_has_resharded():
    """FSDP reshards every unit by the end of backward: at the optimizer step neither the unsharded parameters nor
    a unit's unsharded gradient is alive, only the shards, the states and the step's temporaries."""
    arch = ARCHS["llama-2-7b"]
    est = estimate(arch, Workload(method="full", fsdp="full", world_size=2, seq=16))
    assert est.phase == "optimizer step", est.breakdown
    assert "params_unsharded" not in est.breakdown and "grads_unsharded" not in est.breakdown
    assert est.breakdown["optimizer_step_temporaries"] == pytest.approx(2 * arch.params / 2, abs=2)
