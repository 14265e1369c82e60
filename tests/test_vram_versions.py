"""Version-aware set-ups of doctor estimate: the transformers / peft / bitsandbytes versions that change memory
(doctor/data/vram.yaml `versions`), Liger's fused linear cross-entropy, and LoRA on an AWQ / GPTQ base. Each
switch must move the figure by exactly the term its source describes."""
from __future__ import annotations

import json

import factsbuilder as fb
import pytest
from factsbuilder import autodl_box

from doctor import refdata
from doctor.cli import main
from doctor.errors import InputError
from doctor.profile import load
from doctor.runner import evaluate
from doctor.vram import versions
from doctor.vram.catalogue import resolve
from doctor.vram.estimator import Workload, chunked_ce_rows, estimate

LLAMA = resolve("llama-2-7b")
OPT = resolve("opt-1.3b")


def test_every_version_row_cites_its_source_and_parses():
    from packaging.version import Version

    for name, row in refdata.load("vram")["versions"].items():
        assert row["source"].strip() and row["before"].strip(), name
        for since in (row["since"].values() if isinstance(row["since"], dict) else [row["since"]]):
            Version(since)
    assert "ead96b618e5c67bddc6a6e9bcb99bfe6b5ab661c" in refdata.load("vram")["chunked_ce"]["source"]


def _generate(arch, version, **kw):
    return estimate(arch, Workload(method="inference", batch=4, seq=512, context=4096, transformers_version=version,
                                   **kw))


@pytest.mark.parametrize("arch,old,new", [(LLAMA, "4.41.2", "4.42.0"), (OPT, "4.48.3", "4.49.0")])
def test_legacy_tuple_cache_adds_a_whole_kv_cache_less_the_one_layer_copy(arch, old, new):
    before, after, unknown = _generate(arch, old), _generate(arch, new), _generate(arch, None)
    kv = after.breakdown["kv_cache"]
    b = arch.block
    layer_copy = 2 * b.kv_heads * b.head_dim * 4 * 4096 * 2          # DynamicCache: one layer's cat copy
    assert before.breakdown["legacy_kv_copy"] == kv
    assert before.peak_bytes - after.peak_bytes == pytest.approx(kv - layer_copy, abs=2)
    assert "legacy_kv_copy" not in after.breakdown and unknown.peak_bytes == after.peak_bytes
    assert any("transformers version unknown: assumed >= " + new in n for n in unknown.notes), unknown.notes
    assert any(f"transformers {old} < {new}" in n for n in before.notes)


def test_opt_stays_on_the_legacy_cache_where_llama_has_left_it():
    assert "legacy_kv_copy" in _generate(OPT, "4.45.0").breakdown
    assert "legacy_kv_copy" not in _generate(LLAMA, "4.45.0").breakdown


def test_old_bitsandbytes_keeps_every_4bit_linears_input_without_checkpointing():
    # bitsandbytes < 0.43.2: MatMul4Bit keeps its input A. Llama block, LoRA on q,v with fp32 adapters (inputs cast,
    # so the bf16 norm outputs are not otherwise kept): the q/k/v input h, the gate/up input h and down's input f
    # (o_proj's input is the SDPA output the kernel keeps), 2 bytes each, per token and layer
    wl = {"method": "qlora", "batch": 2, "seq": 1024}
    old, new = (estimate(LLAMA, Workload(bitsandbytes_version=v, **wl)) for v in ("0.41.1", "0.43.2"))
    unknown = estimate(LLAMA, Workload(**wl))
    h, f = LLAMA.block.hidden, LLAMA.block.ffn
    expected = LLAMA.layers * 2 * 1024 * (2 * h + f) * 2
    assert old.breakdown["activations"] - new.breakdown["activations"] == pytest.approx(expected, abs=4)
    assert unknown.peak_bytes == new.peak_bytes
    assert any("bitsandbytes version unknown: assumed >= 0.43.2" in n for n in unknown.notes)
    ckpt = [estimate(LLAMA, Workload(bitsandbytes_version=v, checkpointing=True, **wl)) for v in ("0.41.1", "0.45.0")]
    # with checkpointing only the recomputed block holds them
    assert ckpt[0].breakdown["activations"] - ckpt[1].breakdown["activations"] == pytest.approx(expected / LLAMA.layers,
                                                                                                abs=4)


