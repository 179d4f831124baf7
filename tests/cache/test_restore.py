"""The replicated restore in the state machine: staging, the atomic swap, and its snapshots."""

from __future__ import annotations

import hashlib

import pytest

from raftcache.cache.command_types import Command
from raftcache.cache.commands import decode, encode, encode_expire, encode_incr, encode_set
from raftcache.cache.errors import InvalidCommand
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.restore import RESTORE_IDLE_S
from raftcache.cache.restore_commands import (
    RestoreAbort,
    RestoreBegin,
    RestoreChunk,
    RestoreCommit,
)
from raftcache.cache.results import CommandError, RestoreResult
from raftcache.cache.snapshot import SnapshotFormatError
from tests.cache.helpers import Log, v2_log


def source(n: int = 20) -> CacheStateMachine:
    """A machine with ``n`` keys (every third with a TTL ending at 100 + i) and a counter."""
    log = v2_log()
    for i in range(n):
        ttl = 100.0 + i if i % 3 == 0 else None
        log.apply(encode_set(f"b{i:03d}", f"backup-{i}".encode(), now=0.0, ttl=ttl))
    log.apply(encode_incr("count", 41, now=0.0))
    return log.machine


def begin(snapshot: bytes, now: float = 10.0) -> bytes:
    return encode(RestoreBegin(now, len(snapshot), hashlib.sha256(snapshot).hexdigest(), 7, 2))


def restore(log: Log, snapshot: bytes, chunk: int = 64, now: float = 10.0) -> object:
    """Run a whole restore through ``log``; the commit's result."""
    rid = log.apply(begin(snapshot, now))
    assert type(rid) is int
    for seq, start in enumerate(range(0, len(snapshot), chunk)):
        staged = log.apply(encode(RestoreChunk(now, rid, seq, snapshot[start : start + chunk])))
        assert staged == min(start + chunk, len(snapshot))
    return log.apply(encode(RestoreCommit(now, rid)))


def contents(machine: CacheStateMachine, now: float) -> dict[str, bytes]:
    keys, _ = machine.list_keys("", None, 10_000, now)
    out = {}
    for key in keys:
        item = machine.get(key, now)
        assert item is not None
        out[key] = item.value
    return out


def test_commit_replaces_every_key_at_the_commit_index() -> None:
    snapshot = source().snapshot()
    log = v2_log()
    log.apply(encode_set("old", b"gone", now=0.0))
    log.apply(encode_set("b001", b"overwritten", now=0.0))
    result = restore(log, snapshot)
    assert isinstance(result, RestoreResult), result
    assert result.version == log.index
    assert result.keys == 21
    assert result.expired == 0
    assert result.too_large == 0
    got = contents(log.machine, 10.0)
    assert got == contents(source(), 10.0)
    # Every restored key carries the commit's index as its version (CAS safety).
    versions = {log.machine.get(k, 10.0).version for k in got}  # type: ignore[union-attr]
    assert versions == {log.index}
    # Expiry stays absolute.
    item = log.machine.get("b003", 10.0)
    assert item is not None
    assert item.expires_at == 103.0
    log.machine.check_invariants()


def test_nothing_changes_before_the_commit() -> None:
    snapshot = source().snapshot()
    log = v2_log()
    log.apply(encode_set("old", b"still here", now=0.0))
    rid = log.apply(begin(snapshot))
    assert type(rid) is int
    log.apply(encode(RestoreChunk(10.0, rid, 0, snapshot[:50])))
    assert contents(log.machine, 10.0) == {"old": b"still here"}
    assert log.machine.stats()["restore_staged_bytes"] == 50
    # Writes keep going meanwhile, and the commit replaces them too.
    log.apply(encode_set("during", b"x", now=0.0))
    log.apply(encode(RestoreChunk(10.0, rid, 1, snapshot[50:])))
    assert isinstance(log.apply(encode(RestoreCommit(10.0, rid))), RestoreResult)
    assert "during" not in contents(log.machine, 10.0)
    assert log.machine.stats()["restore_staged_bytes"] == 0


def test_keys_expired_by_the_commit_time_are_not_restored() -> None:
    snapshot = source().snapshot()
    log = v2_log()
    result = restore(log, snapshot, now=110.0)  # b000 (100), b003 (103), b006, b009 expired
    assert isinstance(result, RestoreResult)
    assert result.expired == 4
    assert sorted(contents(log.machine, 110.0)) == sorted(
        k for k in contents(source(), 0.0) if k not in {"b000", "b003", "b006", "b009"}
    )


def test_bounds_apply_to_the_restored_keys() -> None:
    snapshot = source().snapshot()
    log = v2_log(CacheStateMachine(max_keys=5))
    result = restore(log, snapshot)
    assert isinstance(result, RestoreResult)
    assert result.keys == 5
    assert result.evicted == 16
    # The most recently used of the backup survive (its LRU order is kept).
    assert sorted(contents(log.machine, 10.0)) == ["b016", "b017", "b018", "b019", "count"]
    log.machine.check_invariants()


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s[:-1], id="short"),
        pytest.param(lambda s: s[:10] + bytes([s[10] ^ 1]) + s[11:], id="flipped"),
    ],
)
def test_a_commit_with_wrong_bytes_changes_nothing(mangle: object) -> None:
    snapshot = source().snapshot()
    log = v2_log()
    log.apply(encode_set("old", b"kept", now=0.0))
    rid = log.apply(begin(snapshot))
    assert type(rid) is int
    bad: bytes = mangle(snapshot)  # type: ignore[operator]
    log.apply(encode(RestoreChunk(10.0, rid, 0, bad)))
    result = log.apply(encode(RestoreCommit(10.0, rid)))
    assert isinstance(result, CommandError), result
    assert "restore" in result.message
    assert contents(log.machine, 10.0) == {"old": b"kept"}
    assert log.machine.stats()["restore_staged_bytes"] == 0


