"""Each seed's shipped machine + job profile, judged on a literal snapshot of the seed's machine
(tests/factsbuilder.py: autodl_box / gpu_box). Verdicts and remedies are asserted, not just "runs"."""
from __future__ import annotations

import json

import factsbuilder as fb
import pytest
from factsbuilder import autodl_box, edit

from doctor.errors import InputError
from doctor.model import ExitCode, Status
from doctor.profile import load
from doctor.runner import evaluate


def report(facts, registry, *profiles):
    return evaluate(facts, load(list(profiles), registry), registry)


def by_id(rep):
    return {r.check_id: r for r in rep.results}


def not_ok(rep):
    return {r.check_id: r.status for r in rep.results if r.status not in (Status.PASS, Status.SKIP)}


def test_autodl_qwen_qlora_default_hf_cache_fills_the_30gb_system_disk(registry):
    rep = report(autodl_box(fb.QWEN_QLORA_ENV), registry, "autodl-a800", "qwen3-vl-32b-qlora")
    r = by_id(rep)
    assert not_ok(rep) == {"hf.cache_location": Status.FAIL, "disk.space": Status.FAIL}
    assert "export HF_HOME=/root/autodl-tmp/huggingface" in r["hf.cache_location"].remediation.commands
    assert "needs 62.0 GiB" in r["hf.cache_location"].summary
    assert r["disk.space"].summary.startswith("/ needs 62.0 GiB but has 22.0 GiB free")
    # RAM is judged on the container's 100 GiB cgroup limit, not the 1 TiB the host shows
    assert r["memory.ram"].status is Status.PASS and "(the container limit" in r["memory.ram"].summary
    assert any("host RAM (psutil): 1024.0 GiB" in d for d in r["memory.ram"].details)
    assert rep.exit_code is ExitCode.NOT_READY


def test_autodl_qwen_qlora_ready_once_hf_home_is_on_the_data_disk(registry):
    facts = autodl_box(fb.QWEN_QLORA_ENV, hf_home="/root/autodl-tmp/huggingface")
    rep = report(facts, registry, "autodl-a800", "qwen3-vl-32b-qlora")
    assert not_ok(rep) == {}, not_ok(rep)
    r = by_id(rep)
    # base model 62 + dataset 5 + 5 computed QLoRA checkpoints of 6.4 GiB (tests/test_storage_checkpoints.py)
    assert "storage plan of 99.0 GiB fits on 1 filesystem(s)" == r["disk.space"].summary
    assert rep.exit_code is ExitCode.READY
    # the report states the seed's wrong figures right
    profile = load(["autodl-a800", "qwen3-vl-32b-qlora"], registry)
    notes = " ".join(profile.value("job.notes")[1])
    assert "double-counts the base model" in notes and "Ampere" in notes


def test_autodl_qwen_qlora_missing_floor_and_cpu_quota(registry):
    facts = autodl_box({**fb.QWEN_QLORA_ENV, "transformers": "4.56.2"}, hf_home="/root/autodl-tmp/huggingface",
                       env={"OMP_NUM_THREADS": ""})
    facts["env"]["variables"].pop("OMP_NUM_THREADS")
    r = by_id(report(facts, registry, "autodl-a800", "qwen3-vl-32b-qlora"))
    assert r["packages.required"].status is Status.FAIL
    assert "transformers 4.56.2 does not satisfy >=4.57.0" in r["packages.required"].summary
    assert r["packages.required"].remediation.commands == ("pip install 'transformers>=4.57.0'",)
    assert r["cpu.quota"].status is Status.WARN
    assert "export OMP_NUM_THREADS=10" in r["cpu.quota"].remediation.commands


def test_autodl_awq_inference_fails_on_autoawq_even_before_it_is_installed(registry):
    r = by_id(report(autodl_box({"transformers": "4.57.1", "accelerate": "1.10.1"},
                                hf_home="/root/autodl-tmp/huggingface"),
                     registry, "autodl-a800", "qwen3-vl-32b-awq-inference"))
    ki = r["packages.known_issues"]
    assert ki.status is Status.FAIL
    assert "[fail] autoawq-transformers-4.57" in "\n".join(ki.details)
    assert "[warn] autoawq-deprecated" in "\n".join(ki.details)
    assert "pip install llmcompressor" in ki.remediation.commands
    assert any("LlamaFactory #9247" in d for d in ki.details)  # sources cited
    assert r["packages.required"].status is Status.FAIL  # autoawq itself is missing


def test_autoawq_installed_fails_a_qwen3_vl_job_but_only_warns_a_job_without_the_floor(registry):
    pkgs = {**fb.QWEN_QLORA_ENV, "autoawq": "0.2.9"}
    facts = autodl_box(pkgs, hf_home="/root/autodl-tmp/huggingface")
    qwen = by_id(report(facts, registry, "autodl-a800", "qwen3-vl-32b-qlora"))["packages.known_issues"]
    assert qwen.status is Status.FAIL and "AutoAWQ 0.2.9 breaks with transformers 4.57.1" in qwen.summary
    assert "pip uninstall -y autoawq autoawq-kernels" in qwen.remediation.commands
    opt = by_id(report(facts, registry, "a800-80g", "opt-hessian"))["packages.known_issues"]
    assert opt.status is Status.WARN


def test_a800_opt_hessian_ready_and_notes_correct_the_seed(registry):
    pkgs = {p: "1.0" for p in ("transformers", "datasets", "accelerate", "umap-learn", "scikit-learn",
                               "matplotlib", "seaborn")}
    facts = autodl_box(pkgs, hf_home="/root/autodl-tmp/huggingface")
    rep = report(facts, registry, "a800-80g", "opt-hessian")
    assert not_ok(rep) == {}, not_ok(rep)
    notes = " ".join(load(["opt-hessian"], registry).value("job.notes")[1])
    assert "19.5 TFLOPS" in notes and "13.4 GB" in notes


