"""The GPU <-> driver <-> torch chain: torch present and importable, CUDA build, CUDA init,
driver new enough for torch's CUDA, and the GPU's arch compiled into the wheel."""
from __future__ import annotations

from typing import Any

from doctor.cuda import coverage, driver_need, driver_version, parse_arch_list
from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

from .common import PYTORCH_URL, describe, devices, ident, torch_label, wheel_remedy

COMPAT_URL = "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html"


def _install_remedy(gpu: dict[str, Any]) -> Remediation:
    if devices(gpu):
        return wheel_remedy(gpu, "Install torch.")
    if gpu.get("available") is False:
        return Remediation("Install torch (a CPU build: no NVIDIA GPU was found).",
                           ("pip install torch --index-url https://download.pytorch.org/whl/cpu",), PYTORCH_URL)
    return Remediation("Install the torch wheel for this machine's driver (the GPU facts are missing).",
                       url=PYTORCH_URL)


def _torch_problem(torch: dict[str, Any], gpu: dict[str, Any]) -> Result | None:
    """torch missing, unimportable, hung or crashed: the result that says so."""
    if torch.get("hang") and not torch.get("version"):
        return failed(f"`import torch` hung: {torch['hang']['message']}",
                      Remediation("A hang at import usually means a stalled filesystem (NFS/overlay) or a broken "
                                  "install; reinstall torch in this environment and retry.",
                                  ("python -X importtime -c 'import torch'",)))
    if torch.get("crash") and not torch.get("version"):
        return failed(f"the torch probe crashed: {torch['crash']['message']}", None,
                      *torch["crash"].get("stderr_tail", []))
    if torch.get("installed") is False:
        return failed("torch is not installed in the inspected environment", _install_remedy(gpu))
    if torch.get("import_error"):
        return failed(f"torch is installed but fails to import: {torch['import_error']}",
                      Remediation("Reinstall torch in this environment (a partial upgrade or a mismatched "
                                  "CUDA library usually causes this).", ("pip install --force-reinstall torch",)))
    return None


def _not_applicable(torch: dict[str, Any], gpu: dict[str, Any]) -> Result | None:
    """The skip for checks that judge a CUDA torch against NVIDIA GPUs, when either is absent."""
    if not devices(gpu):
        return skipped("no NVIDIA GPU; see gpu.present")
    if _torch_problem(torch, gpu) or not torch.get("cuda_build"):
        return skipped("torch is not a working CUDA build; see torch.installed / torch.cuda_build")
    return None


@check("torch.installed", needs=("torch",))
def torch_installed(facts: dict[str, Any]) -> Result:
    """torch is installed in the inspected environment and imports cleanly.

    Why: a missing or half-upgraded torch ends the job at its first line, after the data and model
    downloads it waited for.
    Fix: install a torch wheel built for this driver and GPU (the remediation names the exact command).
    """
    torch = facts["torch"]
    problem = _torch_problem(torch, facts.get("gpu") or {})
    if problem:
        return problem
    build = (f"CUDA {torch['cuda_build']}" if torch.get("cuda_build") else
             f"ROCm/HIP {torch['hip_build']}" if torch.get("hip_build") else "CPU-only")
    return passed(f"{torch_label(torch)} ({build}) imports in {torch.get('import_s', '?')} s",
                  f"interpreter: {torch.get('interpreter')}", f"location: {torch.get('location')}")


@check("torch.cuda_build", needs=("torch", "gpu"))
def torch_cuda_build(facts: dict[str, Any]) -> Result:
    """torch is a CUDA build on a machine with an NVIDIA GPU (ROCm and MPS builds are named as such).

    Why: `pip install torch` from a mirror or a CPU index gives a CPU-only wheel; the job then trains on
    the CPU, thousands of times slower, or fails at `.cuda()`.
    Fix: reinstall torch from the PyTorch CUDA index that matches the driver (the exact command is given).
    """
    torch, gpu = facts["torch"], facts["gpu"]
    if _torch_problem(torch, gpu):
        return skipped("torch is not importable; see torch.installed")
    devs = devices(gpu)
    if torch.get("cuda_build"):
        return passed(f"{torch_label(torch)} is built for CUDA {torch['cuda_build']}"
                      + (f" (cuDNN {torch['cudnn_version']})" if torch.get("cudnn_version") else ""))
    other = ("ROCm (HIP " + str(torch["hip_build"]) + ")" if torch.get("hip_build")
             else "MPS (Apple)" if torch.get("mps_built") else None)
    if not devs:
        what = f"a {other} build" if other else "a CPU-only build"
        return skipped(f"{torch_label(torch)} is {what} and no NVIDIA GPU was found; CUDA checks do not apply")
    what = f"a {other} build" if other else "a CPU-only build"
    return failed(f"{torch_label(torch)} is {what} on a machine with {describe(devs)}",
                  wheel_remedy(gpu, "Install a CUDA build of torch."))


