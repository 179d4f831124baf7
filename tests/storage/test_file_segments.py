"""FileStorage's segmented log: rotation, truncation and compaction across segment files."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftcache.storage import FileStorage, StorageFailedError
from raftcache.storage.records import HEADER_SIZE

from .faultfs import FaultyOps
from .helpers import make_entries, meta, rows, seg_files, seg_start

SEG = 150  # bytes: a few 40-byte entries per segment


def filled(d: Path, last: int, *, term: int = 1) -> FileStorage:
    """A storage holding 1..last, appended and synced one entry at a time."""
    s = FileStorage(d, fsync=False, segment_size=SEG)
    s.load()
    for e in make_entries(1, last, term=term, size=40):
        s.append([e])
        s.sync()
    return s


def first_indices(d: Path) -> list[int]:
    return [seg_start(name) for name in seg_files(str(d))]


def reopen_rows(d: Path) -> list[tuple[int, int, bytes, int]]:
    with FileStorage(d, fsync=False, segment_size=SEG) as s:
        return rows(s.load().entries)


def test_segments_rotate_and_are_named_by_their_first_index(tmp_path: Path) -> None:
    s = filled(tmp_path, 20)
    starts = first_indices(tmp_path)
    assert len(starts) >= 4
    assert starts[0] == 1
    assert starts == sorted(starts)
    for path in s.segment_paths[:-1]:
        size = Path(path).stat().st_size
        assert SEG <= size < SEG + HEADER_SIZE + 60  # rotated as soon as the size was reached
    s.close()
    assert reopen_rows(tmp_path) == rows(make_entries(1, 20, size=40))


def test_rotation_waits_for_a_sync(tmp_path: Path) -> None:
    # Only the last segment may hold unsynced data: a full but unsynced segment keeps growing.
    s = FileStorage(tmp_path, fsync=False, segment_size=SEG)
    s.load()
    for i in range(1, 10):
        s.append(make_entries(i, i, size=40))
    assert first_indices(tmp_path) == [1]
    s.sync()
    s.append(make_entries(10, 10, size=40))
    assert first_indices(tmp_path) == [1, 10]
    s.close()


def test_overwrite_across_segments(tmp_path: Path) -> None:
    s = filled(tmp_path, 20)
    before = first_indices(tmp_path)
    cut = before[1] + 1  # inside the second segment
    s.append(make_entries(cut, cut + 1, term=2, size=40))
    s.sync()
    assert first_indices(tmp_path) == before[:2]
    s.close()
    expected = make_entries(1, cut - 1, size=40) + make_entries(cut, cut + 1, term=2, size=40)
    assert reopen_rows(tmp_path) == rows(expected)


def test_overwrite_at_a_segment_start_removes_that_segment(tmp_path: Path) -> None:
    s = filled(tmp_path, 20)
    before = first_indices(tmp_path)
    s.append(make_entries(before[2], before[2], term=3, size=40))
    s.sync()
    assert first_indices(tmp_path) == before[:3]  # recreated under the same name
    s.close()
    expected = make_entries(1, before[2] - 1, size=40) + make_entries(
        before[2], before[2], term=3, size=40
    )
    assert reopen_rows(tmp_path) == rows(expected)


@pytest.mark.parametrize("position", ["inside", "at end"])
def test_compaction_deletes_whole_segments_only(tmp_path: Path, position: str) -> None:
    s = filled(tmp_path, 30)
    starts = first_indices(tmp_path)
    k = 2
    last = starts[k] + 1 if position == "inside" else starts[k + 1] - 1
    s.save_snapshot(meta(last, 1), b"snap")
    kept = first_indices(tmp_path)
    # segments ending at or before `last` are gone; the one holding last+1 stays
    assert kept == (starts[k:] if position == "inside" else starts[k + 1 :])
    s.append(make_entries(31, 32, size=40))
    s.sync()
    s.close()
    with FileStorage(tmp_path, fsync=False, segment_size=SEG) as again:
        state = again.load()
        assert state.snapshot == meta(last, 1)
        assert rows(state.entries) == rows(make_entries(last + 1, 32, size=40))


def test_compaction_of_everything_then_fresh_segment(tmp_path: Path) -> None:
    s = filled(tmp_path, 12)
    s.save_snapshot(meta(12, 1), b"all")
    assert first_indices(tmp_path) == []
    s.append(make_entries(13, 13, term=2, size=40))
    s.sync()
    assert first_indices(tmp_path) == [13]
    s.close()
    assert reopen_rows(tmp_path) == rows(make_entries(13, 13, term=2, size=40))


@pytest.mark.parametrize(("snap_index", "snap_term"), [(17, 1), (17, 5), (40, 5)])
def test_recovery_finishes_an_interrupted_compaction(
    tmp_path: Path, snap_index: int, snap_term: int
) -> None:
    ops = FaultyOps()
    s = FileStorage(tmp_path, segment_size=SEG, file_ops=ops)
    s.load()
    for e in make_entries(1, 30, size=40):
        s.append([e])
        s.sync()
    ops.fail_unlink = True  # the snapshot is installed, then deleting segments fails
    with pytest.raises(StorageFailedError):
        s.save_snapshot(meta(snap_index, snap_term), b"snap")
    s.close()
    with FileStorage(tmp_path, fsync=False, segment_size=SEG) as again:
        state = again.load()
        assert state.snapshot == meta(snap_index, snap_term)
        if snap_term == 1:  # matching log: keep what follows the snapshot
            assert rows(state.entries) == rows(make_entries(snap_index + 1, 30, size=40))
            left = first_indices(tmp_path)  # segments wholly covered by the snapshot are gone
            assert left[0] <= snap_index + 1 < left[1]
        else:  # conflicting or shorter log: all of it goes
            assert state.entries == []
            assert first_indices(tmp_path) == []


def test_damage_in_a_segment_the_snapshot_covers_does_not_matter(tmp_path: Path) -> None:
    s = filled(tmp_path, 30)
    s.close()
    starts = first_indices(tmp_path)
    # A crash after installing a snapshot but before compaction (unlink fails here)...
    ops = FaultyOps()
    ops.fail_unlink = True
    with FileStorage(tmp_path, fsync=False, segment_size=SEG, file_ops=ops) as t:
        t.load()
        with pytest.raises(StorageFailedError):
            t.save_snapshot(meta(starts[2], 1), b"snap")
    assert first_indices(tmp_path) == starts
    # ...plus bit rot in a segment that compaction would have deleted anyway.
    doomed = tmp_path / "log" / seg_files(str(tmp_path))[0]
    data = bytearray(doomed.read_bytes())
    data[5] ^= 0xFF
    doomed.write_bytes(bytes(data))
    assert reopen_rows(tmp_path) == rows(make_entries(starts[2] + 1, 30, size=40))
    assert first_indices(tmp_path) == starts[2:]
