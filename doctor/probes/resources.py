"""Memory, CPU and limits as the job will see them: host view (psutil) and the cgroup limits that
cap a container (v2 `memory.max` / `cpu.max`, v1 `memory.limit_in_bytes` / `cpu.cfs_quota_us`),
/dev/shm, ulimits, RDMA devices. Parsers take a root folder so tests can feed recorded files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..probing import ProbeContext, probe

V1_UNLIMITED = 2**62  # v1 reports "no limit" as a page-rounded 2**63-1, e.g. 9223372036854771712


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(root: Path) -> dict[str, str]:
    """controller -> cgroup path from /proc/self/cgroup ('' is the v2 unified hierarchy)."""
    text = _read(root / "proc/self/cgroup") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for ctrl in parts[1].split(",") if parts[1] else [""]:
                out[ctrl] = parts[2]
    return out


def _ancestors(base: Path, rel: str) -> list[Path]:
    """The cgroup folder and each parent up to the mount root, innermost first, that exist."""
    parts = [p for p in rel.strip("/").split("/") if p]
    dirs = [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _v2_number(text: str | None) -> int | None:
    if text is None or text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _v2_swap(chain: list[Path]) -> dict[str, Any]:
    """The swap a v2 cgroup lets the job use, along its path (a parent can cap a child): the smallest numeric
    memory.swap.max, the least room (swap.max - swap.current) among those, and whether every swap.max on the path
    read "max" (unlimited: true; a number somewhere: false; no swap.max file, swap accounting off: null). The room
    is null where a capped cgroup's memory.swap.current cannot be read."""
    limits: list[int] = []
    rooms: list[int] = []
    seen, unknown, no_current = False, False, False
    for d in chain:
        text = _read(d / "memory.swap.max")
        if text is None:
            continue
        seen = True
        value = _v2_number(text)
        if value is None:
            unknown |= text != "max"   # neither a number nor "max": not known, never taken as unlimited
            continue
        limits.append(value)
        current = _v2_number(_read(d / "memory.swap.current"))
        no_current |= current is None
        rooms.append(max(0, value - (current or 0)))
    return {"swap_limit_bytes": min(limits) if limits else None,
            "swap_room_bytes": None if unknown or no_current or not rooms else min(rooms),
            "swap_unlimited": None if unknown or not seen else not limits}


def _stat(path: Path, *keys: str) -> int | None:
    """The first of `keys` in a memory.stat file (bytes), None where neither can be read."""
    text = _read(path) or ""
    found = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    for key in keys:
        value = found.get(key, "").strip()
        if value.isdigit():
            return int(value)
    return None


def cgroup_memory(root: Path) -> dict[str, Any]:
    """The effective cgroup memory limit: the smallest along the path (a parent can cap a child)."""
    paths = _cgroup_paths(root)
    fs = root / "sys/fs/cgroup"
    if (fs / "cgroup.controllers").is_file():  # v2 (unified) mounted at /sys/fs/cgroup
        limits = []
        chain = _ancestors(fs, paths.get("", "/"))
        for d in chain:
            value = _v2_number(_read(d / "memory.max"))
            if value is not None:
                limits.append((value, str(d / "memory.max")))
        usage = _v2_number(_read(chain[0] / "memory.current")) if chain else None
        best = min(limits) if limits else (None, str(fs / "memory.max"))
        inactive = _stat(chain[0] / "memory.stat", "inactive_file") if chain else None
        return {"version": 2, "limit_bytes": best[0], "source": best[1], "usage_bytes": usage,
                "inactive_file_bytes": inactive, **_v2_swap(chain)}
    mem = fs / "memory"
    if mem.is_dir():
        limits = []
        chain = _ancestors(mem, paths.get("memory", "/"))
        for d in chain:
            text = _read(d / "memory.limit_in_bytes")
            if text and text.isdigit() and int(text) < V1_UNLIMITED:
                limits.append((int(text), str(d / "memory.limit_in_bytes")))
        usage_text = _read(chain[0] / "memory.usage_in_bytes") if chain else None
        best = min(limits) if limits else (None, str(mem / "memory.limit_in_bytes"))
        inactive = _stat(chain[0] / "memory.stat", "total_inactive_file", "inactive_file") if chain else None
        return {"version": 1, "limit_bytes": best[0], "source": best[1],
                "usage_bytes": int(usage_text) if usage_text and usage_text.isdigit() else None,
                "inactive_file_bytes": inactive, "swap_limit_bytes": None, "swap_room_bytes": None,
                "swap_unlimited": None}
    return {"version": None, "limit_bytes": None, "source": None, "usage_bytes": None, "inactive_file_bytes": None,
            "swap_limit_bytes": None, "swap_room_bytes": None, "swap_unlimited": None}


