"""GPU facts from NVML (nvidia-ml-py, `import pynvml`). No driver / library / GPU is data, not an error."""
from __future__ import annotations

import os
from typing import Any, Callable

from ..probing import ProbeContext, probe

NO_LIBRARY = "NVML library (libnvidia-ml.so.1) not found: no NVIDIA driver is installed"
REASONS = {  # NVML return codes -> plain reasons (nvml.h)
    9: "the NVIDIA kernel driver is not loaded",
    12: NO_LIBRARY,
    4: "no permission to talk to the NVIDIA driver",
    13: "an NVML function the driver lacks was called: the driver is too old for this nvidia-ml-py",
    18: "the NVIDIA kernel driver and the user-space library versions do not match (reboot or reinstall the driver)",
}


def load_nvml() -> Any:
    """The one seam to NVML; tests replace it (raising, hanging, partial data)."""
    import pynvml

    return pynvml


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _reason(nvml: Any, exc: Exception) -> str:
    code = getattr(exc, "value", None)
    return REASONS.get(code, f"{type(exc).__name__}: {exc}") if code is not None else f"{type(exc).__name__}: {exc}"


def _field(errors: list[str], label: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # partial data: record the field as unknown
        errors.append(f"{label}: {type(exc).__name__}: {exc}")
        return None


def read_device(nvml: Any, index: int) -> dict[str, Any]:
    errors: list[str] = []
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = _field(errors, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    cc = _field(errors, "compute_capability", lambda: nvml.nvmlDeviceGetCudaComputeCapability(handle))
    pci = _field(errors, "pci", lambda: nvml.nvmlDeviceGetPciInfo(handle))
    mig = _field(errors, "mig_mode", lambda: nvml.nvmlDeviceGetMigMode(handle))
    return {
        "nvml_index": index,
        "uuid": _text(_field(errors, "uuid", lambda: nvml.nvmlDeviceGetUUID(handle))),
        "pci_bus_id": _text(pci.busId) if pci is not None else None,
        "name": _text(_field(errors, "name", lambda: nvml.nvmlDeviceGetName(handle))),
        "memory": None if mem is None else {
            "source": "NVML nvmlDeviceGetMemoryInfo",
            "total_mib": mem.total // 2**20, "free_mib": mem.free // 2**20, "used_mib": mem.used // 2**20,
            "total_bytes": mem.total,
        },
        "compute_capability": f"{cc[0]}.{cc[1]}" if cc else None,
        "mig": None if mig is None else {"current": bool(mig[0]), "pending": bool(mig[1])},
        "health": read_health(nvml, handle, errors),
        "errors": errors,
    }


NOT_SUPPORTED = 3  # NVML_ERROR_NOT_SUPPORTED: the GPU has no such counter (e.g. ECC on GeForce)


def _opt(errors: list[str], label: str, call: Callable[[], Any]) -> Any:
    """Like _field, but "not supported" is an answer (None), not an error."""
    try:
        return call()
    except Exception as exc:
        if getattr(exc, "value", None) != NOT_SUPPORTED:
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
        return None


def _fabric_info(nvml: Any, handle: Any) -> Any:
    """nvmlDeviceGetGpuFabricInfo fills a c_nvmlGpuFabricInfo_t the caller passes (nvidia-ml-py's signature)."""
    import ctypes

    info = nvml.c_nvmlGpuFabricInfo_t()
    nvml.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))
    return info


