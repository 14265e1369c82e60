"""The caching-allocator model (doctor/vram/allocator.py), torchtune 0.1's QLoRA model build replayed through it
(doctor/vram/nf4_build.py), how the estimate takes it (--implementation torchtune, --torchao-version) and the
refresh script that writes its traced steps (scripts/refresh/nf4_init.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from doctor.vram import nf4_build, versions
from doctor.vram.allocator import CachingAllocator, round_size, segment_size
from doctor.vram.catalogue import resolve
from doctor.vram.estimator import Workload, estimate, lora_targets
from doctor.vram.workload import contradictions, to_flags

MIB = 1 << 20
REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "tests" / "fixtures" / "refresh" / "nf4"
sys.path.insert(0, str(REPO / "scripts"))

from refresh import nf4_init  # noqa: E402

ALL = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
TT_QLORA = dict(method="qlora", dtype="bf16", adapter_dtype="bf16", double_quant=True, lora_targets="all-linear",
                lora_rank=8, batch=2, seq=512, grad_accum=16, checkpointing=True, optimizer="adamw", sm=8.0,
                lora_dropout=0.05, implementation="torchtune")


# --- the allocator model, on sequences worked by hand from CUDACachingAllocator.cpp's rules

def test_sizes_round_and_segments_follow_the_pools():
    assert round_size(1) == 512 and round_size(512) == 512 and round_size(513) == 1024
    assert segment_size(MIB) == 2 * MIB                       # small pool: 2 MiB segments
    assert segment_size(MIB + 512) == 20 * MIB                # 1-10 MiB: a 20 MiB segment
    assert segment_size(10 * MIB) == 10 * MIB                 # from 10 MiB: its own size, to 2 MiB
    assert segment_size(10 * MIB + 512) == 12 * MIB


def test_small_requests_share_a_small_segment():
    a = CachingAllocator()
    a.malloc("x", 100)
    a.malloc("y", 1000)
    assert (a.allocated, a.reserved, a.segments) == (512 + 1024, 2 * MIB, 1)


def test_a_large_block_splits_only_above_1_mib_and_allocated_counts_the_block():
    a = CachingAllocator()
    a.malloc("x", 5 * MIB)          # a 20 MiB segment, split: 15 MiB stay free
    a.malloc("y", 5 * MIB)          # from the same segment
    assert (a.reserved, a.allocated, a.segments) == (20 * MIB, 10 * MIB, 1)
    b = CachingAllocator()
    b.malloc("x", 19 * MIB + MIB // 2)   # its own 20 MiB segment; 0.5 MiB left is not split off
    assert (b.reserved, b.allocated) == (20 * MIB, 20 * MIB)


def test_best_fit_and_merging_of_freed_neighbours():
    a = CachingAllocator()
    for h, size in (("p", 30 * MIB), ("q", 24 * MIB)):
        a.malloc(h, size)
    a.free("p")
    a.free("q")
    a.malloc("r", 22 * MIB)          # the smallest free block that holds it: q's 24 MiB
    assert a.reserved == 54 * MIB and a.allocated == 22 * MIB
    a.malloc("s", 30 * MIB)          # p's segment
    assert a.reserved == 54 * MIB
    c = CachingAllocator()
    c.malloc("a", 5 * MIB)
    c.malloc("b", 5 * MIB)
    c.free("a")
    c.free("b")                      # the two halves and the rest merge into the whole 20 MiB again
    c.malloc("big", 19 * MIB)
    assert (c.reserved, c.segments) == (20 * MIB, 1)


def test_fragmentation_makes_a_new_segment():
    """A long-lived block placed in a freed temporary's segment splits its free space: a request the sum of the
    free pieces would hold needs a new segment."""
    a = CachingAllocator()
    a.malloc("tmp", 100 * MIB)
    a.free("tmp")
    a.malloc("keep", 40 * MIB)       # the first 40 MiB of the 100 MiB segment
    a.malloc("tmp2", 30 * MIB)       # the next 30 MiB
    a.free("keep")                   # free: 40 MiB, then 30 MiB in use, then 30 MiB
    a.malloc("want", 50 * MIB)
    assert a.reserved == 150 * MIB and a.peak_reserved == 150 * MIB
    with pytest.raises(ValueError):
        a.malloc("want", 1)


# --- the replayed build

def test_llama2_7b_qlora_build_reproduces_torchtunes_published_reserve():
    """torchtune's QLoRA tutorial (torchtune 0914d5c, torchao 0.1): 9.13 GB reserved before training starts."""
    arch = resolve("llama-2-7b")
    b = nf4_build.replay(arch, ALL, 8, "fp16")
    assert abs(b.peak_reserved / 9.13e9 - 1) < 0.005, b
    assert b.peak_reserved == 9_133_096_960 and b.peak_allocated == 7_358_850_048   # the replay as committed
    # what stays allocated is the model: NF4 weights (per linear: n/2 packed data, n/64 int8 scalers, the n/32
    # bytes quantization_factor keeps, scaler_mean and the 16-entry table), bf16 LoRA, bf16 embedding / output /
    # norms and the fp32 RoPE buffers; blocks round up to 512 B, and a large block keeps a remainder it does not split
    # off (up to 1 MiB)
    per_linear = sum(lin.params // 2 + lin.params // 64 + lin.params // 32 + 2 + 32 + 8 * 2 * (lin.fan_in + lin.fan_out)
                     for lin in arch.block.linears)
    requested = arch.layers * (per_linear + 2 * 4096 * 2 + 64 * 4 + 4096 * 64 * 2 * 4) + 2 * 32000 * 4096 * 2 + 4096 * 2
    assert requested == 4_173_487_552
    assert requested <= b.resident <= 1.01 * requested


