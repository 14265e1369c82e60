"""GPU checks: presence, count, model, memory, compute capability, architecture, bf16."""
from __future__ import annotations

import re
from typing import Any

from doctor import refdata
from doctor.cuda import cc_tuple
from doctor.model import Remediation, Result, failed, passed, skipped, warned
from doctor.registry import check

from .common import describe, devices, ident

DRIVER_GUIDE = "https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/"


def _need_gpus(gpu: dict[str, Any]) -> Result | list[dict[str, Any]]:
    devs = devices(gpu)
    return devs if devs else skipped("no NVIDIA GPU to judge; see gpu.present")


@check("gpu.present", needs=("gpu", "host"), binds={"required": "machine.gpu.required"})
def gpu_present(facts: dict[str, Any], *, required: bool = True) -> Result:
    """At least one NVIDIA GPU is visible to the driver (NVML).

    Why: without a driver or GPU every CUDA job dies at its first `.cuda()`; on a rented box the usual
    causes are a container started without GPUs, a driver that is not loaded, or a CPU-only instance.
    Fix: install or load the NVIDIA driver (check with `nvidia-smi`); in a container, start it with the
    GPUs exposed (`docker run --gpus all`, or the platform's GPU option).
    """
    gpu, host = facts["gpu"], facts["host"]
    devs = devices(gpu)
    if devs:
        return passed(f"found {describe(devs)} (driver {gpu.get('driver_version')}, NVML)",
                      *[f"{ident(d)}: {d.get('name')}" for d in devs])
    reason = gpu.get("reason") or "NVML reports no GPU"
    if not required:
        return skipped(f"no NVIDIA GPU ({reason}); this profile does not need one")
    commands = ["nvidia-smi"]
    text = "Install the NVIDIA data-center driver for this OS and reboot, then confirm with nvidia-smi."
    if host.get("container_hints"):
        text = ("This looks like a container: start it with the GPUs exposed (docker run --gpus all ..., "
                "or the platform's GPU option) and the NVIDIA Container Toolkit on the host; then confirm with nvidia-smi.")
    return failed(f"no NVIDIA driver/GPU found: {reason}", Remediation(text, tuple(commands), DRIVER_GUIDE))


@check("gpu.count", needs=("gpu",), binds={"count": "machine.gpu.count"})
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


@check("gpu.model", needs=("gpu",), binds={"pattern": "machine.gpu.model", "label": "machine.gpu.name"})
def gpu_model(facts: dict[str, Any], *, pattern: str, label: str | None = None) -> Result:
    """Every GPU's name (NVML) matches the model the profile expects.

    Why: a job sized and tuned for one GPU (memory, bf16, NVLink) behaves differently on another, and a
    rented box is not always the model that was ordered.
    Fix: run on the expected model, or judge this machine with its own profile (`doctor check` with no
    --profile picks the machine profile matching the detected GPU).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    want = label or pattern
    wrong = [d for d in devs if not re.search(pattern, d.get("name") or "", re.I)]
    if not wrong:
        return passed(f"found {describe(devs)}; profile expects {want}")
    return failed(f"found {describe(devs)}; profile expects {want}",
                  Remediation(f"This machine does not have the {want} this profile describes. Use a {want} "
                              "machine, or judge this one against its own profile:", ("doctor check",)),
                  *[f"{ident(d)}: {d.get('name')}" for d in wrong])


@check("gpu.memory", needs=("gpu",), binds={"memory_gib": "machine.gpu.memory_gib",
                                             "tolerance_pct": "machine.gpu.memory_tolerance_pct"})
def gpu_memory(facts: dict[str, Any], *, memory_gib: float, tolerance_pct: float = 3.0) -> Result:
    """Each GPU's total memory, as NVML reports it, is at least the profile's figure (within a tolerance).

    Why: a job sized for 80 GB dies with CUDA out-of-memory on a 40 GB variant of the same model name.
    NVML reports 81920 MiB for an A100-80GB and 81559 MiB for an H100 80GB; torch reports less (its
    figure excludes memory the driver reserves), so the tolerance is applied to NVML's total.
    Fix: use the memory size the job was planned for, or shrink the job (smaller batch, gradient
    checkpointing, 4-bit weights).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    floor = memory_gib * (1 - tolerance_pct / 100)
    lines, short = [], []
    for d in devs:
        mem = d.get("memory") or {}
        if mem.get("total_mib") is None:
            short.append(d)
            lines.append(f"{ident(d)}: memory unknown (NVML gave no figure)")
            continue
        gib = mem["total_mib"] / 1024
        lines.append(f"{ident(d)}: {mem['total_mib']} MiB = {gib:.2f} GiB total ({mem.get('source', 'NVML')})")
        if gib < floor:
            short.append(d)
    smallest = min(((d.get("memory") or {}).get("total_mib") or 0) for d in devs)
    head = (f"smallest GPU has {smallest} MiB ({smallest / 1024:.1f} GiB, NVML memory.total); "
            f"profile expects {memory_gib:g} GiB ±{tolerance_pct:g}%")
    if not short:
        return passed(head, *lines)
    return failed(head, Remediation(f"Use GPUs with at least {memory_gib:g} GiB, or reduce the job's memory "
                                    "(smaller micro-batch, gradient checkpointing, 4-bit base weights)."), *lines)