def read_health(nvml: Any, handle: Any, errors: list[str]) -> dict[str, Any]:
    """ECC, retired pages, row remapping, clock-event reasons, PCIe link, NVLink, fabric,
    persistence, other processes. None means the GPU does not support that counter."""
    unc = getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", 1)
    ecc_mode = _opt(errors, "ecc_mode", lambda: nvml.nvmlDeviceGetEccMode(handle))
    ecc = None
    if ecc_mode is not None and ecc_mode[0]:
        ecc = {"enabled": True,
               "volatile_uncorrected": _opt(errors, "ecc_volatile", lambda: nvml.nvmlDeviceGetTotalEccErrors(
                   handle, unc, getattr(nvml, "NVML_VOLATILE_ECC", 0))),
               "aggregate_uncorrected": _opt(errors, "ecc_aggregate", lambda: nvml.nvmlDeviceGetTotalEccErrors(
                   handle, unc, getattr(nvml, "NVML_AGGREGATE_ECC", 1)))}
    elif ecc_mode is not None:
        ecc = {"enabled": False}
    pending = _opt(errors, "retired_pages_pending", lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
    remap = _opt(errors, "remapped_rows", lambda: nvml.nvmlDeviceGetRemappedRows(handle))
    reasons = _opt(errors, "clocks_event_reasons", lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(handle))
    links = []
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            links.append({"link": link, "active": bool(nvml.nvmlDeviceGetNvLinkState(handle, link))})
        except Exception:  # links past the GPU's count, or no NVLink at all
            continue
    fabric = _opt(errors, "fabric", lambda: _fabric_info(nvml, handle))
    procs = _opt(errors, "processes", lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    util = _opt(errors, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
    return {
        "ecc": ecc,
        "retired_pages_pending": None if pending is None else bool(pending),
        "row_remap": None if remap is None else {"corrected_rows": remap[0], "uncorrected_rows": remap[1],
                                                 "pending": bool(remap[2]), "failure": bool(remap[3])},
        "clocks_event_reasons": reasons,
        "pcie": {"gen_current": _opt(errors, "pcie_gen", lambda: nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle)),
                 "gen_max": _opt(errors, "pcie_gen_max", lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(handle)),
                 "width_current": _opt(errors, "pcie_width", lambda: nvml.nvmlDeviceGetCurrPcieLinkWidth(handle)),
                 "width_max": _opt(errors, "pcie_width_max", lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(handle))},
        "nvlink": links,
        "fabric": None if fabric is None else {"state": getattr(fabric, "state", None),
                                               "status": getattr(fabric, "status", None)},
        "persistence_mode": _opt(errors, "persistence_mode", lambda: bool(nvml.nvmlDeviceGetPersistenceMode(handle))),
        "processes": None if procs is None else [
            {"pid": p.pid, "used_mib": (p.usedGpuMemory // 2**20) if isinstance(p.usedGpuMemory, int) else None}
            for p in procs],
        "utilization_pct": None if util is None else util.gpu,
    }


def cuda_version_text(value: int | None) -> str | None:
    """NVML encodes CUDA 12.4 as 12040."""
    return None if not value else f"{value // 1000}.{(value % 1000) // 10}"


def collect(nvml_loader: Callable[[], Any] | None = None) -> dict[str, Any]:
    env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "NVIDIA_VISIBLE_DEVICES")}
    base: dict[str, Any] = {"source": "NVML", "env": env, "available": False, "reason": None,
                            "driver_version": None, "cuda_driver_version": None, "devices": []}
    try:
        nvml = (nvml_loader or load_nvml)()
    except ImportError:
        base["reason"] = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
        return base
    try:
        nvml.nvmlInit()
    except Exception as exc:
        base["reason"] = _reason(nvml, exc)
        return base
    try:
        errors: list[str] = []
        base["driver_version"] = _text(_field(errors, "driver_version", nvml.nvmlSystemGetDriverVersion))
        base["cuda_driver_version"] = cuda_version_text(
            _field(errors, "cuda_driver_version", nvml.nvmlSystemGetCudaDriverVersion_v2))
        count = nvml.nvmlDeviceGetCount()
        base["devices"] = [read_device(nvml, i) for i in range(count)]
        base["errors"] = errors
        base["available"] = count > 0
        if count == 0:
            base["reason"] = "the NVIDIA driver is loaded but reports no GPU"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
    return base


@probe("gpu", timeout_s=15)
def probe_gpu(_: ProbeContext, __: float) -> dict[str, Any]:
    return collect()