def test_peft_before_0_12_keeps_adapters_in_the_base_dtype():
    base = {"method": "lora", "dtype": "bf16", "seq": 2048}
    assert versions.resolve({**base, "peft_version": "0.11.1"})["adapter_dtype"] == "bf16"
    assert versions.resolve({**base, "peft_version": "0.12.0"})["adapter_dtype"] == "fp32"
    assert versions.resolve(dict(base))["adapter_dtype"] == "fp32"                       # unknown: current peft
    assert versions.resolve({**base, "peft_version": "0.11.1", "adapter_dtype": "fp32"})["adapter_dtype"] == "fp32"
    assert "adapter_dtype" not in versions.resolve({**base, "quant": "awq", "peft_version": "0.10.0"})
    old = estimate(LLAMA, Workload(**versions.resolve({**base, "peft_version": "0.11.1"})))
    new = estimate(LLAMA, Workload(**versions.resolve({**base, "peft_version": "0.12.0"})))
    assert old.breakdown["lora_adapters"] * 2 == new.breakdown["lora_adapters"]
    # fp32 adapters on q and v: each casts the bf16 norm output to its own fp32 copy (2 x 4 h) and saves an fp32
    # rank-r lora_A output (2 x 4 r); bf16 adapters share the norm output (2 h once) and save bf16 ones (2 x 2 r)
    r, h = 8, LLAMA.block.hidden
    assert new.breakdown["activations"] - old.breakdown["activations"] == pytest.approx(
        LLAMA.layers * 2048 * ((8 * h + 8 * r) - (2 * h + 4 * r)), abs=4)
    assert any("peft 0.11.1 < 0.12.0" in n for n in old.notes)
    unknown = estimate(LLAMA, Workload(**versions.resolve(dict(base))))
    assert unknown.peak_bytes == new.peak_bytes
    assert any("peft version unknown: assumed >= 0.12.0" in n for n in unknown.notes), unknown.notes


def test_sharded_qlora_adapters_follow_the_float_4bit_storage_before_peft_0_12():
    """FSDP and ZeRO-3 shard a 4-bit base only in a float bnb_4bit_quant_storage, whose dtype older peft gives the
    adapters (update_layer: 'if weight.dtype.is_floating_point'); on one GPU, or under ZeRO-2, the storage stays
    uint8 and the adapters fp32 in every peft."""
    base = {"method": "qlora", "dtype": "bf16", "seq": 512, "world_size": 2}
    fsdp = {**base, "fsdp": "full"}
    assert versions.resolve({**fsdp, "peft_version": "0.10.0"})["adapter_dtype"] == "bf16"
    assert versions.resolve({**base, "zero": 3, "peft_version": "0.11.1"})["adapter_dtype"] == "bf16"
    assert versions.resolve({**fsdp, "method": "lora", "quant": "nf4", "peft_version": "0.10.0"})["adapter_dtype"] \
        == "bf16"
    assert versions.resolve({**fsdp, "peft_version": "0.12.0"})["adapter_dtype"] == "fp32"
    assert versions.resolve({**fsdp, "amp": True, "peft_version": "0.10.0"})["adapter_dtype"] == "fp32"
    assert "adapter_dtype" not in versions.resolve({**base, "peft_version": "0.10.0"})
    assert "adapter_dtype" not in versions.resolve({**base, "zero": 2, "peft_version": "0.10.0"})
    old = estimate(LLAMA, Workload(**versions.resolve({**fsdp, "peft_version": "0.10.0"})))
    new = estimate(LLAMA, Workload(**versions.resolve({**fsdp, "peft_version": "0.12.0"})))
    assert old.breakdown["params_shard"] < new.breakdown["params_shard"]   # the adapters are in the flat shards
    assert old.breakdown["optimizer_states"] * 2 == new.breakdown["optimizer_states"]
    assert any("peft 0.10.0 < 0.12.0" in n and "bnb_4bit_quant_storage" in n for n in old.notes), old.notes
    # accelerate >= 0.30.0 with mixed precision upcasts FSDP's trainable flat parameters: said, not guessed
    assert any("accelerate >= 0.30.0 with mixed precision" in n for n in old.notes), old.notes
    assert not any("accelerate >=" in n for n in new.notes), new.notes


def test_lora_under_autocast_saves_half_casts_of_adapter_inputs():
    # autocast runs lora_A / lora_B in half: they save half casts (2 h + 2 r) of the fp32 input, not the input itself
    from doctor.vram import activations as act

    ctx = act.Ctx(p=2, amp=True, trainable=frozenset(), lora=frozenset({"q"}), lora_rank=8, adapter_bytes=4,
                  attention="sdpa", seq=1024, dropout=False, full=False)
    assert act._linear_input(ctx, ("q", "k"), 4096, 4) == 4096 * 2 + 8 * 2
    plain = act._linear_input(act.Ctx(**{**ctx.__dict__, "amp": False}), ("q", "k"), 4096, 4)
    assert plain == 4096 * 4 + 8 * 4   # without autocast the fp32 adapter keeps the fp32 input itself


