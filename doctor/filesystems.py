"""The filesystem under a path: free space, inodes, mount point (shared by the disk probe and `doctor
clean-cache`)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _existing(path: str) -> str:
    """The path itself or its nearest existing ancestor (where the data will land)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return str(p)


def _mountpoint(path: str) -> str:
    p = os.path.realpath(path)
    while not os.path.ismount(p) and p != os.path.dirname(p):
        p = os.path.dirname(p)
    return p


def filesystem(path: str) -> dict[str, Any]:
    """Free space and inodes of the filesystem holding `path` (or its nearest existing ancestor)."""
    probe_path = _existing(path)
    st = os.statvfs(probe_path)
    return {"probe_path": probe_path, "mountpoint": _mountpoint(probe_path), "device": os.stat(probe_path).st_dev,
            "total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize,
            "inodes_total": st.f_files, "inodes_free": st.f_favail}
