"""The file-I/O seam of FileStorage: every write, fsync, rename, truncate and unlink goes here.

Rule: FileStorage never calls ``os`` directly to *change* the disk; it calls a ``FileOps``.
Tests substitute a subclass that records the sequence of operations (to check fsync ordering),
injects faults (ENOSPC, EIO from fsync), or simulates power loss by keeping only what was
fsynced. Reads go straight to ``os``: they change nothing and need no fault model.

This module also maps OS errors onto the storage errors: running out of space is
``DiskFullError`` (the caller undoes its partial write); anything else while writing, and *any*
error from fsync, is ``StorageFailedError`` — after a failed fsync the kernel may have dropped
dirty pages, so the only safe reaction is to stop (fail-stop; see the fsyncgate discussion).
"""

from __future__ import annotations

import contextlib
import errno
import os

from raftcache.storage.base import DiskFullError, StorageError, StorageFailedError

_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class FileOps:
    """Thin wrappers over ``os``; subclass and override to record or inject faults."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_dir(self, path: str) -> None:
        # A directory's entries (creations, renames, unlinks) are durable only once the
        # directory itself is fsynced.
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def close(self, fd: int) -> None:
        os.close(fd)


def write_error(exc: OSError, what: str) -> StorageError:
    """The storage error for an OSError raised while writing ``what``."""
    if exc.errno in _SPACE_ERRNOS:
        return DiskFullError(f"no space left while writing {what}: {exc}")
    return StorageFailedError(f"I/O error while writing {what}: {exc}")


def fsync_error(exc: OSError, what: str) -> StorageFailedError:
    return StorageFailedError(
        f"fsync of {what} failed ({exc}); durability is lost, the node must stop"
    )


def write_all(ops: FileOps, fd: int, data: bytes | memoryview, offset: int, what: str) -> None:
    """Write all of ``data`` at ``offset`` (looping over short writes), mapping errors."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            n = ops.pwrite(fd, view[done:], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, "write made no progress")
            done += n
    except OSError as exc:
        raise write_error(exc, what) from exc


def sync_file(ops: FileOps, fd: int, what: str) -> None:
    try:
        ops.fsync(fd)
    except OSError as exc:
        raise fsync_error(exc, what) from exc


def sync_dir(ops: FileOps, path: str) -> None:
    try:
        ops.fsync_dir(path)
    except OSError as exc:
        raise fsync_error(exc, f"directory {path}") from exc


def atomic_write(ops: FileOps, path: str, data: bytes, *, fsync: bool) -> None:
    """Replace ``path`` with ``data`` atomically: temp file, fsync, rename, fsync directory.

    On ``DiskFullError`` the temp file is removed and ``path`` is untouched.
    """
    tmp = path + ".tmp"
    try:
        fd = ops.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as exc:
        raise write_error(exc, tmp) from exc
    try:
        write_all(ops, fd, data, 0, tmp)
        if fsync:
            sync_file(ops, fd, tmp)
    except DiskFullError:
        ops.close(fd)
        remove_quietly(ops, tmp)
        raise
    except BaseException:
        ops.close(fd)
        raise
    ops.close(fd)
    try:
        ops.rename(tmp, path)
    except OSError as exc:
        remove_quietly(ops, tmp)
        raise write_error(exc, path) from exc
    if fsync:
        sync_dir(ops, os.path.dirname(path) or ".")


def remove_quietly(ops: FileOps, path: str) -> None:
    """Best-effort unlink of a file we are abandoning (a temp file): never masks the real error."""
    with contextlib.suppress(OSError):
        ops.unlink(path)


def read_file(path: str) -> bytes | None:
    """The whole file, or None if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
