"""Facts for tests, derived from the recorded CPU snapshot.

Every GPU case here is LITERAL: the gpu and torch sections are written in this file (no GPU snapshot
has been recorded yet), and `provenance.edited` says so. Values mirror what NVML and torch report:
NVML names such as "NVIDIA A800-SXM4-80GB", memory in MiB (81920 MiB on an A100/A800-80GB), CC "8.0".
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).parent / "facts" / "cpu-container-no-gpu.json"


def recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text())


def nvml_device(index: int = 0, name: str = "NVIDIA A800-SXM4-80GB", total_mib: int = 81920,
                cc: str = "8.0") -> dict[str, Any]:
    return {"nvml_index": index, "uuid": f"GPU-00000000-0000-0000-0000-00000000000{index}",
            "pci_bus_id": f"00000000:{0x17 + index:02X}:00.0", "name": name,
            "memory": {"source": "NVML nvmlDeviceGetMemoryInfo", "total_mib": total_mib, "free_mib": total_mib - 600,
                       "used_mib": 600, "total_bytes": total_mib * 2**20},
            "compute_capability": cc, "mig": {"current": False, "pending": False}, "errors": []}


def torch_cuda(version: str = "2.9.0+cu128", cuda: str | None = "12.8",
               arch: list[str] | None = None, available: bool = True, devices: list[dict] | None = None,
               bf16: bool | None = True) -> dict[str, Any]:
    arch = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"] if arch is None else arch
    runtime: dict[str, Any] = {"is_available": available, "device_count": len(devices or []) if available else 0,
                               "devices": [], "init_s": 0.4}
    for i, d in enumerate(devices or []):
        runtime["devices"].append({"ordinal": i, "name": d["name"],
                                   "total_memory_bytes": d["memory"]["total_bytes"] - 500 * 2**20,
                                   "memory_source": "torch.cuda.get_device_properties",
                                   "compute_capability": d["compute_capability"], "uuid": d["uuid"][4:], "pci_bus_id": 0x17 + i})
    if available:
        runtime["bf16_hardware"] = bf16
        runtime["smoke_test"] = {"ok": True, "device": 0}
    return {"installed": True, "version": version, "location": "/opt/env/lib/python3.11/site-packages/torch/__init__.py",
            "cuda_build": cuda, "hip_build": None, "cudnn_version": 91002 if cuda else None, "mps_built": False,
            "arch_flags": arch, "import_s": 1.2, "runtime": runtime, "probe_s": 1.8, "interpreter": "/opt/env/bin/python"}


def gpu_box(name: str = "NVIDIA A800-SXM4-80GB", count: int = 1, total_mib: int = 81920, cc: str = "8.0",
            driver: str = "570.124.06", max_cuda: str = "12.8", torch: dict[str, Any] | None = None,
            edited: str = "") -> dict[str, Any]:
    """The recorded snapshot with literal gpu/torch sections for `count` GPUs."""
    facts = recorded()
    devs = [nvml_device(i, name, total_mib, cc) for i in range(count)]
    facts["gpu"] = {"source": "NVML", "env": {"CUDA_VISIBLE_DEVICES": None, "CUDA_DEVICE_ORDER": None,
                                               "NVIDIA_VISIBLE_DEVICES": None},
                    "available": True, "reason": None, "driver_version": driver, "cuda_driver_version": max_cuda,
                    "devices": devs, "errors": []}
    facts["torch"] = torch if torch is not None else torch_cuda(devices=devs)
    facts["provenance"]["edited"] = (f"LITERAL gpu/torch sections ({count}x {name}, driver {driver}) "
                                     f"on the recorded cpu-container snapshot. {edited}").strip()
    return facts


def edit(facts: dict[str, Any], note: str, **sections: Any) -> dict[str, Any]:
    out = copy.deepcopy(facts)
    out.update(sections)
    out["provenance"]["edited"] = (out["provenance"].get("edited", "") + " " + note).strip()
    return out