def _mamba_facts(nvcc: str = "12.8", cpu_adam_prebuilt: bool = False):
    pkgs = {"deepspeed": "0.17.5", "mamba-ssm": "2.2.4", "causal-conv1d": "1.5.2", "transformers": "4.57.1"}
    facts = autodl_box(pkgs, hf_home="/root/autodl-tmp/huggingface", edited="deepspeed_ops and nvcc literal")
    facts["python"]["deepspeed_ops"] = {"version": "0.17.5", "installed_ops": {"cpu_adam": cpu_adam_prebuilt,
                                                                               "fused_adam": False}}
    facts["toolchain"]["nvcc"]["version"] = nvcc
    facts["torch"]["extensions"] = {
        "mamba-ssm": {"version": "2.2.4", "module": "selective_scan_cuda", "ok": True, "error": None},
        "causal-conv1d": {"version": "1.5.2", "module": "causal_conv1d_cuda", "ok": True, "error": None}}
    return facts


def test_a800_mamba_zero2_toolchain_ready_but_cpu_ram_short(registry):
    rep = report(_mamba_facts(), registry, "a800-80g", "mamba-7b-zero2")
    # the gpu_box snapshot has 23.5 GiB of RAM; ZeRO-2 with optimizer offload of 7B fp32 needs ~160 GiB per node
    # (tests/test_vram_distributed.py holds the figure): memory.ram is the one check that must fail here
    assert not_ok(rep) == {"memory.ram": Status.FAIL}, not_ok(rep)
    r = by_id(rep)
    assert r["deepspeed.config"].summary == "valid JSON; batch sizes agree"
    assert "DeepSpeed will JIT-compile cpu_adam" in r["toolchain.cuda"].summary


def test_a800_mamba_zero2_nvcc_major_mismatch_fails_before_deepspeed_does(registry):
    r = by_id(report(_mamba_facts(nvcc="13.0"), registry, "a800-80g", "mamba-7b-zero2"))["toolchain.cuda"]
    assert r.status is Status.FAIL
    assert "nvcc is CUDA 13.0 but torch is built with CUDA 12.8" in r.summary
    assert "conda install -y -c nvidia cuda-nvcc=12.8" in r.remediation.commands
    assert "DS_BUILD_CPU_ADAM=1 pip install --no-build-isolation --force-reinstall deepspeed" in r.remediation.commands


def _ds_job(tmp_path, config_text: str) -> str:
    (tmp_path / "ds.json").write_text(config_text)
    job = tmp_path / "job.yaml"
    job.write_text("kind: job\nextends: [mamba-7b-zero2]\njob:\n  deepspeed:\n    config: ds.json\n")
    return str(job)


def test_seed_001_config_as_written_with_comments_is_bad_input(tmp_path, registry):
    """The seed's DeepSpeed config carries # comments: not JSON. Bad input: exit 2, one line, naming the file."""
    text = '{\n    "train_batch_size": 16,           # 较大的batch size\n    "train_micro_batch_size_per_gpu": 4\n}\n'
    with pytest.raises(InputError) as err:
        report(_mamba_facts(), registry, "a800-80g", _ds_job(tmp_path, text))
    assert "invalid JSON at line 2" in str(err.value) and "JSON has no comments" in str(err.value)


def test_seed_001_ultra_config_breaks_the_batch_identity(tmp_path, registry):
    ultra = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 12, "gradient_accumulation_steps": 2,
             "max_seq_length": 2048, "zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}}
    r = by_id(report(_mamba_facts(), registry, "a800-80g", _ds_job(tmp_path, json.dumps(ultra))))["deepspeed.config"]
    assert r.status is Status.FAIL
    assert r.summary.startswith("train_batch_size 16 != micro 12 × grad_accum 2 × world_size 1 = 24")
    ignored = {**ultra, "train_batch_size": 24}
    r = by_id(report(_mamba_facts(), registry, "a800-80g", _ds_job(tmp_path, json.dumps(ignored))))["deepspeed.config"]
    assert r.status is Status.WARN and r.summary.startswith("max_seq_length in the DeepSpeed config has no effect")


def test_32gb_v100_nanochat_fails_on_bf16_and_passes_the_divisibility_rule(registry):
    dev = fb.nvml_device(name="Tesla V100-SXM2-32GB", total_mib=32768, cc="7.0")
    facts = edit(autodl_box(hf_home="/root/autodl-tmp/huggingface"), "V100 instead of A800",
                 gpu={**fb.gpu_box()["gpu"], "devices": [{**dev, "health": fb.healthy()}]},
                 torch=fb.torch_cuda(devices=[dev], bf16=False))
    rep = report(facts, registry, "v100-32g", "nanochat-d12-32g")
    r = by_id(rep)
    assert r["gpu.bf16"].status is Status.FAIL
    assert r["batch.divisibility"].summary == "24576 = 2 × (8 × 1536 × 1): 2 gradient-accumulation steps"
    r20 = by_id(report(facts, registry, "v100-32g", "nanochat-d20-32g"))["batch.divisibility"]
    assert r20.status is Status.PASS and "86016 = 2 × (14 × 3072 × 1)" in r20.summary


def test_batch_divisibility_failure_names_the_nearest_totals():
    from doctor.checks.job_config import batch_divisibility

    r = batch_divisibility({}, total=24576, batch=8, sequence=2048, world_size=1)
    assert r.status is Status.FAIL and "not a multiple of 8 × 2048 × 1 = 16384" in r.summary
    assert "16384 or 32768" in r.remediation.text
