"""Real Hugging Face cache layouts in a temp dir, as huggingface_hub writes them: blobs/<etag>,
snapshots/<commit>/<name> as relative symlinks, refs/<branch>; the 2.x shared blob store
(blobs/<xx>/<xet hash> with a .refs manifest); .incomplete downloads; checkpoint folders. Every helper
returns the bytes it wrote, the ground truth the plans are compared with."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def _etag(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def repo(hub: Path, repo_id: str, revisions: dict[str, dict], repo_type: str = "model",
         shared: set[str] = frozenset()) -> dict[str, int]:
    """revisions: commit -> {"refs": [...], "files": {name: bytes}}. Identical contents share one blob.
    Files whose name is in `shared` go to the cache-wide shared store. Returns {blob path: bytes}."""
    folder = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for commit, rev in revisions.items():
        snap = folder / "snapshots" / commit
        for name, content in rev["files"].items():
            blob = folder / "blobs" / _etag(content)
            if not blob.exists() and not blob.is_symlink():
                if name in shared:
                    store = _shared_store(hub, content, f"{folder.name}/blobs/{blob.name}")
                    os.symlink(os.path.relpath(store, blob.parent), blob)
                else:
                    blob.write_bytes(content)
                    written[str(blob)] = len(content)
            link = snap / name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.relpath(blob, link.parent), link)
        for ref in rev.get("refs", []):
            (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
            (folder / "refs" / ref).write_text(commit)
    return written


def _shared_store(hub: Path, content: bytes, reference: str) -> Path:
    """The 2.x store: a marked blobs/ folder, payloads by Xet hash, a manifest of repo symlinks."""
    store_dir = hub / "blobs"
    store_dir.mkdir(exist_ok=True)
    (store_dir / ".huggingface-shared-blobs").write_text("1\n")
    xet = hashlib.sha256(b"xet" + content).hexdigest()
    payload = store_dir / xet[:2] / xet
    payload.parent.mkdir(exist_ok=True)
    if not payload.exists():
        payload.write_bytes(content)
    with open(payload.with_name(xet + ".refs"), "a") as manifest:
        manifest.write(reference + "\n")
    return payload


def incomplete(hub: Path, repo_id: str, size: int, age_s: float = 3600, repo_type: str = "model") -> Path:
    path = hub / f"{repo_type}s--{repo_id.replace('/', '--')}" / "blobs" / (_etag(os.urandom(8)) + ".incomplete")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    age(path, age_s)
    return path


def age(path: Path, seconds: float) -> None:
    """Set atime and mtime `seconds` ago, on the file and, for a folder, everything in it."""
    import time

    t = time.time() - seconds
    targets = [path] if not path.is_dir() else [path, *path.rglob("*")]
    for p in targets:
        os.utime(p, (t, t), follow_symlinks=False)


def age_repo(hub: Path, repo_id: str, seconds: float, repo_type: str = "model") -> None:
    """Age a repo's blobs (scan_cache_dir reads a repo's last access from its blobs)."""
    folder = hub / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for blob in (folder / "blobs").iterdir():
        age(blob.resolve(), seconds)


def checkpoints(folder: Path, steps: list[int], size: int = 1000, best: int | None = None,
                prefix: str = "checkpoint-") -> dict[int, int]:
    """Trainer-style checkpoint folders, the newest with a trainer_state.json naming the best one."""
    written = {}
    for step in steps:
        ck = folder / f"{prefix}{step}"
        ck.mkdir(parents=True)
        (ck / "model.safetensors").write_bytes(b"w" * size)
        written[step] = size
    if best is not None and prefix == "checkpoint-":
        state = json.dumps({"best_model_checkpoint": str(folder / f"checkpoint-{best}"), "global_step": max(steps)})
        (folder / f"checkpoint-{max(steps)}" / "trainer_state.json").write_text(state)
        written[max(steps)] += len(state)
    return written
