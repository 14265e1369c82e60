"""GPU checks: presence, count, model, memory, compute capability, architecture, bf16."""
from __future__ import annotations

from typing import Any

from doctor import refdata
from doctor.archs import parse_cc
from doctor.model import Remediation, Result, errored, failed, passed, skipped, warned
from doctor.registry import check

from .common import compute_capability, describe, device_name, devices, ident, memory_bytes

DRIVER_GUIDE = "https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/"


def _need_gpus(gpu: dict[str, Any]) -> Result | list[dict[str, Any]]:
    devs = devices(gpu)
    return devs if devs else errored("could not decide: NVML lists no GPU although CUDA sees one; see gpu.present")


@check("gpu.present", needs=("gpu",), binds={"required": "machine.gpu.required"})
def gpu_present(facts: dict[str, Any], *, required: bool = True) -> Result:
    """At least one NVIDIA GPU is visible to the driver (NVML).

    Why: without a driver or GPU every CUDA job dies at its first `.cuda()`; on a rented box the usual
    causes are a container started without GPUs, a driver that is not loaded, or a CPU-only instance.
    Fix: the remedy follows NVML's reason: install or load the driver; reboot after a driver update
    (driver/library mismatch); restart a container whose device access systemd reset ("Unknown Error");
    start a container with the GPUs exposed (`docker run --gpus all`, or the platform's GPU option).
    """
    gpu, host = facts["gpu"], facts.get("host") or {}
    devs = devices(gpu)
    runtime = (facts.get("torch") or {}).get("runtime") or {}
    if not devs and (gpu.get("available") or (gpu.get("available") is None and not gpu.get("reason"))):
        return errored("could not decide: the facts list no GPU devices and no reason NVML found none")
    if devs:
        return passed(f"found {describe(devs)} (driver {gpu.get('driver_version')}, NVML)",
                      *[f"{ident(d)}: {d.get('name')}" for d in devs])
    reason = gpu.get("reason") or "NVML reports no GPU"
    if runtime.get("is_available") and runtime.get("device_count"):
        return warned(f"NVML is unavailable ({reason}), but CUDA works: torch sees {runtime['device_count']} GPU(s); "
                      "the checks that read NVML (memory, health, driver) cannot decide",
                      Remediation("Expose NVIDIA's management library to this container (the NVIDIA Container "
                                  "Toolkit's utility capability), so nvidia-smi and NVML work.",
                                  ("export NVIDIA_DRIVER_CAPABILITIES=compute,utility", "nvidia-smi"), DRIVER_GUIDE))
    if not required:
        return skipped(f"no NVIDIA GPU ({reason}); this profile does not need one")
    return failed(f"no NVIDIA driver/GPU found: {reason}", _present_remedy(reason, bool(host.get("container_hints"))))


def _present_remedy(reason: str, container: bool) -> Remediation:
    """The fix NVML's reason calls for (NVIDIA driver and Container Toolkit documentation)."""
    low = reason.lower()
    if "mismatch" in low:
        return Remediation("The kernel driver and the user-space library differ (a driver update without a "
                           "reboot): reboot, or unload and reload the nvidia kernel modules.",
                           ("sudo reboot",), DRIVER_GUIDE)
    if container and "unknown error" in low:
        return Remediation("Inside a container this usually means systemd reloaded the container's device "
                           "cgroup and dropped the NVIDIA devices (after `systemctl daemon-reload` on the host): "
                           "restart (or recreate) the container. Running this on the host once prevents it:",
                           ("sudo nvidia-ctk system create-dev-char-symlinks --create-all",),
                           "https://github.com/NVIDIA/nvidia-container-toolkit/issues/48")
    if container:
        return Remediation("This looks like a container: start it with the GPUs exposed (docker run --gpus all ..., "
                           "or the platform's GPU option) and the NVIDIA Container Toolkit on the host; then confirm "
                           "with nvidia-smi.", ("nvidia-smi",), DRIVER_GUIDE)
    if "not loaded" in low:
        return Remediation("The NVIDIA kernel module is not loaded: load it (or reboot), then confirm with nvidia-smi.",
                           ("sudo modprobe nvidia", "nvidia-smi"), DRIVER_GUIDE)
    return Remediation("Install the NVIDIA data-center driver for this OS and reboot, then confirm with nvidia-smi.",
                       ("nvidia-smi",), DRIVER_GUIDE)


