"""Optimizer state in doctor estimate, held to the real optimizers' state after one step on CPU: bitsandbytes 0.50
(8-bit AdamW / Lion, 32-bit Lion, paged AdamW), transformers' Adafactor; Muon by its reference's rule."""
from __future__ import annotations

import pytest

from doctor.model import Status

from doctor.vram.arch import from_config
from doctor.vram.estimator import Workload, _optimizer, _trainable, estimate, lora_targets

# a tiny Llama: every tensor is a matrix, a norm (64 < 4096 elements: bitsandbytes keeps those in fp32) or big enough
# for 8-bit states (the 64x128 MLP matrices and the 4096-token embedding and head)
CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
          "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 4096}


def _shapes() -> list[tuple[int, ...]]:
    """The tensors LlamaForCausalLM holds for CONFIG, written out from its modules (not from doctor's Arch)."""
    h, f, layers, v, kv = 64, 128, 2, 4096, 2 * 16
    block = [(h, h), (kv, h), (kv, h), (h, h), (f, h), (f, h), (h, f), (h,), (h,)]
    return [(v, h)] + block * layers + [(h,), (v, h)]


def _state_bytes(cls, **kw) -> tuple[int, int]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in _shapes()]
    opt = cls(params, **kw)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    seen, total = set(), 0
    for p in params:
        for value in opt.state[p].values():
            if torch.is_tensor(value) and value.data_ptr() not in seen:   # the quantile maps are shared
                seen.add(value.data_ptr())
                total += value.numel() * value.element_size()
    return total, sum(p.numel() for p in params)


def _doctor(optimizer: str, method: str = "full") -> float:
    arch = from_config(CONFIG)
    wl = Workload(method=method, dtype="fp32", optimizer=optimizer)
    trainable, sizes = _trainable(arch, wl, lora_targets(arch, wl))
    return _optimizer(wl, arch, trainable, sizes, 4)[0]


@pytest.mark.parametrize("name,optimizer", [("AdamW8bit", "adamw_8bit"), ("PagedAdamW8bit", "paged_adamw_8bit"),
                                            ("Lion8bit", "lion_8bit"), ("Lion", "lion"), ("PagedAdamW", "paged_adamw")])
def test_bitsandbytes_state_bytes_match_its_optimizers_after_one_step(name, optimizer):
    bnb = pytest.importorskip("bitsandbytes")
    measured, params = _state_bytes(getattr(bnb.optim, name), lr=1e-3)
    assert params == from_config(CONFIG).params
    assert _doctor(optimizer) == measured


def test_bytes_per_parameter_of_8bit_adamw_on_a_large_matrix():
    bnb = pytest.importorskip("bitsandbytes")
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.randn(1024, 1024))
    opt = bnb.optim.AdamW8bit([p], lr=1e-3)
    p.grad = torch.randn_like(p)
    opt.step()
    held = sum(v.numel() * v.element_size() for v in opt.state[p].values() if torch.is_tensor(v))
    # 2 uint8 states + 2 fp32 absmax per 256 + two 256-entry fp32 quantile maps: 2.0332 B/param
    assert held / p.numel() == pytest.approx(2 + 8 / 256 + 2048 / 2**20)


def test_adafactor_factored_second_moments_match_transformers():
    optimization = pytest.importorskip("transformers.optimization")
    measured, _ = _state_bytes(optimization.Adafactor, lr=None)   # transformers' defaults: relative_step, no beta1
    # exp_avg_sq_row + exp_avg_sq_col (fp32) per matrix, exp_avg_sq per norm; doctor leaves out the 0-d fp32 "RMS"
    # tensor Adafactor keeps per parameter tensor (21 here: 4 B each)
    assert measured - _doctor("adafactor") == 4 * len(_shapes())


def test_muon_keeps_one_buffer_per_hidden_matrix_and_adamw_for_the_rest():
    h, f, kv, v = 64, 128, 32, 4096
    hidden = 2 * (2 * h * h + 2 * kv * h + 3 * f * h)      # q, o, k, v, gate, up, down of both layers
    rest = from_config(CONFIG).params - hidden              # embedding, head, norms: AdamW's two moments
    assert rest == 2 * v * h + 5 * h
    assert _doctor("muon") == 4 * hidden + 8 * rest


def test_paged_adamw_states_can_spill_and_lora_8bit_tensors_use_their_shapes():
    arch = from_config(CONFIG)
    est = estimate(arch, Workload(method="full", dtype="bf16", optimizer="paged_adamw"))
    assert est.paged_bytes == est.breakdown["optimizer_states"] == arch.params * 8   # fp32 states for bf16 params
    assert any("page out to CPU RAM" in n for n in est.notes)
    # LoRA r=8 on q_proj / v_proj: A is 8x64 and B 64x8 or 32x8 - all under 4096 elements, so fp32 (8 B/param)
    assert _doctor("adamw_8bit", "lora") == _trainable(arch, Workload(method="lora"),
                                                       lora_targets(arch, Workload(method="lora")))[0] * 8 + 2048


def _job(tmp_path, optimizer: str, batch: int = 1) -> str:
    path = tmp_path / "job.yaml"
    path.write_text("kind: job\nextends: [base]\njob:\n  workload:\n    model: opt-1.3b\n    method: full\n"
                    f"    dtype: bf16\n    batch: {batch}\n    sequence: 2048\n    optimizer: {optimizer}\n")
    return str(path)


