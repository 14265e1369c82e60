"""Disk facts: the filesystem under each path that matters (working dir, home, tmp, the HF caches and
the job's storage plan), with free space and inodes, plus every mounted filesystem."""
from __future__ import annotations

import os
import tempfile
from typing import Any

from ..filesystems import filesystem
from ..hf_locations import locations
from ..probing import ProbeContext, probe

SKIP_FSTYPES = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "mqueue", "squashfs", "nsfs",
                "tracefs", "debugfs", "securityfs", "pstore", "bpf", "configfs", "fusectl", "autofs"}


def expand(path: str, where: dict[str, str]) -> str:
    """'{hf_hub_cache}/x', '~/x', './x' -> an absolute path (no symlinks resolved yet)."""
    try:
        path = path.format(**where)
    except (KeyError, IndexError, ValueError):
        pass
    return os.path.abspath(os.path.expanduser(path))


def collect(extra: dict[str, str] | None = None, environ: dict[str, str] | None = None) -> dict[str, Any]:
    import psutil

    where = locations(environ)
    labelled = {"cwd": os.getcwd(), "home": os.path.expanduser("~"), "tmp": tempfile.gettempdir(), **where}
    paths: dict[str, Any] = {}
    for label, raw in {**labelled, **(extra or {})}.items():
        resolved = os.path.realpath(expand(raw, where))
        entry: dict[str, Any] = {"path": raw, "resolved": resolved, "exists": os.path.exists(resolved)}
        try:
            entry.update(filesystem(resolved))
        except OSError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc.strerror or exc}"
        paths[label] = entry
    mounts = []
    for part in psutil.disk_partitions(all=True):
        if part.fstype in SKIP_FSTYPES or part.mountpoint.startswith(("/proc", "/sys", "/dev/")):
            continue
        try:
            fs = filesystem(part.mountpoint)
        except OSError:
            continue
        if fs["total_bytes"] < 2**30:  # tiny tmpfs and bind-mounted files
            continue
        mounts.append({"mountpoint": part.mountpoint, "fstype": part.fstype, **{k: fs[k] for k in (
            "device", "total_bytes", "free_bytes", "inodes_total", "inodes_free")}})
    return {"paths": paths, "mounts": mounts, "home": os.path.expanduser("~"), "cwd": os.getcwd()}


@probe("disk", timeout_s=10)
def probe_disk(ctx: ProbeContext, __: float) -> dict[str, Any]:
    return collect(ctx.paths)
