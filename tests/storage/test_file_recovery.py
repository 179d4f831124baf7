"""FileStorage recovery: torn tails are truncated, corruption anywhere else refuses to start.

The rule under test (docs/storage.md): an invalid record in the *last* segment at or after its
proven sync boundary (the largest ``batch_start`` of an intact record after it) is a torn write —
truncated, recovery continues with the valid prefix (this includes a bad CRC on the final
record). An invalid record before that boundary (here: every build() record is synced on its
own, so a later intact record proves it), any damage in a non-last segment, a hole in the log,
or damage to the snapshot, hard state or identity files raises StorageCorruptError naming the
file and offset. Out-of-order torn writes and v1 segments: ``test_torn_tail.py``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from raftcache.raft.messages import LogEntry
from raftcache.storage import (
    FileStorage,
    StorageCorruptError,
    StorageFormatError,
)
from raftcache.storage.records import HEADER_SIZE

from .helpers import make_entries, meta, rows, seg_files


def build(directory: Path, last: int = 5, segment_size: int = 1 << 20) -> list[int]:
    """A log 1..last (one record per batch) and the byte offset where each record starts."""
    s = FileStorage(directory, fsync=False, segment_size=segment_size)
    s.load()
    offsets = []
    for e in make_entries(1, last, size=40):
        offsets.append(os.path.getsize(s.segment_paths[-1]) if s.segment_paths else 0)
        s.append([e])
        s.sync()
    s.close()
    return offsets


def seg_path(directory: Path, k: int = 0) -> Path:
    return directory / "log" / seg_files(str(directory))[k]


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def load_rows(directory: Path) -> list[tuple[int, int, bytes, int]]:
    with FileStorage(directory, fsync=False) as s:
        return rows(s.load().entries)


def test_torn_last_record_at_every_length_recovers_the_prefix(tmp_path: Path) -> None:
    d = tmp_path / "d"
    offsets = build(d, last=5)
    seg = seg_path(d)
    full = seg.read_bytes()
    start = offsets[-1]
    for cut in range(start, len(full)):  # from the record's first byte to one short of its end
        seg.write_bytes(full[:cut])
        with FileStorage(d, fsync=False) as s:
            assert rows(s.load().entries) == rows(make_entries(1, 4, size=40)), cut
            assert seg.stat().st_size == start, cut  # the torn bytes are gone from disk
            s.append(make_entries(5, 6, term=2))
            s.sync()
        assert load_rows(d) == rows(make_entries(1, 4, size=40) + make_entries(5, 6, term=2))
    seg.write_bytes(full)
    assert load_rows(d) == rows(make_entries(1, 5, size=40))


def test_bad_crc_on_the_final_record_is_a_torn_write(tmp_path: Path) -> None:
    d = tmp_path / "d"
    offsets = build(d, last=5)
    flip(seg_path(d), offsets[-1] + HEADER_SIZE + 3)
    assert load_rows(d) == rows(make_entries(1, 4, size=40))


def test_zero_filled_tail_is_a_torn_write(tmp_path: Path) -> None:
    d = tmp_path / "d"
    build(d, last=3)
    with seg_path(d).open("ab") as f:
        f.write(bytes(4096))  # blocks allocated but never written before the crash
    assert load_rows(d) == rows(make_entries(1, 3, size=40))
    assert seg_path(d).stat().st_size < 4096


@pytest.mark.parametrize(
    ("where", "delta"),
    [
        ("magic", 0),
        ("length", 5),
        ("batch_start", 9),
        ("crc", HEADER_SIZE - 3),
        ("payload", HEADER_SIZE + 2),
    ],
)
def test_damage_in_the_middle_refuses_to_start(tmp_path: Path, where: str, delta: int) -> None:
    d = tmp_path / "d"
    offsets = build(d, last=5)
    seg = seg_path(d)
    flip(seg, offsets[2] + delta)
    with pytest.raises(StorageCorruptError) as info, FileStorage(d, fsync=False) as s:
        s.load()
    assert seg.name in str(info.value)
    assert f"offset {offsets[2]}" in str(info.value)
    assert "intact record" in str(info.value)


def test_garbage_followed_by_an_intact_record_is_corruption(tmp_path: Path) -> None:
    # Records 4 and 5 were written after record 3 was synced: the junk sits in synced data.
    # (Junk before the *last* synced batch, with nothing later, is the documented residual
    # case: it looks like a torn write of that batch; see test_torn_tail.py.)
    d = tmp_path / "d"
    offsets = build(d, last=5)
    seg = seg_path(d)
    data = seg.read_bytes()
    seg.write_bytes(data[: offsets[2]] + b"junk!" + data[offsets[2] :])
    with pytest.raises(StorageCorruptError, match=f"offset {offsets[2]}"):
        load_rows(d)


def test_damage_in_a_non_last_segment_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "d"
    build(d, last=12, segment_size=150)
    files = seg_files(str(d))
    assert len(files) >= 3
    first = seg_path(d, 0)
    flip(first, first.stat().st_size - 1)  # the last record of the first segment
    with pytest.raises(StorageCorruptError, match=f"{first.name} at offset .*not the last"):
        load_rows(d)


def test_missing_segment_is_a_hole(tmp_path: Path) -> None:
    d = tmp_path / "d"
    build(d, last=12, segment_size=150)
    seg_path(d, 1).unlink()
    with pytest.raises(StorageCorruptError, match="hole"):
        load_rows(d)


def test_log_without_its_beginning_is_corruption(tmp_path: Path) -> None:
    d = tmp_path / "d"
    build(d, last=12, segment_size=150)
    seg_path(d, 0).unlink()
    with pytest.raises(StorageCorruptError, match="no snapshot"):
        load_rows(d)


def test_record_with_a_wrong_index_is_corruption(tmp_path: Path) -> None:
    d = tmp_path / "d"
    build(d, last=3)
    seg = seg_path(d)
    salt = seg.name.split("-")[1]  # keep the salt: the CRCs stay good
    seg.rename(seg.with_name(f"{2:020d}-{salt}"))  # the name now disagrees with the records
    with pytest.raises(StorageCorruptError, match="expected 2"):
        load_rows(d)


def _snapshot_dir(tmp_path: Path) -> tuple[Path, bytes]:
    d = tmp_path / "d"
    data = os.urandom(50_000)
    with FileStorage(d, fsync=False) as s:
        s.load()
        s.append(make_entries(1, 10))
        s.save_snapshot(meta(6, 1), data)
    return d, data


@pytest.mark.parametrize("position", ["header", "meta", "data", "last data byte", "trailer"])
def test_bit_flip_in_the_snapshot_refuses_to_start(tmp_path: Path, position: str) -> None:
    d, data = _snapshot_dir(tmp_path)
    snap = d / "snapshot"
    size = snap.stat().st_size
    offset = {
        "header": 1,
        "meta": 17,
        "data": size - 16 - len(data) // 2,
        "last data byte": size - 17,
        "trailer": size - 10,
    }[position]
    flip(snap, offset, 0x40)
    with FileStorage(d, fsync=False) as s:
        with pytest.raises(StorageCorruptError, match="snapshot"):
            s.load()
        with pytest.raises(StorageCorruptError):
            s.load_snapshot()
        with pytest.raises(StorageCorruptError):
            s.open_snapshot_reader()


def test_truncated_snapshot_refuses_to_start(tmp_path: Path) -> None:
    d, _ = _snapshot_dir(tmp_path)
    snap = d / "snapshot"
    snap.write_bytes(snap.read_bytes()[:-100])
    with pytest.raises(StorageCorruptError, match="snapshot"):
        load_rows(d)


def test_reopen_after_compaction(tmp_path: Path) -> None:
    d, data = _snapshot_dir(tmp_path)
    with FileStorage(d, fsync=False) as s:
        state = s.load()
        assert state.snapshot == meta(6, 1)
        assert rows(state.entries) == rows(make_entries(7, 10))
        assert s.load_snapshot() == (meta(6, 1), data)


def test_damaged_hard_state_refuses_to_start(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d, fsync=False) as s:
        s.set_hard_state(4, "n2")
        s.sync()
    flip(d / "hardstate", 18)
    with pytest.raises(StorageCorruptError, match="hardstate"):
        load_rows(d)


def test_unknown_versions_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d, fsync=False) as s:
        s.bind("n1", "c1")
        s.set_hard_state(4, "n2")
        s.append(make_entries(1, 2))
        s.save_snapshot(meta(1, 1), b"x")
    hs = d / "hardstate"
    good = hs.read_bytes()
    hs.write_bytes(good[:4] + struct.pack("<H", 2) + good[6:])
    with pytest.raises(StorageFormatError, match="hard state format version 2"):
        load_rows(d)
    hs.write_bytes(good)

    snap = d / "snapshot"
    good = snap.read_bytes()
    snap.write_bytes(good[:4] + struct.pack("<H", 9) + good[6:])
    with pytest.raises(StorageFormatError, match="snapshot format version 9"):
        load_rows(d)
    snap.write_bytes(good)

    seg = seg_path(d)
    flip(seg, 2, 0x05)  # version byte of the first record: 2 -> 7
    with pytest.raises(StorageFormatError, match="unknown record version 7"):
        load_rows(d)
    flip(seg, 2, 0x05)

    ident = d / "IDENTITY"
    good = ident.read_bytes()
    ident.write_bytes(good.replace(b'"format":2', b'"format":9'))
    with pytest.raises(StorageFormatError, match="identity format 9"):
        FileStorage(d, fsync=False)
    ident.write_bytes(good)
    assert load_rows(d) == rows(make_entries(2, 2))


def test_identity_of_another_node_is_refused_after_restart(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d, fsync=False) as s:
        s.bind("n1", "alpha")
    with FileStorage(d, fsync=False) as s:
        with pytest.raises(Exception, match=r"belongs to node n1, not n2"):
            s.bind("n2", "alpha")
        with pytest.raises(Exception, match=r"belongs to cluster alpha, not beta"):
            s.bind("n1", "beta")
        s.bind("n1", "alpha")
    assert b'"node_id":"n1"' in (d / "IDENTITY").read_bytes()


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with FileStorage(d, fsync=False) as s:
        s.set_hard_state(1, None)
        s.sync()
    (d / "hardstate.tmp").write_bytes(b"half-written")
    (d / "snapshot.3.tmp").write_bytes(b"half-written")
    with FileStorage(d, fsync=False) as s:
        assert s.load().term == 1
    assert sorted(p.name for p in d.iterdir()) == ["LOCK", "hardstate", "log"]


def test_record_shaped_command_does_not_turn_a_torn_tail_into_corruption(tmp_path: Path) -> None:
    # A cached value may itself be a copy of a segment file: its embedded records carry old
    # indices, so they are not "intact data after the damage".
    d = tmp_path / "d"
    build(d, last=3)
    embedded = seg_path(d).read_bytes()
    with FileStorage(d, fsync=False) as s:
        s.load()
        s.append([LogEntry(1, 4, embedded)])
        s.sync()
    seg = seg_path(d)
    seg.write_bytes(seg.read_bytes()[:-5])  # tear the last record; the embedded copy is intact
    assert load_rows(d) == rows(make_entries(1, 3, size=40))


def test_an_identity_of_the_older_layout_is_rewritten_so_older_releases_refuse(
    tmp_path: Path,
) -> None:
    """Format 1 was written by releases that do not list salted segment names: the first bind
    of this release marks the directory (format 2), so such a release refuses it ("unknown
    identity format 2") instead of starting on a log it cannot see."""
    d = tmp_path / "d"
    with FileStorage(d, fsync=False) as s:
        s.bind("n1", "alpha")
    ident = d / "IDENTITY"
    assert b'"format":2' in ident.read_bytes()
    ident.write_bytes(ident.read_bytes().replace(b'"format":2', b'"format":1'))
    with FileStorage(d, fsync=False) as s:
        s.bind("n1")
    assert b'"format":2' in ident.read_bytes()
    assert b'"cluster_id":"alpha"' in ident.read_bytes()
