"""Mamba / SSM in doctor estimate: parameter counts against transformers' real modules (tiny random models on CPU,
and state-spaces/mamba-2.8b's published size), the generation state against the cache transformers fills, and the
selective-scan activations against the tensors mamba_ssm's fused function saves."""
from __future__ import annotations

from dataclasses import replace

import pytest

from doctor.errors import InputError
from doctor.vram import activations as act
from doctor.vram.arch import from_config
from doctor.vram.catalogue import resolve
from doctor.vram.estimator import Workload, estimate, ssm_state_bytes

TINY = {
    "mamba": dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=8),
    "mamba-bias-untied": dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=8, use_bias=True,
                              use_conv_bias=False, tie_word_embeddings=False, time_step_rank=5),
    "mamba2": dict(hidden_size=32, num_hidden_layers=2, vocab_size=64, state_size=8, num_heads=4, head_dim=16,
                   n_groups=2),
}


def _model(name: str):
    transformers = pytest.importorskip("transformers")
    v2 = name.startswith("mamba2")
    config = (transformers.Mamba2Config if v2 else transformers.MambaConfig)(**TINY[name])
    model = (transformers.Mamba2ForCausalLM if v2 else transformers.MambaForCausalLM)(config)
    return config, model


@pytest.mark.parametrize("name", sorted(TINY))
def test_parameter_count_equals_transformers_mamba_modules(name):
    config, model = _model(name)
    assert from_config(config.to_dict()).params == sum(p.numel() for p in model.parameters())


def test_mamba_2_8b_is_the_published_2_8b_model_in_both_config_formats():
    # state-spaces/mamba-2.8b: "2.8B"; its fp32 weights are ~11.1 GB. tests/test_vram.py builds the same config on the
    # meta device (test_parameter_count_equals_transformers_meta_build[mamba-2.8b]) for the exact count.
    hf = resolve("mamba-2.8b")
    assert hf.params == 2_768_345_600 and round(hf.params / 1e9, 1) == 2.8
    # the mamba_ssm config of state-spaces/mamba-2.8b: vocab 50277 padded to a multiple of 8 (50280), tied head
    ssm = from_config({"d_model": 2560, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
                       "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8})
    assert ssm.params == hf.params


def test_hybrid_and_mlp_mamba_configs_are_refused_naming_the_key():
    base = {"d_model": 256, "n_layer": 4, "vocab_size": 1000, "ssm_cfg": {"layer": "Mamba2"}}
    with pytest.raises(InputError) as exc:
        from_config({**base, "attn_layer_idx": [1]}, source="cfg.json")
    assert exc.value.source == "cfg.json" and exc.value.key == "attn_layer_idx"
    # mamba_ssm's own hybrids stay refused; transformers' hybrid families are modelled (tests/test_vram_hybrid.py)
    assert "not modelled yet" in str(exc.value) and "bamba, nemotron_h" in str(exc.value)
    with pytest.raises(InputError) as exc:
        from_config({**base, "ssm_cfg": {"layer": "Mamba3"}}, source="cfg.json")
    assert exc.value.key == "ssm_cfg.layer"


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_generation_state_equals_the_cache_transformers_fills_and_ignores_context(name):
    torch = pytest.importorskip("torch")
    config, model = _model(name)
    arch = from_config(config.to_dict())
    for length in (3, 11):
        with torch.no_grad():
            out = model.eval()(torch.randint(0, 64, (2, length)), use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.cache_params
        held = sum(t.numel() * t.element_size() for i in range(arch.layers)
                   for t in (cache.get_conv_state(i, state_idx=0), cache.get_recurrent_state(i, state_idx=0)))
        assert held == ssm_state_bytes(arch, 2, 4)
    short = estimate(arch, Workload(method="inference", dtype="fp32", seq=16, context=16))
    long = estimate(arch, Workload(method="inference", dtype="fp32", seq=16, context=1_000_000))
    assert short.peak_bytes == long.peak_bytes and short.breakdown["ssm_state"] == ssm_state_bytes(arch, 1, 4)
    assert "kv_cache" not in short.breakdown


def test_selective_scan_activations_are_what_mamba_inner_fn_saves():
    arch = resolve("mamba-2.8b")
    b, p, seq = arch.block, 2, 4096
    ctx = act.Ctx(p, False, frozenset({"*"}), frozenset(), 0, 4, "sdpa", seq, False, True)
    h, d, n, r = 2560, 5120, 16, 160
    # HF RMSNorm (fp32 input copy, rsqrt, normalized for the weight's gradient) + in_proj's input, then
    # MambaInnerFn.save_for_backward: xz, x_dbl, B, C, out (bf16) and scan_intermediates (fp32, one per 2048 tokens)
    expected = (4 * h + 4 + h * p) + h * p + (2 * d + (r + 2 * n) + 2 * n + d) * p + d * 2 * (2 * n) * 4 / seq
    assert act.per_token(ctx, b) == pytest.approx(expected)
    lora = replace(ctx, trainable=frozenset(), lora=frozenset({"in_proj"}), lora_rank=8, full=False)
    # a frozen in_proj with LoRA: PEFT casts its input to the fp32 adapter and keeps lora_A's output
    assert act.per_token(lora, b) == pytest.approx(expected - 2 * h * p + h * 4 + 8 * 4)
    with pytest.raises(InputError, match="no default LoRA targets for mamba"):
        estimate(arch, Workload(method="lora"))
