"""The GPU <-> driver <-> torch checks, on the recorded snapshot and literal GPU facts."""
from __future__ import annotations

from factsbuilder import edit, gpu_box, nvml_device, torch_cuda

from doctor.checks.torch_stack import (driver_torch_cuda, torch_arch_coverage, torch_cuda_available,
                                       torch_cuda_build, torch_installed)
from doctor.model import Status

CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
CU128_WHEEL = "pip install 'torch==2.9.1+cu128' --index-url https://download.pytorch.org/whl/cu128"


def with_torch(facts, note, **torch):
    return edit(facts, note, torch={**facts["torch"], **torch})


def test_installed_on_recorded_cpu_machine(recorded, judge):
    r = judge(recorded, "torch.installed", "cpu-ci")
    assert r.status is Status.PASS and "torch 2.13.0+cpu (CPU-only)" in r.summary


def test_missing_torch_names_a_wheel_for_this_driver_and_gpu():
    facts = edit(gpu_box(), "torch missing", torch={"installed": False})
    r = torch_installed(facts)
    assert r.status is Status.FAIL and "not installed" in r.summary   # the newest release this R570 driver runs
    assert r.remediation.commands == ("pip install 'torch==2.14.1+cu126' --index-url https://download.pytorch.org/whl/cu126",)


def test_import_error_hang_and_crash_are_findings():
    base = gpu_box()
    broken = edit(base, "import error", torch={"installed": True, "import_error": "ImportError: libcudnn.so.9"})
    assert torch_installed(broken).status is Status.FAIL and "fails to import" in torch_installed(broken).summary
    hung = edit(base, "import hang", torch={"installed": None, "hang": {
        "stage": "import torch", "timeout_s": 60, "message": "import torch did not finish within 60 s"}})
    assert torch_installed(hung).status is Status.FAIL and "hung" in torch_installed(hung).summary
    crashed = edit(base, "crash", torch={"installed": None, "crash": {
        "returncode": -11, "stderr_tail": ["Segmentation fault"], "message": "exited with code -11"}})
    assert torch_installed(crashed).status is Status.FAIL


def test_cuda_build():
    assert torch_cuda_build(gpu_box()).status is Status.PASS
    cpu = with_torch(gpu_box(), "CPU-only torch", version="2.9.0+cpu", cuda_build=None, arch_flags=[])
    r = torch_cuda_build(cpu)
    assert r.status is Status.FAIL and "CPU-only build on a machine with 1× NVIDIA A800-SXM4-80GB" in r.summary
    assert r.remediation.commands == (CU128_WHEEL,)


def test_rocm_and_mps_builds_are_named_never_told_to_install_cuda(recorded):
    rocm = with_torch(recorded, "ROCm torch", version="2.9.0+rocm6.4", cuda_build=None, hip_build="6.4.2")
    r = torch_cuda_build(rocm)
    assert r.status is Status.SKIP and "ROCm (HIP 6.4.2) build" in r.summary and r.remediation is None
    mps = with_torch(recorded, "MPS torch", version="2.9.0", mps_built=True)
    assert "MPS (Apple) build" in torch_cuda_build(mps).summary
    assert torch_cuda_build(recorded).status is Status.SKIP  # CPU build, no GPU: consistent


def test_driver_pass_warn_fail():
    ok = gpu_box(driver="580.65.06", max_cuda="13.0")
    r = driver_torch_cuda(ok)
    assert r.status is Status.PASS and "supports CUDA up to 13.0" in r.summary
    old = gpu_box(driver="470.182.03", max_cuda="11.4", torch=torch_cuda(available=False))
    r = driver_torch_cuda(old)
    assert r.status is Status.FAIL and "needs driver >= 525.60.13" in r.summary
    assert "too old for every build of torch 2.9" in r.remediation.text and "525.60.13" in r.remediation.text
    compat = gpu_box(driver="535.54.03", max_cuda="12.2")
    r = driver_torch_cuda(compat)
    assert r.status is Status.WARN and "minor-version compatibility" in r.summary and "570.26" in r.remediation.text
    table_only = gpu_box(driver="535.54.03", max_cuda=None)   # NVML gave no CUDA version: NVIDIA's driver table
    r = driver_torch_cuda(table_only)
    assert r.status is Status.WARN and "below CUDA 12.8's own driver 570.26" in r.summary


def test_driver_between_floor_and_toolkit_fails_when_gpu_needs_ptx_jit():
    dev = nvml_device(0, "NVIDIA GeForce RTX 5090", 32607, "12.0")
    facts = gpu_box(name=dev["name"], total_mib=32607, cc="12.0", driver="535.54.03", max_cuda="12.2",
                    torch=torch_cuda(arch=["sm_80", "sm_90", "compute_90"], devices=[dev]))
    r = driver_torch_cuda(facts)
    assert r.status is Status.FAIL and any("only by PTX compute_90" in d for d in r.details)


