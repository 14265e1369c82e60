"""Model configs whose shapes no library builds: `doctor estimate --model <config.json>` refuses them with exit 2
and one line naming the file, the key the file holds and what is expected - never a traceback (exit 3), never an
estimate of a model that cannot exist (exit 0). The rule for each is the loader's own (transformers' config
validation and modules, mamba_ssm's Mamba / Mamba2 asserts, nanochat's CausalSelfAttention asserts, NVIDIA's
NemotronHConfig)."""
from __future__ import annotations

import json

import pytest

from doctor.cli import main

LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
         "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 2048}
NANOCHAT = {"model_type": "nanochat", "n_layer": 2, "n_embd": 256, "n_head": 2}
MAMBA = {"model_type": "mamba", "hidden_size": 128, "num_hidden_layers": 2, "vocab_size": 1000, "state_size": 16,
         "expand": 2, "conv_kernel": 4, "time_step_rank": 8}
MAMBA2 = {"model_type": "mamba2", "hidden_size": 256, "num_hidden_layers": 2, "vocab_size": 1000, "state_size": 64,
          "expand": 2, "conv_kernel": 4, "head_dim": 64, "num_heads": 8, "n_groups": 1}
MAMBA_SSM = {"d_model": 128, "n_layer": 2, "vocab_size": 1000, "pad_vocab_size_multiple": 8}
NEMOTRON_H = {"model_type": "nemotron_h", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000, "hybrid_override_pattern": "M*M-",
              "mamba_num_heads": 8, "mamba_head_dim": 64, "n_groups": 1, "ssm_state_size": 16}
BAMBA = {"model_type": "bamba", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
         "num_hidden_layers": 4, "vocab_size": 1000, "attn_layer_indices": [1], "mamba_n_heads": 8, "mamba_d_head": 64,
         "mamba_expand": 2, "mamba_d_state": 16}


def _estimate(tmp_path, cfg: dict, capsys) -> tuple[int, str, str]:
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    code = main(["estimate", "--model", str(tmp_path), "--method", "full"])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(tmp_path, cfg: dict, capsys, key: str, *needles: str) -> str:
    code, _, err = _estimate(tmp_path, cfg, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    line = lines[0]
    assert "internal error" not in line and "Traceback" not in line, line
    assert f"{tmp_path / 'config.json'}: {key}: " in line, line
    for needle in needles:
        assert needle in line, line
    return line


# --- the mamba_ssm config (ssm_cfg): once a ZeroDivisionError (exit 3) ------------------------------------------


def test_mamba_ssm_pad_vocab_size_multiple_zero_is_refused_not_a_traceback(tmp_path, capsys):
    # MambaLMHeadModel: vocab_size % pad_vocab_size_multiple
    _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg={"layer": "Mamba1"}, pad_vocab_size_multiple=0), capsys,
             "pad_vocab_size_multiple", "is 0", "expected a whole number from 1")


def test_mamba_ssm_mamba2_headdim_zero_is_refused_not_a_traceback(tmp_path, capsys):
    _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg={"layer": "Mamba2", "headdim": 0}), capsys,
             "ssm_cfg.headdim", "is 0", "expected a whole number from 1")


def test_mamba_ssm_mamba2_headdim_that_does_not_divide_the_width_is_refused(tmp_path, capsys):
    # mamba_ssm Mamba2: assert self.d_ssm % self.headdim == 0 (d_ssm = expand * d_model = 256)
    _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg={"layer": "Mamba2", "headdim": 48}), capsys,
             "ssm_cfg.headdim", "is 48", "256", "expected a divisor")


def test_mamba_ssm_mamba2_ngroups_that_does_not_divide_the_heads_is_refused(tmp_path, capsys):
    # mamba_ssm's SSD kernels: assert nheads % ngroups == 0 (256 / 64 = 4 heads)
    _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg={"layer": "Mamba2", "ngroups": 3}), capsys,
             "ssm_cfg.ngroups", "is 3", "4 heads")


