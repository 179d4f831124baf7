"""MemoryStorage specifics: the explicit model of unsynced writes, and fault injection."""

from __future__ import annotations

import pytest

from raftcache.raft.messages import LogEntry
from raftcache.storage import MemoryStorage, StorageError, StorageFailedError

from .helpers import make_entries, meta, rows


def test_crash_drops_exactly_the_unsynced_writes() -> None:
    s = MemoryStorage()
    s.append(make_entries(1, 5))
    s.set_hard_state(1, "a")
    s.sync()
    s.append(make_entries(6, 7, term=2))  # unsynced
    s.set_hard_state(2, "b")
    assert s.has_unsynced_writes
    assert rows(s.durable().entries) == rows(make_entries(1, 5))
    s.crash()
    assert not s.has_unsynced_writes
    state = s.load()
    assert rows(state.entries) == rows(make_entries(1, 5))
    assert (state.term, state.voted_for) == (1, "a")


def test_discarding_a_suffix_is_durable_at_once_like_file_storage() -> None:
    s = MemoryStorage()
    s.append(make_entries(1, 3))
    s.sync()
    s.append(make_entries(4, 6))  # unsynced
    s.append(make_entries(3, 4, term=2))  # discards 3..6: entries 1..2 are now durable...
    s.crash()  # ...while the new entries 3..4 were not synced
    assert rows(s.load().entries) == rows(make_entries(1, 2))


def test_load_is_a_restart_and_forgets_unsynced_writes() -> None:
    s = MemoryStorage()
    s.append(make_entries(1, 2))
    s.sync()
    s.append(make_entries(3, 3))
    assert rows(s.load().entries) == rows(make_entries(1, 2))
    s.sync()  # nothing left to make durable: entry 3 is gone for good
    assert rows(s.load().entries) == rows(make_entries(1, 2))
    assert s.last_index == 2


def test_sync_after_truncation_shortens_the_durable_log() -> None:
    s = MemoryStorage()
    s.append(make_entries(1, 6))
    s.sync()
    s.append(make_entries(2, 2, term=2))
    s.sync()
    assert rows(s.durable().entries) == rows(make_entries(1, 1) + make_entries(2, 2, term=2))
    assert s.sync_count == 2


def test_stored_entries_are_copies() -> None:
    s = MemoryStorage()
    e = LogEntry(1, 1, b"original")
    s.append([e])
    s.sync()
    e.command = b"mutated by the caller"
    loaded = s.load().entries
    loaded[0].command = b"mutated by the reader"
    assert s.load().entries[0].command == b"original"


def test_fail_poisons_every_call_but_close() -> None:
    s = MemoryStorage()
    s.append(make_entries(1, 1))
    s.fail("disk on fire")
    for call in (s.sync, s.load, lambda: s.append(make_entries(2, 2)), s.load_snapshot):
        with pytest.raises(StorageFailedError, match="disk on fire"):
            call()
    s.close()


def test_closed_storage_refuses_writes() -> None:
    s = MemoryStorage()
    s.close()
    for call in (
        s.sync,
        lambda: s.set_hard_state(1, None),
        lambda: s.save_snapshot(meta(1, 1), b""),
    ):
        with pytest.raises(StorageError, match="closed"):
            call()
    assert s.load().entries == []  # reopened
    s.sync()


def test_reader_bounds() -> None:
    s = MemoryStorage()
    s.save_snapshot(meta(3, 1), b"0123456789")
    reader = s.open_snapshot_reader()
    assert reader is not None
    with reader:
        assert reader.read_at(8, 100) == b"89"
        with pytest.raises(ValueError, match="non-negative"):
            reader.read_at(-1, 2)
