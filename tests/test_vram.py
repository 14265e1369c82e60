"""doctor estimate's memory model: exact parameter counts, activations checked against what autograd really
saves (tiny real models on CPU), bitsandbytes' real NF4 bytes, the published-peaks benchmark, CLI and check."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from factsbuilder import autodl_box
import factsbuilder as fb

from doctor.cli import main
from doctor.model import Status
from doctor.profile import load
from doctor.runner import evaluate
from doctor.vram import activations as act
from doctor.vram.arch import Linear, from_config
from doctor.vram.bench import rows
from doctor.vram.catalogue import HUB_IDS, resolve
from doctor.vram.command import parse_size
from doctor.vram.estimator import Workload, _quant_bytes, estimate
from doctor.vram.whatif import what_ifs

HERE = Path(__file__).parent
MODELS = Path(__file__).parents[1] / "doctor" / "data" / "models"
GIB = 2**30


@pytest.fixture(scope="module")
def meta_counts() -> dict[str, int]:
    """Every built-in model's parameter count as transformers builds it on the meta device, in one subprocess
    (torch and transformers are imported once, not once per model)."""
    pytest.importorskip("transformers")
    paths = {name: str(MODELS / (name + ".json")) for name in sorted(HUB_IDS)}
    code = f"""
import json, torch, transformers
from transformers import AutoConfig
out = {{}}
for name, path in {paths!r}.items():
    c = AutoConfig.from_pretrained(path)
    with torch.device('meta'):
        if c.model_type == 'bert':
            m = transformers.BertForSequenceClassification(c)
        elif c.model_type == 'qwen3_vl':
            m = transformers.Qwen3VLForConditionalGeneration._from_config(c)
        else:
            m = transformers.AutoModelForCausalLM.from_config(c)
    out[name] = sum(p.numel() for p in m.parameters())
print(json.dumps(out))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", sorted(HUB_IDS))
def test_parameter_count_equals_transformers_meta_build(name, meta_counts):
    """The analytic count against the model transformers builds on the meta device from the same config.json."""
    assert resolve(name).params == meta_counts[name]


def test_nanochat_d20_is_the_561m_model():
    # nanochat README (speedrun): the depth-20 model has 561M parameters; width 64*depth, vocab 65,536
    assert round(resolve("nanochat-d20").params / 1e6) == 561


TINY = {
    "llama": dict(hidden_size=64, intermediate_size=176, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  num_hidden_layers=2, vocab_size=128),
    "qwen3": dict(hidden_size=64, intermediate_size=176, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  num_hidden_layers=2, vocab_size=128),
    "opt": dict(hidden_size=64, ffn_dim=256, num_attention_heads=4, num_hidden_layers=2, vocab_size=128,
                word_embed_proj_dim=64, max_position_embeddings=64, dropout=0.0, attention_dropout=0.0),
    "bert": dict(hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2, vocab_size=128,
                 max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
}


AUTOGRAD_CASES = [
    ("llama", "fp32", "eager", None), ("llama", "bf16", "eager", None), ("llama", "bf16", "sdpa", None),
    ("llama", "bf16", "sdpa", ["q_proj", "v_proj"]), ("qwen3", "bf16", "eager", None),
    ("opt", "fp32", "eager", None), ("opt", "bf16", "sdpa", None), ("bert", "fp32", "eager", None)]


def _spec(family: str, dtype: str, attn: str, lora: list[str] | None) -> dict:
    return dict(model_type=family, config=TINY[family], dtype=dtype, attn=attn, batch=2, seq=16, lora=lora,
                lora_rank=4)


@pytest.fixture(scope="module")
def autograd_saved() -> list[dict]:
    """tests/vram/saved_bytes.py over every case, in one subprocess (torch and transformers imported once)."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    specs = [_spec(*case) for case in AUTOGRAD_CASES]
    out = subprocess.run([sys.executable, str(HERE / "vram" / "saved_bytes.py"), json.dumps(specs)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", range(len(AUTOGRAD_CASES)),
                         ids=["-".join(str(x) for x in c[:3]) + ("-lora" if c[3] else "") for c in AUTOGRAD_CASES])
def test_saved_activations_match_autograd_on_cpu(case, autograd_saved):
    """Bytes per token one block keeps for backward, measured with saved_tensors_hooks on the real Hugging Face
    implementation. Dropout is off here: on CPU dropout keeps a float mask, CUDA's fused kernel a 1-byte one."""
    family, dtype, attn, lora = AUTOGRAD_CASES[case]
    measured = autograd_saved[case]["per_token"][-1]
    arch = from_config(dict(TINY[family], model_type=family))
    full = lora is None
    ctx = act.Ctx(p=4 if dtype == "fp32" else 2, amp=False, trainable=frozenset({"*"}) if full else frozenset(),
                  lora=frozenset(lora or ()), lora_rank=4, adapter_bytes=4, attention=attn, seq=16, dropout=False,
                  full=full)
    assert act.per_token(ctx, arch.block) == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize("double", [False, True])
def test_nf4_bytes_per_parameter_match_bitsandbytes(double):
    torch = pytest.importorskip("torch")
    bnbf = pytest.importorskip("bitsandbytes.functional")
    w = torch.randn(1024, 4096, dtype=torch.bfloat16)
    q, st = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double)
    real = q.numel() * q.element_size() + st.absmax.numel() * st.absmax.element_size()
    if st.nested:
        real += st.state2.absmax.numel() * st.state2.absmax.element_size()
    assert _quant_bytes("nf4", double, Linear("x", 4096, 1024)) * w.numel() == pytest.approx(real, rel=0.005)


