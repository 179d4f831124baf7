"""File-I/O doubles for FileStorage tests: record operations, inject faults, lose power.

Rule: every double is a ``FileOps`` subclass plugged in through ``FileStorage(file_ops=...)``,
so the storage under test runs its real code paths against real files in a temp directory.
"""

from __future__ import annotations

import errno
import os
import random
from dataclasses import dataclass

from raftcache.storage.fsio import FileOps


@dataclass
class Op:
    """One recorded operation: its kind and the base name of the file it touched."""

    kind: str
    name: str
    size: int = 0


class RecordingOps(FileOps):
    """Records ``(kind, name)`` for every mutation, in order; ``real_fsync=False`` skips the
    (slow, and here irrelevant) real fsyncs."""

    def __init__(self, *, real_fsync: bool = True) -> None:
        self.ops: list[Op] = []
        self.real_fsync = real_fsync
        self.fd_paths: dict[int, str] = {}

    def names(self, *kinds: str) -> list[tuple[str, str]]:
        return [(o.kind, o.name) for o in self.ops if not kinds or o.kind in kinds]

    def clear(self) -> None:
        self.ops.clear()

    def _rec(self, kind: str, path: str, size: int = 0) -> None:
        self.ops.append(Op(kind, os.path.basename(path), size))

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = super().open(path, flags, mode)
        self.fd_paths[fd] = os.path.abspath(path)
        self._rec("create" if flags & os.O_CREAT else "open", path)
        return fd

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._rec("write", self.fd_paths[fd], len(data))
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._rec("fsync", self.fd_paths[fd])
        if self.real_fsync:
            super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self._rec("fsync_dir", path)
        if self.real_fsync:
            super().fsync_dir(path)

    def truncate(self, fd: int, size: int) -> None:
        self._rec("truncate", self.fd_paths[fd], size)
        super().truncate(fd, size)

    def rename(self, src: str, dst: str) -> None:
        self._rec("rename", f"{os.path.basename(src)}->{os.path.basename(dst)}")
        super().rename(src, dst)

    def unlink(self, path: str) -> None:
        self._rec("unlink", path)
        super().unlink(path)

    def close(self, fd: int) -> None:
        self.fd_paths.pop(fd, None)
        super().close(fd)


class FaultyOps(RecordingOps):
    """Injects the faults a real disk produces.

    ``space_left``: bytes that may still be written; a write beyond it is short, the next one
    fails with ENOSPC (as a full disk behaves). ``fail_fsync`` / ``fail_unlink``: the next such
    call (and every later one) fails with EIO.
    """

    def __init__(self, *, real_fsync: bool = False) -> None:
        super().__init__(real_fsync=real_fsync)
        self.space_left: int | None = None
        self.fail_fsync = False
        self.fail_unlink = False

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if self.space_left is not None:
            if self.space_left <= 0:
                self._rec("ENOSPC", self.fd_paths[fd])
                raise OSError(errno.ENOSPC, "No space left on device")
            data = data[: self.space_left]
            self.space_left -= len(data)
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        if self.fail_fsync:
            self._rec("EIO", self.fd_paths[fd])
            raise OSError(errno.EIO, "Input/output error")
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        if self.fail_fsync:
            raise OSError(errno.EIO, "Input/output error")
        super().fsync_dir(path)

    def unlink(self, path: str) -> None:
        if self.fail_unlink:
            raise OSError(errno.EIO, "Input/output error")
        super().unlink(path)


class CrashDisk(RecordingOps):
    """A strict power-loss model. After ``crash()`` every file holds exactly what it held at
    its last fsync (nothing if never fsynced), and every directory exactly the entries it held
    at its last directory fsync. Use it on an empty directory, with ``fsync=True`` storages,
    and close the storage before ``crash()``. Real fsyncs are skipped (the model is the disk).
    """

    def __init__(self) -> None:
        super().__init__(real_fsync=False)
        self.crashes = 0
        self._names: dict[str, int] = {}  # path -> inode id, as the directories are now
        self._durable_dirs: dict[str, dict[str, int]] = {}  # as of each directory's fsync
        self._durable_data: list[bytes] = []  # per inode id, as of its last fsync
        self._fd_inode: dict[int, int] = {}

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        path = os.path.abspath(path)
        fd = super().open(path, flags, mode)
        if path not in self._names:
            assert flags & os.O_CREAT, f"{path} was not created through this CrashDisk"
            self._names[path] = len(self._durable_data)
            self._durable_data.append(b"")
        self._fd_inode[fd] = self._names[path]
        return fd

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            self._durable_data[self._fd_inode[fd]] = f.read()

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        d = os.path.abspath(path)
        self._durable_dirs[d] = {
            os.path.basename(p): ino for p, ino in self._names.items() if os.path.dirname(p) == d
        }

    def rename(self, src: str, dst: str) -> None:
        super().rename(src, dst)
        self._names[os.path.abspath(dst)] = self._names.pop(os.path.abspath(src))

    def unlink(self, path: str) -> None:
        super().unlink(path)
        del self._names[os.path.abspath(path)]

    def close(self, fd: int) -> None:
        super().close(fd)
        self._fd_inode.pop(fd, None)

    def crash(self, torn: random.Random | None = None) -> None:
        """Power loss: rewrite every tracked directory to its durable state.

        With ``torn``, a file that only grew since its last fsync keeps a random prefix of the
        unsynced bytes (a torn write) instead of none of them.
        """
        assert not self._fd_inode, "close the storage before crashing the disk"
        now: dict[int, bytes] = {}
        for path, ino in self._names.items():
            with open(path, "rb") as f:
                now[ino] = f.read()
            os.unlink(path)
        self._names = {}
        for d, entries in self._durable_dirs.items():
            for name, ino in entries.items():
                data = self._durable_data[ino]
                grown = now.get(ino, b"")
                if torn is not None and len(grown) > len(data) and grown.startswith(data):
                    data = grown[: torn.randint(len(data), len(grown))]
                path = os.path.join(d, name)
                with open(path, "wb") as f:
                    f.write(data)
                self._names[path] = ino
                self._durable_data[ino] = data  # what survived a power loss is on the platter
        self.crashes += 1
