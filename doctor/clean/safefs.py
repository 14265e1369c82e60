"""Deleting inside a root without ever following a symlink. Each path is reached from an open descriptor of
its root, one component at a time with O_NOFOLLOW (a component that became a symlink fails to open), and the
last component is compared, just before it goes, with what it was when the plan was shown: same kind (a
folder, a file, a symlink with the same target) and the same inode. Deletion then acts on that descriptor's
entries (unlinkat / renameat / an fd-relative tree walk), so a path swapped for a symlink between the plan
and the confirmation is refused instead of followed out of the root."""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Iterator

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
Rel = tuple[str, ...]


class Changed(Exception):
    """A path is not what it was when the plan was shown; nothing under it is deleted."""


@dataclass(frozen=True)
class Seen:
    """What a path was at plan time."""

    kind: str  # "dir", "file", "link" or "other"
    dev: int
    ino: int
    link: str | None = None  # a symlink's target, as written

    def same(self, st: os.stat_result, link: str | None = None) -> bool:
        return _kind(st) == self.kind and (st.st_dev, st.st_ino) == (self.dev, self.ino) and link == self.link


def _kind(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return "other"


def look(path: str) -> Seen | None:
    """lstat (and readlink) of a path, or None when it is missing."""
    try:
        st = os.lstat(path)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    except FileNotFoundError:
        return None
    return Seen(_kind(st), st.st_dev, st.st_ino, link)


def _describe(path: str, want: Seen, st: os.stat_result | None) -> str:
    if st is None:
        return f"{path}: refused: it is not the {want.kind} it was when the plan was shown"
    now = _kind(st)
    if now == "link" and want.kind != "link":
        return f"{path}: refused: it is now a symlink (a {want.kind} when the plan was shown); not followed"
    if now != want.kind:
        return f"{path}: refused: it is now a {now} (a {want.kind} when the plan was shown)"
    return f"{path}: refused: it was replaced since the plan was shown (another inode)"


class Root:
    """A root folder opened once, checked against its plan-time identity; every operation below is relative
    to that descriptor, so renaming or re-pointing the root's path afterwards changes nothing."""

    def __init__(self, path: str, seen: Seen | None, dirs: dict[Rel, Seen] | None = None):
        self.path = path
        self.expect = seen
        self.dirs: dict[Rel, Seen] = dict(dirs or {})  # plan-time identity of folders on the way
        self.fd: int | None = None

    def __enter__(self) -> "Root":
        if self.expect is None or self.expect.kind != "dir":
            raise Changed(f"{self.path}: refused: it was not a folder when the plan was shown")
        try:
            fd = os.open(self.path, DIR_FLAGS)
        except OSError as exc:
            raise Changed(f"{self.path}: refused: cannot open it without following a symlink "
                          f"({exc.strerror or exc})") from None
        st = os.fstat(fd)
        if not self.expect.same(st):
            os.close(fd)
            raise Changed(_describe(self.path, self.expect, st))
        self.fd = fd
        return self

    def __exit__(self, *_: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def show(self, rel: Rel) -> str:
        return os.path.join(self.path, *rel)

    def parent(self, rel: Rel) -> int:
        """A new descriptor of rel's parent, walked from the root without following a symlink and checked
        against the plan-time identity of each folder on the way. The caller closes it."""
        assert self.fd is not None
        try:  # the root's own path must still lead to the folder the plan was made in
            here = os.stat(self.path, follow_symlinks=False)
        except OSError:
            here = None
        if here is None or self.expect is None or not self.expect.same(here):
            raise Changed(f"{self.path}: refused: this folder was moved or replaced since the plan was shown")
        fd = os.dup(self.fd)
        try:
            for i, name in enumerate(rel[:-1]):
                where = rel[: i + 1]
                try:
                    nfd = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise Changed(f"{self.show(where)}: refused: it is no longer a plain folder (now a symlink "
                                      "or a file); not followed") from None
                    raise
                os.close(fd)
                fd = nfd
                want = self.dirs.get(where)
                st = os.fstat(fd)
                if want is not None and not want.same(st):
                    raise Changed(_describe(self.show(where), want, st))
                self.dirs.setdefault(where, Seen("dir", st.st_dev, st.st_ino))
            return fd
        except BaseException:
            os.close(fd)
            raise

    def check(self, pfd: int, rel: Rel, want: Seen) -> os.stat_result | None:
        """lstat of rel's last component in its parent's descriptor; None when it is already gone; raises
        Changed when it is not what the plan saw."""
        name = rel[-1]
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            link = os.readlink(name, dir_fd=pfd) if stat.S_ISLNK(st.st_mode) else None
        except FileNotFoundError:
            return None
        if not want.same(st, link):
            raise Changed(_describe(self.show(rel), want, st))
        return st

    def unlink(self, rel: Rel, want: Seen) -> bool:
        """Remove one file or symlink (never its target); False when it was already gone."""
        pfd = self.parent(rel)
        try:
            if self.check(pfd, rel, want) is None:
                return False
            os.unlink(rel[-1], dir_fd=pfd)
            return True
        except FileNotFoundError:
            return False
        finally:
            os.close(pfd)

    def read(self, rel: Rel, want: Seen, size: int = 4096) -> bytes | None:
        """The first bytes of a regular file, checked against the plan first; None when it is gone."""
        pfd = self.parent(rel)
        try:
            if self.check(pfd, rel, want) is None:
                return None
            fd = os.open(rel[-1], os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=pfd)
            try:
                return os.read(fd, size)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return None
        finally:
            os.close(pfd)

    def rmtree(self, rel: Rel, want: Seen, errors: list[str]) -> None:
        """Remove a folder (or a file) and everything below it, walking by descriptor: symlinks inside are
        unlinked, never followed; a mount point inside is left alone."""
        if want.kind != "dir":
            self.unlink(rel, want)
            return
        pfd = self.parent(rel)
        try:
            if self.check(pfd, rel, want) is None:
                return
            _rmtree_at(pfd, rel[-1], want.dev, self.show(rel), errors, want)
        finally:
            os.close(pfd)

    def rename(self, rel: Rel, want: Seen, dest: Rel) -> bool:
        """Move rel to dest (both under this root; dest must not exist); False when rel was already gone."""
        spfd = self.parent(rel)
        try:
            dpfd = self.parent(dest)
            try:
                if self.check(spfd, rel, want) is None:
                    return False
                try:
                    os.stat(dest[-1], dir_fd=dpfd, follow_symlinks=False)
                    raise Changed(f"{self.show(dest)}: refused: already exists")
                except FileNotFoundError:
                    pass
                os.rename(rel[-1], dest[-1], src_dir_fd=spfd, dst_dir_fd=dpfd)
                moved = os.stat(dest[-1], dir_fd=dpfd, follow_symlinks=False)
                if (moved.st_dev, moved.st_ino) != (want.dev, want.ino):  # swapped in the instant between
                    os.rename(dest[-1], rel[-1], src_dir_fd=dpfd, dst_dir_fd=spfd)
                    raise Changed(_describe(self.show(rel), want, moved))
                return True
            finally:
                os.close(dpfd)
        finally:
            os.close(spfd)

    def makedirs(self, rel: Rel) -> None:
        """Create a folder under the root (and its parents) without following a symlink."""
        for i in range(1, len(rel) + 1):
            pfd = self.parent(rel[:i])
            try:
                os.mkdir(rel[i - 1], 0o777, dir_fd=pfd)
            except FileExistsError:
                pass
            finally:
                os.close(pfd)

    def files(self, rel: Rel, read: int = 0) -> Iterator[tuple[str, str | None, bytes | None]]:
        """Every file under the folder rel, walked by descriptor without following a symlink: (path under
        rel, symlink target or None, the first `read` bytes of a regular file or None)."""
        fd = self.parent(rel + ("x",))
        try:
            for top, _, names, dfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
                for name in names:
                    where = os.path.normpath(os.path.join(top, name))
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                        if stat.S_ISLNK(st.st_mode):
                            yield where, os.readlink(name, dir_fd=dfd), None
                        elif stat.S_ISREG(st.st_mode) and read:
                            ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
                            try:
                                yield where, None, os.read(ffd, read)
                            finally:
                                os.close(ffd)
                        else:
                            yield where, None, None
                    except FileNotFoundError:
                        continue
        finally:
            os.close(fd)

    def listdir(self, rel: Rel) -> list[str]:
        pfd = self.parent(rel + ("x",))
        try:
            return os.listdir(pfd)
        finally:
            os.close(pfd)


def _entries(fd: int) -> Iterator[os.DirEntry]:
    with os.scandir(fd) as it:
        yield from it


def _rmtree_at(pfd: int, name: str, dev: int, shown: str, errors: list[str], want: Seen | None = None) -> None:
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=pfd)
    except OSError as exc:
        errors.append(f"{shown}: not removed: {exc.strerror or exc} (not followed)")
        return
    try:
        st = os.fstat(fd)
        if want is not None and not want.same(st):
            errors.append(_describe(shown, want, st))
            return
        if st.st_dev != dev:
            errors.append(f"{shown}: left alone: another filesystem is mounted there")
            return
        for entry in list(_entries(fd)):
            child = os.path.join(shown, entry.name)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            try:
                if is_dir:
                    _rmtree_at(fd, entry.name, dev, child, errors)
                else:
                    os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{child}: {exc.strerror or exc}")
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=pfd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        errors.append(f"{shown}: {exc.strerror or exc}")


def write_new(root: Root, rel: Rel, data: bytes) -> Seen:
    """Create a file that must not exist yet (O_EXCL, O_NOFOLLOW) under the root, written and synced."""
    pfd = root.parent(rel)
    try:
        fd = os.open(rel[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                     0o644, dir_fd=pfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        try:
            os.fsync(pfd)
        except OSError:
            pass
        return Seen("file", st.st_dev, st.st_ino)
    finally:
        os.close(pfd)


def read_small(path: str, limit: int = 16 << 20) -> bytes | None:
    """A regular file's bytes, never through a symlink; None when it is not one or is larger than limit."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