def test_published_peaks_benchmark_within_target():
    """doctor/data/vram_measured.yaml (python -m doctor.vram.bench). The 13 original rows hold mean <= 10%, worst
    <= 20% (achieved 5.0% / 8.9%, torchtune's LoRA rows read in GB of 1e9 as their recipe printed them). Over the
    whole table (with issue 18's rows: LitGPT 2023 LoRA / QLoRA / FSDP / generation, PEFT 70B ZeRO-3 / FSDP / CPU
    offload, PEFT's MetaMathQA runs, torchtune's QLoRA and generation tutorials, the host RAM of Philipp Schmid's
    Llama-3-70B FSDP QLoRA) issue 18's mean target (<= 5%) is met and its worst-row target (<= 10%) is NOT: this asserts the bounds
    achieved now, so a change that makes the table worse fails, and the bench exits 1 while the target is missed."""
    from doctor.vram.bench import TARGET_MAX, TARGET_MEAN, summary

    results = rows()
    detail = [(r.id, round(r.error, 3)) for r in results]
    original = [r for r in results if r.group == "original"]
    added = [r for r in results if r.group == "issue-18"]
    assert len(original) == 13 and len(added) >= 15 and len(results) == len(original) + len(added)
    assert {r.measures for r in added} >= {"allocated", "nvml_used", "cpu_ram_per_node", "reserved"}
    assert all(r.modelled for r in results), [r.id for r in results if not r.modelled]
    mean_o, worst_o = summary(original)
    assert mean_o <= 0.10 and worst_o <= 0.20, detail
    mean_all, worst_all = summary(results)
    # achieved: 4.3% / 16.5%, the FSDP-offload CPU RAM row: its "around 107 GB" lies between doctor's training
    # state, 89.4 GB, and its lazy-init peak, 124.6 GB; every other row is within 10%
    assert mean_all <= TARGET_MEAN and worst_all <= 0.17, detail
    assert [r.id for r in results if abs(r.error) > TARGET_MAX] == ["peft-llama2-70b-qlora-fsdp-offload-cpu"], detail
    assert not (mean_all <= TARGET_MEAN and worst_all <= TARGET_MAX), "target met: tighten this test to it"


def test_mechanisms_move_the_estimate_the_right_way():
    arch = resolve("opt-1.3b")
    base = Workload(method="full", dtype="bf16", batch=4, seq=512, attention="eager", optimizer="adamw")
    e = estimate(arch, base)
    assert estimate(arch, replace(base, attention="sdpa")).peak_bytes < e.peak_bytes
    assert estimate(arch, replace(base, checkpointing=True)).peak_bytes < e.peak_bytes
    # foreach AdamW's step holds exactly one trainable-sized buffer more than fused AdamW
    step = Workload(method="full", dtype="bf16", batch=1, seq=64, optimizer="adamw")
    foreach, fused = estimate(arch, step), estimate(arch, replace(step, optimizer="adamw_fused"))
    assert foreach.phase == "optimizer step" and foreach.breakdown["transient"] == arch.params * 2
    assert "transient" not in fused.breakdown or fused.breakdown["transient"] < arch.params * 2
    q = Workload(method="qlora", dtype="bf16", batch=1, seq=512)
    assert estimate(arch, replace(q, double_quant=True)).breakdown["weights"] < estimate(arch, q).breakdown["weights"]
    # the logits spike is b*s*V in the compute dtype plus the fp32 log-probs and their gradient
    llama = resolve("llama-2-7b")
    lg = estimate(llama, Workload(method="lora", dtype="bf16", batch=2, seq=1024)).breakdown["logits"]
    assert lg == 2 * 1024 * 32000 * (8 + 2 + 2)