def cgroup_cpus(root: Path) -> dict[str, Any]:
    """CPU quota as a number of CPUs (quota / period), or None when unlimited."""
    paths = _cgroup_paths(root)
    fs = root / "sys/fs/cgroup"
    if (fs / "cgroup.controllers").is_file():
        for d in _ancestors(fs, paths.get("", "/")):
            text = _read(d / "cpu.max")
            if text and not text.startswith("max"):
                quota, _, period = text.partition(" ")
                return {"quota_cpus": round(int(quota) / int(period or 100000), 2), "source": str(d / "cpu.max")}
        return {"quota_cpus": None, "source": str(fs / "cpu.max")}
    for ctrl in ("cpu", "cpu,cpuacct"):
        base = fs / ctrl
        if base.is_dir():
            for d in _ancestors(base, paths.get("cpu", "/")):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                if quota and period and quota.lstrip("-").isdigit() and int(quota) > 0:
                    return {"quota_cpus": round(int(quota) / int(period), 2), "source": str(d / "cpu.cfs_quota_us")}
            return {"quota_cpus": None, "source": str(base / "cpu.cfs_quota_us")}
    return {"quota_cpus": None, "source": None}


def _limit(resource: int) -> list[int | None]:
    import resource as res

    soft, hard = res.getrlimit(resource)
    return [None if soft == res.RLIM_INFINITY else soft, None if hard == res.RLIM_INFINITY else hard]


def ulimits() -> dict[str, Any]:
    """Soft/hard limits; None means unlimited."""
    try:
        import resource as res
    except ImportError:  # Windows
        return {}
    return {"nofile": _limit(res.RLIMIT_NOFILE), "memlock_bytes": _limit(res.RLIMIT_MEMLOCK)}


CAP_IPC_LOCK = 14   # linux/capability.h


def cap_ipc_lock(status: Path = Path("/proc/self/status")) -> bool | None:
    """Whether this process may mlock() past RLIMIT_MEMLOCK (CAP_IPC_LOCK in CapEff; root in a default Docker
    container lacks it); None where /proc says nothing."""
    try:
        for line in status.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split(":", 1)[1].strip(), 16) >> CAP_IPC_LOCK & 1)
    except (OSError, ValueError):
        return None
    return None


def collect(root: Path = Path("/")) -> dict[str, Any]:
    import psutil

    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    shm = None
    shm_path = root / "dev/shm"
    if shm_path.is_dir():
        try:
            usage = psutil.disk_usage(str(shm_path))
            shm = {"path": str(shm_path), "total_bytes": usage.total, "free_bytes": usage.free}
        except OSError:
            shm = None
    ib = root / "sys/class/infiniband"
    return {
        "memory": {"host_total_bytes": vm.total, "host_available_bytes": vm.available,
                   "swap_total_bytes": swap.total, "swap_free_bytes": swap.free,
                   "host_source": "psutil.virtual_memory (the host's RAM, not a container's share)",
                   "cgroup": cgroup_memory(root)},
        "cpu": {"logical": psutil.cpu_count(logical=True), "affinity": affinity, "cgroup": cgroup_cpus(root)},
        "shm": shm,
        "ulimits": ulimits(),
        "rdma_devices": sorted(p.name for p in ib.iterdir()) if ib.is_dir() else [],
        "cap_ipc_lock": cap_ipc_lock(root / "proc/self/status"),
    }


@probe("resources", timeout_s=10)
def probe_resources(_: ProbeContext, __: float) -> dict[str, Any]:
    return collect()
