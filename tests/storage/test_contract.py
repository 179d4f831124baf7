"""The Storage contract, run against MemoryStorage and FileStorage alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftcache.raft.messages import EntryKind, LogEntry
from raftcache.storage import (
    FileStorage,
    MemoryStorage,
    StorageError,
    StorageIdentityError,
)

from .helpers import AnyStorage, Harness, make_entries, meta, rows


@pytest.fixture(params=["memory", "file"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return Harness(kind=request.param, directory=str(tmp_path / "data"))


@pytest.fixture
def store(harness: Harness) -> Iterator[AnyStorage]:
    s = harness.make()
    yield s
    s.close()


def test_fresh_storage_is_empty(store: AnyStorage) -> None:
    state = store.load()
    assert (state.term, state.voted_for, state.snapshot, state.entries) == (0, None, None, [])


def test_synced_appends_survive_restart(harness: Harness, store: AnyStorage) -> None:
    store.load()
    written = make_entries(1, 20, term=2)
    store.append(written[:5])
    store.append(written[5:])
    store.sync()
    store = harness.restart(store)
    assert rows(store.load().entries) == rows(written)
    store.close()


def test_unsynced_writes_are_lost_on_power_loss(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 3))
    store.set_hard_state(1, "n1")
    store.sync()
    store.append(make_entries(4, 6))
    store.set_hard_state(2, "n2")
    store = harness.power_loss(store)
    state = store.load()
    assert rows(state.entries) == rows(make_entries(1, 3))
    assert (state.term, state.voted_for) == (1, "n1")
    store.close()


def test_overwriting_a_suffix_discards_it(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 10, term=1))
    store.sync()
    store.append(make_entries(4, 6, term=2))
    store.sync()
    expected = make_entries(1, 3, term=1) + make_entries(4, 6, term=2)
    store = harness.restart(store)
    assert rows(store.load().entries) == rows(expected)
    # And appending after the overwritten tail continues from there.
    store.append(make_entries(7, 8, term=2))
    store.sync()
    store = harness.power_loss(store)
    assert rows(store.load().entries) == rows(expected + make_entries(7, 8, term=2))
    store.close()


def test_overwrite_from_the_first_index(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 5, term=1))
    store.append(make_entries(1, 2, term=3))
    store.sync()
    store = harness.power_loss(store)
    assert rows(store.load().entries) == rows(make_entries(1, 2, term=3))
    store.close()


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (make_entries(5, 6), "hole"),
        ([*make_entries(2, 3), *make_entries(5, 5)], "not contiguous"),
    ],
)
def test_bad_batches_are_refused_without_change(
    store: AnyStorage, batch: list[LogEntry], message: str
) -> None:
    store.load()
    store.append(make_entries(1, 3))
    with pytest.raises(ValueError, match=message):
        store.append(batch)
    store.sync()
    assert rows(store.load().entries) == rows(make_entries(1, 3))


def test_append_into_the_snapshot_is_refused(store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 6))
    store.save_snapshot(meta(4, 1), b"s")
    with pytest.raises(ValueError, match="snapshot"):
        store.append(make_entries(4, 5, term=2))
    store.append(make_entries(5, 5, term=2))  # right after the snapshot is fine
    store.sync()
    assert rows(store.load().entries) == rows(make_entries(5, 5, term=2))


def test_empty_append_is_a_no_op(store: AnyStorage) -> None:
    store.load()
    store.append([])
    store.sync()
    assert store.load().entries == []


def test_hard_state_round_trip(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.set_hard_state(7, "n3")
    store.sync()
    store = harness.restart(store)
    state = store.load()
    assert (state.term, state.voted_for) == (7, "n3")
    store.set_hard_state(8, None)
    store.sync()
    store = harness.power_loss(store)
    state = store.load()
    assert (state.term, state.voted_for) == (8, None)
    store.close()


def test_all_entry_kinds_and_sizes_round_trip(harness: Harness, store: AnyStorage) -> None:
    store.load()
    written = [
        LogEntry(1, 1, b"", EntryKind.NOOP),
        LogEntry(1, 2, b'{"v":1}', EntryKind.CONFIG),
        LogEntry(2, 3, bytes(range(256)) * 4096, EntryKind.COMMAND),  # 1 MiB
        LogEntry(2, 4, b"\x00"),
    ]
    store.append(written)
    store.sync()
    store = harness.power_loss(store)
    assert rows(store.load().entries) == rows(written)
    store.close()


def test_snapshot_compacts_the_log(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 30, term=1))
    store.sync()
    store.save_snapshot(meta(17, 1), b"state@17")
    for restart in (False, True):
        if restart:
            store = harness.restart(store)
        state = store.load()
        assert state.snapshot == meta(17, 1)
        assert rows(state.entries) == rows(make_entries(18, 30))
        assert store.load_snapshot() == (meta(17, 1), b"state@17")
    store.close()


def test_snapshot_is_durable_on_return(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 5))
    store.set_hard_state(3, "n2")  # not synced: save_snapshot makes earlier writes durable
    store.save_snapshot(meta(2, 1), b"two")
    store = harness.power_loss(store)
    state = store.load()
    assert (state.term, state.voted_for, state.snapshot) == (3, "n2", meta(2, 1))
    assert rows(state.entries) == rows(make_entries(3, 5))
    assert store.load_snapshot() == (meta(2, 1), b"two")
    store.close()


def test_snapshot_beyond_the_log_drops_it(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 5))
    store.sync()
    store.save_snapshot(meta(40, 4), b"installed")
    assert store.load().entries == []
    with pytest.raises(ValueError, match="hole"):
        store.append(make_entries(42, 42, term=4))
    store.append(make_entries(41, 43, term=4))
    store.sync()
    store = harness.power_loss(store)
    state = store.load()
    assert state.snapshot == meta(40, 4)
    assert rows(state.entries) == rows(make_entries(41, 43, term=4))
    store.close()


def test_snapshot_with_another_term_drops_the_whole_log(
    harness: Harness, store: AnyStorage
) -> None:
    store.load()
    store.append(make_entries(1, 10, term=1))
    store.sync()
    store.save_snapshot(meta(5, 2), b"leader's")  # our entry 5 has term 1: conflicting log
    store = harness.power_loss(store)
    state = store.load()
    assert state.snapshot == meta(5, 2)
    assert state.entries == []
    store.close()


def test_older_snapshot_is_refused_same_index_replaces(store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 10))
    store.save_snapshot(meta(6, 1), b"six")
    with pytest.raises(ValueError, match="older"):
        store.save_snapshot(meta(5, 1), b"five")
    store.save_snapshot(meta(6, 1, "n1"), b"six again")
    assert store.load_snapshot() == (meta(6, 1, "n1"), b"six again")
    assert rows(store.load().entries) == rows(make_entries(7, 10))


def test_successive_snapshots_keep_compacting(harness: Harness, store: AnyStorage) -> None:
    store.load()
    for k in range(1, 6):
        store.append(make_entries(10 * k - 9, 10 * k, term=k))
        store.sync()
        store.save_snapshot(meta(10 * k - 3, k), f"s{k}".encode())
    store = harness.power_loss(store)
    state = store.load()
    assert state.snapshot == meta(47, 5)
    assert rows(state.entries) == rows(make_entries(48, 50, term=5))
    store.close()


def test_bind_records_and_checks_identity(harness: Harness, store: AnyStorage) -> None:
    store.bind("n1")
    store.bind("n1", "c1")  # a recorded None cluster is filled in
    store.bind("n1")  # None matches any cluster
    with pytest.raises(StorageIdentityError, match="n1"):
        store.bind("n2", "c1")
    with pytest.raises(StorageIdentityError, match="cluster c1"):
        store.bind("n1", "c2")
    store = harness.power_loss(store)  # bind is durable on return
    with pytest.raises(StorageIdentityError):
        store.bind("n9")
    store.bind("n1", "c1")
    store.close()


def test_closed_storage_refuses_writes_and_reopens_on_load(
    harness: Harness, store: AnyStorage
) -> None:
    store.load()
    store.append(make_entries(1, 2))
    store.sync()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.append(make_entries(3, 3))
    assert rows(store.load().entries) == rows(make_entries(1, 2))
    store.append(make_entries(3, 3))
    store.sync()
    assert rows(store.load().entries) == rows(make_entries(1, 3))


def test_streaming_snapshot_writer_and_reader(harness: Harness, store: AnyStorage) -> None:
    store.load()
    store.append(make_entries(1, 8))
    data = bytes(range(256)) * 1000
    with store.snapshot_writer(meta(8, 1)) as writer:
        for off in range(0, len(data), 10_000):
            assert writer.size == off
            writer.write(data[off : off + 10_000])
        writer.commit()
    store = harness.power_loss(store)
    reader = store.open_snapshot_reader()
    assert reader is not None
    with reader:
        assert (reader.meta, reader.size) == (meta(8, 1), len(data))
        chunks = [reader.read_at(off, 7_000) for off in range(0, reader.size, 7_000)]
        assert reader.read_at(reader.size, 10) == b""
    assert b"".join(chunks) == data
    assert store.load().entries == []
    store.close()


def test_aborted_snapshot_writer_changes_nothing(store: AnyStorage) -> None:
    store.load()
    assert store.open_snapshot_reader() is None
    store.append(make_entries(1, 4))
    store.save_snapshot(meta(2, 1), b"old")
    with store.snapshot_writer(meta(4, 1)) as writer:
        writer.write(b"new, never committed")

    def fail_midway() -> None:
        with store.snapshot_writer(meta(4, 1)) as writer:
            writer.write(b"new")
            raise RuntimeError("sender went away")

    with pytest.raises(RuntimeError):
        fail_midway()
    assert store.load_snapshot() == (meta(2, 1), b"old")
    assert rows(store.load().entries) == rows(make_entries(3, 4))


def test_memory_and_file_are_both_storages() -> None:
    # The protocol is structural; this keeps both classes honest at type-check time too.
    from raftcache.storage import Storage, StreamingSnapshots

    def accepts(s: Storage, t: StreamingSnapshots) -> None: ...

    m = MemoryStorage()
    accepts(m, m)
    assert isinstance(FileStorage, type)
