"""GPU checks on the recorded CPU snapshot and on literal GPU facts (see factsbuilder)."""
from __future__ import annotations

from factsbuilder import edit, gpu_box, nvml_device, torch_cuda

from doctor.checks.gpu import gpu_arch, gpu_bf16, gpu_compute_capability, gpu_memory, gpu_model
from doctor.model import Status


def test_present_fails_on_recorded_machine_without_driver(recorded, judge):
    r = judge(recorded, "gpu.present", "autodl-a800")
    assert r.status is Status.FAIL
    assert "no NVIDIA driver/GPU found" in r.summary and "libnvidia-ml.so.1" in r.summary
    assert "nvidia-smi" in r.remediation.commands
    assert "--gpus all" in r.remediation.text  # the recording machine is a container


def test_present_remedy_on_bare_metal_is_driver_install(recorded, judge):
    facts = edit(recorded, "host.container_hints emptied", host={**recorded["host"], "container_hints": []})
    r = judge(facts, "gpu.present", "autodl-a800")
    assert r.status is Status.FAIL and "Install the NVIDIA data-center driver" in r.remediation.text


def test_present_skips_when_profile_needs_no_gpu(recorded, judge):
    assert judge(recorded, "gpu.present", "cpu-ci").status is Status.SKIP


def test_present_passes_and_names_devices_by_bus_id(judge):
    r = judge(gpu_box(count=2), "gpu.present", "autodl-a800")
    assert r.status is Status.PASS and "2× NVIDIA A800-SXM4-80GB" in r.summary
    assert any("00000000:18:00.0" in d and "GPU-" in d for d in r.details)


def test_other_gpu_checks_skip_without_gpu(recorded, judge):
    for cid in ("gpu.count", "gpu.model", "gpu.memory", "gpu.compute_capability", "gpu.arch", "gpu.bf16"):
        r = judge(recorded, cid, "autodl-a800", "qwen3-vl-32b-qlora")
        assert r.status is Status.SKIP and "see gpu.present" in r.summary, cid


def test_count(judge):
    assert judge(gpu_box(count=1), "gpu.count", "autodl-a800").status is Status.PASS
    from doctor.checks.gpu import gpu_count

    fail = gpu_count(gpu_box(count=2), count=8)
    assert fail.status is Status.FAIL and "found 2 GPUs" in fail.summary and "at least 8" in fail.summary
    assert "--nproc-per-node=2" in fail.remediation.text


def test_model_pass_and_fail_message(judge):
    assert judge(gpu_box(), "gpu.model", "autodl-a800").status is Status.PASS
    h100 = gpu_box(name="NVIDIA H100 80GB HBM3", total_mib=81559, cc="9.0")
    r = judge(h100, "gpu.model", "autodl-a800")
    assert r.status is Status.FAIL
    assert r.summary == "found 1× NVIDIA H100 80GB HBM3; profile expects A800 80GB"
    assert judge(h100, "gpu.model", "h100-80g").status is Status.PASS


def test_model_mixed_box_lists_the_odd_gpu():
    facts = gpu_box(count=2)
    facts["gpu"]["devices"][1] = nvml_device(1, "NVIDIA A100-SXM4-40GB", 40960)
    r = gpu_model(facts, models=["A800 SXM4 80GB"], label="A800")
    assert r.status is Status.FAIL and "1× NVIDIA A800-SXM4-80GB, 1× NVIDIA A100-SXM4-40GB" in r.summary
    assert len(r.details) == 1 and "GPU 1" in r.details[0]


def test_model_is_matched_by_exact_name_never_by_pattern(judge):
    """GH200 is not H200; a laptop 4090 is not a 4090; a GPU the table lacks is unverified, not a pass."""
    gh200 = gpu_box(name="NVIDIA GH200 144G HBM3e", total_mib=147456, cc="9.0")
    assert gpu_model(gh200, models=["H200 SXM 141GB", "H200 NVL"]).status is Status.FAIL
    laptop = gpu_box(name="NVIDIA GeForce RTX 4090 Laptop GPU", total_mib=16376, cc="8.9")
    assert judge(laptop, "gpu.model", "rtx4090-24g").status is Status.FAIL
    odd = gpu_model(gpu_box(name="NVIDIA H100 80GB HBM3 "), models=["H100 SXM5 80GB"])   # NVML's spacing aside
    assert odd.status is Status.PASS
    future = gpu_model(gpu_box(name="NVIDIA R200", cc="11.0"), models=["H100 SXM5 80GB"])
    assert future.status is Status.WARN and future.summary.startswith("unverified")


