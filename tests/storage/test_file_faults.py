"""FileStorage under failing disks, and the order of its writes, fsyncs and renames.

Faults are injected through the FileOps seam: ENOSPC must leave state unchanged (DiskFullError),
a failed fsync must poison the storage for good (fail-stop, StorageFailedError).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raftcache.storage import DiskFullError, FileStorage, StorageFailedError

from .faultfs import FaultyOps, RecordingOps
from .helpers import make_entries, meta, rows, seg_files, seg_start


def open_faulty(d: Path, ops: FaultyOps, segment_size: int = 1 << 20) -> FileStorage:
    s = FileStorage(d, segment_size=segment_size, file_ops=ops)
    s.load()
    return s


def reload(d: Path) -> FileStorage:
    s = FileStorage(d, fsync=False)
    s.load()
    return s


# -- fsync failure: fail-stop ----------------------------------------------------------------


def test_failed_fsync_poisons_every_later_write(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.append(make_entries(1, 3))
    s.sync()
    s.append(make_entries(4, 5))
    ops.fail_fsync = True
    with pytest.raises(StorageFailedError, match="fsync"):
        s.sync()
    ops.fail_fsync = False  # the disk "works again": too late, pages may be lost (fsyncgate)
    assert s.failed
    calls = [
        lambda: s.append(make_entries(6, 6)),
        lambda: s.set_hard_state(2, None),
        s.sync,
        lambda: s.save_snapshot(meta(3, 1), b"x"),
        s.load,
        lambda: s.bind("n1"),
        s.load_snapshot,
    ]
    for call in calls:
        with pytest.raises(StorageFailedError):
            call()
    s.close()
    s.close()
    with reload(tmp_path) as fresh:  # a new process may start again: the lock was released
        assert [e.index for e in fresh.load().entries][:3] == [1, 2, 3]


def test_failed_fsync_of_the_hard_state_poisons(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.set_hard_state(5, "n1")
    ops.fail_fsync = True
    with pytest.raises(StorageFailedError):
        s.sync()
    with pytest.raises(StorageFailedError):
        s.set_hard_state(6, "n1")
    s.close()


def test_failed_fsync_during_snapshot_poisons(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.append(make_entries(1, 5))
    s.sync()
    ops.fail_fsync = True
    with pytest.raises(StorageFailedError):
        s.save_snapshot(meta(3, 1), b"snap")
    with pytest.raises(StorageFailedError):
        s.append(make_entries(6, 6))
    s.close()
    assert not list(tmp_path.glob("*.tmp"))  # the aborted writer removed its temp file
    with reload(tmp_path) as fresh:
        assert fresh.load().snapshot is None  # never renamed into place
        assert rows(fresh.load().entries) == rows(make_entries(1, 5))


# -- disk full: refuse, undo, keep serving ---------------------------------------------------


def test_enospc_on_append_leaves_state_unchanged(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.append(make_entries(1, 5))
    s.sync()
    size = os.path.getsize(s.segment_paths[-1])
    ops.space_left = 30  # the batch below is larger: a short write, then ENOSPC
    with pytest.raises(DiskFullError, match="no space"):
        s.append(make_entries(6, 9))
    assert os.path.getsize(s.segment_paths[-1]) == size  # partial record removed
    assert s.last_index == 5
    s.set_hard_state(2, "n1")  # tiny writes that need no new space still work...
    ops.space_left = None  # ...and once space is freed, appends carry on
    s.append(make_entries(6, 7))
    s.sync()
    s.close()
    with reload(tmp_path) as fresh:
        state = fresh.load()
        assert rows(state.entries) == rows(make_entries(1, 7))
        assert (state.term, state.voted_for) == (2, "n1")


def test_enospc_on_a_new_segment_removes_it(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops, segment_size=100)
    s.append(make_entries(1, 4))
    s.sync()
    before = seg_files(str(tmp_path))
    ops.space_left = 10
    with pytest.raises(DiskFullError):
        s.append(make_entries(5, 6))  # the first segment is full: this rotates
    assert seg_files(str(tmp_path)) == before
    ops.space_left = None
    s.append(make_entries(5, 6))
    s.sync()
    after = seg_files(str(tmp_path))
    assert after[:-1] == before
    assert seg_start(after[-1]) == 5
    s.close()
    with reload(tmp_path) as fresh:
        assert rows(fresh.load().entries) == rows(make_entries(1, 6))


def test_enospc_on_an_overwrite_keeps_a_valid_prefix(tmp_path: Path) -> None:
    # The conflicting suffix is discarded (durably) before the new batch is written, so after
    # DiskFullError the log is the old prefix: a state a follower may always be in.
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.append(make_entries(1, 6))
    s.sync()
    ops.space_left = 5
    with pytest.raises(DiskFullError):
        s.append(make_entries(4, 5, term=2))
    ops.space_left = None
    s.append(make_entries(4, 5, term=2))
    s.sync()
    s.close()
    with reload(tmp_path) as fresh:
        assert rows(fresh.load().entries) == rows(make_entries(1, 3) + make_entries(4, 5, 2))


def test_enospc_on_the_hard_state_keeps_the_old_one(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.set_hard_state(1, "n1")
    s.sync()
    s.set_hard_state(2, "n2")
    ops.space_left = 0
    with pytest.raises(DiskFullError):
        s.sync()
    assert not list(tmp_path.glob("*.tmp"))
    ops.space_left = None
    s.sync()  # still pending, written once space is back
    s.close()
    with reload(tmp_path) as fresh:
        assert (fresh.load().term, fresh.load().voted_for) == (2, "n2")


def test_enospc_on_a_snapshot_keeps_the_old_one(tmp_path: Path) -> None:
    ops = FaultyOps()
    s = open_faulty(tmp_path, ops)
    s.append(make_entries(1, 8))
    s.save_snapshot(meta(2, 1), b"old")
    ops.space_left = 1000
    with pytest.raises(DiskFullError):
        s.save_snapshot(meta(6, 1), os.urandom(100_000))
    assert not list(tmp_path.glob("*.tmp"))
    assert s.load_snapshot() == (meta(2, 1), b"old")
    assert rows(s.load().entries) == rows(make_entries(3, 8))
    ops.space_left = None
    s.save_snapshot(meta(6, 1), b"new")
    assert rows(s.load().entries) == rows(make_entries(7, 8))
    s.close()


def test_other_write_errors_are_fatal(tmp_path: Path) -> None:
    class BrokenWrites(FaultyOps):
        def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
            raise OSError(5, "Input/output error")

    s = open_faulty(tmp_path, BrokenWrites())
    with pytest.raises(StorageFailedError, match="I/O error"):
        s.append(make_entries(1, 1))
    with pytest.raises(StorageFailedError):
        s.sync()
    s.close()


# -- ordering --------------------------------------------------------------------------------


def recording(d: Path, segment_size: int = 1 << 20) -> tuple[FileStorage, RecordingOps]:
    ops = RecordingOps(real_fsync=False)
    s = FileStorage(d, segment_size=segment_size, file_ops=ops)
    s.load()
    ops.clear()
    return s, ops


def test_group_commit_one_fsync_per_sync(tmp_path: Path) -> None:
    s, ops = recording(tmp_path)
    for first in (1, 4, 7):
        s.append(make_entries(first, first + 2))
    (seg,) = seg_files(str(tmp_path))
    assert seg_start(seg) == 1
    assert ops.names("write", "fsync") == [("write", seg)] * 3  # one write per batch, no fsync
    s.sync()
    # the new segment's data, then its directory entry, before sync() returns
    assert ops.names("fsync", "fsync_dir")[-2:] == [("fsync", seg), ("fsync_dir", "log")]
    ops.clear()
    s.sync()
    assert ops.names() == []  # nothing pending: no I/O
    s.append(make_entries(10, 10))
    s.sync()
    assert ops.names() == [("write", seg), ("fsync", seg)]
    s.close()


def test_hard_state_is_renamed_only_after_its_temp_file_is_fsynced(tmp_path: Path) -> None:
    s, ops = recording(tmp_path)
    s.set_hard_state(3, "n2")
    assert ops.names() == []  # buffered until sync
    s.sync()
    assert ops.names("write", "fsync", "rename", "fsync_dir") == [
        ("write", "hardstate.tmp"),
        ("fsync", "hardstate.tmp"),
        ("rename", "hardstate.tmp->hardstate"),
        ("fsync_dir", tmp_path.name),
    ]
    s.close()


def test_snapshot_is_durable_before_the_log_is_compacted(tmp_path: Path) -> None:
    s, ops = recording(tmp_path, segment_size=100)
    for i in range(1, 13):
        s.append(make_entries(i, i))
        s.sync()
    ops.clear()
    s.save_snapshot(meta(9, 1), b"snap")
    seq = ops.names("fsync", "rename", "fsync_dir", "unlink")
    rename = seq.index(("rename", "snapshot.1.tmp->snapshot"))
    assert seq[rename - 1] == ("fsync", "snapshot.1.tmp")
    assert seq[rename + 1] == ("fsync_dir", tmp_path.name)
    unlinks = [i for i, (kind, _) in enumerate(seq) if kind == "unlink"]
    assert unlinks
    assert min(unlinks) > rename + 1
    assert seq[-1] == ("fsync_dir", "log")
    s.close()


def test_overwrite_unlinks_newest_first_then_truncates_durably(tmp_path: Path) -> None:
    s, ops = recording(tmp_path, segment_size=100)
    for i in range(1, 13):
        s.append(make_entries(i, i))
        s.sync()
    files = seg_files(str(tmp_path))
    assert len(files) >= 3
    ops.clear()
    s.append(make_entries(2, 2, term=2))  # conflicts inside the first segment
    seq = ops.names("unlink", "fsync_dir", "truncate", "fsync", "write")
    expected = []
    for name in reversed(files[1:]):
        expected += [("unlink", name), ("fsync_dir", "log")]
    expected += [("truncate", files[0]), ("fsync", files[0]), ("write", files[0])]
    assert seq == expected
    s.close()


def test_fsync_false_never_fsyncs(tmp_path: Path) -> None:
    ops = RecordingOps(real_fsync=False)
    with FileStorage(tmp_path, fsync=False, segment_size=100, file_ops=ops) as s:
        s.load()
        s.bind("n1")
        for i in range(1, 10):
            s.append(make_entries(i, i))
            s.set_hard_state(i, None)
            s.sync()
        s.save_snapshot(meta(5, 1), b"x")
    assert ops.names("fsync", "fsync_dir") == []
    assert ops.names("write")