def test_chunked_cross_entropy_replaces_the_logits_term():
    wl = {"method": "lora", "seq": 4096, "batch": 2}
    plain, fused = estimate(LLAMA, Workload(**wl)), estimate(LLAMA, Workload(chunked_ce=True, **wl))
    tokens, V, h = 8192, LLAMA.head_outputs, LLAMA.block.hidden
    rows = chunked_ce_rows(LLAMA, tokens)
    assert rows == 1024   # next_power_of_2(ceil(8192 / ceil(32000 / 4096)))
    assert "logits" not in fused.breakdown
    assert fused.breakdown["chunked_ce"] == rows * V * 2 + tokens * h * 2 + tokens * 4
    assert plain.peak_bytes - fused.peak_bytes == plain.breakdown["logits"] - fused.breakdown["chunked_ce"]


def test_lora_on_awq_and_gptq_bases():
    wl = {"method": "lora", "seq": 1024, "dtype": "bf16"}
    awq, gptq = estimate(LLAMA, Workload(quant="awq", **wl)), estimate(LLAMA, Workload(quant="gptq", **wl))
    h, f = LLAMA.block.hidden, LLAMA.block.ffn
    # AutoAWQ: every quantized linear saves its own fp16 copy of its input (q, k, v: 3 h; o: h; gate, up: 2 h;
    # down: f); GPTQModel's QuantLinearFunction saves none
    assert awq.breakdown["activations"] - gptq.breakdown["activations"] == pytest.approx(
        LLAMA.layers * 1024 * (6 * h + f) * 2, abs=4)
    # AutoAWQ's backward repeats the dequantized weight batch times: one more largest-linear copy for batch 1
    largest = max(lin.params for lin in LLAMA.block.linears)
    assert awq.breakdown["transient"] - gptq.breakdown["transient"] == largest * 2
    assert any("AutoAWQ" in n for n in awq.notes) and any("GPTQModel" in n for n in gptq.notes)


def test_bad_version_strings_and_facts():
    with pytest.raises(InputError):
        versions.check("--peft-version", "one.two")
    facts = {"python": {"distributions": {"Transformers": "4.41.2", "peft": "not-a-version", "bitsandbytes": "0.41.1"}}}
    assert versions.from_facts(facts) == {"transformers_version": "4.41.2", "bitsandbytes_version": "0.41.1"}
    assert versions.from_facts({}) == {}


