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


GIB = 2**30


def healthy() -> dict[str, Any]:
    """NVML health fields of a healthy, idle A100/A800-class GPU (SXM: NVLink, ECC on)."""
    return {"ecc": {"enabled": True, "volatile_uncorrected": 0, "aggregate_uncorrected": 0},
            "retired_pages_pending": None,
            "row_remap": {"corrected_rows": 0, "uncorrected_rows": 0, "pending": False, "failure": False},
            "clocks_event_reasons": 0x1, "pcie": {"gen_current": 1, "gen_max": 4, "width_current": 16, "width_max": 16},
            "nvlink": [{"link": i, "active": True} for i in range(12)], "fabric": None,
            "persistence_mode": True, "processes": [], "utilization_pct": 0}


def mount(mountpoint: str, total_gib: float, free_gib: float, device: int) -> dict[str, Any]:
    return {"mountpoint": mountpoint, "fstype": "ext4", "device": device, "total_bytes": int(total_gib * GIB),
            "free_bytes": int(free_gib * GIB), "inodes_total": 10_000_000, "inodes_free": 9_000_000}


def autodl_box(packages: dict[str, str] | None = None, hf_home: str = "/root/.cache/huggingface",
               cwd: str = "/root/autodl-tmp/pcb", env: dict[str, str] | None = None,
               edited: str = "", **gpu: Any) -> dict[str, Any]:
    """LITERAL AutoDL-like A800 instance, per autodl.com/docs/env: a 30 GB system disk at /, the data disk
    at /root/autodl-tmp (here 200 GiB, seed 002), RAM as a cgroup limit (100 GiB of a 1 TiB host),
    a CPU quota of 10 of 128 visible cores; plus literal gpu/torch sections (gpu_box(**gpu))."""
    facts = gpu_box(**gpu)
    for dev in facts["gpu"]["devices"]:
        dev["health"] = healthy()
    facts["python"]["distributions"] = {**facts["python"]["distributions"], "torch": "2.9.0+cu128",
                                        **(packages or {})}
    facts["resources"] = {
        "memory": {"host_total_bytes": 1024 * GIB, "host_available_bytes": 900 * GIB, "swap_total_bytes": 0,
                   "swap_free_bytes": 0, "host_source": "psutil.virtual_memory",
                   "cgroup": {"version": 2, "limit_bytes": 100 * GIB, "source": "/sys/fs/cgroup/memory.max",
                              "usage_bytes": 2 * GIB, "swap_limit_bytes": None}},
        "cpu": {"logical": 128, "affinity": 128, "cgroup": {"quota_cpus": 10.0, "source": "/sys/fs/cgroup/cpu.max"}},
        "shm": {"path": "/dev/shm", "total_bytes": 50 * GIB, "free_bytes": 50 * GIB},
        "ulimits": {"nofile": [1048576, 1048576], "memlock_bytes": [None, None]}, "rdma_devices": []}
    facts["disk"] = {"paths": {}, "mounts": [mount("/", 30, 22, 1), mount("/root/autodl-tmp", 200, 195, 2)],
                     "home": "/root", "cwd": cwd}
    facts["hf"] = {"hf_home": hf_home, "hf_hub_cache": hf_home + "/hub", "hf_datasets_cache": hf_home + "/datasets",
                   "endpoint": "https://hf-mirror.com", "endpoint_from_env": True, "offline": False, "env": {},
                   "huggingface_hub_version": "2.4.0",
                   "hub": {"exists": False, "size_bytes": 0, "repos": [], "incomplete_bytes": 0, "warnings": []}}
    facts["network"] = {"offline": False, "timeout_s": 3.0, "index_source": "pip default", "proxy": {},
                        "hub": {"url": "https://hf-mirror.com", "outcome": "ok", "http_status": 200, "error": None},
                        "index": {"url": "https://pypi.org/simple", "outcome": "ok", "http_status": 200, "error": None}}
    facts["kernel"] = {"readable": True, "source": "/dev/kmsg", "xid_events": [], "lines_read": 900}
    facts["env"] = {"variables": {"OMP_NUM_THREADS": "10", "HF_ENDPOINT": "https://hf-mirror.com", **(env or {})}}
    facts["toolchain"] = {"cuda_home": "/usr/local/cuda", "cuda_home_source": "/usr/local/cuda",
                          "nvcc": {"path": "/usr/local/cuda/bin/nvcc", "version": "12.8", "error": None},
                          "gcc": {"path": "/usr/bin/gcc", "version": "11.4.0", "error": None},
                          "ninja": {"path": "/usr/bin/ninja", "version": "1.11.1", "error": None},
                          "torch_cuda_arch_list": None}
    facts["provenance"]["edited"] += (" LITERAL resources/disk/hf/network/kernel/env/toolchain sections of an "
                                      f"AutoDL-like instance (autodl.com/docs/env). {edited}").rstrip()
    return facts


QWEN_QLORA_ENV = {"transformers": "4.57.1", "bitsandbytes": "0.48.1", "peft": "0.17.1", "accelerate": "1.10.1"}
