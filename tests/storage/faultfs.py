"""File-I/O doubles for FileStorage tests: record operations, inject faults, lose power.

Rule: every double is a ``FileOps`` subclass plugged in through ``FileStorage(file_ops=...)``,
so the storage under test runs its real code paths against real files in a temp directory.

Power loss (``CrashDisk.crash``) has three models, from strict to realistic: keep only what was
fsynced; keep a random *prefix* of the unsynced bytes (``torn=``); or keep any *subset* of the
unsynced 4 KiB pages (``pages=``), as a disk that writes pages back in any order does — each
dirty page comes back as its synced version or its latest one, and the file's size as any size
it had since its last fsync, so an extended file may keep none of its new pages (zeros).
"""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from raftcache.storage.fsio import FileOps

PAGE_SIZE = 4096


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


class PagePolicy(Protocol):
    """How a power loss treats one file's unsynced pages (``CrashDisk.crash(pages=...)``)."""

    def size(self, name: str, sizes: Sequence[int]) -> int:
        """The size the file comes back with, one of ``sizes`` (every size it had since its
        last fsync, the synced one first, the current one last)."""
        ...

    def keep_new(self, name: str, page: int) -> bool:
        """Whether dirty page number ``page`` of file ``name`` (a base name) reached the disk
        in its latest version (else it comes back as it was at the last fsync)."""
        ...


@dataclass
class RandomPages:
    """Each dirty page and the size chosen at random from ``rng``: seed it and a failure
    replays. ``p_new`` is the chance that a page reached the disk in its latest version."""

    rng: random.Random
    p_new: float = 0.5

    def size(self, name: str, sizes: Sequence[int]) -> int:
        return self.rng.choice(sizes)

    def keep_new(self, name: str, page: int) -> bool:
        return self.rng.random() < self.p_new


@dataclass
class LosePages:
    """Deterministic: every dirty page reached the disk except ``lost`` (page numbers) of files
    whose name contains ``name``; files keep their latest size."""

    lost: set[int]
    name: str = ".seg"
    seen: list[tuple[str, int]] = field(default_factory=list)  # dirty pages met, for asserts

    def size(self, name: str, sizes: Sequence[int]) -> int:
        return sizes[-1]

    def keep_new(self, name: str, page: int) -> bool:
        self.seen.append((name, page))
        return not (self.name in name and page in self.lost)


def persist_pages(synced: bytes, latest: bytes, size: int, keep_new: Sequence[bool]) -> bytes:
    """What a file holds after a power loss that kept page ``k`` in its latest version iff
    ``keep_new[k]`` (else as synced), cut or zero-extended to ``size``."""
    pages = -(-max(len(synced), len(latest), size) // PAGE_SIZE)
    out = bytearray()
    for k in range(pages):
        src = latest if k < len(keep_new) and keep_new[k] else synced
        out += _page(src, k)
    return bytes(out[:size])


def _page(data: bytes, k: int) -> bytes:
    return data[k * PAGE_SIZE : (k + 1) * PAGE_SIZE].ljust(PAGE_SIZE, b"\0")  # zeros past EOF


class CrashDisk(RecordingOps):
    """A strict power-loss model. After ``crash()`` every file holds exactly what it held at
    its last fsync (nothing if never fsynced), and every directory exactly the entries it held
    at its last directory fsync. Use it on an empty directory, with ``fsync=True`` storages,
    and close the storage before ``crash()``. Real fsyncs are skipped (the model is the disk).
    ``crash(torn=...)`` and ``crash(pages=...)`` keep part of the unsynced data (module doc).
    """

    def __init__(self) -> None:
        super().__init__(real_fsync=False)
        self.crashes = 0
        self._names: dict[str, int] = {}  # path -> inode id, as the directories are now
        self._durable_dirs: dict[str, dict[str, int]] = {}  # as of each directory's fsync
        self._durable_data: list[bytes] = []  # per inode id, as of its last fsync
        # per inode id: every size since its last fsync (the durable one first)
        self._sizes: list[list[int]] = []
        self._fd_inode: dict[int, int] = {}

    def _size_now(self, fd: int) -> None:
        sizes = self._sizes[self._fd_inode[fd]]
        size = os.fstat(fd).st_size
        if sizes[-1] != size:
            sizes.append(size)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        path = os.path.abspath(path)
        fd = super().open(path, flags, mode)
        if path not in self._names:
            assert flags & os.O_CREAT, f"{path} was not created through this CrashDisk"
            self._names[path] = len(self._durable_data)
            self._durable_data.append(b"")
            self._sizes.append([0])
        self._fd_inode[fd] = self._names[path]
        self._size_now(fd)  # O_TRUNC
        return fd

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        n = super().pwrite(fd, data, offset)
        self._size_now(fd)
        return n

    def truncate(self, fd: int, size: int) -> None:
        super().truncate(fd, size)
        self._size_now(fd)

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        ino = self._fd_inode[fd]
        with open(f"/proc/self/fd/{fd}", "rb") as f:
            self._durable_data[ino] = f.read()
        self._sizes[ino] = [len(self._durable_data[ino])]

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

    def crash(self, torn: random.Random | None = None, *, pages: PagePolicy | None = None) -> None:
        """Power loss: rewrite every tracked directory to its durable state.

        With ``torn``, a file that only grew since its last fsync keeps a random prefix of the
        unsynced bytes (a torn write) instead of none of them. With ``pages``, every file keeps
        a subset of its dirty pages and one of its recent sizes, as the policy chooses.
        """
        assert not self._fd_inode, "close the storage before crashing the disk"
        assert torn is None or pages is None, "one model at a time"
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
                elif pages is not None and ino in now and grown != data:
                    data = self._pages_survive(name, data, grown, self._sizes[ino], pages)
                path = os.path.join(d, name)
                with open(path, "wb") as f:
                    f.write(data)
                self._names[path] = ino
                self._durable_data[ino] = data  # what survived a power loss is on the platter
                self._sizes[ino] = [len(data)]
        self.crashes += 1

    @staticmethod
    def _pages_survive(
        name: str, synced: bytes, latest: bytes, sizes: Sequence[int], policy: PagePolicy
    ) -> bytes:
        # Any size the file had since its last fsync: the size is metadata, written back on
        # its own schedule (an extended file may come back with none of its new pages).
        candidates = list(dict.fromkeys([len(synced), *sizes, len(latest)]))
        size = policy.size(name, candidates)
        count = -(-max(len(synced), len(latest), size) // PAGE_SIZE)
        keep = [
            _page(synced, k) != _page(latest, k) and policy.keep_new(name, k)  # dirty ones only
            for k in range(count)
        ]
        return persist_pages(synced, latest, size, keep)
