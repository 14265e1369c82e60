"""Build toolchain for CUDA extensions compiled at first use (DeepSpeed ops, source builds)."""
from __future__ import annotations

from typing import Any

from doctor.model import NOT_ASKED, Remediation, Result, errored, failed, passed, skipped, warned
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


def _minor(version: Any) -> str:
    return ".".join(str(version).split(".")[:2])


def _both_fixes(facts: dict[str, Any], torch_cuda: str, nvcc: str) -> list[str]:
    """The two ways to make nvcc and torch agree: the nvcc of torch's CUDA, or the user's torch release built
    for the nvcc's CUDA where doctor's table has such a build."""
    from doctor.cuda import builds, platform_key, release_of

    out = [NVCC_INSTALL.format(cuda=_minor(torch_cuda))]
    release = release_of((facts.get("torch") or {}).get("version"))
    plat = platform_key(facts.get("host")) or "linux-x86_64"
    same = [b for b in builds(plat) if b.release == release and b.cuda and _minor(b.cuda) == _minor(nvcc)]
    if same:
        out.append(same[0].command)
    return out


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
        return skipped(cause=NOT_ASKED, summary="the job builds no CUDA extension (no job.software.build_extensions, "
                       "no DeepSpeed op left to JIT-compile)")
    why = (f"DeepSpeed will JIT-compile {', '.join(jit)} at first use" if jit
           else "the job builds CUDA extensions (job.software.build_extensions)")
    torch = facts.get("torch") or {}
    torch_cuda = torch.get("cuda_build")
    problems, unknown, details, commands = [], [], [], []
    warn = None
    if "cuda_home" in tc:
        details.append(f"CUDA_HOME: {tc.get('cuda_home')} ({tc.get('cuda_home_source')})")
        if not tc["cuda_home"]:
            problems.append("CUDA_HOME is not set and no CUDA toolkit was found")
    else:
        unknown.append("CUDA_HOME")
    nvcc = tc.get("nvcc")
    if "nvcc" not in tc:
        unknown.append("nvcc")
    elif not isinstance(nvcc, dict) or not nvcc.get("version"):
        where = (nvcc or {}).get("path") if isinstance(nvcc, dict) else None
        problems.append(f"nvcc at {where} failed: {(nvcc or {}).get('error')}" if where else "nvcc not found")
        if torch_cuda:
            commands.append(NVCC_INSTALL.format(cuda=torch_cuda))
    else:
        details.append(f"nvcc {nvcc['version']}" + (f" at {nvcc['path']}" if nvcc.get("path") else ""))
        if "cuda_build" not in torch:
            unknown.append("torch's CUDA build")
        elif torch_cuda and str(nvcc["version"]).split(".")[0] != str(torch_cuda).split(".")[0]:
            problems.append(f"nvcc is CUDA {nvcc['version']} but torch is built with CUDA {torch_cuda}: "
                            "DeepSpeed and cpp_extension refuse a different CUDA major")
            commands += _both_fixes(facts, torch_cuda, str(nvcc["version"]))
        elif torch_cuda and _minor(nvcc["version"]) != _minor(torch_cuda):
            warn = (f"nvcc {nvcc['version']} vs torch CUDA {torch_cuda}: same major, different minor (DeepSpeed "
                    "accepts it; extensions built against another minor may not load everywhere)")
    for tool, cmd in (("gcc", "apt-get install -y build-essential"), ("ninja", "pip install ninja")):
        if tool not in tc:
            unknown.append(tool)
            continue
        info = tc.get(tool) or {}
        if info.get("version"):
            details.append(f"{tool} {info['version']}" + (f" at {info['path']}" if info.get("path") else ""))
        else:
            problems.append(f"{tool} not found")
            commands.append(cmd)
    if jit:
        commands.append(f"DS_BUILD_{jit[0].upper()}=1 pip install --no-build-isolation --force-reinstall deepspeed")
    if problems:
        return failed(f"{why}, but: {'; '.join(problems)}",
                      Remediation("Install the missing build tools (an nvcc of torch's CUDA version, or a torch build "
                                  "for the nvcc you have), or prebuild the op when installing DeepSpeed so nothing "
                                  "compiles at training time.", tuple(dict.fromkeys(commands)),
                                  "https://www.deepspeed.ai/tutorials/advanced-install/"), *details)
    if unknown:
        return errored(f"could not decide: the snapshot does not say {', '.join(unknown)}", *details)
    if warn:
        return warned(f"{why}; {warn}", Remediation("Match them: install the nvcc of torch's CUDA, or the torch build "
                                                    "for this nvcc.", tuple(_both_fixes(facts, torch_cuda,
                                                                                        str(nvcc["version"])))),
                      *details)
    return passed(f"{why}; nvcc, CUDA_HOME, gcc and ninja are present", *details)