def test_cu130_wheel_needs_r580():
    facts = gpu_box(driver="570.124.06", torch=torch_cuda(version="2.9.0+cu130", cuda="13.0", arch=CU130,
                                                          devices=[nvml_device()], available=False))
    r = driver_torch_cuda(facts)
    assert r.status is Status.FAIL and "580" in r.summary
    assert r.remediation.commands[0] == CU128_WHEEL            # keeps 2.9, in the CUDA 12.8 build R570 runs
    assert "apt install cuda-compat-13-0" in r.remediation.commands   # data-center GPU on R570: NVIDIA's matrix
    works = gpu_box(driver="570.124.06", torch=torch_cuda(version="2.9.0+cu130", cuda="13.0", arch=CU130,
                                                          devices=[nvml_device()]))
    r = driver_torch_cuda(works)     # below the floor, yet CUDA ran a kernel: a forward-compatibility package
    assert r.status is Status.WARN and "forward-compatibility" in r.summary


def test_driver_check_skips_without_cuda_torch(recorded):
    assert driver_torch_cuda(recorded).status is Status.SKIP


def test_arch_coverage_v100_on_cu130_fails_with_a_wheel_that_covers_it():
    dev = nvml_device(0, "Tesla V100-SXM2-32GB", 32768, "7.0")
    facts = gpu_box(name=dev["name"], total_mib=32768, cc="7.0",
                    torch=torch_cuda(version="2.9.0+cu130", cuda="13.0", arch=CU130, devices=[dev]))
    r = torch_arch_coverage(facts)
    assert r.status is Status.FAIL and "(CC 7.0) is not in torch 2.9.0+cu130's arch list" in r.summary
    assert r.remediation.commands == (CU128_WHEEL,)


def test_arch_coverage_pass_ptx_and_torch_range_warning():
    assert torch_arch_coverage(gpu_box()).status is Status.PASS
    gb10 = nvml_device(0, "NVIDIA GB10", 122000, "12.1")
    r = torch_arch_coverage(gpu_box(name="NVIDIA GB10", cc="12.1", total_mib=122000,
                                    torch=torch_cuda(devices=[gb10])))
    assert r.status is Status.PASS and any("covered by sm_120" in d for d in r.details)
    assert any("outside its compiled range" in d for d in r.details)  # torch prints its min/max warning
    ptx = torch_arch_coverage(gpu_box(name="NVIDIA B200", cc="10.0", torch=torch_cuda(arch=["sm_90", "compute_90"])))
    assert ptx.status is Status.PASS and any("PTX, JIT-compiled" in d for d in ptx.details)


def test_arch_specific_cubin_only_on_its_own_arch():
    only_90a = torch_cuda(arch=["sm_90a"])
    assert torch_arch_coverage(gpu_box(name="NVIDIA H100 80GB HBM3", cc="9.0", torch=only_90a)).status is Status.PASS
    assert torch_arch_coverage(gpu_box(name="NVIDIA B200", cc="10.0", torch=only_90a)).status is Status.FAIL


def test_arch_coverage_without_arch_list_is_an_error():
    assert torch_arch_coverage(gpu_box(torch=torch_cuda(arch=[]))).status is Status.ERROR


def test_cuda_available_branches():
    devs = [nvml_device()]
    assert torch_cuda_available(gpu_box()).status is Status.PASS
    hung = with_torch(gpu_box(), "CUDA init hang", runtime=None, hang={
        "stage": "CUDA initialisation", "timeout_s": 60, "message": "CUDA initialisation did not finish within 60 s"})
    r = torch_cuda_available(hung)
    assert r.status is Status.FAIL and "hung" in r.summary and "nvidia-smi -q" in r.remediation.commands
    off = gpu_box(torch=torch_cuda(devices=devs, available=False))
    r = torch_cuda_available(off)
    assert r.status is Status.FAIL and "is_available() is False" in r.summary
    err = with_torch(gpu_box(), "CUDA init error", runtime={"is_available": False, "device_count": 0, "devices": [],
                                                            "error": "RuntimeError: CUDA driver initialization failed"})
    assert "initialisation failed" in torch_cuda_available(err).summary
    two = gpu_box(count=2, torch=torch_cuda(devices=devs))
    two["gpu"]["env"]["CUDA_VISIBLE_DEVICES"] = "0"
    r = torch_cuda_available(two)
    assert r.status is Status.WARN and "torch sees 1 of 2" in r.summary and "CUDA_VISIBLE_DEVICES='0'" in r.remediation.text


def test_missing_torch_without_gpu_suggests_the_cpu_wheel(recorded):
    r = torch_installed(edit(recorded, "torch missing", torch={"installed": False}))
    assert r.status is Status.FAIL
    assert r.remediation.commands == ("pip install torch --index-url https://download.pytorch.org/whl/cpu",)
    unknown = edit(recorded, "torch missing, gpu section dropped", torch={"installed": False})
    del unknown["gpu"]
    assert torch_installed(unknown).remediation.commands == ()


def test_driver_check_without_a_readable_driver_version_is_an_error():
    facts = gpu_box()
    facts["gpu"]["driver_version"] = None
    assert driver_torch_cuda(facts).status is Status.PASS        # NVML's CUDA version still decides (12.8)
    facts["gpu"]["cuda_driver_version"] = None
    r = driver_torch_cuda(facts)
    assert r.status is Status.ERROR and "could not decide" in r.summary
    unknown_cuda = gpu_box(driver="610.43.02", max_cuda=None, torch=torch_cuda(cuda="14.0", devices=[nvml_device()]))
    r = driver_torch_cuda(unknown_cuda)
    assert r.status is Status.ERROR and "no driver table for CUDA 14.x" in r.summary   # unknown, never a guess