@check("gpu.count", needs_gpu=True, binds={"count": "machine.gpu.count"})
def gpu_count(facts: dict[str, Any], *, count: int) -> Result:
    """The machine has at least as many GPUs as the profile expects.

    Why: a job launched for 8 ranks on a 4-GPU box fails at rendezvous or silently oversubscribes GPUs.
    Fix: rent the box size the job needs, or lower the job's world size (torchrun --nproc-per-node).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    found = len(devs)
    if found >= count:
        return passed(f"found {found} GPU{'s' * (found != 1)}; profile expects at least {count}")
    return failed(f"found {found} GPU{'s' * (found != 1)} ({describe(devs)}); profile expects at least {count}",
                  Remediation(f"Use a machine with {count} GPUs, or run the job with "
                              f"--nproc-per-node={found}.", ("nvidia-smi -L",)))


@check("gpu.model", needs_gpu=True, binds={"models": "machine.gpu.models", "label": "machine.gpu.name"})
def gpu_model(facts: dict[str, Any], *, models: list[str], label: str | None = None) -> Result:
    """Every GPU is one of the models the profile expects, identified in doctor's GPU table by its exact NVML
    name (never a pattern: GH200 is not H200, a laptop RTX 4090 is not an RTX 4090, V100S is not V100).

    Why: a job sized and tuned for one GPU (memory, bf16, NVLink) behaves differently on another, and a
    rented box is not always the model that was ordered.
    Fix: run on the expected model, or judge this machine with its own profile (`doctor check` with no
    --profile picks the machine profile matching the detected GPU).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    want = label or " or ".join(models)
    wrong, unknown, unlisted = [], [], []
    for d in devs:
        name = device_name(facts, d)
        spec = refdata.gpu_spec(name)
        if not name:
            unknown.append(d)
        elif spec is None:
            unlisted.append((d, name))
        elif spec["name"] not in models:
            wrong.append((d, f"{name} ({spec['name']})"))
    if wrong:
        return failed(f"found {describe(devs)}; profile expects {want}",
                      Remediation(f"This machine does not have the {want} this profile describes. Use a {want} "
                                  "machine, or judge this one against its own profile:", ("doctor check",)),
                      *[f"{ident(d)}: {text}" for d, text in wrong])
    if unknown:
        return errored(f"could not decide: NVML and torch report no name for {len(unknown)} GPU(s); "
                       f"profile expects {want}", *[ident(d) for d in unknown])
    if unlisted:
        d, name = unlisted[0]
        return warned(f"unverified: {name} is not in doctor's GPU table, so it cannot be confirmed as {want}",
                      Remediation("Update doctor (its GPU table may predate this GPU), or judge this machine with "
                                  "the generic profile:", ("doctor check -p base",)),
                      *[f"{ident(d)}: {n}" for d, n in unlisted])
    return passed(f"found {describe(devs)}; profile expects {want}")


@check("gpu.memory", needs_gpu=True, binds={"memory_gib": "machine.gpu.memory_gib",
                                             "tolerance_pct": "machine.gpu.memory_tolerance_pct"})
