"""Hybrid attention + Mamba-2 models in doctor estimate (Bamba, NemotronH): parameter counts against the modules
transformers builds, the generation state against the cache it fills (a KV cache in the attention layers only, a
constant conv + SSM state in the Mamba layers), activations of the attention and MLP layers against what autograd
saves, the CLI at a 32k context, and the refusal of the hybrid families doctor does not model."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from doctor.cli import main
from doctor.errors import InputError
from doctor.vram import activations as act
from doctor.vram.arch import REFUSED_HYBRIDS, from_config
from doctor.vram.estimator import Workload, estimate, ssm_state_bytes

TINY = {
    "bamba": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 5, "num_attention_heads": 4,
              "num_key_value_heads": 2, "vocab_size": 100, "attn_layer_indices": [1, 3], "mamba_n_heads": 8,
              "mamba_d_state": 16, "mamba_n_groups": 2, "mamba_chunk_size": 16},
    "nemotron_h": {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
                   "head_dim": 16, "vocab_size": 100, "hybrid_override_pattern": "M-M*-M", "mamba_num_heads": 8,
                   "mamba_head_dim": 16, "ssm_state_size": 16, "n_groups": 2, "chunk_size": 16},
    "granitemoehybrid": {"hidden_size": 64, "shared_intermediate_size": 96, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "num_local_experts": 0,
                         "layer_types": ["mamba", "attention", "mamba", "attention"], "mamba_n_heads": 8,
                         "mamba_d_state": 16, "mamba_n_groups": 2, "mamba_chunk_size": 16},
}
LAYERS = {"bamba": ["mamba_mlp", "attention_mlp", "mamba_mlp", "attention_mlp", "mamba_mlp"],
          "nemotron_h": ["mamba", "mlp", "mamba", "attention", "mlp", "mamba"],
          "granitemoehybrid": ["mamba_mlp", "attention_mlp", "mamba_mlp", "attention_mlp"]}
# nvidia/Nemotron-H-8B-Base-8K's config.json, its architecture fields as NVIDIA quotes them in
# NVIDIA-NeMo/Megatron-Bridge tests/unit_tests/models/nemotronh/test_nemotron_h_bridge.py (nemotronh_8b_config_dict)
NEMOTRON_H_8B = {
    "model_type": "nemotron_h", "hidden_size": 4096, "num_hidden_layers": 52, "vocab_size": 131072,
    "hybrid_override_pattern": "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-",
    "num_attention_heads": 32, "num_key_value_heads": 8, "attention_head_dim": 128, "attention_bias": False,
    "intermediate_size": 21504, "mlp_bias": False, "mlp_hidden_act": "relu2", "mamba_num_heads": 128,
    "mamba_head_dim": 64, "n_groups": 8, "ssm_state_size": 128, "conv_kernel": 4, "expand": 2, "use_bias": False,
    "use_conv_bias": True, "tie_word_embeddings": False,
}


def _model(family: str):
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.for_model(family, **TINY[family])
    return config, transformers.AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("family", sorted(TINY))
def test_parameter_count_equals_transformers_modules(family):
    config, model = _model(family)
    real = sum(p.numel() for p in model.parameters())
    assert from_config(config.to_dict()).params == real                   # the config as transformers saves it
    assert from_config(dict(TINY[family], model_type=family)).params == real   # as a hand-written config.json spells it


def test_nemotron_h_8b_count_equals_transformers_meta_build_and_splits_its_layers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**NEMOTRON_H_8B))
    arch = from_config(NEMOTRON_H_8B)
    assert arch.params == sum(p.numel() for p in model.parameters())       # 8,100,852,736: the "8B" model
    assert arch.extra["layer_kinds"] == {"mamba": 24, "attention": 4, "mlp": 24} and arch.attention_layers == 4


@pytest.mark.parametrize("family", sorted(TINY))
def test_generation_cache_equals_what_transformers_fills(family):
    torch = pytest.importorskip("torch")
    config, model = _model(family)
    arch = from_config(config.to_dict())
    for length in (3, 11):
        with torch.no_grad():
            out = model.eval()(torch.randint(0, 100, (2, length)), use_cache=True)
        cache = out.past_key_values
        kinds = [type(layer).__name__ for layer in cache.layers]
        kv = sum(t.numel() * t.element_size() for layer in cache.layers if hasattr(layer, "keys") and
                 torch.is_tensor(layer.keys) for t in (layer.keys, layer.values))
        state = sum(t.numel() * t.element_size() for i, kind in enumerate(kinds) if kind == "LinearAttentionLayer"
                    for t in (cache.get_conv_state(i, state_idx=0), cache.get_recurrent_state(i, state_idx=0)))
        est = estimate(arch, Workload(method="inference", dtype="fp32", batch=2, seq=length, context=length))
        assert est.breakdown["kv_cache"] == kv and kv == 2 * arch.attention_layers * 2 * 16 * 2 * length * 4
        assert est.breakdown["ssm_state"] == state == ssm_state_bytes(arch, 2, 4)


def test_kv_cache_grows_with_the_attention_layers_only_and_the_ssm_state_not_at_all():
    arch = from_config(NEMOTRON_H_8B)
    short, long = (estimate(arch, Workload(method="inference", dtype="bf16", batch=1, seq=512, context=c))
                   for c in (4096, 32768))
    # 4 attention layers x K and V x 8 KV heads x 128 dims x 2 bytes per token (a 52-layer transformer: 13x that)
    assert long.breakdown["kv_cache"] - short.breakdown["kv_cache"] == 4 * 2 * 8 * 128 * 2 * (32768 - 4096)
    assert long.breakdown["ssm_state"] == short.breakdown["ssm_state"] == 24 * (
        (128 * 64 + 2 * 8 * 128) * 4 + 128 * 64 * 128) * 2          # 24 Mamba layers: conv state + SSM state
    assert any("attention layers only" in n for n in long.notes)


def test_attention_and_mlp_layers_add_up_to_the_decoder_block():
    """NemotronH's attention-only and MLP-only layers, computed by the new sublayer code, add up to the reviewed
    decoder formula for the same sizes (a gated MLP in a Bamba-shaped layer)."""
    bamba = from_config(dict(TINY["bamba"], model_type="bamba"))
    decoder = replace(next(b for b, _ in bamba.kinds if b.kind == "attention_mlp"), kind="decoder",
                      attn_out_copy=False)
    attn = replace(decoder, kind="attention", linears=decoder.linears[:4])
    mlp = replace(decoder, kind="mlp", linears=decoder.linears[4:], heads=0, kv_heads=0, head_dim=0)
    for ctx in (act.Ctx(2, False, frozenset({"*"}), frozenset(), 0, 4, "sdpa", 64, False, True),
                act.Ctx(4, True, frozenset({"*"}), frozenset(), 0, 4, "eager", 64, False, True),
                act.Ctx(2, False, frozenset(), frozenset({"q_proj", "v_proj", "down_proj"}), 8, 4, "sdpa", 64, False,
                        False)):
        assert act.per_token(ctx, attn) + act.per_token(ctx, mlp) == pytest.approx(act.per_token(ctx, decoder))
    mamba = next(b for b, _ in bamba.kinds if b.kind == "mamba_mlp")
    ctx = act.Ctx(2, False, frozenset({"*"}), frozenset(), 0, 4, "sdpa", 64, False, True)
    alone = replace(mamba, kind="mamba", linears=mamba.linears[:2])
    assert act.per_token(ctx, mamba) == pytest.approx(act.per_token(ctx, alone) + act.per_token(ctx, mlp))


@pytest.mark.parametrize("family,dtype,attn", [("nemotron_h", "bf16", "sdpa"), ("nemotron_h", "fp32", "eager"),
                                               ("bamba", "bf16", "sdpa"), ("granitemoehybrid", "bf16", "sdpa")])
def test_attention_and_mlp_layer_activations_match_autograd_on_cpu(family, dtype, attn):
    """What the attention and MLP layers keep for backward, measured with saved_tensors_hooks on transformers' own
    modules (tests/vram/saved_bytes.py). The Mamba layers run the PyTorch fallback on CPU, not mamba_ssm's fused
    kernel doctor models, so they are not compared here (tests/test_vram_mamba.py checks that kernel's tensors)."""
    pytest.importorskip("transformers")
    sys.path.insert(0, str(Path(__file__).parent / "vram"))
    from saved_bytes import measure

    measured = measure({"model_type": family, "config": TINY[family], "dtype": dtype, "attn": attn, "batch": 2,
                        "seq": 16})
    arch = from_config(dict(TINY[family], model_type=family))
    ctx = act.Ctx(4 if dtype == "fp32" else 2, False, frozenset({"*"}), frozenset(), 0, 4, attn, 16, False, True)
    kinds = LAYERS[family]
    blocks = {b.kind: b for b, _ in arch.kinds}
    # the last layer of each kind: the first attention layer also holds the rotary tables and mask built once
    last = dict(zip(kinds, measured["per_token"], strict=True))
    for kind in set(kinds) - {"mamba", "mamba_mlp"}:
        assert act.per_token(ctx, blocks[kind]) == pytest.approx(last[kind], rel=0.01), kind


def test_cli_estimates_a_hybrid_at_32k_context(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(NEMOTRON_H_8B))
    assert main(["estimate", "--model", str(cfg), "--method", "inference", "--context", "32768",
                 "--format", "json"]) in (0, 1)
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == from_config(NEMOTRON_H_8B).params
    assert out["breakdown"]["kv_cache"] == 4 * 2 * 8 * 128 * 2 * 32768        # bf16, batch 1: 1 GiB
    assert out["breakdown"]["ssm_state"] > 0 and sum(out["breakdown"].values()) == out["peak_bytes"]


@pytest.mark.parametrize("family", sorted(REFUSED_HYBRIDS))
def test_unmodelled_hybrid_families_are_refused_in_one_line_naming_what_is_supported(family, tmp_path, capsys):
    with pytest.raises(InputError) as exc:
        from_config({"model_type": family, "hidden_size": 64}, source="cfg.json")
    assert exc.value.key == "model_type" and "bamba, nemotron_h, granitemoehybrid (dense)" in str(exc.value)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": family}))
    assert main(["estimate", "--model", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not modelled yet" in err, err


@pytest.mark.parametrize("cfg,key", [
    ({"hybrid_override_pattern": "M*E-"}, "hybrid_override_pattern"),          # mixture-of-experts layers
    ({"hybrid_override_pattern": "M*Z"}, "hybrid_override_pattern"),          # an unknown letter
    ({"layers_block_type": ["mamba", "moe"]}, "layers_block_type"),
    ({"hybrid_override_pattern": "M*", "num_nextn_predict_layers": 1}, "num_nextn_predict_layers"),
])
def test_nemotron_h_layouts_doctor_cannot_count_are_refused_naming_the_key(cfg, key):
    base = {k: v for k, v in TINY["nemotron_h"].items() if k != "hybrid_override_pattern"}
    with pytest.raises(InputError) as exc:
        from_config({**base, "model_type": "nemotron_h", **cfg}, source="cfg.json")
    assert exc.value.key == key


def test_granite_hybrid_with_experts_is_refused_naming_the_key():
    with pytest.raises(InputError) as exc:
        from_config(dict(TINY["granitemoehybrid"], model_type="granitemoehybrid", num_local_experts=8), source="c.json")
    assert exc.value.key == "num_local_experts" and "mixture-of-experts" in str(exc.value)


def test_peft_default_lora_targets_for_hybrids():
    # peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: nemotron_h -> q, k, v, o; no bamba
    nemo = from_config(dict(TINY["nemotron_h"], model_type="nemotron_h"))
    est = estimate(nemo, Workload(method="lora", lora_rank=4))
    assert est.trainable == 4 * sum(n * sum(lin.fan_in + lin.fan_out for lin in b.linears) for b, n in nemo.kinds
                                    if b.kind == "attention")
    with pytest.raises(InputError, match="no default LoRA targets for bamba"):
        estimate(from_config(dict(TINY["bamba"], model_type="bamba")), Workload(method="lora"))
