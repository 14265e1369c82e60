"""Which files running processes hold: open files and memory maps (psutil), processes that could not be
inspected, and deleted files still held open (their space frees only when the holder exits)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

DELETED = " (deleted)"


@dataclass
class Holders:
    """paths: real path -> holders ('pid 12 python (mapped)'); denied: processes not inspectable;
    deleted: per st_dev, the deleted files still open: (bytes, holder, path)."""

    paths: dict[str, list[str]] = field(default_factory=dict)
    denied: list[str] = field(default_factory=list)
    deleted: dict[int, list[tuple[int, str, str]]] = field(default_factory=dict)

    def under(self, prefix: str) -> list[str]:
        """Holders of any path equal to `prefix` or below it, one entry per holder."""
        base = prefix.rstrip("/") + "/"
        found: list[str] = []
        for path, who in self.paths.items():
            if path == prefix or path.startswith(base):
                found.extend(w for w in who if w not in found)
        return found

    def any_under(self, root: str) -> bool:
        base = root.rstrip("/") + "/"
        return any(p.startswith(base) for p in self.paths)

    def held_deleted_bytes(self, device: int) -> int:
        """Bytes of deleted files still open on a filesystem, each inode counted once."""
        return sum(size for size, _, _ in self.deleted.get(device, []))

    def to_dict(self) -> dict[str, Any]:
        return {"denied": self.denied[:50], "denied_count": len(self.denied),
                "deleted_open": {str(dev): [{"bytes": b, "holder": h, "path": p} for b, h, p in rows[:20]]
                                 for dev, rows in self.deleted.items()}}


def _deleted_fds(pid: int, who: str, holders: Holders, seen: set[tuple[int, int]]) -> None:
    """Deleted files a process still holds by descriptor (psutil's open_files leaves them out)."""
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if not target.endswith(DELETED) or not target.startswith("/"):
                continue
            st = os.stat(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if st.st_nlink == 0 and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            holders.deleted.setdefault(st.st_dev, []).append((st.st_size, who, target[: -len(DELETED)]))


def scan(exclude_pid: int | None = None) -> Holders:
    """One pass over every process this user can see."""
    import psutil

    holders = Holders()
    seen: set[tuple[int, int]] = set()
    me = os.getpid() if exclude_pid is None else exclude_pid
    for proc in psutil.process_iter(["pid", "name", "username"]):
        pid, name = proc.info["pid"], proc.info.get("name") or "?"
        if pid == me:
            continue
        who = f"pid {pid} {name}"
        try:
            for f in proc.open_files():
                holders.paths.setdefault(f.path, []).append(f"{who} (open)")
            for m in proc.memory_maps(grouped=True):
                path = m.path
                if not path.startswith("/") or path.endswith(DELETED):
                    continue
                entry = holders.paths.setdefault(path, [])
                if f"{who} (mapped)" not in entry:
                    entry.append(f"{who} (mapped)")
        except psutil.AccessDenied:
            holders.denied.append(f"{who} (user {proc.info.get('username') or '?'})")
            continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        _deleted_fds(pid, who, holders, seen)
    return holders
