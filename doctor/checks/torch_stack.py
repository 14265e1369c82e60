"""The GPU <-> driver <-> torch chain: torch present and importable, CUDA build, CUDA init,
driver new enough for torch's CUDA, and the GPU's arch compiled into the wheel."""
from __future__ import annotations

from typing import Any

from doctor.archs import cc_text, compiled_range, coverage, parse_arch_list, parse_cc
from doctor.cuda import COMPAT_URL, FORWARD_URL, forward_commands, forward_package, support
from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.refdata import architecture as refdata_architecture
from doctor.registry import check

from .common import (PYTORCH_URL, compute_capability, describe, device_name, devices, ident, is_tegra, os_name,
                     torch_label, wheel_remedy)


SLOW_CPU_S = 2.0   # CPU seconds a killed `import torch` must have used to count as slow rather than blocked


def _install_remedy(facts: dict[str, Any]) -> Remediation:
    gpu = facts.get("gpu") or {}
    if devices(gpu):
        return wheel_remedy(facts, "Install torch.")
    if gpu.get("available") is False:
        return Remediation("Install torch (a CPU build: no NVIDIA GPU was found).",
                           ("pip install torch --index-url https://download.pytorch.org/whl/cpu",), PYTORCH_URL)
    return Remediation("Install the torch wheel for this machine's driver (the GPU facts are missing).",
                       url=PYTORCH_URL)


def _torch_problem(torch: dict[str, Any], gpu: dict[str, Any], facts: dict[str, Any] | None = None) -> Result | None:
    """torch missing, unimportable, hung or crashed: the result that says so."""
    hang = torch.get("hang") or {}
    if hang and (hang.get("stage") == "import torch" or ("stage" not in hang and not torch.get("version"))):
        if (hang.get("cpu_s") or 0) >= SLOW_CPU_S:   # it was working, not blocked: a loaded machine or slow disk
            return errored(f"could not decide: `import torch` was still working when it was stopped after "
                           f"{hang.get('timeout_s')} s ({hang['cpu_s']:g} s of CPU used): the machine is loaded or "
                           "its filesystem slow; rerun with a longer --timeout")
        return failed(f"`import torch` hung: {torch['hang']['message']}",
                      Remediation("A hang at import usually means a stalled filesystem (NFS/overlay) or a broken "
                                  "install; reinstall torch in this environment and retry.",
                                  ("python -X importtime -c 'import torch'",)))
    if torch.get("crash") and not torch.get("version"):
        return failed(f"the torch probe crashed: {torch['crash']['message']}", None,
                      *torch["crash"].get("stderr_tail", []))
    if torch.get("installed") is False:
        return failed("torch is not installed in the inspected environment", _install_remedy(facts or {"gpu": gpu}))
    if torch.get("import_error"):
        return failed(f"torch is installed but fails to import: {torch['import_error']}",
                      Remediation("Reinstall torch in this environment (a partial upgrade or a mismatched "
                                  "CUDA library usually causes this).", ("pip install --force-reinstall torch",)))
    return None


def _not_applicable(torch: dict[str, Any], gpu: dict[str, Any]) -> Result | None:
    """The skip for checks that judge a CUDA torch against NVIDIA GPUs: no GPU (NVML saw none and CUDA sees
    none), torch not importable, or torch known to be a CPU-only build. A build whose CUDA version the snapshot
    does not record is still judged on what it does record (its arch list, its CUDA initialisation)."""
    runtime = torch.get("runtime") or {}
    if not devices(gpu) and not (runtime.get("is_available") and runtime.get("device_count")):
        return skipped("no NVIDIA GPU; see gpu.present")
    if _torch_problem(torch, gpu) or ("cuda_build" in torch and not torch["cuda_build"]):
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
    problem = _torch_problem(torch, facts.get("gpu") or {}, facts)
    if problem:
        return problem
    build = (f"CUDA {torch['cuda_build']}" if torch.get("cuda_build") else
             f"ROCm/HIP {torch['hip_build']}" if torch.get("hip_build") else "CPU-only")
    return passed(f"{torch_label(torch)} ({build}) imports in {torch.get('import_s', '?')} s",
                  f"interpreter: {torch.get('interpreter')}", f"location: {torch.get('location')}")


@check("torch.cuda_build", needs=("torch",), needs_gpu=True)
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
    if "cuda_build" not in torch:
        return errored("could not decide: the facts do not say which CUDA torch was built with")
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
                  wheel_remedy(facts, "Install a CUDA build of torch."))