@pytest.mark.parametrize("layer", ["Mamba1", "Mamba2"])
def test_mamba_ssm_expand_zero_is_named_as_the_file_spells_it(tmp_path, capsys, layer):
    line = _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg={"layer": layer, "expand": 0}), capsys,
                    "ssm_cfg.expand", "is 0", "expected a whole number from 1")
    assert "intermediate_size" not in line and "num_heads" not in line, line


@pytest.mark.parametrize("key", ["d_state", "d_conv", "dt_rank"])
def test_mamba_ssm_mamba1_sizes_of_zero_are_refused_naming_ssm_cfg(tmp_path, capsys, key):
    line = _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg={"layer": "Mamba1", key: 0}), capsys,
                    f"ssm_cfg.{key}", "is 0", "expected a whole number from 1")
    assert "state_size" not in line and "conv_kernel" not in line and "time_step_rank" not in line, line


@pytest.mark.parametrize("ssm", [[1], "Mamba2", 3])
def test_ssm_cfg_that_is_not_a_mapping_is_refused_naming_ssm_cfg(tmp_path, capsys, ssm):
    line = _refused(tmp_path, dict(MAMBA_SSM, ssm_cfg=ssm), capsys, "ssm_cfg", "expected a mapping")
    assert "model_type" not in line, line


# --- attention heads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("kv", [8, 3])
def test_key_value_heads_that_do_not_divide_the_query_heads_are_refused(tmp_path, capsys, family, kv):
    # transformers' repeat_kv: num_key_value_groups = num_attention_heads // num_key_value_heads; 8 of 4 or 3 of 4
    # fails in the attention ("The size of tensor a (4) must match the size of tensor b ...")
    _refused(tmp_path, dict(LLAMA, model_type=family, num_key_value_heads=kv), capsys,
             "num_key_value_heads", f"is {kv}", "num_attention_heads 4", "expected a divisor of num_attention_heads")


@pytest.mark.parametrize("cfg", [
    dict(BAMBA, num_key_value_heads=3),
    dict(NEMOTRON_H, num_key_value_heads=3),
    {"model_type": "granitemoehybrid", "hidden_size": 256, "shared_intermediate_size": 512, "num_attention_heads": 4,
     "num_key_value_heads": 3, "num_hidden_layers": 4, "vocab_size": 1000, "num_local_experts": 0,
     "mamba_n_heads": 8, "mamba_d_head": 64, "mamba_expand": 2, "mamba_d_state": 16},
], ids=["bamba", "nemotron_h", "granitemoehybrid"])
def test_hybrid_attention_key_value_heads_that_do_not_divide_are_refused(tmp_path, capsys, cfg):
    _refused(tmp_path, cfg, capsys, "num_key_value_heads", "is 3", "expected a divisor of num_attention_heads")


def test_more_heads_than_hidden_units_names_the_heads_not_a_head_dim_the_file_lacks(tmp_path, capsys):
    line = _refused(tmp_path, dict(LLAMA, num_attention_heads=512), capsys,
                    "num_attention_heads", "is 512", "hidden_size 256", "expected at most 256 heads")
    assert "head_dim:" not in line, line


