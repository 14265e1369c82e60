"""Build toolchain for JIT-compiled CUDA extensions (DeepSpeed ops, flash-attn, mamba-ssm builds):
nvcc, CUDA_HOME as torch.utils.cpp_extension finds it, gcc, ninja."""
from __future__ import annotations

import os
import re
import shutil
from typing import Any

from .. import subproc
from ..probing import ProbeContext, probe

TOOL_TIMEOUT_S = 5.0


def _version(cmd: list[str], pattern: str) -> tuple[str | None, str | None]:
    """(version, error) from running `cmd` under a timeout."""
    try:
        done = subproc.run(cmd, timeout_s=TOOL_TIMEOUT_S)
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if done.timed_out:
        return None, f"`{' '.join(cmd)}` did not answer within {TOOL_TIMEOUT_S:g} s"
    match = re.search(pattern, done.stdout + done.stderr)
    if done.returncode != 0 or not match:
        return None, f"`{' '.join(cmd)}` exited {done.returncode}: {(done.stderr or done.stdout).strip()[-200:]}"
    return match.group(1), None


def cuda_home(environ: dict[str, str], which: Any = shutil.which) -> tuple[str | None, str]:
    """torch.utils.cpp_extension's order: $CUDA_HOME, $CUDA_PATH, the folder above `which nvcc`,
    then /usr/local/cuda when it exists."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(var):
            return environ[var], f"${var}"
    nvcc = which("nvcc")
    if nvcc:
        return os.path.dirname(os.path.dirname(nvcc)), "parent of `which nvcc`"
    if os.path.isdir("/usr/local/cuda"):
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, "not found"


def collect(extra_bin: str | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ if environ is None else environ)
    path = os.pathsep.join(p for p in (extra_bin, env.get("PATH", "")) if p)

    def which(name: str) -> str | None:
        return shutil.which(name, path=path)

    home, home_source = cuda_home(env, which)
    nvcc = which("nvcc")
    if not nvcc and home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
        nvcc = os.path.join(home, "bin", "nvcc")
    out: dict[str, Any] = {"cuda_home": home, "cuda_home_source": home_source, "nvcc": None, "gcc": None,
                           "ninja": None, "torch_cuda_arch_list": env.get("TORCH_CUDA_ARCH_LIST")}
    for name, exe, args, pattern in (("nvcc", nvcc, ["--version"], r"release (\d+\.\d+)"),
                                     ("gcc", which("gcc"), ["-dumpfullversion"], r"^(\d+(?:\.\d+)*)"),
                                     ("ninja", which("ninja"), ["--version"], r"^(\d+(?:\.\d+)*)")):
        if exe:
            version, error = _version([exe, *args], pattern)
            out[name] = {"path": exe, "version": version, "error": error}
    return out


@probe("toolchain", timeout_s=10)
def probe_toolchain(ctx: ProbeContext, __: float) -> dict[str, Any]:
    # ninja installed with pip lands in the inspected environment's bin folder
    return collect(os.path.dirname(ctx.target.executable))