@check("torch.cuda_available", needs=("torch",), needs_gpu=True)
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
    rt = torch.get("runtime")
    if not isinstance(rt, dict) or rt.get("is_available") is None:
        return errored("could not decide: the facts hold no result of torch's CUDA initialisation")
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
    smoke = rt.get("smoke_test")
    if not isinstance(smoke, dict) or smoke.get("ok") is None:
        return errored("could not decide: CUDA initialised, but the facts hold no result of the kernel run on cuda:0")
    if not smoke["ok"]:
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


@check("driver.torch_cuda", needs=("torch",), needs_gpu=True)
def driver_torch_cuda(facts: dict[str, Any]) -> Result:
    """The NVIDIA driver is new enough for the CUDA version torch was built with (NVIDIA's tables).

    Why: a driver older than the minor-version-compatibility floor of torch's CUDA major (525.60.13 for
    CUDA 12.x, branch 580 for 13.x) cannot run the wheel at all ("The NVIDIA driver on your system is too
    old"); between that floor and the toolkit's own driver it runs with a limited feature set and cannot
    JIT-compile PTX, so a GPU covered only by PTX fails. On data-center GPUs NVIDIA's forward-compatibility
    package (cuda-compat-X-Y) lets an older driver branch run a newer CUDA.
    Fix: install the build of your torch release for the newest CUDA this driver runs (the exact command is
    given), or upgrade the driver to the floor named.
    """
    gpu, torch = facts["gpu"], facts["torch"]
    if _torch_problem(torch, gpu) or ("cuda_build" in torch and not torch["cuda_build"]):
        return skipped("torch is not a working CUDA build; see torch.installed / torch.cuda_build")
    if not torch.get("cuda_build"):
        return errored("could not decide: the snapshot does not record which CUDA torch was built with")
    cuda, drv = torch["cuda_build"], gpu.get("driver_version")
    if not drv and not devices(gpu) and gpu.get("available") is False:
        return skipped("no NVIDIA driver; see gpu.present")
    s = support(cuda, drv, os_name(facts), gpu.get("cuda_driver_version"))
    ctx = (f"driver {drv} (NVML: supports up to CUDA {gpu.get('cuda_driver_version') or '?'}); "
           f"{torch_label(torch)} is built for CUDA {cuda}")
    if s.level == "unknown":
        return errored(f"could not decide: {ctx}; {s.why}")
    if s.level == "full":
        return passed(f"{ctx}: {s.why}")
    if s.level == "too_old":
        works = _runtime_works(torch)
        floor = s.need.floor or s.need.full
        full = f" (>= {s.need.full} for CUDA {s.need.cuda}'s full feature set)" if s.need.full and s.need.full != floor else ""
        target = (f"Upgrade the NVIDIA driver to >= {floor}{full}" if floor else
                  f"Upgrade the NVIDIA driver to one that supports CUDA {s.need.cuda}")
        ceiling = gpu.get("cuda_driver_version")
        remedy = wheel_remedy(facts, f"{target}, or install a build this driver runs"
                                     + (f" (a build for CUDA {ceiling} or older)." if ceiling else "."))
        package = forward_package(cuda, drv) if _data_center(facts) and os_name(facts) == "linux" else None
        if package:
            remedy = Remediation(remedy.text + f" On this data-center GPU NVIDIA's forward-compatibility package "
                                 f"{package} also runs CUDA {s.need.cuda} on driver branch "
                                 f"{str(drv).split('.')[0]}.", remedy.commands + forward_commands(package), remedy.url)
        if works:
            return warned(f"{ctx}: {s.why}, yet CUDA initialised and ran a kernel (a forward-compatibility "
                          "package is probably in use)", Remediation("Keep the cuda-compat package that bridges "
                          "this driver, or upgrade the driver.", url=FORWARD_URL))
        return failed(f"{ctx}: {s.why}", remedy, f"source: {COMPAT_URL}")
    ptx_only = []
    arch = parse_arch_list(torch.get("arch_flags") or [])
    for d in devices(gpu):
        cc = parse_cc(compute_capability(facts, d)[0])
        if cc is not None and arch.targets:
            cov = coverage(cc, arch, is_tegra(device_name(facts, d)))
            if cov.via_ptx:
                ptx_only.append(f"{ident(d)} (CC {cc_text(cc)}) is covered only by PTX {cov.by}")
    if ptx_only:
        return failed(f"{ctx}: {s.why}", wheel_remedy(facts, f"Upgrade the driver to >= {s.need.full} (PTX needs "
                                                              "it to JIT), or install a build with a cubin for this GPU."),
                      *ptx_only)
    return warned(f"{ctx}: {s.why}", Remediation(f"Upgrade the NVIDIA driver to >= {s.need.full} for full CUDA "
                                                 f"{s.need.cuda} support.", url=COMPAT_URL))


