"""Snapshots: exact round trips, consistency of the deferred encoder, format checks."""

from __future__ import annotations

import io
import threading
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from raftcache.cache.commands import (
    GetOp,
    Session,
    encode_batch,
    encode_delete,
    encode_incr,
    encode_set,
    encode_touch,
)
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.snapshot import (
    RUN_BYTES,
    RUN_ENTRIES,
    SnapshotFormatError,
    decode_snapshot,
)
from tests.cache.helpers import Log


def populated(n: int = 50, **bounds: Any) -> Log:
    log = Log(CacheStateMachine(**bounds))
    for i in range(n):
        ttl = 5.0 + i if i % 3 == 0 else None
        log.apply(encode_set(f"k{i:04d}", b"v" * (i % 7), now=float(i), ttl=ttl))
    log.apply(encode_incr("counter", 3, now=1.0, session=Session("c", 1)))
    log.apply(encode_batch([GetOp("k0001")], now=2.0, session=Session("d", 9)))
    log.apply(encode_touch(["k0002", "k0000"], now=3.0))
    log.apply(encode_delete("k0004", now=4.0))
    return log


def test_snapshot_restore_snapshot_is_byte_identical() -> None:
    log = populated(max_keys=40)
    data = log.machine.snapshot()
    other = CacheStateMachine(max_keys=40)
    other.restore(data)
    assert other.snapshot() == data
    assert other.stats() == log.machine.stats()
    assert other.last_index == log.machine.last_index
    other.check_invariants()


def test_restored_lru_order_drives_the_same_evictions() -> None:
    log = populated(max_keys=40)
    other = CacheStateMachine(max_keys=40)
    other.restore(log.machine.snapshot())
    for i in range(10):
        command = encode_set(f"new{i}", b"x", now=100.0)
        assert other.apply_entry(1000 + i, command) == log.machine.apply_entry(1000 + i, command)
    assert other.snapshot() == log.machine.snapshot()
    assert other.stats()["evictions"] > 0


def test_many_runs_round_trip() -> None:
    log = Log()
    for i in range(RUN_ENTRIES * 2 + 17):
        log.apply(encode_set(f"key{i}", b"%d" % i, now=0.0))
    data = log.machine.snapshot()
    assert len(msgpack.unpackb(data)["entries"]) == 3
    other = CacheStateMachine()
    other.restore(data)
    assert other.snapshot() == data
    assert other.get("key2064", 0.0) == log.machine.get("key2064", 0.0)


def test_runs_are_bounded_by_bytes_too() -> None:
    log = Log()
    big = b"x" * (RUN_BYTES // 2 + 1)
    for i in range(5):
        log.apply(encode_set(f"big{i}", big, now=0.0))
    data = log.machine.snapshot()
    assert [len(run) // 2 for run in msgpack.unpackb(data)["entries"]] == [2, 2, 1]
    other = CacheStateMachine()
    other.restore(data)
    assert other.snapshot() == data


def test_streaming_snapshot_and_restore() -> None:
    log = populated(RUN_ENTRIES + 5)
    chunks: list[bytes] = []
    log.machine.prepare_snapshot_stream()(chunks.append)
    assert len(chunks) > 3
    assert b"".join(chunks) == log.machine.snapshot()
    other = CacheStateMachine()
    other.restore_stream(io.BytesIO(b"".join(chunks)))
    assert other.snapshot() == log.machine.snapshot()


def test_restore_replaces_everything() -> None:
    target = populated(10).machine
    source = Log()
    source.apply(encode_set("only", b"1", now=0.0))
    target.restore(source.machine.snapshot())
    assert target.list_keys("", None, 100, 0.0) == (["only"], None)
    assert target.stats()["sessions"] == 0
    assert target.snapshot() == source.machine.snapshot()


def test_the_deferred_encoder_sees_the_state_as_of_prepare() -> None:
    log = populated(300)
    expected = log.machine.snapshot()
    encode = log.machine.prepare_snapshot()
    results: list[bytes] = []
    worker = threading.Thread(target=lambda: results.append(encode()))
    worker.start()
    for i in range(300):  # keep writing while the worker encodes
        log.apply(encode_set(f"k{i:04d}", b"changed", now=500.0))
        log.apply(encode_delete(f"k{(i * 7) % 300:04d}", now=500.0))
    worker.join()
    assert results == [expected]
    assert log.machine.snapshot() != expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not msgpack at all \xc1",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"entries": []}),
        msgpack.packb({"index": 0, "format": 1, "counters": {}, "sessions": [], "entries": []}),
        populated(2).machine.snapshot() + b"\x00",
        populated(2).machine.snapshot()[:-3],
        msgpack.packb({"format": 2, "index": 0, "counters": {}, "sessions": [], "entries": []}),
        msgpack.packb(
            {"format": 1, "index": 0, "counters": {}, "sessions": [], "entries": [["k"]]}
        ),
        msgpack.packb(
            {"format": 1, "index": 0, "counters": {}, "sessions": [], "entries": [["k", b"short"]]},
            use_bin_type=True,
        ),
    ],
)
def test_restore_refuses_what_it_does_not_know_and_keeps_its_state(data: bytes) -> None:
    machine = populated(5).machine
    before = machine.snapshot()
    with pytest.raises(SnapshotFormatError):
        machine.restore(data)
    assert machine.snapshot() == before


def test_format_version_is_in_the_snapshot() -> None:
    snap = decode_snapshot(populated(3).machine.snapshot())
    assert snap.index > 0
    assert set(snap.counters) == {
        "evictions",
        "expirations",
        "bytes_peak",
        "sessions_dropped",
        "digest",
    }
    assert msgpack.unpackb(populated(3).machine.snapshot())["format"] == 1