@check("torch.cuda_available", needs=("torch", "gpu"))
def torch_cuda_available(facts: dict[str, Any]) -> Result:
    """torch initialises CUDA, sees every GPU NVML sees, and runs a tiny kernel on GPU 0.

    Why: a driver/library mismatch, a container without /dev/nvidia*, CUDA_VISIBLE_DEVICES set to
    nothing, or a wedged GPU make `torch.cuda.is_available()` False or hang, and the job dies or
    hangs at start-up. A hang is a finding: the probe is killed after its timeout.
    Fix: follow the reason shown; a hang or "unknown error" on an otherwise healthy driver usually needs
    the GPU reset or the node drained (nvidia-smi -q shows the GPU state).
    """
    torch, gpu = facts["torch"], facts["gpu"]
    skip = _not_applicable(torch, gpu)
    if skip:
        return skip
    devs = devices(gpu)
    if torch.get("hang"):
        return failed(f"CUDA initialisation hung: {torch['hang']['message']}",
                      Remediation("The GPU or driver is wedged: drain this node or reset the GPU, and check the "
                                  "kernel log for Xid errors.", ("nvidia-smi -q", "sudo dmesg | grep -i xid")))
    if torch.get("crash"):
        return failed(torch["crash"]["message"], Remediation("Check the kernel log for Xid errors and the driver "
                      "state.", ("nvidia-smi -q", "sudo dmesg | grep -i xid")), *torch["crash"].get("stderr_tail", []))
    rt = torch.get("runtime") or {}
    if rt.get("error"):
        return failed(f"CUDA initialisation failed: {rt['error']}",
                      Remediation("See driver.torch_cuda for driver/toolkit compatibility; otherwise check "
                                  "CUDA_VISIBLE_DEVICES and that /dev/nvidia* exist in this container.", ("nvidia-smi",)))
    if not rt.get("is_available"):
        visible = (gpu.get("env") or {}).get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return failed(f"torch.cuda.is_available() is False although NVML sees {describe(devs)}{hint}",
                      Remediation("Check driver.torch_cuda (driver too old for this torch), that CUDA_VISIBLE_DEVICES "
                                  "lists these GPUs, and that /dev/nvidia* exist in this container.", ("nvidia-smi",)))
    smoke = rt.get("smoke_test") or {}
    if smoke and not smoke.get("ok"):
        return failed("a tiny kernel on cuda:0 returned a wrong result", Remediation("Drain the node; the GPU is faulty."))
    n = rt.get("device_count", 0)
    head = f"CUDA initialised in {rt.get('init_s', '?')} s; torch sees {n} of {len(devs)} GPU(s); kernel on cuda:0 ran"
    details = [f"cuda:{d['ordinal']}: {d['name']} {d['total_memory_bytes'] / 2**30:.2f} GiB ({d.get('memory_source')})"
               for d in rt.get("devices", [])]
    if n < len(devs):
        visible = (gpu.get("env") or {}).get("CUDA_VISIBLE_DEVICES")
        return warned(head, Remediation(f"CUDA_VISIBLE_DEVICES={visible!r} hides some GPUs; unset it if the job "
                                        "should use all of them."), *details)
    return passed(head, *details)


