"""Small helpers shared by the built-in checks: reading facts, never probing."""
from __future__ import annotations

from collections import Counter
from typing import Any

from doctor.cuda import recommend_wheel
from doctor.model import Remediation

PYTORCH_URL = "https://pytorch.org/get-started/locally/"


def devices(gpu: dict[str, Any]) -> list[dict[str, Any]]:
    return list(gpu.get("devices") or [])


def describe(devs: list[dict[str, Any]]) -> str:
    """'2× NVIDIA A800-SXM4-80GB' or '1× A, 1× B'."""
    if not devs:
        return "no GPU"
    counts = Counter(d.get("name") or "unknown GPU" for d in devs)
    return ", ".join(f"{n}× {name}" for name, n in counts.items())


def ident(dev: dict[str, Any]) -> str:
    """Identify a GPU by NVML index plus UUID / PCI bus id (the NVML index is not the CUDA ordinal)."""
    ids = [x for x in (dev.get("pci_bus_id"), dev.get("uuid")) if x]
    return f"GPU {dev.get('nvml_index')} ({', '.join(ids)})" if ids else f"GPU {dev.get('nvml_index')}"


def torch_label(torch: dict[str, Any]) -> str:
    return f"torch {torch.get('version', '?')}"


def ccs(devs: list[dict[str, Any]]) -> list[str]:
    return sorted({d["compute_capability"] for d in devs if d.get("compute_capability")})


def wheel_remedy(gpu: dict[str, Any], why: str) -> Remediation:
    """Install command for a torch wheel that this driver runs and that covers these GPUs."""
    wheel = recommend_wheel(ccs(devices(gpu)), gpu.get("driver_version"))
    if wheel is None:
        return Remediation(f"{why} No listed torch wheel both covers these GPUs and runs on driver "
                           f"{gpu.get('driver_version')}; upgrade the NVIDIA driver first.", url=PYTORCH_URL)
    return Remediation(f"{why} torch {wheel.release} {wheel.variant} (CUDA {wheel.cuda}) covers these GPUs "
                       f"and runs on driver {gpu.get('driver_version')}:", (wheel.command,), PYTORCH_URL)
