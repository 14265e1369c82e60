"""Environment variables that change how a job sees GPUs, memory, caches and threads.
Allow-listed names only: nothing else is read, so tokens and secrets never enter a snapshot."""
from __future__ import annotations

import os
from typing import Any

from ..probing import ProbeContext, probe
from .network import safe_url

ALLOWED = (
    "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES", "CUDA_LAUNCH_BLOCKING",
    "PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "PYTORCH_NVML_BASED_CUDA_CHECK",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "NCCL_SOCKET_IFNAME", "NCCL_DEBUG", "NCCL_SHM_DISABLE",
    "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
    "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
    "CUDA_HOME", "CUDA_PATH", "TORCH_CUDA_ARCH_LIST", "DS_BUILD_OPS", "DS_BUILD_CPU_ADAM", "DS_SKIP_CUDA_CHECK",
    "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
    "HF_HUB_ENABLE_HF_TRANSFER", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
)
URL_VARS = {"HF_ENDPOINT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"}


def collect(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    values = {k: (" ".join(safe_url(u) for u in env[k].split()) if k in URL_VARS else env[k])
              for k in ALLOWED if k in env}
    return {"variables": values, "policy": "allow-list only; URLs stripped of user:password"}


@probe("env", timeout_s=5)
def probe_env(_: ProbeContext, __: float) -> dict[str, Any]:
    return collect()