def test_the_build_grows_with_the_linears_it_quantizes():
    arch = resolve("llama-2-7b")
    qv = nf4_build.replay(arch, frozenset({"q_proj", "v_proj"}), 8, "fp16")
    full = nf4_build.replay(arch, ALL, 8, "fp16")
    assert qv.resident > full.resident            # bf16 linears (2 B) where the rest is NF4 (~0.55 B)
    assert qv.peak_allocated - qv.resident < full.peak_allocated - full.resident   # attention-sized transients only


def test_unsupported_models_are_refused_with_the_reason():
    assert "opt" in (nf4_build.supported(resolve("opt-1.3b")) or "")
    assert nf4_build.supported(resolve("llama-2-7b"), ALL) is None


def test_the_rope_cache_length_is_torchtunes_not_the_configs():
    """torchtune 0.1.1's llama3_8b builder fixes max_seq_len=4096 (the config says 8192); mistral_7b 32768."""
    llama3 = resolve("llama-3-8b")
    assert nf4_build.rope_bytes(llama3) == llama3.layers * (64 * 4 + 4096 * 64 * 2 * 4)
    assert nf4_build.POSITIONS == {"llama": 4096, "mistral": 32768}


def test_odd_shapes_and_targets_torchtune_cannot_build_are_exit_2(tmp_path):
    cfg = json.loads((REPO / "doctor" / "data" / "models" / "llama-2-7b.json").read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**cfg, "hidden_size": 4000, "intermediate_size": 10000, "num_attention_heads": 40,
                                       "num_key_value_heads": 40}))
    base = [sys.executable, "-m", "doctor", "estimate", "--offline", "--method", "qlora", "--implementation",
            "torchtune", "--torchao-version", "0.1"]
    for argv, flag in (([ "--model", str(path), "--lora-targets", "all-linear"], "--implementation"),
                       (["--model", "llama-2-7b", "--lora-targets", "gate_proj"], "--lora-targets"),
                       (["--model", "llama-2-7b", "--lora-targets", "q_proj,gate_proj"], "--lora-targets")):
        r = subprocess.run([*base, *argv], capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 2 and flag in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) <= 3


