"""The ``snapshot`` file: the latest snapshot, written in a stream and installed atomically.

Rule: a snapshot is written to a temp file, fsynced, renamed over ``snapshot`` and the
directory fsynced; only then may the log be compacted. A crash leaves the old or the new
snapshot whole, so any damage found later is corruption. Format (little-endian):

    header  magic b"RCSN" | version u16 | reserved u16 | meta length u32 | meta crc32 u32
    meta    msgpack [last_index, last_term, Configuration.encode()]
    data    the state machine's bytes
    trailer data length u64 | data crc32 u32 | magic b"RCSE"

The data CRC lives in the trailer so data can be streamed in without knowing its size first.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from raftcache.protocol.configuration import Configuration
from raftcache.storage.base import (
    DiskFullError,
    SnapshotMeta,
    StorageCorruptError,
    StorageError,
    StorageFormatError,
)
from raftcache.storage.codec import pack, unpack
from raftcache.storage.fsio import (
    FileOps,
    remove_quietly,
    sync_dir,
    sync_file,
    write_all,
    write_error,
)

SNAPSHOT_NAME = "snapshot"
MAGIC = b"RCSN"
END_MAGIC = b"RCSE"
VERSION = 1
_HEADER = struct.Struct("<4sHHII")
_TRAILER = struct.Struct("<QI4s")
CHUNK_SIZE = 4 * 1024 * 1024  # bounded memory and syscall size when streaming
#: Piece size of a CRC check that keeps nothing: small, so opening a reader (at start, after
#: an install) costs little memory next to InstallSnapshot chunks of 1 MiB.
VERIFY_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class SnapshotLocation:
    """Where the data of a validated snapshot file lies, and its expected CRC."""

    meta: SnapshotMeta
    data_offset: int
    data_length: int
    data_crc: int


def encode_meta(meta: SnapshotMeta) -> bytes:
    return pack([meta.last_index, meta.last_term, meta.configuration.encode()])


def read_location(fd: int, path: str) -> SnapshotLocation:
    """Validate header, metadata and trailer of an open snapshot file (not the data CRC)."""
    size = os.fstat(fd).st_size
    if size < _HEADER.size + _TRAILER.size:
        raise StorageCorruptError(f"{path} at offset 0: file too short ({size} bytes)")
    magic, version, _reserved, meta_len, meta_crc = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
    if magic != MAGIC:
        raise StorageCorruptError(f"{path} at offset 0: bad magic {magic!r}")
    if version != VERSION:
        raise StorageFormatError(f"{path}: unknown snapshot format version {version}")
    data_offset = _HEADER.size + meta_len
    if data_offset + _TRAILER.size > size:
        raise StorageCorruptError(f"{path} at offset 0: metadata length {meta_len} exceeds file")
    raw = os.pread(fd, meta_len, _HEADER.size)
    if zlib.crc32(raw) != meta_crc:
        raise StorageCorruptError(f"{path} at offset {_HEADER.size}: metadata fails its CRC")
    meta = _decode_meta(raw, path)
    data_length, data_crc, end = _TRAILER.unpack(os.pread(fd, _TRAILER.size, size - _TRAILER.size))
    if end != END_MAGIC or data_offset + data_length + _TRAILER.size != size:
        raise StorageCorruptError(
            f"{path} at offset {size - _TRAILER.size}: bad trailer (incomplete snapshot?)"
        )
    return SnapshotLocation(meta, data_offset, data_length, data_crc)


def _decode_meta(raw: bytes, path: str) -> SnapshotMeta:
    try:
        obj: Any = unpack(raw)
        last_index, last_term, config = obj
        if not (isinstance(last_index, int) and isinstance(last_term, int)):
            raise ValueError("index/term are not integers")
        return SnapshotMeta(last_index, last_term, Configuration.decode(config))
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageCorruptError(f"{path} at offset {_HEADER.size}: bad metadata ({exc})") from exc


def read_data(fd: int, loc: SnapshotLocation, path: str, *, keep: bool) -> bytes:
    """Check the data CRC, streaming; return the data if ``keep`` (else b"")."""
    parts: list[bytes] = []
    crc = 0
    pos, end = loc.data_offset, loc.data_offset + loc.data_length
    piece = CHUNK_SIZE if keep else VERIFY_CHUNK
    while pos < end:
        chunk = os.pread(fd, min(piece, end - pos), pos)
        if not chunk:
            raise StorageCorruptError(f"{path} at offset {pos}: unexpected end of data")
        crc = zlib.crc32(chunk, crc)
        if keep:
            parts.append(chunk)
        pos += len(chunk)
    if crc != loc.data_crc:
        raise StorageCorruptError(
            f"{path} at offset {loc.data_offset}: snapshot data fails its CRC "
            f"({loc.data_length} bytes)"
        )
    return b"".join(parts)


def open_snapshot(path: str) -> tuple[int, SnapshotLocation] | None:
    """An fd on the snapshot file and its validated location, or None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return fd, read_location(fd, path)
    except BaseException:
        os.close(fd)
        raise


