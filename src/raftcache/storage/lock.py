"""The exclusive lock on a data directory: one FileStorage per directory, across processes.

Rule: ``flock(LOCK_EX | LOCK_NB)`` on ``<dir>/LOCK``, held for the storage's lifetime. flock
locks belong to an open file description, so a second FileStorage in the *same* process is
refused too, and the kernel releases the lock if the process dies (no stale-lock cleanup).
The holder writes its pid into the file, only to make the refusal message useful.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from raftcache.storage.base import StorageLockedError

LOCK_NAME = "LOCK"


class DirectoryLock:
    """An acquired-or-not exclusive lock on one directory."""

    def __init__(self, directory: str) -> None:
        self._path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``StorageLockedError`` at once (never waits)."""
        if self._fd is not None:
            return
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StorageLockedError(
                f"data directory {os.path.dirname(self._path)} is in use by another "
                f"FileStorage{holder}; stop that node first (or use another --data-dir)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is informational only; failing to write it (disk full) must not stop us.
        # Fixed width, so no truncation is needed (ext4 turns truncate-and-rewrite into a
        # flush, which made every open cost milliseconds).
        with contextlib.suppress(OSError):
            os.pwrite(fd, f"{os.getpid():>10}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock. Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