def test_a_sequence_past_torchtune_0_1s_builder_length_is_exit_2_there_and_a_note_elsewhere():
    """torchtune 0.1.1's attention raises ValueError when seq_len > max_seq_len (4096 for its Llama builders), and its
    generate() when prompt + new tokens - 1 > max_seq_len: on torchao 0.1 (torchtune 0.1.x) doctor refuses such a
    --seq or --context; where the torchtune release is not known it says it could not decide; at the limit itself
    it estimates as before."""
    base = [sys.executable, "-m", "doctor", "estimate", "--offline", "--model", "llama-2-7b", "--method", "qlora",
            "--implementation", "torchtune", "--gpu-memory", "80GiB"]
    r = subprocess.run([*base, "--seq", "4097", "--torchao-version", "0.1"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "--seq: 4097:" in r.stderr and "max_seq_len=4096" in r.stderr and "--seq 4096 or less" in r.stderr
    arch = resolve("llama-2-7b")
    at = estimate(arch, Workload(**{**TT_QLORA, "seq": 4096, "torchao_version": "0.1"}))
    assert not any("max_seq_len" in n for n in at.notes)
    for version in (None, "0.3.1"):
        est = estimate(arch, Workload(**{**TT_QLORA, "seq": 8192, "torchao_version": version}))
        assert any("max_seq_len=4096" in n and "could not decide" in n for n in est.notes), est.notes
    # generation: generate() refuses when prompt + new tokens - 1 > max_seq_len (the last token is never fed back)
    gen = [*base[:-2], "--method", "inference", "--seq", "10", "--torchao-version", "0.1"]
    gen[gen.index("qlora") - 1:gen.index("qlora") + 1] = []
    r = subprocess.run([*gen, "--context", "4098"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "--context: 4098:" in r.stderr and "--context 4097 or less" in r.stderr, r.stderr
    assert "_generation.py" in r.stderr
    r = subprocess.run([*gen, "--context", "4097"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode in (0, 1) and "max_seq_len" not in r.stdout, r.stdout + r.stderr


def test_release_candidates_are_chunked_and_dev_builds_unknown():
    assert nf4_build.replays("0.1") is True and nf4_build.replays("0.2.0") is False
    assert nf4_build.replays("0.2.0rc1") is False          # v0.2.0-rc1 holds pytorch/ao 6081796
    assert nf4_build.replays("0.2.0.dev20240420") is None   # nightlies before and after share the number
    assert nf4_build.replays("0.3.1") is False and nf4_build.replays(None) is None
    assert nf4_build.replays("0.2") is False and nf4_build.replays("0.2.dev1") is None   # PEP 440: 0.2 == 0.2.0
    assert nf4_build.replays("1!0.1") is False                                           # epoch 1 is later


def test_zero_byte_requests_take_no_block():
    a = CachingAllocator()
    a.malloc("z", 0)
    a.free("z")
    assert (a.allocated, a.reserved, a.segments) == (0, 0, 0)


# --- the estimate

def test_torchao_0_1_puts_the_peak_at_the_model_build():
    arch = resolve("llama-2-7b")
    step = estimate(arch, Workload(**{**TT_QLORA, "torchao_version": "0.2.0"}))
    est = estimate(arch, Workload(**{**TT_QLORA, "torchao_version": "0.1"}))
    assert est.phase.startswith("model build") and est.peak_bytes > step.peak_bytes
    assert set(est.breakdown) == {"nf4_build_peak", "build_fragmentation", "cuda_context"}
    assert sum(est.breakdown.values()) == est.peak_bytes
    assert est.breakdown["nf4_build_peak"] + est.breakdown["build_fragmentation"] == 9_133_096_960
    assert est.low_bytes < est.peak_bytes < est.high_bytes
    assert {"nf4_build_peak", "build_fragmentation"} <= set(est.terms)
    assert any("reserves 8.51 GiB" in n for n in est.notes)
    assert any("(a 0.2.0 release or later) quantizes in chunks" in n for n in step.notes) and step.phase == "start of backward"


def test_torchtune_quantizes_only_its_lora_linears_in_torchaos_layout():
    """torchtune 0.1's lora_llama2 makes a LoRALinear (NF4 with quantize_base) of the targeted projections only; the
    others stay bf16 nn.Linear. torchao's NF4Tensor keeps n/2 + n/64 + n/32 + 34 bytes (the traced build's storages)."""
    arch = resolve("llama-2-7b")
    lin = arch.block.linear("q_proj")
    n = lin.params
    assert nf4_build.nf4_bytes(lin) == n // 2 + n // 64 + n // 32 + 2 + 32
    new = {"torchao_version": "0.2.0"}
    qv = estimate(arch, Workload(**{**TT_QLORA, **new, "lora_targets": "q_proj,v_proj"}))
    every = estimate(arch, Workload(**{**TT_QLORA, **new}))
    packed = sum(nf4_build.nf4_bytes(x) for x in arch.block.linears) * arch.layers
    rest = (arch.params - sum(x.params for x in arch.block.linears) * arch.layers) * 2
    rope = arch.layers * (64 * 4 + 4096 * 64 * 2 * 4)   # torchtune's fp32 theta and cos/sin cache, max_seq_len 4096
    assert nf4_build.rope_bytes(arch) == rope
    assert every.breakdown["weights"] == packed + rest + rope
    bf16 = sum(arch.block.linear(x).params for x in ("k_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    assert qv.breakdown["weights"] > every.breakdown["weights"] + arch.layers * bf16 * 1.4
    assert any("LinearNF4.forward" in n for n in every.notes)
    assert not any("bitsandbytes" in n for n in every.notes)


def test_the_dequantization_transient_is_torchaos_traced_peak():
    """linear_nf4 dequantizes the whole weight (get_original_weight: int64 codes, lookups, scalers) in forward and
    backward: about 14 bytes per element at its peak, not the bf16 weight's 2."""
    lin = resolve("llama-2-7b").block.linear("gate_proj")
    peak = nf4_build.dequant_peak(lin)
    assert 13 * lin.params < peak < 15 * lin.params


def test_an_allocated_step_above_the_build_keeps_its_allocated_peak():
    """The build sets reserved; when the step allocates more than the build did, the allocated figure is the step's."""
    arch = resolve("llama-2-7b")
    wl = Workload(**{**TT_QLORA, "lora_targets": "q_proj,v_proj", "seq": 1024, "checkpointing": False,
                     "torchao_version": "0.1"})
    est = estimate(arch, wl)
    if est.phase.startswith("model build"):
        step = estimate(arch, Workload(**{**wl.__dict__, "torchao_version": "0.2.0"}))
        step_alloc = step.peak_bytes - step.breakdown["cuda_context"] - step.breakdown["allocator_rounding"]
        allocated = est.peak_bytes - est.breakdown["cuda_context"] - est.breakdown["build_fragmentation"]
        assert allocated >= step_alloc
        assert ("step_allocated" in est.breakdown) == (step_alloc > est.breakdown.get("nf4_build_peak", 0))
    assert sum(est.breakdown.values()) == est.peak_bytes


def test_paging_is_not_offered_against_a_build_peak():
    arch = resolve("llama-2-7b")
    est = estimate(arch, Workload(**{**TT_QLORA, "optimizer": "paged_adamw", "torchao_version": "0.1"}))
    assert est.phase.startswith("model build") and est.paged_bytes == 0
    assert any("does not lower this peak" in n for n in est.notes)


def test_lora_on_an_nf4_base_is_torchtunes_qlora_too():
    arch = resolve("llama-2-7b")
    qlora = estimate(arch, Workload(**{**TT_QLORA, "torchao_version": "0.1"}))
    lora_nf4 = estimate(arch, Workload(**{**TT_QLORA, "method": "lora", "quant": "nf4", "torchao_version": "0.1"}))
    assert lora_nf4.phase == qlora.phase and lora_nf4.peak_bytes == qlora.peak_bytes


def test_unknown_torchao_says_the_build_is_not_replayed():
    est = estimate(resolve("llama-2-7b"), Workload(**TT_QLORA))
    assert est.phase == "start of backward"
    assert any(n.startswith("torchao version unknown") and "--torchao-version" in n for n in est.notes)
    dev = estimate(resolve("llama-2-7b"), Workload(**{**TT_QLORA, "torchao_version": "0.2.0.dev20240501"}))
    assert dev.phase == "start of backward" and any("development build" in n for n in dev.notes)


def test_the_build_is_only_for_torchtune_qlora():
    arch = resolve("llama-2-7b")
    hf = estimate(arch, Workload(**{**TT_QLORA, "implementation": "hf", "torchao_version": "0.1"}))
    lora = estimate(arch, Workload(**{**TT_QLORA, "method": "lora", "torchao_version": "0.1"}))
    hf_lora = estimate(arch, Workload(**{**TT_QLORA, "method": "lora", "implementation": "hf"}))
    assert hf.phase == "start of backward" and lora.phase == "start of backward"
    assert lora.peak_bytes - hf_lora.peak_bytes == nf4_build.rope_bytes(arch)   # bf16 LoRA: only the RoPE caches
    opt = estimate(resolve("opt-1.3b"), Workload(**{**TT_QLORA, "torchao_version": "0.1", "lora_targets": "default"}))
    assert any(n.startswith("could not replay the QLoRA model build") for n in opt.notes)


def test_torchao_version_comes_from_the_facts_and_goes_back_to_flags():
    facts = {"python": {"distributions": {"torchao": "0.1", "torch": "2.2.2"}}}
    assert versions.from_facts(facts) == {"torchao_version": "0.1"}
    flags = to_flags("llama-2-7b", {"implementation": "torchtune", "torchao_version": "0.1"})
    assert flags == "--model llama-2-7b --implementation torchtune --torchao-version 0.1"
    assert lora_targets(resolve("llama-2-7b"), Workload(method="qlora", lora_targets="all-linear")) == ALL


def test_torchtune_with_sharding_is_a_contradiction():
    found = contradictions(Workload(**{**TT_QLORA, "zero": 2, "world_size": 2}))
    assert any(flag == "--implementation" and "single-device" in why for flag, _, why in found)


def test_cli_runs_the_replay_and_refuses_bad_input():
    base = [sys.executable, "-m", "doctor", "estimate", "--model", "llama-2-7b", "--method", "qlora", "--offline",
            "--implementation", "torchtune", "--lora-targets", "all-linear", "--batch", "2", "--grad-checkpointing"]
    r = subprocess.run([*base, "--torchao-version", "0.1", "--format", "json"], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    found = got["estimate"] if "estimate" in got else got
    assert found["peak_phase"].startswith("model build"), found
    bad = subprocess.run([*base, "--torchao-version", "zero.one"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2 and "--torchao-version" in bad.stderr and "Traceback" not in bad.stderr


# --- the refresh script

def test_refresh_rebuilds_the_committed_table_from_the_saved_trace():
    """tests/fixtures/refresh/nf4/trace.json is _trace_nf4.py's output (torch 2.13.0+cpu, torchao 0.1, torchtune
    0.1.1): the committed doctor/data/nf4_init.yaml is exactly what the script writes from it."""
    traced = json.loads((FIX / "trace.json").read_text())
    assert nf4_init.dump(nf4_init.build(traced)) == (REPO / "doctor" / "data" / "nf4_init.yaml").read_text()


def test_symbolic_sizes_tell_constants_from_multiples_of_n():
    ns = [4096 * 4096, 4096 * 11008]
    assert nf4_init.symbolic([32, 32], ns) == 32
    assert nf4_init.symbolic([2 * n for n in ns], ns) == "2n"
    assert nf4_init.symbolic([n // 32 for n in ns], ns) == "n/32"
    assert nf4_init.symbolic([70 * n // 8 for n in ns], ns) == "35n/4"
    with pytest.raises(ValueError, match="neither constant"):
        nf4_init.symbolic([100, 200], ns)
    assert nf4_build._bytes("35n/4", 16, None, 8) == 140          # read back the same way


def test_refresh_refuses_steps_that_differ_between_shapes():
    traced = json.loads((FIX / "trace.json").read_text())
    traced["shapes"][1]["build"]["events"].pop(3)
    with pytest.raises(ValueError, match="build"):
        nf4_init.build(traced)
    one = {**traced, "shapes": traced["shapes"][:1]}
    with pytest.raises(ValueError, match="two weight sizes"):
        nf4_init.build(one)


def test_load_steps_carry_the_host_to_device_copy_before_old_storages_go():
    for step in ("load_fp16", "load_bf16"):
        events = nf4_build.data()["steps"][step]["events"]
        assert events[0] == ["a", "h2d", "2n"]
        i = events.index(["f", "h2d"])
        assert all(e[0] != "fo" for e in events[:i]) and events[i + 1][0] == "fo"


def test_the_upgrade_what_if_runs_as_printed():
    """On an 8 GiB card the torchao 0.1 build does not fit; the upgrade's flags, added to the same command, give the
    step's figure and fit."""
    from doctor.vram.whatif import what_ifs

    arch = resolve("llama-2-7b")
    wl = Workload(**{**TT_QLORA, "torchao_version": "0.1"})
    base = estimate(arch, wl)
    found = [w for w in what_ifs(arch, wl, 8 << 30, base) if "--torchao-version" in w.flag]
    assert len(found) == 1 and found[0].flag == "--torchao-version 0.2.0"
    assert "not replayed" in found[0].cost and found[0].estimate.peak_bytes <= 8 << 30 < base.peak_bytes
    argv = [sys.executable, "-m", "doctor", "estimate", "--model", "llama-2-7b", "--method", "qlora", "--offline",
            "--implementation", "torchtune", "--lora-targets", "all-linear", "--batch", "2", "--grad-checkpointing",
            "--gpu-memory", "8GiB"]
    before = subprocess.run([*argv, "--torchao-version", "0.1"], capture_output=True, text=True, timeout=120,
                            check=False)
    assert before.returncode == 1 and "--torchao-version 0.2.0" in before.stdout
    after = subprocess.run([*argv, *found[0].flag.split()], capture_output=True, text=True, timeout=120, check=False)
    assert after.returncode == 0, after.stdout[-2000:]


def test_lora_on_the_output_projection_counts_its_adapters():
    arch = resolve("llama-2-7b")
    base = estimate(arch, Workload(method="lora", lora_targets="q_proj"))
    head = estimate(arch, Workload(method="lora", lora_targets="q_proj,lm_head"))
    assert head.trainable - base.trainable == 8 * (4096 + 32000)


def test_a_facts_version_past_ints_digit_limit_is_left_out():
    """packaging raises ValueError (not InvalidVersion) for a release number of 5000 digits: unknown, not exit 3."""
    huge = "9" * 5000
    facts = {"python": {"distributions": {"torchao": huge, "peft": "0.12.0", "deepspeed": huge}}}
    assert versions.from_facts(facts) == {"peft_version": "0.12.0"}
    assert versions.deepspeed_from_facts(facts) is None


def test_what_ifs_the_command_would_refuse_are_not_offered():
    """Full fine-tuning with torchtune targets no LoRA builder can take: "LoRA instead" would exit 2 as printed."""
    from doctor.vram.whatif import what_ifs

    arch = resolve("llama-2-7b")
    wl = Workload(method="full", lora_targets="gate_proj", implementation="torchtune")
    assert not [w for w in what_ifs(arch, wl, 16 << 30, estimate(arch, wl)) if "--method lora" in w.flag]
    amp = Workload(method="full", dtype="fp16", amp=True)
    lora = [w for w in what_ifs(arch, amp, 16 << 30, estimate(arch, amp)) if "--method lora" in w.flag]
    assert lora and lora[0].flag.endswith("--no-amp")   # the candidate drops autocast: the flag says so