def _runtime_works(torch: dict[str, Any]) -> bool:
    rt = torch.get("runtime") or {}
    return bool(rt.get("is_available")) and bool((rt.get("smoke_test") or {}).get("ok"))


def _data_center(facts: dict[str, Any]) -> bool:
    from doctor import refdata

    specs = [refdata.gpu_spec(device_name(facts, d)) for d in devices(facts.get("gpu") or {})]
    return bool(specs) and all(s is not None and s.get("segment") == "data-center" for s in specs)


@check("torch.arch_coverage", needs=("torch",), needs_gpu=True)
def torch_arch_coverage(facts: dict[str, Any]) -> Result:
    """torch's compiled arch list covers every GPU, by NVIDIA's rule.

    Why: a wheel without this GPU's architecture fails at the first kernel with "no kernel image is
    available for execution on the device" (e.g. a cu130 wheel, which has no sm_70, on a V100; a cu126
    wheel on an RTX 5090). A cubin sm_XY runs on CC X.Z with Z >= Y (sm_90a-style only on exactly X.Y,
    and on a Jetson only a cubin for its exact CC); PTX compute_XY is JIT-compiled for any CC >= X.Y.
    Fix: install the build of your torch release whose arch list covers the GPU (the exact command is given).
    """
    gpu, torch = facts["gpu"], facts["torch"]
    skip = _not_applicable(torch, gpu)
    if skip:
        return skip
    devs = devices(gpu) or [{"name": t.get("name"), "compute_capability": t.get("compute_capability"),
                              "nvml_index": f"cuda:{t.get('ordinal')}"} for t in (torch.get("runtime") or {}).get("devices") or []]
    flags = torch.get("arch_flags")
    if not flags:
        return errored(f"could not decide: {torch_label(torch)} reported no compiled arch list")
    if not devs:
        return errored("could not decide: NVML lists no GPU and torch recorded none of the GPUs it sees")
    arch = parse_arch_list(flags)
    lines, missing, unknown, unverified = [], [], [], []
    for d in devs:
        cc_str, why = compute_capability(facts, d)
        cc = parse_cc(cc_str)
        if cc is None:
            unknown.append(d)
            lines.append(f"{ident(d)}: compute capability unknown ({why})")
            continue
        cov = coverage(cc, arch, is_tegra(device_name(facts, d)))
        if not cov.covered:
            missing.append((d, cc))
            lines.append(f"{ident(d)}: CC {cc_text(cc)} is not covered")
            continue
        lines.append(f"{ident(d)}: CC {cc_text(cc)} covered by {cov.by}"
                     + (" (PTX, JIT-compiled at first use)" if cov.via_ptx else ""))
        if refdata_architecture(cc_text(cc)) is None:
            unverified.append(cc)
    span = compiled_range(arch)
    if span and any(parse_cc(compute_capability(facts, d)[0]) and not span[0] <= parse_cc(compute_capability(facts, d)[0]) <= span[1]
                    for d in devs):
        lines.append(f"torch warns at start-up that a GPU is outside its compiled range "
                     f"sm_{span[0][0]}{span[0][1]}..sm_{span[1][0]}{span[1][1]}")
    listed = " ".join(str(f) for f in flags)
    if missing:
        d, cc = missing[0]
        return failed(f"{d.get('name')} (CC {cc_text(cc)}) is not in {torch_label(torch)}'s arch list [{listed}]",
                      wheel_remedy(facts, "Install a build compiled for this GPU."), *lines)
    if unknown:
        return errored(f"could not decide: compute capability unknown for {describe(unknown)}", *lines)
    if unverified:
        return warned(f"unverified: CC {cc_text(unverified[0])} is newer than doctor's architecture table; by NVIDIA's "
                      f"rule {torch_label(torch)}'s arch list [{listed}] covers it", None, *lines)
    return passed(f"every GPU is covered by {torch_label(torch)}'s arch list [{listed}]", *lines)