def test_qwen3_vl_text_heads_are_named_inside_text_config(tmp_path, capsys):
    text = {k: v for k, v in LLAMA.items() if k != "model_type"}
    vision = {"hidden_size": 64, "intermediate_size": 128, "num_heads": 4, "depth": 2, "patch_size": 16,
              "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 256, "num_position_embeddings": 16}
    _refused(tmp_path, {"model_type": "qwen3_vl", "text_config": dict(text, num_key_value_heads=3),
                        "vision_config": vision}, capsys, "text_config: num_key_value_heads", "is 3")


@pytest.mark.parametrize("cfg,key,needles", [
    (dict(NANOCHAT, n_embd=64, n_head=128), "n_head", ("is 128", "n_embd 64")),     # head_dim 0
    (dict(NANOCHAT, n_head=3), "n_head", ("is 3", "does not divide n_embd 256")),   # assert n_embd % n_head == 0
    (dict(NANOCHAT, n_kv_head=5), "n_kv_head", ("is 5", "expected a divisor of n_head")),   # n_kv_head <= n_head
    (dict(NANOCHAT, n_head=4, n_kv_head=3), "n_kv_head", ("is 3", "expected a divisor of n_head")),
])
def test_nanochat_head_counts_its_attention_asserts_against_are_refused(tmp_path, capsys, cfg, key, needles):
    # karpathy/nanochat nanochat/gpt.py CausalSelfAttention: assert n_embd % n_head == 0;
    # assert n_kv_head <= n_head and n_head % n_kv_head == 0
    _refused(tmp_path, cfg, capsys, key, *needles)


# --- Mamba / Mamba-2 sizes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["state_size", "conv_kernel", "time_step_rank"])
def test_mamba1_sizes_of_zero_are_refused(tmp_path, capsys, key):
    # conv1d of kernel 0: "negative padding is not supported"; dt_proj's init: time_step_rank ** -0.5
    _refused(tmp_path, dict(MAMBA, **{key: 0}), capsys, key, "is 0", "expected a whole number from 1")


def test_mamba1_sizes_given_under_their_mamba_ssm_spelling_are_named_so(tmp_path, capsys):
    cfg = {k: v for k, v in MAMBA.items() if k != "state_size"}
    _refused(tmp_path, dict(cfg, d_state=0), capsys, "d_state", "is 0")


def test_mamba2_expand_zero_is_refused(tmp_path, capsys):
    _refused(tmp_path, dict(MAMBA2, expand=0), capsys, "expand", "is 0", "expected a whole number from 1")


def test_mamba2_heads_times_head_dim_must_be_the_mixer_width(tmp_path, capsys):
    # Mamba2Config.validate_architecture: hidden_size * expand == num_heads * head_dim (3 x 64 != 512)
    _refused(tmp_path, dict(MAMBA2, num_heads=3), capsys, "head_dim", "192", "512",
             "expected num_heads x head_dim = expand x hidden_size")


def test_mamba2_without_num_heads_takes_transformers_default_not_a_derived_count(tmp_path, capsys):
    # Mamba2Config.num_heads = 128: 128 x 64 != 2 x 256, which transformers refuses to build
    cfg = {k: v for k, v in MAMBA2.items() if k != "num_heads"}
    _refused(tmp_path, cfg, capsys, "head_dim", "128 heads (num_heads, not set)", "512")


def test_mamba2_n_groups_that_do_not_divide_the_heads_are_refused(tmp_path, capsys):
    # Mamba2Mixer: B.repeat_interleave(num_heads // n_groups, output_size=num_heads) fails for 8 heads in 3 groups
    _refused(tmp_path, dict(MAMBA2, n_groups=3), capsys, "n_groups", "is 3", "8 heads", "expected a divisor")


def test_mamba2_count_without_n_groups_is_transformers_default_of_8(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = {k: v for k, v in MAMBA2.items() if k != "n_groups"}
    model = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**{k: v for k, v in cfg.items()
                                                                          if k != "model_type"}))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["estimate", "--model", str(tmp_path), "--format", "json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg,key", [
    (dict(NEMOTRON_H, n_groups=3), "n_groups"),
    (dict(BAMBA, mamba_n_groups=3), "mamba_n_groups"),
])
def test_hybrid_mamba2_groups_that_do_not_divide_the_heads_are_refused(tmp_path, capsys, cfg, key):
    _refused(tmp_path, cfg, capsys, key, "is 3", "8 heads")


# --- hybrid layer lists -------------------------------------------------------------------------------------------


def test_nemotron_h_pattern_of_another_length_than_num_hidden_layers_is_refused(tmp_path, capsys):
    # NVIDIA's NemotronHConfig (vLLM vllm/transformers_utils/configs/nemotron_h.py):
    # assert len(self.hybrid_override_pattern) == self.num_hidden_layers
    _refused(tmp_path, dict(NEMOTRON_H, num_hidden_layers=52), capsys,
             "hybrid_override_pattern", "has 4 layers", "num_hidden_layers is 52")


def test_nemotron_h_layers_block_type_of_another_length_than_num_hidden_layers_is_refused(tmp_path, capsys):
    _refused(tmp_path, dict(NEMOTRON_H, num_hidden_layers=10, layers_block_type=["mamba", "attention"]), capsys,
             "layers_block_type", "has 2 layers", "num_hidden_layers is 10")
