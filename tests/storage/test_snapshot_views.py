"""Snapshot views and streams over stored snapshots, and writers shared between threads."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from raftcache.raft.configuration import Configuration
from raftcache.storage.base import SnapshotMeta, StorageError
from raftcache.storage.file import FileStorage
from raftcache.storage.memory import MemoryStorage
from raftcache.storage.views import ReaderStream, SnapshotView
from tests.storage.faultfs import RecordingOps

META = SnapshotMeta(7, 2, Configuration.of(["n1"]))
DATA = random.Random(5).randbytes(300_000)


def _stored(tmp_path: Path, kind: str) -> FileStorage | MemoryStorage:
    store: FileStorage | MemoryStorage = (
        FileStorage(tmp_path / "d", fsync=False) if kind == "file" else MemoryStorage()
    )
    store.bind("n1")
    store.load()
    with store.snapshot_writer(META) as writer:
        for start in range(0, len(DATA), 65_536):
            writer.write(DATA[start : start + 65_536])
        writer.commit()
    return store


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_view_slices_read_the_stored_bytes(tmp_path: Path, kind: str) -> None:
    store = _stored(tmp_path, kind)
    reader = store.open_snapshot_reader()
    assert reader is not None
    view = SnapshotView(reader)
    assert len(view) == len(DATA)
    assert view.meta.last_index == 7
    for off, n in [(0, 10), (1000, 65_536), (len(DATA) - 5, 100), (len(DATA), 10), (0, 0)]:
        assert view[off : off + n] == DATA[off : off + n]
    with pytest.raises(TypeError):
        view[3]  # type: ignore[index]
    with pytest.raises(ValueError, match="contiguous"):
        view[0:10:2]
    view.close()
    store.close()


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_stream_reads_in_pieces_and_whole(tmp_path: Path, kind: str) -> None:
    store = _stored(tmp_path, kind)
    reader = store.open_snapshot_reader()
    assert reader is not None
    stream = ReaderStream(reader)
    parts = []
    while piece := stream.read(40_000):
        assert len(piece) <= 40_000
        parts.append(piece)
    assert b"".join(parts) == DATA
    assert stream.read(10) == b""
    whole = ReaderStream(reader)
    buf = bytearray(1000)
    assert whole.readinto(buf) == 1000
    assert bytes(buf) == DATA[:1000]
    assert whole.read() == DATA[1000:]
    reader.close()
    store.close()


def test_a_view_keeps_reading_the_snapshot_it_opened_after_a_replacement(
    tmp_path: Path,
) -> None:
    store = _stored(tmp_path, "file")
    reader = store.open_snapshot_reader()
    assert reader is not None
    view = SnapshotView(reader)
    newer = SnapshotMeta(9, 2, Configuration.of(["n1"]))
    store.save_snapshot(newer, b"other bytes")
    # The file was renamed over: the view's fd still reads the old one, never a mix.
    assert view[0:100] == DATA[:100]
    assert view[len(DATA) - 10 : len(DATA)] == DATA[-10:]
    view.close()
    loaded = store.load_snapshot()
    assert loaded is not None
    assert loaded == (newer, b"other bytes")
    store.close()


class SlowOps(RecordingOps):
    """pwrite that takes a while, so another thread can try to abort in the middle."""

    def __init__(self) -> None:
        super().__init__(real_fsync=False)
        self.writing = threading.Event()

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        if len(data) > 1000:
            self.writing.set()
            time.sleep(0.2)
        return super().pwrite(fd, data, offset)


def test_abort_from_another_thread_waits_for_the_write_under_way(tmp_path: Path) -> None:
    ops = SlowOps()
    store = FileStorage(tmp_path / "d", fsync=False, file_ops=ops)
    store.bind("n1")
    store.load()
    writer = store.snapshot_writer(META)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            writer.write(DATA)
        except BaseException as exc:  # pragma: no cover - the test fails on it below
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    assert ops.writing.wait(5)
    writer.abort()  # must not close the fd beneath the write (EBADF would poison the storage)
    thread.join(5)
    assert errors == []
    assert not store.failed
    assert [n for n in os.listdir(tmp_path / "d") if n.endswith(".tmp")] == []
    with pytest.raises(StorageError, match="aborted"):
        writer.write(b"more")
    assert store.load_snapshot() is None
    store.close()
