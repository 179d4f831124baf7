"""The watch history: its bounds, what "from version N" returns, and that the changes a state
machine records describe its state exactly (expiry and eviction included)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.cache.commands import (
    DeleteOp,
    GetOp,
    SetOp,
    encode_batch,
    encode_delete,
    encode_expire,
    encode_flush,
    encode_incr,
    encode_set,
    encode_touch,
    encode_ttl,
)
from raftcache.cache.entries import HEADER_SIZE
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.watch import (
    CHANGE_OVERHEAD,
    DELETE,
    EVICT,
    EXPIRE,
    SET,
    Change,
    HistoryCompacted,
    WatchHistory,
    change_size,
)
from tests.cache.helpers import v2_log
from tests.cache.test_restore import restore, source


def sets(*keys: str) -> list[Change]:
    return [(SET, key, b"\0" * HEADER_SIZE + b"v") for key in keys]


def versions(history: WatchHistory, after: int, prefix: str = "") -> list[int]:
    return [version for version, _ in history.read(after, prefix, 10_000).entries]


def test_from_version_n_means_every_change_after_n_in_log_order() -> None:
    history = WatchHistory()
    history.record(1, sets("a"))
    history.record(2, [])  # e.g. a TOUCH: no change, but the version moves
    history.record(3, sets("b", "a"))
    history.record(5, sets("c"))  # 4 never reached the machine (a Raft no-op)
    assert versions(history, 0) == [1, 3, 5]
    assert versions(history, 1) == [3, 5]
    assert versions(history, 3) == [5]
    assert versions(history, 5) == []
    assert versions(history, 99) == []  # not applied yet: nothing, and no error
    read = history.read(0, "a", 10)
    assert read.entries == [(1, tuple(sets("a"))), (3, tuple(sets("a")))]
    assert read.cursor == 5  # scanned to the end, past entries with nothing under "a"


def test_a_bounded_read_resumes_where_it_stopped() -> None:
    history = WatchHistory()
    for index in range(1, 11):
        history.record(index, sets(f"k{index}") if index % 3 else [])
    seen: list[int] = []
    cursor = 0
    while cursor < history.last_index:
        read = history.read(cursor, "", 2)
        seen.extend(version for version, _ in read.entries)
        assert read.cursor > cursor
        cursor = read.cursor
    assert seen == [1, 2, 4, 5, 7, 8, 10]


def test_the_count_bound_drops_the_oldest_entries_and_raises_the_floor() -> None:
    history = WatchHistory(max_changes=3)
    history.record(1, sets("a"))
    history.record(2, sets("b", "c"))
    history.record(3, sets("d"))
    assert (history.floor, history.changes, len(history)) == (1, 3, 2)
    assert versions(history, 1) == [2, 3]
    with pytest.raises(HistoryCompacted) as caught:
        history.read(0)
    assert (caught.value.after, caught.value.floor, caught.value.current) == (0, 1, 3)


def test_the_byte_bound_counts_keys_records_and_overhead_and_keeps_the_newest_entry() -> None:
    big: list[Change] = [(SET, "k", b"x" * 1000)]
    history = WatchHistory(max_bytes=1500)
    assert change_size(big[0]) == 1 + 1000 + CHANGE_OVERHEAD
    history.record(1, big)
    history.record(2, big)
    assert (history.floor, len(history)) == (1, 1)
    huge: list[Change] = [(SET, "h", b"x" * 5000)]
    history.record(3, huge)  # alone over the bound: kept, as the newest entry always is
    assert (history.floor, versions(history, 2)) == (2, [3])
    assert history.bytes == change_size(huge[0])


def test_many_drops_compact_the_backing_lists_without_losing_order() -> None:
    history = WatchHistory(max_changes=10)
    for index in range(1, 5001):
        history.record(index, sets(f"k{index}"))
    assert history.floor == 4990
    assert versions(history, 4990) == list(range(4991, 5001))
    assert len(history._indices) < 3000  # dropped slots were released


def test_reset_forgets_everything_before_it_and_changes_the_epoch() -> None:
    history = WatchHistory()
    history.record(1, sets("a"))
    epoch = history.epoch
    history.reset(40)
    assert (history.floor, history.last_index, len(history)) == (40, 40, 0)
    assert history.epoch == epoch + 1
    with pytest.raises(HistoryCompacted):
        history.read(39)
    history.record(41, sets("b"))
    assert versions(history, 40) == [41]


def test_listeners_hear_every_entry_and_reset() -> None:
    history = WatchHistory()
    calls: list[int] = []

    def listener() -> None:
        calls.append(history.last_index)

    history.subscribe(listener)
    history.record(1, [])
    history.record(2, sets("a"))
    history.reset(9)
    history.unsubscribe(listener)
    history.record(10, sets("b"))
    assert calls == [1, 2, 9]


def test_bounds_are_checked_and_an_out_of_order_entry_resets() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WatchHistory(max_changes=0)
    history = WatchHistory()
    history.record(3, sets("a"))
    history.record(2, sets("b"))  # out of order: never raises on the apply path, resets
    assert (history.floor, history.last_index, len(history), history.resets) == (2, 2, 0, 1)


# --- fed by the state machine ------------------------------------------------------------------


def changes_of(machine: CacheStateMachine) -> list[tuple[int, list[tuple[str, str]]]]:
    history = machine.watch_history
    assert history is not None
    return [
        (version, [(kind, key) for kind, key, _ in changes])
        for version, changes in history.read(history.floor, "", 10_000).entries
    ]


def test_the_machine_records_sets_deletes_expiry_and_eviction() -> None:
    machine = CacheStateMachine(max_keys=2, watch=WatchHistory())
    machine.apply_entry(1, encode_set("a", b"1", now=10.0, ttl=5))
    machine.apply_entry(2, encode_set("b", b"2", now=10.0))
    machine.apply_entry(3, encode_set("c", b"3", now=20.0))  # over max_keys: a is expired
    machine.apply_entry(4, encode_incr("d", now=20.0))  # over again: b is the LRU
    machine.apply_entry(5, encode_delete("c", now=20.0))
    machine.apply_entry(6, encode_delete("zz", now=20.0))  # nothing to delete: no change
    machine.apply_entry(7, encode_set("e", b"5", now=20.0, ttl=1))
    machine.apply_entry(8, encode_delete("e", now=30.0))  # deleted after its expiry
    machine.apply_entry(9, encode_set("f", b"6", now=30.0, ttl=1))
    machine.apply_entry(10, encode_expire(["f", "d"], now=40.0))  # d has no ttl: stays
    machine.apply_entry(11, encode_touch(["d"], now=40.0))
    machine.apply_entry(12, encode_set("x", b"7", now=40.0, if_version=99))  # fails: no change
    machine.apply_entry(13, encode_batch([GetOp("d"), SetOp("g", b"8"), DeleteOp("d")], now=40))
    assert changes_of(machine) == [
        (1, [(SET, "a")]),
        (2, [(SET, "b")]),
        (3, [(SET, "c"), (EXPIRE, "a")]),
        (4, [(SET, "d"), (EVICT, "b")]),
        (5, [(DELETE, "c")]),
        (7, [(SET, "e")]),
        (8, [(EXPIRE, "e")]),
        (9, [(SET, "f")]),
        (10, [(EXPIRE, "f")]),
        (13, [(SET, "g"), (DELETE, "d")]),
    ]
    assert machine.watch_history is not None
    assert machine.watch_history.last_index == 13


def test_a_set_change_carries_the_stored_record() -> None:
    machine = CacheStateMachine(watch=WatchHistory())
    machine.apply_entry(7, encode_set("k", b"value", now=100.0, ttl=20))
    assert machine.watch_history is not None
    [(version, [(kind, key, record)])] = [
        (v, list(c)) for v, c in machine.watch_history.read(0).entries
    ]
    assert (version, kind, key) == (7, SET, "k")
    item = machine.get("k", 0.0)
    assert item is not None
    assert record is not None
    assert record[HEADER_SIZE:] == item.value == b"value"


def test_a_restored_snapshot_restarts_the_history_at_its_index() -> None:
    source = CacheStateMachine()
    for index in range(1, 6):
        source.apply_entry(index, encode_set(f"k{index}", b"v", now=1.0))
    history = WatchHistory()
    machine = CacheStateMachine(watch=history)
    machine.apply_entry(1, encode_set("old", b"v", now=1.0))
    machine.restore(source.snapshot())
    assert (history.floor, history.last_index, len(history), history.resets) == (5, 5, 0, 1)
    machine.apply_entry(6, encode_set("new", b"v", now=1.0))
    assert versions(history, 5) == [6]


def test_a_mutation_the_recorder_does_not_know_resets_instead_of_missing_it() -> None:
    history = WatchHistory()
    machine = CacheStateMachine(watch=history)
    machine.apply_entry(1, encode_set("a", b"v", now=1.0))
    del machine._store._records["a"]  # stands for a future command that bypasses the store API
    machine._store._keys.remove("a")
    machine.apply_entry(2, encode_set("b", b"v", now=1.0))
    assert (history.floor, history.resets) == (2, 1)


KEYS = st.sampled_from(["p:a", "p:b", "p:c", "q:a", "q:b"])
COMMANDS = st.one_of(
    st.builds(
        lambda k, v, t: ("set", k, v, t), KEYS, st.binary(max_size=3), st.none() | st.just(2.0)
    ),
    st.builds(lambda k: ("del", k), KEYS),
    st.builds(lambda k: ("incr", k), KEYS),
    st.builds(lambda ks: ("expire", ks), st.lists(KEYS, max_size=3)),
    st.builds(lambda ks: ("touch", ks), st.lists(KEYS, max_size=3)),
    st.builds(lambda k, j, v: ("batch", k, j, v), KEYS, KEYS, st.binary(max_size=3)),
    st.builds(lambda k, t: ("ttl", k, t), KEYS, st.sampled_from(["persist", "past", 0.5, 3.0])),
    st.builds(lambda p: ("flush", p), st.sampled_from(["", "p:", "q:b"])),
)


def encode(op: tuple[object, ...], now: float) -> bytes:
    kind = op[0]
    if kind == "set":
        return encode_set(op[1], op[2], now=now, ttl=op[3])  # type: ignore[arg-type]
    if kind == "del":
        return encode_delete(op[1], now=now)  # type: ignore[arg-type]
    if kind == "incr":
        return encode_incr(op[1], now=now)  # type: ignore[arg-type]
    if kind == "expire":
        return encode_expire(op[1], now=now)  # type: ignore[arg-type]
    if kind == "touch":
        return encode_touch(op[1], now=now)  # type: ignore[arg-type]
    if kind == "ttl":
        if op[2] == "persist":
            return encode_ttl(op[1], now=now)  # type: ignore[arg-type]
        if op[2] == "past":  # an expiry already over deletes the key
            return encode_ttl(op[1], now=now, at=now - 1)  # type: ignore[arg-type]
        return encode_ttl(op[1], now=now, ttl=op[2])  # type: ignore[arg-type]
    if kind == "flush":
        return encode_flush(op[1], now=now)  # type: ignore[arg-type]
    return encode_batch([SetOp(op[1], op[3]), DeleteOp(op[2])], now=now)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(COMMANDS, max_size=40),
    max_keys=st.none() | st.integers(1, 4),
    prefix=st.sampled_from(["", "p:", "q:a"]),
    split=st.integers(1, 5),
)
def test_replaying_the_changes_rebuilds_the_machine_under_any_prefix(
    ops: list[tuple[object, ...]], max_keys: int | None, prefix: str, split: int
) -> None:
    history = WatchHistory()
    log = v2_log(CacheStateMachine(max_keys=max_keys, watch=history))  # TTL changes, FLUSH
    machine = log.machine
    for op in ops:
        log.apply(encode(op, now=float(log.index + 1)))
    replica: dict[str, bytes] = {}
    cursor, last = 0, 0
    while cursor < history.last_index:  # read in small steps: resuming loses and repeats nothing
        read = history.read(cursor, prefix, split)
        for version, changes in read.entries:
            assert version > last
            last = version
            for kind, key, record in changes:
                assert key.startswith(prefix)
                if kind == SET:
                    assert record is not None
                    replica[key] = record[HEADER_SIZE:]
                else:
                    assert replica.pop(key, None) is not None, (kind, key)
        cursor = read.cursor
    keys, _ = machine.list_keys(prefix, None, 100, -math.inf)  # expired-but-present included
    expected = {}
    for key in keys:
        item = machine.get(key, -math.inf)
        assert item is not None
        expected[key] = item.value
    assert replica == expected


def test_a_replicated_restore_restarts_the_history_at_its_commit() -> None:
    history = WatchHistory()
    log = v2_log(CacheStateMachine(watch=history))
    log.apply(encode_set("before", b"v", now=1.0))
    restore(log, source().snapshot())  # begin, chunks (no change), commit: every key replaced
    assert (history.resets, history.floor, history.last_index) == (1, log.index, log.index)
    with pytest.raises(HistoryCompacted):
        history.read(log.index - 1)
    log.apply(encode_set("after", b"v", now=20.0))
    assert versions(history, log.index - 1) == [log.index]


def test_a_flush_is_a_delete_per_key_or_a_reset_when_larger_than_the_history() -> None:
    history = WatchHistory(max_changes=4)
    log = v2_log(CacheStateMachine(watch=history))
    for key in ("a:1", "a:2", "b:1", "b:2", "b:3"):
        log.apply(encode_set(key, b"v", now=1.0))
    log.apply(encode_flush("a:", now=1.0))
    assert history.read(log.index - 1).entries == [
        (log.index, ((DELETE, "a:1", None), (DELETE, "a:2", None)))
    ]
    for i in range(5):
        log.apply(encode_set(f"c:{i}", b"v", now=1.0))
    log.apply(encode_flush("", now=1.0))  # 8 keys: more than the history holds
    assert (history.resets, history.floor) == (1, log.index)
