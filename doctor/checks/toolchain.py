"""Build toolchain for CUDA extensions compiled at first use (DeepSpeed ops, source builds)."""
from __future__ import annotations

from typing import Any

from doctor.model import Remediation, Result, failed, passed, skipped, warned
from doctor.registry import check

NVCC_INSTALL = "conda install -y -c nvidia cuda-nvcc={cuda}"  # the nvcc matching torch's CUDA build


def _jit_ops(facts: dict[str, Any], deepspeed: dict[str, Any] | None) -> list[str]:
    """DeepSpeed ops this job will JIT-build: optimizer ops its config uses that were not prebuilt."""
    ops = (facts.get("python") or {}).get("deepspeed_ops") or {}
    installed = ops.get("installed_ops")
    if not deepspeed or installed is None:
        return []
    import json

    try:
        config = json.loads((deepspeed.get("loaded") or {}).get("text", "{}"))
    except ValueError:
        return []
    zero = config.get("zero_optimization") or {}
    offload = (zero.get("offload_optimizer") or {}).get("device") in ("cpu", "nvme")
    optimizer = str((config.get("optimizer") or {}).get("type", "adamw")).lower()
    needed = ["cpu_adam" if offload else "fused_adam"] if "adam" in optimizer else []
    return [op for op in needed if not installed.get(op)]


@check("toolchain.cuda", needs=("toolchain",),
       binds={"build_extensions": "job.software.build_extensions", "deepspeed": "job.deepspeed"})
def toolchain_cuda(facts: dict[str, Any], *, build_extensions: bool = False,
                   deepspeed: dict[str, Any] | None = None) -> Result:
    """When the job compiles CUDA extensions: nvcc present with torch's CUDA major, CUDA_HOME, gcc, ninja.

    Why: DeepSpeed JIT-builds CPU Adam (ZeRO optimizer offload) at the first step; with no nvcc, or an
    nvcc whose major differs from torch's CUDA, it stops with CUDAMismatchException after the model
    has loaded (DeepSpeed op_builder `assert_no_cuda_mismatch`); torch's cpp_extension needs ninja.
    Fix: install the nvcc of torch's CUDA version (conda `cuda-nvcc`), set CUDA_HOME, install ninja;
    or install DeepSpeed with the op prebuilt (`DS_BUILD_CPU_ADAM=1 pip install deepspeed`).
    """
    tc = facts["toolchain"]
    jit = _jit_ops(facts, deepspeed)
    if not build_extensions and not jit:
        return skipped("the job builds no CUDA extension (no job.software.build_extensions, "
                       "no DeepSpeed op left to JIT-compile)")
    why = (f"DeepSpeed will JIT-compile {', '.join(jit)} at first use" if jit
           else "the job builds CUDA extensions (job.software.build_extensions)")
    torch_cuda = (facts.get("torch") or {}).get("cuda_build")
    cuda = torch_cuda or "12.8"
    nvcc = tc.get("nvcc") or {}
    problems, details = [], [f"CUDA_HOME: {tc.get('cuda_home')} ({tc.get('cuda_home_source')})"]
    commands: list[str] = []
    if not nvcc.get("version"):
        problems.append("nvcc not found" if not nvcc else f"nvcc at {nvcc.get('path')} failed: {nvcc.get('error')}")
        commands.append(NVCC_INSTALL.format(cuda=cuda))
    else:
        details.append(f"nvcc {nvcc['version']} at {nvcc['path']}")
        if torch_cuda and nvcc["version"].split(".")[0] != torch_cuda.split(".")[0]:
            problems.append(f"nvcc is CUDA {nvcc['version']} but torch is built with CUDA {torch_cuda}: "
                            "DeepSpeed and cpp_extension refuse a different CUDA major")
            commands.append(NVCC_INSTALL.format(cuda=cuda))
    if not tc.get("cuda_home"):
        problems.append("CUDA_HOME is not set and no CUDA toolkit was found")
    for tool, cmd in (("gcc", "apt-get install -y build-essential"), ("ninja", "pip install ninja")):
        info = tc.get(tool) or {}
        if info.get("version"):
            details.append(f"{tool} {info['version']} at {info['path']}")
        else:
            problems.append(f"{tool} not found")
            commands.append(cmd)
    if jit:
        commands.append(f"DS_BUILD_{jit[0].upper()}=1 pip install --no-build-isolation --force-reinstall deepspeed")
    if problems:
        return failed(f"{why}, but: {'; '.join(problems)}",
                      Remediation("Install the missing build tools (nvcc of torch's CUDA version), or prebuild the "
                                  "op when installing DeepSpeed so nothing compiles at training time.",
                                  tuple(commands), "https://www.deepspeed.ai/tutorials/advanced-install/"),
                      *details)
    if torch_cuda and nvcc["version"] != torch_cuda:
        return warned(f"{why}; nvcc {nvcc['version']} vs torch CUDA {torch_cuda}: same major, different minor "
                      "(DeepSpeed accepts this; a source build may warn)", None, *details)
    return passed(f"{why}; nvcc, CUDA_HOME, gcc and ninja are present", *details)
