"""Host facts: OS, kernel, CPU, RAM, container hints."""
from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

from ..probing import ProbeContext, probe


def _os_release() -> str | None:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def container_hints(root: str = "/") -> list[str]:
    """Evidence that this is a container; empty on bare metal."""
    hints = []
    for marker, what in ((".dockerenv", "docker (/.dockerenv)"), ("run/.containerenv", "podman (/run/.containerenv)")):
        if Path(root, marker).exists():
            hints.append(what)
    try:
        cgroup = Path(root, "proc/1/cgroup").read_text()
        for word in ("docker", "kubepods", "containerd", "lxc"):
            if word in cgroup:
                hints.append(f"{word} (/proc/1/cgroup)")
    except OSError:
        pass
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        hints.append("kubernetes ($KUBERNETES_SERVICE_HOST)")
    return hints


@probe("host", timeout_s=10)
def probe_host(_: ProbeContext, __: float) -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    return {
        "hostname": socket.gethostname(),
        "os": platform.system(),
        "distribution": _os_release(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": {"model": _cpu_model(), "logical_cores": psutil.cpu_count(logical=True),
                "physical_cores": psutil.cpu_count(logical=False)},
        "memory": {"source": "psutil.virtual_memory (host view; a container limit may be lower)",
                   "total_bytes": vm.total, "available_bytes": vm.available},
        "container_hints": container_hints(),
    }
