"""Small helpers shared by the built-in checks: reading facts, never probing."""
from __future__ import annotations

from collections import Counter
from typing import Any

from doctor import refdata
from doctor.archs import parse_cc
from doctor.cuda import platform_key, recommend
from doctor.model import Remediation

PYTORCH_URL = "https://pytorch.org/get-started/locally/"


def devices(gpu: dict[str, Any]) -> list[dict[str, Any]]:
    return list(gpu.get("devices") or [])


def _uuid(value: Any) -> str | None:
    if not value:
        return None
    text = str(value)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def torch_device(facts: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any] | None:
    """torch's record of the same GPU (matched by UUID), or None: never matched by position, since NVML's
    index and the CUDA ordinal differ under CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER; only a machine with a
    single GPU on both sides and no UUIDs recorded pairs them."""
    runtime = ((facts.get("torch") or {}).get("runtime") or {})
    seen = runtime.get("devices") or []
    uuid = _uuid(dev.get("uuid"))
    if uuid:
        return next((t for t in seen if _uuid(t.get("uuid")) == uuid), None)
    nvml = devices(facts.get("gpu") or {})
    if len(nvml) == 1 and len(seen) == 1 and not seen[0].get("uuid"):   # one GPU on each side: the same GPU
        return seen[0]
    return None


def device_name(facts: dict[str, Any], dev: dict[str, Any]) -> str | None:
    """The GPU's name from NVML, else from torch for the same device, else None."""
    return dev.get("name") or (torch_device(facts, dev) or {}).get("name")


def compute_capability(facts: dict[str, Any], dev: dict[str, Any]) -> tuple[str | None, str]:
    """(CC, where it came from): NVML's, else torch's for the same device, else (None, why unknown)."""
    if dev.get("compute_capability"):
        return str(dev["compute_capability"]), "NVML"
    t = torch_device(facts, dev)
    if t and t.get("compute_capability"):
        return str(t["compute_capability"]), "torch"
    return None, "neither NVML nor torch reported it"


def memory_bytes(facts: dict[str, Any], dev: dict[str, Any]) -> tuple[int | None, str]:
    """(total memory the GPU can use, source). NVML's total; where NVML has none (unified-memory parts such
    as GB10 answer "Not Supported"), what CUDA reports for the device through torch; else (None, why)."""
    mem = dev.get("memory") or {}
    if mem.get("total_bytes"):
        return int(mem["total_bytes"]), "NVML memory.total"
    if mem.get("total_mib"):
        return int(mem["total_mib"]) * 2**20, "NVML memory.total"
    t = torch_device(facts, dev)
    if t and t.get("total_memory_bytes"):
        return int(t["total_memory_bytes"]), "CUDA (torch.cuda.get_device_properties; NVML reports none)"
    return None, "NVML reported no memory figure and torch none for this device"


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


DRIVER_URL = "https://docs.nvidia.com/datacenter/tesla/driver-installation-guide/"


def is_tegra(name: str | None) -> bool:
    """A Jetson (Tegra) GPU, by doctor's GPU table: desktop binary compatibility is not promised there."""
    spec = refdata.gpu_spec(name) or {}
    return bool(spec.get("tegra")) or spec.get("segment") == "embedded"


def gpu_targets(facts: dict[str, Any]) -> list[tuple[tuple[int, int], bool]] | None:
    """(compute capability, Tegra?) of every GPU, or None when any GPU's compute capability is unknown."""
    out = []
    for d in devices(facts.get("gpu") or {}):
        cc = parse_cc(compute_capability(facts, d)[0])
        if cc is None:
            return None
        out.append((cc, is_tegra(device_name(facts, d))))
    return out


def os_name(facts: dict[str, Any]) -> str:
    return "windows" if str((facts.get("host") or {}).get("os") or "").lower() == "windows" else "linux"


def wheel_remedy(facts: dict[str, Any], why: str) -> Remediation:
    """What to install (doctor.cuda.recommend): the user's torch release in the newest CUDA variant this driver
    runs and that covers every GPU; else an upgrade, and only then an older release, each saying why; when the
    driver is too old for all of them, the driver floor first and the build that works meanwhile."""
    gpu, torch = facts.get("gpu") or {}, facts.get("torch") or {}
    host = facts.get("host") or {}
    plat, gpus = platform_key(host), gpu_targets(facts)
    assumed = ""
    if plat is None:   # the advice names a wheel for the usual platform and says so; the verdict does not depend on it
        machine = str(host.get("machine") or "x86_64").lower().replace("arm64", "aarch64").replace("amd64", "x86_64")
        plat = f"{str(host.get('os') or 'linux').lower()}-{machine}"
        assumed = f"assuming {plat}: the snapshot does not name the platform"
    if gpus is None:
        return Remediation(f"{why} doctor cannot name the build (a GPU's compute capability is unknown); pick it "
                           "on the PyTorch page for this driver and GPU.", url=PYTORCH_URL)
    advice = recommend(torch.get("version"), gpu.get("driver_version"), gpus, plat, os_name(facts),
                       gpu.get("cuda_driver_version"))
    notes = "".join(f" ({n})" for n in (*advice.notes, *([assumed] if assumed else [])))
    if advice.build is not None:
        return Remediation(f"{why} {advice.text[0].upper()}{advice.text[1:]}{notes}; reinstall torchvision / "
                           "torchaudio from the same index if you use them:", (advice.build.command,), PYTORCH_URL)
    commands = (advice.meanwhile.command,) if advice.meanwhile else ()
    return Remediation(f"{why} {advice.text[0].upper()}{advice.text[1:]}{notes}.", commands,
                       DRIVER_URL if advice.driver_floor else PYTORCH_URL)
