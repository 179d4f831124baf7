"""A torn *unsynced* tail never stops a node; damage to *synced* data always does.

After a power cut the pages of one unsynced multi-page write may reach the disk in any order,
so recovery can meet a bad record followed by intact ones (issue 12, hole 6). Records carry
their sync boundary (``batch_start``, see ``storage/records.py``); the rule under test
(``storage/segments.py``, docs/storage.md "Recovery"): with B the largest ``batch_start`` of an
intact record after the first bad one at D, D ≥ B is a torn unsynced tail — truncated, with a
WARNING — and D < B is damage to synced data — ``StorageCorruptError`` naming file and offset.

Power loss is ``CrashDisk.crash(pages=...)``: any subset of the dirty 4 KiB pages, and any of
the sizes the file had since its last fsync, survive (``faultfs``). The sweep is seeded:
``RAFTCACHE_TORN_SEEDS=5000`` runs more seeds, and a failure names the seed that replays it.

Only records this writer wrote can prove a boundary: every segment has a random salt (in its
name) mixed into its records' CRCs, so record-shaped bytes a client puts in a value — with a
plain CRC, any index, any ``batch_start`` — are not records when its write is torn (f).
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftcache.raft.messages import LogEntry
from raftcache.storage import FileStorage, StorageCorruptError
from raftcache.storage.codec import pack
from raftcache.storage.records import encode_batch, scan, scan_after

from .faultfs import PAGE_SIZE, CrashDisk, LosePages, RandomPages, RecordingOps, persist_pages
from .helpers import make_entries, rows, seg_files, seg_salt, seg_start

SEG_LOGGER = "raftcache.storage.segments"


def big(first: int, last: int, size: int = 3000, term: int = 1) -> list[LogEntry]:
    """Entries large enough that a batch of a few spans several pages."""
    return make_entries(first, last, term=term, size=size)


def only_segment(d: Path) -> Path:
    (name,) = seg_files(str(d))
    return d / "log" / name


def load(d: Path, disk: CrashDisk | None = None) -> list[LogEntry]:
    with FileStorage(d, file_ops=disk, fsync=disk is not None) as s:
        return s.load().entries


def synced_then_unsynced(d: Path, disk: CrashDisk) -> int:
    """Entries 1..3 synced, then 4..7 (≈12 KiB, four pages) written in one batch, not synced.
    Returns the synced size of the segment: where the unsynced batch begins."""
    with FileStorage(d, file_ops=disk) as s:
        s.load()
        s.append(make_entries(1, 3))
        s.sync()
        boundary = os.path.getsize(s.segment_paths[-1])
        s.append(big(4, 7))
    return boundary


# -- (a) the hole: pages of one unsynced batch landing out of order ---------------------------


def test_pages_of_an_unsynced_batch_landing_out_of_order_do_not_stop_the_node(
    tmp_path: Path,
) -> None:
    # Page 0 (holding the synced records and the start of the batch) comes back as synced;
    # pages 1..3 (the rest of the batch) reach the disk: a bad record, then intact ones.
    disk = CrashDisk()
    boundary = synced_then_unsynced(tmp_path, disk)
    policy = LosePages({0})
    disk.crash(pages=policy)
    assert (only_segment(tmp_path).name, 0) in policy.seen
    data = only_segment(tmp_path).read_bytes()
    assert data[boundary : boundary + 2] == b"\0\0"  # the batch's first record is gone...
    assert big(7, 7)[0].command in data  # ...while a later one of the same batch survived
    assert rows(load(tmp_path, disk)) == rows(make_entries(1, 3))  # starts; synced data kept
    with FileStorage(tmp_path, file_ops=disk) as s:  # and carries on writing
        s.load()
        s.append(make_entries(4, 5, term=2))
        s.sync()
    disk.crash()
    assert rows(load(tmp_path, disk)) == rows(make_entries(1, 3) + make_entries(4, 5, term=2))


# -- (d) what is logged ----------------------------------------------------------------------


def test_truncating_a_torn_tail_logs_a_warning_with_offset_bytes_and_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = CrashDisk()
    boundary = synced_then_unsynced(tmp_path, disk)
    disk.crash(pages=LosePages({0}))
    seg = only_segment(tmp_path)
    size = seg.stat().st_size
    with caplog.at_level(logging.WARNING, logger=SEG_LOGGER):
        assert rows(load(tmp_path, disk)) == rows(make_entries(1, 3))
    (rec,) = [r for r in caplog.records if r.name == SEG_LOGGER]
    assert rec.levelno == logging.WARNING
    msg = rec.getMessage()
    assert seg.name in msg
    assert f"torn unsynced tail at offset {boundary}" in msg
    assert f"truncating {size - boundary} bytes" in msg
    assert "2 intact record(s) after it (indexes 6..7)" in msg
    assert f"proven synced only up to offset {boundary}" in msg
    assert seg.stat().st_size == boundary


def test_a_torn_tail_with_no_intact_record_after_it_is_logged_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = CrashDisk()
    boundary = synced_then_unsynced(tmp_path, disk)
    disk.crash(pages=LosePages({1, 2, 3}))  # only the first page of the batch landed
    with caplog.at_level(logging.WARNING, logger=SEG_LOGGER):
        assert rows(load(tmp_path, disk)) == rows(make_entries(1, 3) + big(4, 4))
    cut = only_segment(tmp_path).stat().st_size  # after entry 4, which fit in page 0
    assert cut > boundary
    (rec,) = [r for r in caplog.records if r.name == SEG_LOGGER]
    assert f"torn unsynced tail at offset {cut}" in rec.getMessage()
    assert "intact record" not in rec.getMessage()


# -- (c) damage to synced data is refused -----------------------------------------------------


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_damage_to_synced_data_before_a_torn_tail_is_refused(tmp_path: Path) -> None:
    # The torn batch's surviving records were written after the file was synced up to
    # ``boundary``: a bad byte before it is not a torn write, whatever follows.
    disk = CrashDisk()
    boundary = synced_then_unsynced(tmp_path, disk)
    disk.crash(pages=LosePages({0}))
    seg = only_segment(tmp_path)
    flip(seg, 25)  # inside record 1 (34 bytes), synced long ago
    with pytest.raises(StorageCorruptError) as info:
        load(tmp_path, disk)
    msg = str(info.value)
    assert f"{seg} at offset 0:" in msg
    assert f"synced up to offset {boundary}" in msg
    assert "refusing to start" in msg
    assert seg.stat().st_size > boundary  # nothing was truncated


def test_damage_to_an_earlier_synced_batch_is_refused(tmp_path: Path) -> None:
    with FileStorage(tmp_path, fsync=False) as s:
        s.load()
        ends = []
        for first in (1, 4, 7):  # three sync batches of three big entries
            s.append(big(first, first + 2))
            s.sync()
            ends.append(os.path.getsize(s.segment_paths[-1]))
    seg = only_segment(tmp_path)
    bad = ends[0] + 100  # inside batch 2 (entries 4..6); batch 3 proves it synced
    flip(seg, bad)
    with pytest.raises(StorageCorruptError, match=rf"{seg.name} at offset {ends[0]}: CRC") as info:
        load(tmp_path)
    assert f"synced up to offset {ends[1]}" in str(info.value)


def test_damage_in_the_last_synced_batch_with_nothing_after_it_is_the_residual_case(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Documented blind spot: only a later batch proves a batch synced. Damage to the last
    # synced batch with no intact later record looks like a torn write of it: truncated, with
    # the same WARNING (this node loses those entries; the other replicas hold them).
    with FileStorage(tmp_path, fsync=False) as s:
        s.load()
        s.append(big(1, 3))
        s.sync()
        end = os.path.getsize(s.segment_paths[-1])
        s.append(big(4, 6))
        s.sync()
    flip(only_segment(tmp_path), end + 100)
    with caplog.at_level(logging.WARNING, logger=SEG_LOGGER):
        assert rows(load(tmp_path)) == rows(big(1, 3))
    assert f"torn unsynced tail at offset {end}" in caplog.text


# -- (b) the sweep: any subset of unsynced pages ----------------------------------------------


SEEDS = int(os.environ.get("RAFTCACHE_TORN_SEEDS", "1200"))  # ~4 s on the 2-core VM
CHUNKS = 6


@pytest.fixture
def scratch() -> Iterator[str]:
    # tmpfs when there is one: the disk is simulated anyway (as in test_stateful).
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    d = tempfile.mkdtemp(prefix="raftcache-torn-", dir=shm)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check(recovered: list[LogEntry], written: list[LogEntry], synced: int, where: str) -> None:
    assert len(recovered) >= synced, f"{where}: lost synced entries"
    assert rows(recovered) == rows(written[: len(recovered)]), f"{where}: not a prefix"


def one_run(seed: int, directory: str) -> None:
    """Rounds of random sync batches (appends, some overwriting), a random sync pattern and a
    power loss keeping random pages; after each, recovery must start with a prefix of what was
    written that holds everything synced."""
    rng = random.Random(seed)
    directory = os.path.join(directory, str(seed))
    disk = CrashDisk()
    segment_size = rng.choice([6000, 20_000, 1 << 20])
    written: list[LogEntry] = []  # the log as written (index k+1 at position k)
    synced = 0  # how many of ``written`` are durable
    term = 1
    p_sync = rng.choice([0.3, 0.6, 0.9])  # how often a batch is synced before the next
    for rnd in range(4):
        where = f"seed {seed}, round {rnd}"
        with FileStorage(directory, segment_size=segment_size, file_ops=disk) as s:
            try:
                recovered = s.load().entries
            except StorageCorruptError as exc:
                raise AssertionError(f"{where}: refused to start: {exc}") from exc
            check(recovered, written, synced, where)
            written, synced = recovered, len(recovered)  # recovery made them durable
            for _ in range(rng.randint(1, 6)):  # sync batches
                for _ in range(rng.randint(1, 3)):  # appends in one batch
                    first = len(written) + 1
                    if written and rng.random() < 0.15:
                        first = rng.randint(max(1, len(written) - 4), len(written))
                        term += 1
                    batch = [
                        LogEntry(term, i, rng.randbytes(rng.choice([0, 30, 700, 2500, 6000])))
                        for i in range(first, first + rng.randint(1, 4))
                    ]
                    s.append(batch)
                    if first <= len(written):  # a discarded suffix is durable at once...
                        synced = first - 1  # ...with everything before it (the contract)
                    written = written[: first - 1] + batch
                if rng.random() < p_sync:
                    s.sync()
                    synced = len(written)
        disk.crash(pages=RandomPages(rng, p_new=rng.choice([0.2, 0.5, 0.8])))
    with FileStorage(directory, segment_size=segment_size, file_ops=disk) as s:
        check(s.load().entries, written, synced, f"seed {seed}, last")
    shutil.rmtree(directory)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_any_subset_of_unsynced_pages_recovers_a_prefix_holding_all_synced_entries(
    chunk: int, scratch: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=SEG_LOGGER)  # thousands of expected warnings
    for seed in range(chunk, SEEDS, CHUNKS):
        one_run(seed, scratch)


# -- (e) group commit is unchanged ------------------------------------------------------------


def test_one_fsync_per_sync_batch_and_two_at_recovery(tmp_path: Path) -> None:
    ops = RecordingOps(real_fsync=False)
    s = FileStorage(tmp_path, segment_size=40_000, file_ops=ops)
    s.load()
    ops.clear()
    created = 0
    for k in range(30):  # multi-page batches of several appends each
        for j in range(3):
            first = s.last_index + 1
            before = len(s.segment_paths)
            s.append(big(first, first + 1, size=1500 + 100 * j))
            created += len(s.segment_paths) - before
        ops_before = len(ops.ops)
        s.sync()
        synced_ops = [(o.kind, o.name) for o in ops.ops[ops_before:]]
        seg = os.path.basename(s.segment_paths[-1])
        assert [op for op in synced_ops if op[0] == "fsync"] == [("fsync", seg)], k
    assert created >= 2  # rotation happened: each new segment costs one directory fsync
    assert len(ops.names("fsync")) == 30
    assert len(ops.names("fsync_dir")) == created
    assert len(ops.names("write")) == 90  # one pwrite per append
    s.close()
    ops.clear()
    s = FileStorage(tmp_path, segment_size=40_000, file_ops=ops)
    s.load()  # recovery makes what it returns durable: the last segment, then log/
    last = os.path.basename(s.segment_paths[-1])
    assert ops.names("fsync", "fsync_dir", "write") == [("fsync", last), ("fsync_dir", "log")]
    s.close()


# -- version-1 segments (written before batch_start) ------------------------------------------


def v1_records(entries: list[LogEntry]) -> tuple[bytes, list[int]]:
    """Entries encoded as format-1 records (12-byte header, no batch_start), by hand."""
    out, offsets = b"", []
    for e in entries:
        payload = pack([e.term, e.index, int(e.kind), e.command])
        prefix = struct.pack("<2sBBI", b"RC", 1, 0, len(payload))
        offsets.append(len(out))
        out += prefix + struct.pack("<I", zlib.crc32(payload, zlib.crc32(prefix))) + payload
    return out, offsets


def write_v1(d: Path, entries: list[LogEntry]) -> tuple[Path, list[int]]:
    (d / "log").mkdir(parents=True)
    data, offsets = v1_records(entries)
    seg = d / "log" / f"{entries[0].index:020d}.seg"
    seg.write_bytes(data)
    return seg, offsets


def test_a_version_1_segment_still_loads_and_takes_version_2_appends(tmp_path: Path) -> None:
    seg, _ = write_v1(tmp_path, make_entries(1, 5))
    old_size = seg.stat().st_size
    assert rows(load(tmp_path)) == rows(make_entries(1, 5))
    with FileStorage(tmp_path, fsync=False) as s:
        s.load()
        s.append(make_entries(6, 7))
        s.sync()
    data = seg.read_bytes()
    assert data[2] == 1  # v1 records...
    assert data[old_size + 2] == 2  # ...then v2 ones
    assert rows(load(tmp_path)) == rows(make_entries(1, 7))


def test_a_version_1_segment_keeps_the_version_1_rule(tmp_path: Path) -> None:
    seg, offsets = write_v1(tmp_path / "mid", make_entries(1, 5))
    flip(seg, offsets[2] + 14)  # record 3, followed by intact v1 records: corruption
    with pytest.raises(StorageCorruptError, match=f"{seg.name} at offset {offsets[2]}.*version-1"):
        load(tmp_path / "mid")
    seg, offsets = write_v1(tmp_path / "end", make_entries(1, 5))
    seg.write_bytes(seg.read_bytes()[:-3])  # a torn final record: truncated
    assert rows(load(tmp_path / "end")) == rows(make_entries(1, 4))
    assert seg.stat().st_size == offsets[4]


def test_a_torn_version_2_tail_after_version_1_records_is_truncated(tmp_path: Path) -> None:
    seg, _ = write_v1(tmp_path, make_entries(1, 3))
    with FileStorage(tmp_path, fsync=False) as s:
        s.load()
        s.append(make_entries(4, 4))
        s.sync()
        boundary = seg.stat().st_size
        s.append(big(5, 8))  # unsynced, several pages
    size = seg.stat().st_size
    # As if only the batch's first page was lost (the file kept its new size).
    seg.write_bytes(
        persist_pages(seg.read_bytes()[:boundary], seg.read_bytes(), size, [False] + [True] * 9)
    )
    assert rows(load(tmp_path)) == rows(make_entries(1, 4))
    assert seg.stat().st_size == boundary


# -- the crash model itself -------------------------------------------------------------------


def test_the_page_model_keeps_any_subset_and_any_recent_size(tmp_path: Path) -> None:
    synced = b"s" * 5000
    latest = synced + b"n" * 9000  # pages 1..3 dirty (page 1 partly synced)
    assert persist_pages(synced, latest, len(latest), [True] * 4) == latest
    none = persist_pages(synced, latest, len(latest), [False] * 4)
    assert none == synced + bytes(9000)  # extended, but none of the new pages: zeros
    mixed = persist_pages(synced, latest, len(latest), [False, False, True, False])
    assert mixed[: 2 * PAGE_SIZE] == none[: 2 * PAGE_SIZE]
    assert mixed[2 * PAGE_SIZE : 3 * PAGE_SIZE] == latest[2 * PAGE_SIZE : 3 * PAGE_SIZE]
    assert persist_pages(synced, latest, len(synced), [True] * 4) == synced  # old size kept

    outcomes = set()
    for seed in range(40):
        disk = CrashDisk()
        path = str(tmp_path / f"f{seed}")
        fd = disk.open(path, os.O_WRONLY | os.O_CREAT)
        disk.pwrite(fd, synced, 0)
        disk.fsync(fd)
        disk.fsync_dir(str(tmp_path))
        disk.pwrite(fd, b"n" * 9000, 5000)
        disk.close(fd)
        disk.crash(pages=RandomPages(random.Random(seed)))
        data = Path(path).read_bytes()
        assert data[:4096] == synced[:4096]  # a clean page is never touched
        outcomes.add((len(data), data[2 * PAGE_SIZE : 2 * PAGE_SIZE + 1]))
    assert {5000, 14000} <= {n for n, _ in outcomes}  # both sizes come back
    assert {b"n", b"\0"} <= {page for n, page in outcomes if n == 14000}


# -- (f) client bytes cannot forge a record (hostile review: forged records in a torn value) ---


def forged_v1(index: int) -> bytes:
    """A record-shaped string with a plain (unsalted) CRC, as a client can put in a value."""
    return v1_records([LogEntry(1, index, b"forged")])[0]


def forged_v2(index: int, batch_start: int) -> bytes:
    payload = pack([1, index, 0, b"forged"])
    prefix = struct.pack("<2sBBIQ", b"RC", 2, 0, len(payload), batch_start)
    return prefix + struct.pack("<I", zlib.crc32(payload, zlib.crc32(prefix))) + payload


def torn_value_with(d: Path, make_forgery: Callable[[int], bytes]) -> tuple[int, int]:
    """Entries 1..3 synced; then one unsynced SET whose value (≈9 KiB, three pages) ends with
    ``make_forgery(boundary)``; then a power cut that loses the batch's first page only, so its
    record is damaged at the boundary while the forged bytes reach the disk. Returns the
    boundary and the offset of the forged bytes in the segment."""
    disk = CrashDisk()
    with FileStorage(d, file_ops=disk) as s:
        s.load()
        s.append(make_entries(1, 3))
        s.sync()
        boundary = os.path.getsize(s.segment_paths[-1])
        forgery = make_forgery(boundary)
        s.append([LogEntry(1, 4, b"v" * 9000 + forgery)])
    disk.crash(pages=LosePages({0}))
    data = only_segment(d).read_bytes()
    assert data[boundary : boundary + 2] == b"\0\0"  # the value's record is damaged...
    at = data.find(forgery)
    assert at > PAGE_SIZE  # ...and the forged bytes survived, after it
    # Without the salt, these bytes would pass as an intact record after the damage.
    (rec,) = scan_after(data, boundary, 4, None).records
    assert rec.offset == at
    return boundary, at


def assert_torn_tail_truncated(d: Path, boundary: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=SEG_LOGGER):
        try:
            got = load(d)
        except StorageCorruptError as exc:
            pytest.fail(f"a torn unsynced tail was refused because of client bytes: {exc}")
    assert rows(got) == rows(make_entries(1, 3))
    assert f"torn unsynced tail at offset {boundary}" in caplog.text
    assert "intact record" not in caplog.text  # the forgery is not a record
    assert only_segment(d).stat().st_size == boundary
    with FileStorage(d, fsync=False) as s:  # and the node carries on writing
        s.load()
        s.append(make_entries(4, 5, term=2))
        s.sync()
    assert rows(load(d)) == rows(make_entries(1, 3) + make_entries(4, 5, term=2))


def test_a_forged_v1_record_inside_a_torn_value_does_not_stop_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before salts: an intact v1 record after the damage invoked the v1 rule (corruption).
    boundary, _ = torn_value_with(tmp_path, lambda _: forged_v1(10**12))
    assert_torn_tail_truncated(tmp_path, boundary, caplog)


def test_a_forged_v2_record_inside_a_torn_value_does_not_stop_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before salts: its batch_start, after the damage and before itself, "proved" the damaged
    # bytes synced (D < B: "synced data is damaged").
    boundary, at = torn_value_with(tmp_path, lambda b: forged_v2(10**12, b + 1000))
    assert boundary < boundary + 1000 <= at
    assert_torn_tail_truncated(tmp_path, boundary, caplog)


def test_new_segments_carry_a_salt_in_their_name_and_in_every_crc(tmp_path: Path) -> None:
    with FileStorage(tmp_path, fsync=False, segment_size=200) as s:
        s.load()
        for i in range(1, 13):
            s.append(make_entries(i, i, size=40))
            s.sync()
    names = seg_files(str(tmp_path))
    assert len(names) >= 3
    salts = set()
    for name in names:
        assert re.fullmatch(r"\d{20}-[0-9a-f]{16}\.seg", name), name
        start, salt = seg_start(name), seg_salt(name)
        assert salt is not None
        salts.add(salt)
        data = (tmp_path / "log" / name).read_bytes()
        assert scan(data, name, start, salt).valid_size == len(data)
        assert scan(data, name, start, None).reason == "CRC mismatch"  # not the plain CRC
    assert len(salts) == len(names)


def old_v2_segment(d: Path, entries: list[LogEntry]) -> Path:
    """A segment as written before salts: named ``<index>.seg``, v2 records, plain CRC."""
    (d / "log").mkdir(parents=True)
    seg = d / "log" / f"{entries[0].index:020d}.seg"
    seg.write_bytes(encode_batch(entries, 0)[0])
    return seg


def test_an_unsalted_segment_still_loads_and_takes_appends(tmp_path: Path) -> None:
    seg = old_v2_segment(tmp_path, make_entries(1, 3, size=40))
    assert rows(load(tmp_path)) == rows(make_entries(1, 3, size=40))
    with FileStorage(tmp_path, fsync=False, segment_size=400) as s:
        s.load()
        for i in range(4, 16):  # appends to the old segment until it rotates
            s.append(make_entries(i, i, size=40))
            s.sync()
    names = seg_files(str(tmp_path))
    assert names[0] == seg.name  # same name, same file
    data = seg.read_bytes()
    res = scan(data, seg.name, 1, None)  # still the plain CRC throughout
    assert res.valid_size == len(data)
    assert len(res.entries) > 3
    assert len(names) > 1  # the segments after it are new ones: salted
    assert [seg_salt(n) is not None for n in names] == [False] + [True] * (len(names) - 1)
    assert rows(load(tmp_path)) == rows(make_entries(1, 15, size=40))


def test_a_torn_tail_of_an_unsalted_segment_is_still_truncated(tmp_path: Path) -> None:
    seg = old_v2_segment(tmp_path, make_entries(1, 3))
    boundary = seg.stat().st_size
    with FileStorage(tmp_path, fsync=False) as s:
        s.load()
        s.append(big(4, 7))  # unsynced, several pages, into the old segment
    latest = seg.read_bytes()
    seg.write_bytes(persist_pages(latest[:boundary], latest, len(latest), [False] + [True] * 9))
    assert rows(load(tmp_path)) == rows(make_entries(1, 3))
    assert seg.stat().st_size == boundary


def test_in_an_unsalted_segment_a_v1_record_after_a_v2_record_never_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The minimum rule for segments without salt: the new writer never writes v1, so v1-shaped
    # bytes after a v2 record (here inside a torn value) cannot invoke the v1 rule.
    seg, _ = write_v1(tmp_path, make_entries(1, 2))
    with FileStorage(tmp_path, fsync=False) as s:
        s.load()
        s.append(make_entries(3, 3))  # a v2 record after the v1 ones
        s.sync()
        boundary = seg.stat().st_size
        s.append([LogEntry(1, 4, b"v" * 9000 + forged_v1(10**12))])
    latest = seg.read_bytes()
    seg.write_bytes(persist_pages(latest[:boundary], latest, len(latest), [False, True, True]))
    data = seg.read_bytes()
    assert data[boundary] == 0
    assert forged_v1(10**12) in data
    with caplog.at_level(logging.WARNING, logger=SEG_LOGGER):
        assert rows(load(tmp_path)) == rows(make_entries(1, 3))
    assert f"torn unsynced tail at offset {boundary}" in caplog.text
    assert seg.stat().st_size == boundary