def test_a_checksummed_non_snapshot_is_refused_at_commit() -> None:
    junk = b"\x81\xa6format\x09"  # a map whose format is 9
    log = v2_log()
    result = restore(log, junk)
    assert isinstance(result, CommandError)
    assert "format" in result.message


def test_out_of_order_excess_and_unknown_chunks_are_refused() -> None:
    snapshot = source().snapshot()
    log = v2_log()
    rid = log.apply(begin(snapshot))
    assert type(rid) is int
    assert isinstance(log.apply(encode(RestoreChunk(10.0, rid, 1, b"x"))), CommandError)
    assert isinstance(log.apply(encode(RestoreChunk(10.0, rid + 5, 0, b"x"))), CommandError)
    too_much = snapshot + b"extra"
    assert isinstance(log.apply(encode(RestoreChunk(10.0, rid, 0, too_much))), CommandError)
    assert isinstance(log.apply(encode(RestoreCommit(10.0, rid + 5))), CommandError)


def test_a_new_begin_replaces_an_abandoned_restore_and_abort_drops_it() -> None:
    snapshot = source().snapshot()
    log = v2_log()
    first = log.apply(begin(snapshot))
    assert type(first) is int
    log.apply(encode(RestoreChunk(10.0, first, 0, snapshot[:10])))
    second = log.apply(begin(snapshot))
    assert type(second) is int
    assert second != first
    assert isinstance(log.apply(encode(RestoreChunk(10.0, first, 1, b"x"))), CommandError)
    assert log.apply(encode(RestoreAbort(10.0, first))) is False
    assert log.apply(encode(RestoreAbort(10.0, second))) is True
    assert isinstance(log.apply(encode(RestoreCommit(10.0, second))), CommandError)


def test_housekeeping_drops_an_idle_restore() -> None:
    snapshot = source().snapshot()
    log = v2_log()
    rid = log.apply(begin(snapshot, now=10.0))
    assert type(rid) is int
    log.apply(encode_expire([], now=10.0 + RESTORE_IDLE_S - 1))
    assert log.machine.stats()["restore_staged_bytes"] == 0  # nothing staged yet, but kept:
    log.apply(encode(RestoreChunk(10.0, rid, 0, snapshot[:5])))
    assert log.machine.stats()["restore_staged_bytes"] == 5
    log.apply(encode_expire([], now=10.0 + RESTORE_IDLE_S))
    assert log.machine.stats()["restore_staged_bytes"] == 0
    assert isinstance(log.apply(encode(RestoreCommit(10.0, rid))), CommandError)


def test_a_snapshot_taken_mid_restore_carries_the_staged_chunks() -> None:
    backup = source().snapshot()
    log = v2_log()
    log.apply(encode_set("old", b"x", now=0.0))
    rid = log.apply(begin(backup))
    assert type(rid) is int
    log.apply(encode(RestoreChunk(10.0, rid, 0, backup[:40])))
    replica = CacheStateMachine()
    replica.restore(log.machine.snapshot())
    assert replica.snapshot() == log.machine.snapshot()
    # The replica finishes the restore exactly like the original.
    for machine in (log.machine, replica):
        machine.apply_entry(log.index + 1, encode(RestoreChunk(10.0, rid, 1, backup[40:])))
        result = machine.apply_entry(log.index + 2, encode(RestoreCommit(10.0, rid)))
        assert isinstance(result, RestoreResult)
    assert replica.snapshot() == log.machine.snapshot()
    # Without a staged restore the snapshot has no trace of it.
    assert b"restore" not in log.machine.snapshot()


def test_a_malformed_staged_restore_in_a_snapshot_is_refused() -> None:
    log = v2_log()
    rid = log.apply(begin(b"abc"))
    assert type(rid) is int
    data = log.machine.snapshot()
    bad = data.replace(b"\xa7restore\x98", b"\xa7restore\x97", 1)  # 8 fields -> 7
    assert bad != data
    with pytest.raises(SnapshotFormatError):
        CacheStateMachine().restore(bad)


def test_restore_commands_round_trip_and_validate() -> None:
    cmds: list[Command] = [
        RestoreBegin(1.5, 10, "ab" * 32, 3, 4),
        RestoreChunk(1.5, 9, 0, b"data"),
        RestoreCommit(1.5, 9),
        RestoreAbort(1.5, 9),
    ]
    for cmd in cmds:
        assert decode(encode(cmd)) == cmd
    with pytest.raises(InvalidCommand):
        RestoreBegin(1.0, 10, "zz" * 32)
    with pytest.raises(InvalidCommand):
        RestoreBegin(1.0, -1, "ab" * 32)
    with pytest.raises(InvalidCommand):
        RestoreChunk(1.0, 1, -1, b"")