@check("gpu.compute_capability", needs=("gpu",), binds={"minimum": "machine.gpu.compute_capability"})
def gpu_compute_capability(facts: dict[str, Any], *, minimum: str) -> Result:
    """Every GPU's compute capability (NVML) is at least the profile's minimum.

    Why: kernels (FlashAttention-2, bf16 tensor cores, FP8) need a minimum CC and fail with "no kernel
    image is available" or an explicit error on older GPUs.
    Fix: use a GPU with CC >= the minimum (https://developer.nvidia.com/cuda-gpus), or switch the job to
    kernels the older GPU supports (SDPA instead of FlashAttention-2, fp16 instead of bf16).
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    try:
        want = cc_tuple(minimum)
    except ValueError:
        return failed(f"profile's compute capability {minimum!r} is not of the form 'X.Y'")
    low = [d for d in devs if not d.get("compute_capability") or cc_tuple(d["compute_capability"]) < want]
    found = ", ".join(sorted({str(d.get("compute_capability")) for d in devs}))
    if not low:
        return passed(f"compute capability {found}; profile needs >= {minimum}")
    return failed(f"compute capability {found}; profile needs >= {minimum}",
                  Remediation(f"Use a GPU with compute capability {minimum} or newer.",
                              url="https://developer.nvidia.com/cuda-gpus"),
                  *[f"{ident(d)}: {d.get('name')} CC {d.get('compute_capability')}" for d in low])


@check("gpu.arch", needs=("gpu",), binds={"expected": "machine.gpu.arch"})
def gpu_arch(facts: dict[str, Any], *, expected: str) -> Result:
    """Each GPU's architecture, named from its compute capability, is the one the profile states.

    Why: guides mislabel GPUs (some call the A800 "Hopper"; it is Ampere GA100, sm_80), which leads to
    the wrong wheel, the wrong kernels (no FP8 / wgmma on Ampere) and wrong performance expectations.
    Fix: correct the profile's machine.gpu.arch, or use a machine of the intended architecture.
    """
    devs = _need_gpus(facts["gpu"])
    if isinstance(devs, Result):
        return devs
    lines, wrong, unknown = [], [], []
    for d in devs:
        cc = d.get("compute_capability")
        arch = refdata.architecture(cc)
        spec = refdata.gpu_spec(d.get("name"))
        chip = f"{spec['chip']}, " if spec else ""
        lines.append(f"{ident(d)}: {d.get('name')} is {arch or 'an unknown architecture'} ({chip}sm_{(cc or '?').replace('.', '')})")
        if arch is None:
            unknown.append(d)
        elif arch.lower() != expected.lower():
            wrong.append(d)
    if wrong:
        return failed(f"{lines[devs.index(wrong[0])].split(': ', 1)[1]}; profile says {expected}",
                      Remediation(f"The profile's machine.gpu.arch is {expected!r} but the hardware is not: "
                                  "correct the profile, or use a machine of that architecture."), *lines)
    if unknown:
        return warned(f"compute capability {unknown[0].get('compute_capability')} is not in doctor's "
                      f"architecture table; profile says {expected}", None, *lines)
    return passed(lines[0].split(": ", 1)[1] + (f" (all {len(devs)})" if len(devs) > 1 else ""), *lines)


@check("gpu.bf16", needs=("gpu",), binds={"dtype": "job.workload.dtype"})
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
    no = [d for d in devs if not d.get("compute_capability") or cc_tuple(d["compute_capability"]) < (8, 0)]
    runtime = (facts.get("torch") or {}).get("runtime") or {}
    torch_says = runtime.get("bf16_hardware")
    if no:
        return failed(f"{describe(no)} (CC {no[0].get('compute_capability')}) has no bf16 tensor cores; the workload uses bf16",
                      Remediation("Switch the job to fp16 with loss scaling: transformers TrainingArguments(fp16=True, "
                                  "bf16=False), or torch.autocast(device_type='cuda', dtype=torch.float16) with "
                                  "torch.amp.GradScaler(); or use a GPU with CC >= 8.0."))
    if torch_says is False:
        return warned("CC >= 8.0 but torch.cuda.is_bf16_supported(including_emulation=False) returned False",
                      Remediation("Update torch to a CUDA build for this GPU; see torch.arch_coverage."))
    via = " and torch confirms (including_emulation=False)" if torch_says else ""
    return passed(f"bf16 supported in hardware: CC {', '.join(sorted({d['compute_capability'] for d in devs}))} >= 8.0{via}")