def gpu_memory(facts: dict[str, Any], *, memory_gib: float, tolerance_pct: float = 3.0) -> Result:
    """Each GPU's total memory, as NVML reports it, is at least the profile's figure (within a tolerance).

    Why: a job sized for 80 GB dies with CUDA out-of-memory on a 40 GB variant of the same model name.
    NVML reports 81920 MiB for an A100-80GB and 81559 MiB for an H100 80GB; torch reports less (its
    figure excludes memory the driver reserves), so the tolerance is applied to NVML's total. A GPU whose
    NVML memory is "Not Supported" (unified memory: DGX Spark GB10) is judged on what CUDA reports it can use;
    with no figure at all doctor says it could not decide rather than read the missing figure as 0.
    Fix: use the memory size the job was planned for, or shrink the job (smaller batch, gradient
    checkpointing, 4-bit weights).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    floor = memory_gib * (1 - tolerance_pct / 100)
    lines, short, unknown, sizes = [], [], [], []
    for d in devs:
        total, source = memory_bytes(facts, d)
        if total is None:
            unknown.append(d)
            lines.append(f"{ident(d)}: memory unknown ({source})")
            continue
        gib = total / 2**30
        sizes.append(gib)
        lines.append(f"{ident(d)}: {gib:.2f} GiB total ({source})")
        if gib < floor:
            short.append(d)
    want = f"profile expects {memory_gib:g} GiB ±{tolerance_pct:g}%"
    if short:
        return failed(f"smallest GPU has {min(sizes):.1f} GiB; {want}",
                      Remediation(f"Use GPUs with at least {memory_gib:g} GiB, or reduce the job's memory "
                                  "(smaller micro-batch, gradient checkpointing, 4-bit base weights)."), *lines)
    if unknown:
        return errored(f"could not decide: no memory figure for {describe(unknown)} ({want})", *lines)
    return passed(f"smallest GPU has {min(sizes):.1f} GiB; {want}", *lines)


def _ccs(facts: dict[str, Any], devs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None, str]]:
    return [(d, *compute_capability(facts, d)) for d in devs]


@check("gpu.compute_capability", needs_gpu=True, binds={"minimum": "machine.gpu.compute_capability"})
def gpu_compute_capability(facts: dict[str, Any], *, minimum: str) -> Result:
    """Every GPU's compute capability (NVML, else torch for the same GPU) is at least the profile's minimum.

    Why: kernels (FlashAttention-2, bf16 tensor cores, FP8) need a minimum CC and fail with "no kernel
    image is available" or an explicit error on older GPUs.
    Fix: use a GPU with CC >= the minimum (https://developer.nvidia.com/cuda-gpus), or switch the job to
    kernels the older GPU supports (SDPA instead of FlashAttention-2, fp16 instead of bf16).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    want = parse_cc(minimum)
    if want is None:
        return errored(f"the profile's compute capability {minimum!r} is not of the form 'X.Y'")
    rows = _ccs(facts, devs)
    low = [(d, cc) for d, cc, _ in rows if cc and parse_cc(cc) is not None and parse_cc(cc) < want]
    unknown = [(d, why) for d, cc, why in rows if not cc or parse_cc(cc) is None]
    found = ", ".join(sorted({cc for _, cc, _ in rows if cc})) or "unknown"
    if low:
        return failed(f"compute capability {found}; profile needs >= {minimum}",
                      Remediation(f"Use a GPU with compute capability {minimum} or newer.",
                                  url="https://developer.nvidia.com/cuda-gpus"),
                      *[f"{ident(d)}: {d.get('name')} CC {cc}" for d, cc in low])
    if unknown:
        return errored(f"could not decide: compute capability of {describe([d for d, _ in unknown])} unknown "
                       f"({unknown[0][1]}); profile needs >= {minimum}")
    return passed(f"compute capability {found}; profile needs >= {minimum}")


@check("gpu.arch", needs_gpu=True, binds={"expected": "machine.gpu.arch"})
def gpu_arch(facts: dict[str, Any], *, expected: str) -> Result:
    """Each GPU's architecture, named from its compute capability, is the one the profile states.

    Why: guides mislabel GPUs (some call the A800 "Hopper"; it is Ampere GA100, sm_80), which leads to
    the wrong wheel, the wrong kernels (no FP8 / wgmma on Ampere) and wrong performance expectations.
    Fix: correct the profile's machine.gpu.arch, or use a machine of the intended architecture.
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    lines, wrong, unverified, unknown = [], [], [], []
    for d, cc, why in _ccs(facts, devs):
        if not cc:
            unknown.append(d)
            lines.append(f"{ident(d)}: {d.get('name')}: compute capability unknown ({why})")
            continue
        arch = refdata.architecture(cc)
        spec = refdata.gpu_spec(d.get("name"))
        chip = f"{spec['chip']}, " if spec and spec.get("chip") else ""
        lines.append(f"{ident(d)}: {d.get('name')} is {arch or 'an architecture doctor does not know'} "
                     f"({chip}sm_{cc.replace('.', '')})")
        if arch is None:
            unverified.append((d, cc))
        elif arch.lower() != expected.lower():
            wrong.append(d)
    if wrong:
        return failed(f"{lines[devs.index(wrong[0])].split(': ', 1)[1]}; profile says {expected}",
                      Remediation(f"The profile's machine.gpu.arch is {expected!r} but the hardware is not: "
                                  "correct the profile, or use a machine of that architecture."), *lines)
    if unverified:
        d, cc = unverified[0]
        return warned(f"unverified: compute capability {cc} ({d.get('name')}) is newer than doctor's architecture "
                      f"table; profile says {expected}",
                      Remediation("Update doctor (its data may predate this GPU); judge the rest by the checks that "
                                  "do not need the table."), *lines)
    if unknown:
        return errored(f"could not decide: compute capability unknown for {describe(unknown)}", *lines)
    return passed(lines[0].split(": ", 1)[1] + (f" (all {len(devs)})" if len(devs) > 1 else ""), *lines)


@check("gpu.bf16", needs_gpu=True, binds={"dtype": "job.workload.dtype"})
def gpu_bf16(facts: dict[str, Any], *, dtype: str) -> Result:
    """When the workload computes in bf16, every GPU supports bf16 in hardware (CC >= 8.0).

    Why: on a V100 or T4 (CC 7.x) bf16 is emulated or rejected: torch's default
    is_bf16_supported() even says True on a V100 because it counts emulation, so jobs start and then
    run many times slower or fail inside kernels that have no bf16 path.
    Fix: train in fp16 with loss scaling (transformers: fp16=True instead of bf16=True; plain PyTorch:
    torch.autocast(dtype=torch.float16) with torch.amp.GradScaler), or use an Ampere or newer GPU.
    """
    if dtype != "bf16":
        return skipped(f"the workload computes in {dtype}; bf16 is not needed")
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    rows = _ccs(facts, devs)
    no = [(d, cc) for d, cc, _ in rows if parse_cc(cc) is not None and parse_cc(cc) < (8, 0)]
    unknown = [d for d, cc, _ in rows if parse_cc(cc) is None]
    runtime = (facts.get("torch") or {}).get("runtime") or {}
    torch_says = runtime.get("bf16_hardware")
    if no:
        return failed(f"{describe([d for d, _ in no])} (CC {no[0][1]}) has no bf16 tensor cores; the workload uses bf16",
                      Remediation("Switch the job to fp16 with loss scaling: transformers TrainingArguments(fp16=True, "
                                  "bf16=False), or torch.autocast(device_type='cuda', dtype=torch.float16) with "
                                  "torch.amp.GradScaler(); or use a GPU with CC >= 8.0."))
    if unknown:
        return errored(f"could not decide: compute capability unknown for {describe(unknown)}, so bf16 support is "
                       "unknown")
    if torch_says is False:
        return warned("CC >= 8.0 but torch.cuda.is_bf16_supported(including_emulation=False) returned False",
                      Remediation("Update torch to a CUDA build for this GPU; see torch.arch_coverage."))
    via = " and torch confirms (including_emulation=False)" if torch_says else ""
    return passed(f"bf16 supported in hardware: CC {', '.join(sorted({cc for _, cc, _ in rows}))} >= 8.0{via}")