def test_vram_check_is_undecided_on_an_unknown_optimizer_and_warns_when_only_paging_fits(tmp_path, judge):
    from factsbuilder import gpu_box

    from doctor.model import Status

    r = judge(gpu_box(), "vram.budget", _job(tmp_path, "sophia"))
    assert r.status is Status.ERROR and r.summary.startswith("could not decide: optimizer 'sophia'")
    # opt-1.3b full bf16 with paged AdamW on a 12 GiB card: over the card, under it without the 9.8 GiB of state
    from doctor.vram.catalogue import resolve

    est = estimate(resolve("opt-1.3b"), Workload(method="full", dtype="bf16", seq=2048, optimizer="paged_adamw"))
    free = (12288 - 600) * 2**20
    assert est.peak_bytes > free >= est.peak_bytes - est.paged_bytes
    r = judge(gpu_box(name="NVIDIA GeForce RTX 3060", total_mib=12288, cc="8.6"), "vram.budget",
              _job(tmp_path, "paged_adamw_32bit"))
    assert r.status is Status.WARN and "fits only by paging" in r.summary


def test_memory_ram_is_undecided_on_an_unknown_optimizer_not_priced_as_adamw(tmp_path, judge):
    from factsbuilder import autodl_box

    from doctor.model import Status

    path = tmp_path / "job.yaml"
    path.write_text("kind: job\nextends: [mamba-7b-zero2]\njob:\n  workload:\n    optimizer: sophia\n")
    r = judge(autodl_box({}), "memory.ram", "a800-80g", str(path))
    assert r.status is Status.ERROR and "optimizer 'sophia'" in r.summary
    assert judge(autodl_box({}), "memory.ram", "a800-80g", "mamba-7b-zero2").status is Status.FAIL


# --------------------------------------------------------------------------------------------------------------
# memory.ram: a paged optimizer's state that does not fit on the GPU is paged out to CPU RAM


def _paged_ram(total_mib: int, ram_gib: float, optimizer: str = "paged_adamw"):
    import json
    from pathlib import Path

    import factsbuilder as fb

    from doctor.checks.resources import memory_ram

    config = json.loads((Path(__file__).parents[1] / "doctor/data/models/llama-2-7b.json").read_text())
    workload = {"model": "llama-2-7b", "method": "full", "dtype": "bf16", "batch": 1, "seq": 512,
                "optimizer": optimizer, "resolved_config": {"config": config, "source": "llama-2-7b.json"}}
    facts = fb.autodl_box(total_mib=total_mib)
    facts["resources"]["memory"]["cgroup"]["limit_bytes"] = int(ram_gib * 2**30)
    return memory_ram(facts, workload=workload), facts


def _spill(total_mib: int, optimizer: str = "paged_adamw") -> tuple[float, float]:
    """(bytes paged out, paged state bytes), from the estimate and the GPU's free memory in the facts."""
    import json
    from pathlib import Path

    from doctor.vram.arch import from_config
    from doctor.vram.estimator import Workload, estimate

    config = json.loads((Path(__file__).parents[1] / "doctor/data/models/llama-2-7b.json").read_text())
    est = estimate(from_config(config, name="llama-2-7b"), Workload(method="full", dtype="bf16", optimizer=optimizer))
    free = total_mib * 2**20 - 600 * 2**20    # factsbuilder's GPUs have 600 MiB in use
    return min(est.paged_bytes, max(0, est.peak_bytes - free)), est.paged_bytes


def test_paged_optimizer_spill_counts_against_the_containers_ram():
    """Llama-2-7B full bf16 with paged AdamW (8 B of fp32 state per parameter) on a 40 GiB GPU: the state that
    does not fit pages out to CPU RAM; a 24 GiB container cannot hold it, a 100 GiB one can."""
    spill, paged = _spill(40960)
    assert 0 < spill <= paged
    r, _ = _paged_ram(40960, 24)
    assert r.status is Status.FAIL, r.summary
    assert f"{spill / 2**30:.1f} GiB of paged_adamw state paged out of the GPU" in r.summary
    assert "paged_adamw_8bit" in r.remediation.text
    r, _ = _paged_ram(40960, 100)
    assert r.status is Status.PASS and f"{spill / 2**30:.1f} GiB of paged_adamw state" in r.summary


def test_paged_optimizer_that_fits_on_the_gpu_pages_nothing():
    spill, _ = _spill(143771, "paged_adamw_8bit")   # an H200's 140 GiB
    assert spill == 0
    r, _ = _paged_ram(143771, 24, "paged_adamw_8bit")
    assert r.status is Status.PASS and "0.0 GiB of paged_adamw_8bit state paged out" in r.summary


def test_estimate_json_says_when_the_job_fits_only_by_paging(capsys):
    import json

    from doctor.cli import main

    argv = ["estimate", "--model", "opt-1.3b", "--method", "full", "--seq", "2048", "--optimizer", "paged_adamw",
            "--format", "json"]
    assert main(argv + ["--gpu-memory", "12GiB"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "does not fit" and out["fits_by_paging_bytes"] == out["peak_bytes"] - 12 * 2**30
    assert out["gpu"]["label"].startswith("12.00 GiB")
    main(argv + ["--gpu-memory", "2GiB"])
    assert json.loads(capsys.readouterr().out)["fits_by_paging_bytes"] is None   # too small even without the state