def test_kv_cache_is_exact_for_llama2_7b():
    e = estimate(resolve("llama-2-7b"), Workload(method="inference", dtype="fp16", batch=1, seq=4096))
    assert e.breakdown["kv_cache"] == 2 * 32 * 32 * 128 * 4096 * 2     # 2 GiB: 0.5 MiB per token
    assert e.breakdown["weights"] == 6738415616 * 2


def test_breakdown_adds_up_and_vision_adds_tokens():
    arch = resolve("qwen3-vl-32b-instruct")
    e = estimate(arch, Workload(method="qlora", dtype="bf16", batch=1, seq=2048, images=1, image_size=640,
                                lora_rank=64, lora_targets="all-linear", checkpointing=True))
    assert sum(e.breakdown.values()) == e.peak_bytes
    assert e.tokens == 2048 + (640 // 16) ** 2 // 4


def test_sizes_parse_binary_and_decimal_units():
    assert parse_size("80GiB") == 80 * GIB and parse_size("80GB") == 80 * 10**9 and parse_size("512 MiB") == 2**29
    with pytest.raises(Exception, match="with its unit"):
        parse_size("80")


def test_cli_json_contract(capsys):
    rc = main(["estimate", "--model", "opt-1.3b", "--method", "full", "--dtype", "bf16", "--batch", "4", "--seq", "512",
               "--optimizer", "adamw", "--attention", "eager", "--gpu", "A800-80GB", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["verdict"] == "fits"
    assert isinstance(out["peak_bytes"], int) and sum(out["breakdown"].values()) == out["peak_bytes"]
    assert out["gpu"]["capacity_bytes"] == 81920 * 2**20


def test_cli_does_not_fit_exit_1_with_what_ifs_that_fit(capsys):
    rc = main(["estimate", "--model", "llama-2-7b", "--method", "full", "--dtype", "bf16", "--batch", "4",
               "--seq", "2048", "--attention", "eager", "--gpu-memory", "80GiB", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["verdict"] == "does not fit"
    assert out["what_ifs"] and out["what_ifs"][0]["fits"]
    arch = resolve("llama-2-7b")
    wl = Workload(method="full", dtype="bf16", batch=4, seq=2048, attention="eager")
    base = estimate(arch, wl)
    for w in what_ifs(arch, wl, 80 * GIB, base):
        assert w.estimate.peak_bytes < base.peak_bytes


def test_what_ifs_the_command_would_refuse_are_left_out(capsys):
    """Each what-if runs as printed: no --grad-accum past the flags' limit (doctor/args.py whole()), and no 'LoRA
    instead of full' when the --lora-targets given for full training name no module of the model."""
    from doctor.args import MAX_COUNT
    argv = ["estimate", "--offline", "--model", "opt-125m", "--method", "full", "--format", "json"]
    for extra, flag in ((["--gpu-memory", "2GB", "--batch", "4", "--grad-accum", str(MAX_COUNT)], "--grad-accum"),
                        (["--gpu-memory", "1GB", "--lora-targets", "nothing"], "--method lora")):
        assert main([*argv, *extra]) == 1
        flags = [w["flags"] for w in json.loads(capsys.readouterr().out)["what_ifs"]]
        assert flags and not any(flag in f for f in flags), flags
    argv += ["--gpu-memory", "2GB"]
    assert main([*argv, "--batch", "4", "--grad-accum", str(MAX_COUNT // 2)]) == 1
    flags = [w["flags"] for w in json.loads(capsys.readouterr().out)["what_ifs"]]
    assert f"--batch 2 --grad-accum {MAX_COUNT}" in flags, flags
    for f in flags:
        assert main([*argv, "--batch", "4", "--grad-accum", str(MAX_COUNT // 2), *f.split()]) in (0, 1), f
        capsys.readouterr()


def test_cli_model_path_and_bad_input(tmp_path, capsys):
    cfg = tmp_path / "config.json"
    cfg.write_text((MODELS / "opt-125m.json").read_text())
    assert main(["estimate", "--model", str(tmp_path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 125239296
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for argv, needle in ((["--model", str(bad)], "invalid JSON"), (["--model", "opt-1.3"], "did you mean"),
                         (["--model", "opt-125m", "--gpu-memory", "80"], "with its unit"),
                         (["--model", "opt-125m", "--gpu", "Z9000"], "names no single GPU"),
                         (["--model", "opt-125m", "--batch", "0"], "expected a whole number from 1"),
                         (["--model", "no-such-org/no-such-model", "--offline"], "not in the Hugging Face cache")):
        assert main(["estimate", *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err


def test_seed_003_nanochat_d20_does_not_fit_32gb_and_d12_does(capsys):
    # seed 003: depth 20, batch 14, seq 3072 went OOM on a 32 GB card; depth 12, batch 8, seq 1536 trained
    assert main(["estimate", "--profile", "nanochat-d20-32g", "--gpu-memory", "32GiB", "--format", "json"]) == 1
    assert main(["estimate", "--profile", "nanochat-d12-32g", "--gpu-memory", "32GiB", "--format", "json"]) == 0


def test_vram_check_on_the_autodl_a800_qwen_qlora_job(registry):
    facts = autodl_box(fb.QWEN_QLORA_ENV, hf_home="/root/autodl-tmp/huggingface")
    rep = evaluate(facts, load(["autodl-a800", "qwen3-vl-32b-qlora"], registry), registry)
    r = {x.check_id: x for x in rep.results}["vram.budget"]
    assert r.status is Status.PASS, r.summary
    assert "estimated peak" in r.summary and any(d.startswith("weights:") for d in r.details)


def test_vram_check_fails_on_a_24gb_card_with_what_ifs(registry):
    facts = fb.gpu_box(name="NVIDIA GeForce RTX 4090", total_mib=24564, cc="8.9")
    rep = evaluate(facts, load(["qwen3-vl-32b-qlora"], registry), registry)
    r = {x.check_id: x for x in rep.results}["vram.budget"]
    assert r.status is Status.FAIL and "does not fit" in r.summary
    assert r.remediation and r.remediation.commands[0].startswith("doctor estimate --model Qwen/Qwen3-VL-32B-Instruct")


@pytest.mark.parametrize("argv", [
    ["--model", "llama-2-7b", "--method", "full"],
    ["--model", "llama-2-7b", "--method", "qlora", "--chunked-ce"],
    ["--model", "llama-2-7b", "--method", "inference", "--context", "4096", "--transformers-version", "4.40.0"],
    ["--model", "mamba-2.8b", "--method", "inference"],
    ["--model", "opt-1.3b", "--method", "lora", "--optimizer", "paged_adamw"],
])
def test_every_single_gpu_term_carries_its_formula_and_source(argv, capsys):
    """The JSON names each term of the breakdown with a formula (its figure per parameter or token where it scales
    with one) and where its model comes from, as the distributed and second-order terms do."""
    assert main(["estimate", *argv, "--format", "json"]) in (0, 1)
    out = json.loads(capsys.readouterr().out)
    assert set(out["breakdown"]) <= set(out["gpu_terms"]), set(out["breakdown"]) - set(out["gpu_terms"])
    for name, term in out["gpu_terms"].items():
        assert term["formula"] and term["source"], name
    if "weights" in out["breakdown"]:
        per = out["breakdown"]["weights"] / out["params"]
        assert out["gpu_terms"]["weights"]["formula"].startswith(f"{per:,.4g} B x {out['params']:,} parameters")


def test_a_gpu_without_an_nvml_figure_is_labelled_nominal(capsys):
    """doctor's table gives NVML's total where a real report shows it; otherwise the nominal GB figure is taken as
    GiB (as GPU memory is sold) and the label says so rather than presenting it as measured."""
    from doctor import refdata

    rows = [r for r in refdata.load("gpus")["gpus"] if r.get("memory_gb") and not r.get("nvml_total_mib")]
    assert rows
    assert main(["estimate", "--model", "opt-125m", "--gpu", rows[0]["name"], "--format", "json"]) in (0, 1)
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"]["capacity_bytes"] == rows[0]["memory_gb"] * 2**30
    assert "nominal" in out["gpu"]["label"]


def test_the_console_bar_names_the_gpu_it_is_judged_against(capsys):
    for argv in (["--method", "inference"], ["--method", "full"]):
        assert main(["estimate", "--model", "opt-125m", *argv, "--gpu-memory", "4GiB"]) in (0, 1)
        bar = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
        assert bar and " of 4.00 GiB" in bar[0], bar


def test_a_sequence_past_the_position_table_is_said(capsys):
    """OPT's learned positions have max_position_embeddings rows (2048): 4096 tokens index past them; a RoPE model
    runs past its length, untrained there. Either way the estimate says so instead of staying silent."""
    from doctor.vram.catalogue import resolve
    from doctor.vram.estimator import Workload, estimate

    opt = estimate(resolve("opt-1.3b"), Workload(seq=4096))
    assert "forward fails (index error)" in opt.notes[0]
    llama = estimate(resolve("llama-2-7b"), Workload(seq=8192))
    assert "not trained at that length" in llama.notes[0]
    assert not any("max_position_embeddings" in n for n in estimate(resolve("opt-1.3b"), Workload(seq=2048)).notes)