def test_memory_uses_nvml_total_with_tolerance(judge):
    r = judge(gpu_box(), "gpu.memory", "autodl-a800")
    assert r.status is Status.PASS and "80.0 GiB" in r.summary and "NVML" in r.details[0]
    h100 = gpu_box(name="NVIDIA H100 80GB HBM3", total_mib=81559, cc="9.0")
    assert judge(h100, "gpu.memory", "h100-80g").status is Status.PASS  # 79.6 GiB is within 3 % of 80
    small = gpu_box(name="NVIDIA A800 40GB PCIe", total_mib=40960)
    r = judge(small, "gpu.memory", "autodl-a800")
    assert r.status is Status.FAIL and "40.0 GiB" in r.summary and "80 GiB ±3%" in r.summary
    assert gpu_memory(h100, memory_gib=80, tolerance_pct=0).status is Status.FAIL


def test_memory_unknown_is_undecided_never_zero():
    facts = gpu_box()
    facts["gpu"]["devices"][0]["memory"] = None          # NVML: "Not Supported"
    facts["torch"]["runtime"]["devices"] = []             # and torch has no record of the device
    r = gpu_memory(facts, memory_gib=80)
    assert r.status is Status.ERROR and "could not decide" in r.summary and "0 MiB" not in r.summary


def test_unified_memory_gpu_is_judged_on_what_cuda_reports():
    """DGX Spark GB10: NVML memory is "Not Supported"; CUDA (torch) reports the pool the GPU can use."""
    facts = gpu_box(name="NVIDIA GB10", cc="12.1")
    facts["gpu"]["devices"][0]["memory"] = None
    facts["torch"]["runtime"]["devices"][0]["total_memory_bytes"] = int(119.7 * 2**30)
    r = gpu_memory(facts, memory_gib=96)
    assert r.status is Status.PASS and "119.7 GiB" in r.summary and "torch" in r.details[0]
    assert gpu_memory(facts, memory_gib=128).status is Status.FAIL


def test_compute_capability(judge):
    assert judge(gpu_box(), "gpu.compute_capability", "autodl-a800").status is Status.PASS
    v100 = gpu_box(name="Tesla V100-SXM2-32GB", total_mib=32768, cc="7.0")
    r = judge(v100, "gpu.compute_capability", "autodl-a800")
    assert r.status is Status.FAIL and "7.0" in r.summary and ">= 8.0" in r.summary
    assert gpu_compute_capability(gpu_box(), minimum="12").status is Status.ERROR  # malformed minimum


def test_compute_capability_from_torch_when_nvml_lacks_it_else_undecided():
    facts = gpu_box()
    facts["gpu"]["devices"][0]["compute_capability"] = None
    assert gpu_compute_capability(facts, minimum="8.0").status is Status.PASS      # torch's record of the GPU
    facts["torch"]["runtime"]["devices"] = []
    r = gpu_compute_capability(facts, minimum="8.0")
    assert r.status is Status.ERROR and "could not decide" in r.summary
    assert gpu_bf16(facts, dtype="bf16").status is Status.ERROR
    assert gpu_arch(facts, expected="Ampere").status is Status.ERROR


def test_arch_names_the_a800_ampere_not_hopper(judge):
    r = judge(gpu_box(), "gpu.arch", "autodl-a800")
    assert r.status is Status.PASS and "Ampere (GA100, sm_80)" in r.summary
    wrong = gpu_arch(gpu_box(), expected="Hopper")  # what seed 002 claims
    assert wrong.status is Status.FAIL and "is Ampere" in wrong.summary and "profile says Hopper" in wrong.summary


def test_arch_newer_than_the_table_is_unverified_not_pass():
    facts = gpu_box(name="NVIDIA Future", cc="15.0")
    r = gpu_arch(facts, expected="Ampere")
    assert r.status is Status.WARN and r.summary.startswith("unverified")


def test_bf16_needed_only_when_workload_uses_it(judge):
    a800 = gpu_box()
    assert judge(a800, "gpu.bf16", "autodl-a800").status is Status.SKIP  # machine profile: no workload
    r = judge(a800, "gpu.bf16", "autodl-a800", "qwen3-vl-32b-qlora")
    assert r.status is Status.PASS and "including_emulation=False" in r.summary
    assert gpu_bf16(a800, dtype="fp16").status is Status.SKIP


def test_bf16_fails_on_v100_with_fp16_remedy(judge):
    v100 = gpu_box(name="Tesla V100-SXM2-32GB", total_mib=32768, cc="7.0")
    r = judge(v100, "gpu.bf16", "v100-32g", "qwen3-vl-32b-qlora")
    assert r.status is Status.FAIL and "no bf16" in r.summary
    assert "fp16=True" in r.remediation.text and "GradScaler" in r.remediation.text


def test_bf16_warns_when_torch_disagrees():
    devs = [nvml_device()]
    facts = gpu_box(torch=torch_cuda(devices=devs, bf16=False))
    assert gpu_bf16(facts, dtype="bf16").status is Status.WARN