class FileSnapshotReader:
    """A ``SnapshotReader`` over the snapshot file; the data CRC is checked when opened.

    It keeps its own fd, so a snapshot replaced meanwhile stays readable until ``close``.
    """

    def __init__(self, path: str) -> None:
        opened = open_snapshot(path)
        if opened is None:
            raise FileNotFoundError(path)
        self._fd: int | None = opened[0]
        self._loc = opened[1]
        try:
            read_data(self._fd, self._loc, path, keep=False)
        except BaseException:
            self.close()
            raise

    @property
    def meta(self) -> SnapshotMeta:
        return self._loc.meta

    @property
    def size(self) -> int:
        return self._loc.data_length

    def read_at(self, offset: int, length: int) -> bytes:
        if self._fd is None:
            raise StorageError("snapshot reader is closed")
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        length = max(0, min(length, self._loc.data_length - offset))
        return os.pread(self._fd, length, self._loc.data_offset + offset) if length else b""

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> FileSnapshotReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


Guard = Callable[[], AbstractContextManager[None]]


class FileSnapshotWriter:
    """A ``SnapshotWriter`` streaming into a temp file; ``commit`` hands over to the storage.

    ``on_commit(writer)`` is the storage's hook: it checks and syncs, calls ``install()``
    (trailer, fsync, rename, directory fsync) and then compacts the log.

    ``write``, ``commit`` and ``abort`` may come from different threads (chunks written in a
    worker thread, an abort from the event loop when a node stops): a lock makes an abort wait
    for the write under way instead of closing the fd beneath it.
    """

    def __init__(
        self,
        ops: FileOps,
        directory: str,
        tmp_name: str,
        meta: SnapshotMeta,
        *,
        fsync: bool,
        guard: Guard,
        on_commit: Callable[[FileSnapshotWriter], None],
    ) -> None:
        self.meta = meta
        self._ops, self._fsync, self._guard, self._on_commit = ops, fsync, guard, on_commit
        self._dir = directory
        self._tmp = os.path.join(directory, tmp_name)
        self._crc = 0
        self._size = 0
        self._pos = 0
        self._fd: int | None = None
        self._lock = threading.RLock()
        with guard():
            try:
                self._fd = ops.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            except OSError as exc:
                raise write_error(exc, self._tmp) from exc
            raw = encode_meta(meta)
            self._put(_HEADER.pack(MAGIC, VERSION, 0, len(raw), zlib.crc32(raw)) + raw)

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        with self._lock, self._guard():
            self._put(chunk)
            self._crc = zlib.crc32(chunk, self._crc)
            self._size += len(chunk)

    def commit(self) -> None:
        with self._lock:
            if self._fd is None:
                raise StorageError("snapshot writer is already committed or aborted")
            self._on_commit(self)

    def install(self) -> None:
        """Finish the file and atomically make it *the* snapshot (called by the storage)."""
        self._put(_TRAILER.pack(self._size, self._crc, END_MAGIC))
        assert self._fd is not None
        if self._fsync:
            sync_file(self._ops, self._fd, self._tmp)
        fd, self._fd = self._fd, None
        self._ops.close(fd)
        try:
            self._ops.rename(self._tmp, os.path.join(self._dir, SNAPSHOT_NAME))
        except OSError as exc:
            remove_quietly(self._ops, self._tmp)
            raise write_error(exc, SNAPSHOT_NAME) from exc
        if self._fsync:
            sync_dir(self._ops, self._dir)

    def abort(self) -> None:
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                self._ops.close(fd)
                remove_quietly(self._ops, self._tmp)

    def _put(self, data: bytes | memoryview) -> None:
        if self._fd is None:
            raise StorageError("snapshot writer is already committed or aborted")
        view = memoryview(data)
        try:
            # Bounded writes: a multi-hundred-MB snapshot never becomes one giant syscall.
            for start in range(0, len(view), CHUNK_SIZE):
                piece = view[start : start + CHUNK_SIZE]
                write_all(self._ops, self._fd, piece, self._pos, self._tmp)
                self._pos += len(piece)
        except DiskFullError:
            self.abort()  # the old snapshot is untouched; drop the partial temp file
            raise

    def __enter__(self) -> FileSnapshotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()