def _json(capsys, argv):
    assert main(["estimate", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_flags_facts_and_bad_values(capsys, tmp_path):
    gen = ["--model", "llama-2-7b", "--method", "inference", "--seq", "512", "--context", "2048"]
    old = _json(capsys, gen + ["--transformers-version", "4.41.2"])
    assert old["workload"]["transformers_version"] == "4.41.2" and "legacy_kv_copy" in old["breakdown"]
    facts = fb.gpu_box()
    facts["python"] = {"distributions": {"transformers": "4.41.2", "peft": "0.11.1"}}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    from_facts = _json(capsys, gen + ["--facts", str(path)])
    assert from_facts["breakdown"]["legacy_kv_copy"] == old["breakdown"]["legacy_kv_copy"]
    flag_wins = _json(capsys, gen + ["--facts", str(path), "--transformers-version", "4.57.1"])
    assert "legacy_kv_copy" not in flag_wins["breakdown"]
    lora = _json(capsys, ["--model", "llama-2-7b", "--method", "lora", "--facts", str(path)])
    assert lora["workload"]["adapter_dtype"] == "bf16" and lora["workload"]["peft_version"] == "0.11.1"
    fused = _json(capsys, ["--model", "llama-2-7b", "--method", "lora", "--chunked-ce"])
    assert "chunked_ce" in fused["breakdown"] and fused["workload"]["chunked_ce"] is True
    for argv, needle in ((["--bitsandbytes-version", "0.43.x"], "--bitsandbytes-version"),
                         (["--method", "inference", "--chunked-ce"], "--chunked-ce"),
                         (["--method", "full", "--quant", "gptq"], "--quant")):
        assert main(["estimate", "--model", "llama-2-7b", *argv]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
    assert main(["estimate", "--model", "llama-2-7b", "--method", "lora", "--quant", "awq", "--format", "json"]) == 0
    capsys.readouterr()


def test_vram_check_reads_the_versions_from_the_facts(registry):
    def budget(packages):
        facts = autodl_box(packages, hf_home="/root/autodl-tmp/huggingface")
        rep = evaluate(facts, load(["autodl-a800", "qwen3-vl-32b-qlora"], registry), registry)
        return {x.check_id: x for x in rep.results}["vram.budget"]

    new = budget(fb.QWEN_QLORA_ENV)
    old = budget({**fb.QWEN_QLORA_ENV, "bitsandbytes": "0.41.3"})
    assert any("bitsandbytes 0.48.1 >= 0.43.2" in d for d in new.details), new.details
    assert any("bitsandbytes 0.41.3 < 0.43.2" in d for d in old.details), old.details
    assert old.summary != new.summary   # the recomputed block's kept inputs move the peak


def test_deepspeed_version_flag_and_facts_pick_the_offload_staging(capsys, tmp_path):
    # DeepSpeed PR #7309 (0.17.0): ZeRO-1/2 optimizer offload stages updated parameters through a pinned bit16 CPU
    # buffer; before it the fp32 partition was copied to the GPU at each step (4 B x params / ranks)
    job = ["--model", "llama-2-7b", "--method", "full", "--zero", "2", "--offload-optimizer", "cpu", "--world-size", "2"]
    old = _json(capsys, job + ["--deepspeed-version", "0.16.9"])
    new = _json(capsys, job + ["--deepspeed-version", "0.17.0"])
    assert old["breakdown"]["offload_fp32_partition_copy"] == pytest.approx(4 * old["params"] / 2, abs=1)
    assert "offload_fp32_partition_copy" not in new["breakdown"]
    facts = fb.gpu_box()
    facts["python"] = {"distributions": {"DeepSpeed": "0.16.4"}}
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(facts))
    assert "offload_fp32_partition_copy" in _json(capsys, job + ["--facts", str(path)])["breakdown"]
    assert main(["estimate", *job, "--deepspeed-version", "zero.two"]) == 2
    assert "--deepspeed-version" in capsys.readouterr().err


def test_printed_flags_reproduce_the_versions():
    from doctor.vram.workload import to_flags

    flags = to_flags("llama-2-7b", {"method": "qlora", "bitsandbytes_version": "0.41.1", "chunked_ce": True,
                                    "ds_knobs": {"version": "0.16.9", "pin_memory": True}})
    assert flags.split() == ["--model", "llama-2-7b", "--method", "qlora", "--bitsandbytes-version", "0.41.1",
                             "--chunked-ce", "--deepspeed-version", "0.16.9"]


def test_lora_on_an_int8_base_keeps_each_int8_linears_input():
    wl = {"method": "lora", "seq": 1024, "batch": 1}
    int8, nf4 = estimate(LLAMA, Workload(quant="int8", **wl)), estimate(LLAMA, Workload(quant="nf4", **wl))
    h, f = LLAMA.block.hidden, LLAMA.block.ffn
    # MatMul8bitLt keeps A: the q/k/v input, the gate/up input and down's input, as bitsandbytes < 0.43.2 did for 4-bit
    assert int8.breakdown["activations"] - nf4.breakdown["activations"] == pytest.approx(
        LLAMA.layers * 1024 * (2 * h + f) * 2, abs=4)


def test_adapter_dtype_set_by_the_job_is_not_explained_by_peft_version():
    """--adapter-dtype (or the profile) decides the adapters' dtype: the note says so and asks for no peft version."""
    base = {"method": "lora", "dtype": "bf16", "seq": 512}
    given = versions.resolve({**base, "adapter_dtype": "fp32"})
    assert given["adapter_dtype_given"] is True
    assert "adapter_dtype_given" not in versions.resolve(dict(base))
    notes = estimate(LLAMA, Workload(**given)).notes
    assert any("LoRA adapters in fp32, as the job sets them" in n for n in notes), notes
    assert not any("peft version unknown" in n for n in notes), notes
    unset = estimate(LLAMA, Workload(**versions.resolve(dict(base)))).notes
    assert any("peft version unknown" in n for n in unset), unset


def test_the_cache_upgrade_what_if_names_the_models_own_threshold():
    """llama's generate() keeps a DynamicCache from transformers 4.42.0 (OPT's from 4.49.0): the what-if for a
    llama run on 4.40 proposes 4.42.0, not the largest threshold of any family."""
    from doctor.vram.whatif import what_ifs

    wl = Workload(method="inference", seq=512, context=8192, transformers_version="4.40.0")
    base = estimate(LLAMA, wl)
    flags = [w.flag for w in what_ifs(LLAMA, wl, None, base) if "transformers" in w.flag]
    since = versions.rows()["generate_dynamic_cache"]["since"]["llama"]
    assert flags == [f"--transformers-version {since}"] and since != max(
        versions.rows()["generate_dynamic_cache"]["since"].values())
