"""Views over a stored snapshot that read it piece by piece, never whole.

Rule: a view owns one ``SnapshotReader`` (an open fd on a ``FileStorage``), and every byte it
hands out is read from it at the moment it is asked for. ``SnapshotView`` is what a leader's
Raft core slices InstallSnapshot chunks from (``SnapshotData``); ``ReaderStream`` is the binary
file-like object a state machine's streaming restore reads from. Closing the view closes the
reader; a snapshot replaced meanwhile stays readable through a view opened before (the fd keeps
the old file alive), so a chunk is never a mix of two snapshots.
"""

from __future__ import annotations

import io
from typing import Any

from raftcache.storage.base import SnapshotMeta, SnapshotReader


class SnapshotView:
    """Snapshot data as ``len()`` and slices; each slice is one ``read_at`` on the reader."""

    def __init__(self, reader: SnapshotReader) -> None:
        self._reader = reader
        self._size = reader.size
        self._meta = reader.meta

    @property
    def meta(self) -> SnapshotMeta:
        return self._meta

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: slice, /) -> bytes:
        if not isinstance(index, slice):
            raise TypeError("a snapshot view is read by slices only")
        start, stop, step = index.indices(self._size)
        if step != 1:
            raise ValueError("a snapshot view is read by contiguous slices only")
        return self._reader.read_at(start, stop - start) if stop > start else b""

    def stream(self) -> ReaderStream:
        """A file-like object over the data from its start (shares this view's reader)."""
        return ReaderStream(self._reader)

    def close(self) -> None:
        self._reader.close()


class ReaderStream(io.RawIOBase):
    """A read-only binary stream over a ``SnapshotReader``: memory per call is what the
    caller asks for (a streaming decoder asks for a few KiB at a time)."""

    def __init__(self, reader: SnapshotReader) -> None:
        super().__init__()
        self._reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            size = self._reader.size - self._pos
        data = self._reader.read_at(self._pos, size) if size > 0 else b""
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any, /) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)