@check("driver.torch_cuda", needs=("gpu", "torch"))
def driver_torch_cuda(facts: dict[str, Any]) -> Result:
    """The NVIDIA driver is new enough for the CUDA version torch was built with (NVIDIA's tables).

    Why: a driver older than the minor-version-compatibility floor of torch's CUDA major (525.60.13 for
    CUDA 12.x, 580.65.06 for 13.x) cannot run the wheel at all ("The NVIDIA driver on your system is too
    old"); between that floor and the toolkit's own minimum it runs with a limited feature set and cannot
    JIT-compile PTX, so a GPU covered only by PTX fails.
    Fix: upgrade the driver to at least the toolkit's minimum, or install a torch wheel for an older CUDA
    that this driver supports (the exact command is given).
    """
    gpu, torch = facts["gpu"], facts["torch"]
    skip = _not_applicable(torch, gpu)
    if skip:
        return skip
    cuda, drv_text = torch["cuda_build"], gpu["driver_version"]
    need, drv = driver_need(cuda), driver_version(drv_text)
    max_cuda = gpu.get("cuda_driver_version")
    ctx = f"driver {drv_text} (NVML: supports up to CUDA {max_cuda}); {torch_label(torch)} is built for CUDA {cuda}"
    if drv is None:
        return errored(f"NVML reported no usable driver version ({drv_text!r}); cannot judge CUDA {cuda}")
    if need.floor is None:
        return warned(f"{ctx}; doctor has no driver table for CUDA {cuda}", None)
    upgrade = f"Upgrade the NVIDIA driver to {need.toolkit or need.floor} or newer"
    if drv < driver_version(need.floor):
        return failed(f"{ctx}, which needs driver >= {need.floor} (CUDA {cuda.split('.')[0]}.x minimum)",
                      wheel_remedy(gpu, f"{upgrade}, or install a wheel this driver runs."), f"source: {COMPAT_URL}")
    if need.toolkit and drv < driver_version(need.toolkit):
        ptx_only = []
        targets = parse_arch_list(torch.get("arch_flags") or [])
        for d in devices(gpu):
            if d.get("compute_capability") and targets:
                cov = coverage(d["compute_capability"], targets)
                if cov.via_ptx:
                    ptx_only.append(f"{ident(d)} (CC {d['compute_capability']}) is covered only by PTX {cov.by}")
        msg = (f"{ctx}; CUDA {cuda} wants driver >= {need.toolkit}, this one runs it only through minor-version "
               f"compatibility (>= {need.floor}: limited features, no PTX JIT)")
        if ptx_only:
            return failed(msg, wheel_remedy(gpu, f"{upgrade} (PTX needs the newer driver to JIT), or install a wheel "
                                                 "with a cubin for this GPU."), *ptx_only)
        return warned(msg, Remediation(f"{upgrade} for full CUDA {cuda} support.", url=COMPAT_URL))
    return passed(f"{ctx}, which needs >= {need.toolkit or need.floor}")


@check("torch.arch_coverage", needs=("gpu", "torch"))
def torch_arch_coverage(facts: dict[str, Any]) -> Result:
    """torch's compiled arch list covers every GPU, by NVIDIA's rule.

    Why: a wheel without this GPU's architecture fails at the first kernel with "no kernel image is
    available for execution on the device" (e.g. a cu130 wheel, which dropped sm_70, on a V100; a cu126
    wheel on an RTX 5090). A cubin sm_XY runs on CC X.Z with Z >= Y (sm_90a-style only on exactly X.Y);
    PTX compute_XY is JIT-compiled for any CC >= X.Y.
    Fix: install the torch wheel whose arch list covers the GPU (the exact command is given).
    """
    gpu, torch = facts["gpu"], facts["torch"]
    skip = _not_applicable(torch, gpu)
    if skip:
        return skip
    devs = devices(gpu)
    flags = torch.get("arch_flags") or []
    if not flags:
        return errored(f"{torch_label(torch)} reported no compiled arch list; cannot judge coverage")
    targets = parse_arch_list(flags)
    lines, missing, warnings = [], [], set()
    for d in devs:
        cc = d.get("compute_capability")
        if not cc:
            lines.append(f"{ident(d)}: compute capability unknown")
            continue
        cov = coverage(cc, targets)
        if cov.warning:
            warnings.add(cov.warning)
        if not cov.covered:
            missing.append(d)
            lines.append(f"{ident(d)}: CC {cc} is not covered")
        else:
            lines.append(f"{ident(d)}: CC {cc} covered by {cov.by}" + (" (PTX, JIT-compiled at first use)" if cov.via_ptx else ""))
    arch = " ".join(flags)
    if missing:
        d = missing[0]
        return failed(f"{d.get('name')} (CC {d['compute_capability']}) is not in {torch_label(torch)}'s arch list [{arch}]",
                      wheel_remedy(gpu, "Install a wheel compiled for this GPU."), *lines)
    return passed(f"every GPU is covered by {torch_label(torch)}'s arch list [{arch}]", *lines, *sorted(warnings))
