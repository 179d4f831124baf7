"""Hashes in the state machine (command version 5): a dict-of-dicts model against the machine
over random op sequences, type errors both ways, TTL, eviction by bytes, snapshots, restore and
the rolling-upgrade rule."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.cache.commands import (
    DeleteOp,
    GetOp,
    SetOp,
    encode_batch,
    encode_delete,
    encode_format,
    encode_incr,
    encode_set,
    encode_ttl,
)
from raftcache.cache.entries import record_is_hash, record_value
from raftcache.cache.formats import UnsupportedCommandVersionError
from raftcache.cache.hashes import HASH_VERSION, HashOp, decode_fields, encode_fields
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode, RestoreResult
from raftcache.cache.watch import WatchHistory
from tests.cache.helpers import Log
from tests.cache.test_restore import restore

NOW = 100.0


def v5_log(machine: CacheStateMachine | None = None) -> Log:
    log = Log(machine)
    assert log.apply(encode_format(HASH_VERSION, now=0.0)) == HASH_VERSION
    return log


def hop(log: Log, *ops: HashOp | GetOp | SetOp | DeleteOp, now: float = NOW) -> Any:
    return log.apply(encode_batch(ops, now=now))


def hset(key: str, **pairs: str) -> HashOp:
    fields = tuple(f.encode() for f in pairs)
    return HashOp(key, "set", fields, tuple(v.encode() for v in pairs.values()))


def fields_of(machine: CacheStateMachine, key: str, now: float = NOW) -> dict[bytes, bytes] | None:
    item = machine.get(key, now)
    if item is None:
        return None
    assert item.kind == "hash"
    return decode_fields(item.value)


def error(result: object) -> ErrorCode:
    assert isinstance(result, CommandError), result
    return result.code


def test_hset_hdel_hincr_and_read() -> None:
    log = v5_log()
    assert hop(log, hset("h", a="1", b="x")) == (2,)
    assert hop(log, hset("h", a="2", c="y")) == (1,)
    assert fields_of(log.machine, "h") == {b"a": b"2", b"b": b"x", b"c": b"y"}
    item = log.machine.get("h", NOW)
    assert item is not None
    assert item.version == log.index
    nx = HashOp("h", "set", (b"a",), (b"9",), nx=True)
    assert hop(log, nx, HashOp("h", "set", (b"d",), (b"4",), nx=True)) == (0, 1)
    assert hop(log, HashOp("h", "incr", (b"a",), by=40)) == (42,)
    assert hop(
        log, HashOp("h", "incrf", (b"n",), by=10.5), HashOp("h", "incrf", (b"n",), by=0.1)
    ) == (
        b"10.5",
        b"10.6",
    )
    assert hop(log, HashOp("h", "read")) == (
        (b"a", b"42", b"b", b"x", b"c", b"y", b"d", b"4", b"n", b"10.6"),
    )
    assert hop(log, HashOp("missing", "read")) == (None,)
    assert hop(log, HashOp("h", "del", (b"a", b"zz", b"b", b"c", b"d"))) == (4,)
    # Removing the last field removes the key, as Redis does.
    assert hop(log, HashOp("h", "del", (b"n",))) == (1,)
    assert log.machine.get("h", NOW) is None
    assert len(log.machine) == 0
    log.machine.check_invariants()


def test_hash_arithmetic_errors_change_nothing() -> None:
    log = v5_log()
    hop(log, hset("h", s="text", big=str(2**63 - 1), f="1.5"))
    before = log.machine.get("h", NOW)
    for op, message in (
        (HashOp("h", "incr", (b"s",), by=1), "hash value is not an integer"),
        (HashOp("h", "incr", (b"f",), by=1), "hash value is not an integer"),
        (HashOp("h", "incr", (b"big",), by=1), "increment or decrement would overflow"),
        (HashOp("h", "incrf", (b"s",), by=1.0), "hash value is not a float"),
        (HashOp("h", "incrf", (b"f",), by=1.7e308), None),
    ):
        if message is None:  # 1.5 + 1.7e308 is finite; twice that is not
            hop(log, op)
            result = hop(log, op)
            message = "increment would produce NaN or Infinity"
        else:
            result = hop(log, hset("h", other="1"), op)
            assert isinstance(result, CommandError)
            assert result.op_index == 1
        assert error(result) is ErrorCode.HASH_VALUE
        assert result.message == message
    assert fields_of(log.machine, "h") is not None
    assert b"other" not in (fields_of(log.machine, "h") or {})
    assert before is not None


def test_wrong_type_both_ways() -> None:
    log = v5_log()
    log.apply(encode_set("s", b"v", now=NOW))
    hop(log, hset("h", a="1"))
    for op in (hset("s", a="1"), HashOp("s", "read"), HashOp("s", "del", (b"a",))):
        assert error(hop(log, op)) is ErrorCode.WRONG_TYPE
    assert error(log.apply(encode_incr("h", now=NOW))) is ErrorCode.WRONG_TYPE
    assert error(hop(log, GetOp("h"))) is ErrorCode.WRONG_TYPE  # GET, GETDEL, SET GET…
    assert error(hop(log, GetOp("h"), DeleteOp("h"))) is ErrorCode.WRONG_TYPE
    assert fields_of(log.machine, "h") == {b"a": b"1"}
    # SET and DEL replace or remove a key of any type, as in Redis.
    assert hop(log, SetOp("h", b"now a string")) == (log.index,)
    item = log.machine.get("h", NOW)
    assert item is not None
    assert item.kind == "string"
    assert item.value == b"now a string"
    hop(log, hset("s2", a="1"))
    assert log.apply(encode_delete("s2", now=NOW)) is True


def test_a_hash_keeps_its_ttl_and_a_ttl_change_keeps_the_hash() -> None:
    log = v5_log()
    hop(log, hset("h", a="1"))
    assert log.apply(encode_ttl("h", ttl=50.0, now=NOW)).changed  # type: ignore[union-attr]
    hop(log, hset("h", b="2"), HashOp("h", "incr", (b"a",), by=1))
    item = log.machine.get("h", NOW)
    assert item is not None
    assert item.kind == "hash"
    assert item.expires_at == NOW + 50
    assert fields_of(log.machine, "h") == {b"a": b"2", b"b": b"2"}
    assert log.machine.get("h", NOW + 50) is None  # expired like any key
    assert hop(log, HashOp("h", "read"), now=NOW + 50) == (None,)
    assert hop(log, hset("h", c="3"), now=NOW + 50) == (1,)  # a fresh hash, no TTL
    item = log.machine.get("h", NOW + 50)
    assert item is not None
    assert item.expires_at is None


def test_eviction_counts_the_hashs_bytes() -> None:
    log = v5_log(CacheStateMachine(max_bytes=300))
    hop(log, hset("h", **{f"f{i}": "x" * 20 for i in range(5)}))
    size = len(encode_fields({f"f{i}".encode(): b"x" * 20 for i in range(5)}))
    assert log.machine.stats()["bytes"] == 1 + size
    assert size == 5 * (2 + 20) + 5 * 2 * 2 + 1  # fields + values, 2 bytes framing each, map
    log.apply(encode_set("s", b"y" * 150, now=NOW))
    assert log.machine.stats()["bytes"] == 1 + size + 1 + 150
    hop(log, hset("h", big="z" * 100))  # over 300 bytes: the LRU key goes (s, then h)
    assert log.machine.get("s", NOW) is None
    assert log.machine.stats()["evictions"] == 1
    too_big = hop(log, hset("h", huge="z" * 400))
    assert error(too_big) is ErrorCode.VALUE_TOO_LARGE
    log.machine.check_invariants()


def test_hash_ops_need_format_5_and_a_capped_node_stops() -> None:
    log = Log()
    log.apply(encode_format(3, now=0.0))
    refused = hop(log, hset("h", a="1"))
    assert error(refused) is ErrorCode.COMMAND_VERSION_NOT_ENABLED
    assert len(log.machine) == 0
    capped = Log(CacheStateMachine(max_command_version=3))
    with pytest.raises(UnsupportedCommandVersionError, match="command format 5"):
        hop(capped, hset("h", a="1"))


def test_snapshots_carry_hashes_and_a_capped_node_refuses_them() -> None:
    log = v5_log()
    hop(log, hset("h", a="1", b="2"))
    log.apply(encode_ttl("h", ttl=30.0, now=NOW))
    log.apply(encode_set("s", b"v", now=NOW))
    snapshot = log.machine.snapshot()
    copy = CacheStateMachine()
    copy.restore(snapshot)
    assert copy.get("h", NOW) == log.machine.get("h", NOW)
    assert copy.digest == log.machine.digest
    assert copy.local_faults == []
    copy.check_invariants()
    with pytest.raises(UnsupportedCommandVersionError, match="snapshot"):
        CacheStateMachine(max_command_version=3).restore(snapshot)


def test_the_digest_covers_hash_contents() -> None:
    a, b = v5_log(), v5_log()
    hop(a, hset("h", a="1", b="2"))
    hop(b, hset("h", a="1", b="3"))
    assert a.machine.digest != b.machine.digest
    hop(b, hset("h", b="2"))
    item_a, item_b = a.machine.get("h", NOW), b.machine.get("h", NOW)
    assert item_a is not None
    assert item_b is not None
    assert item_a.value == item_b.value
    assert item_a.version != item_b.version
    assert a.machine.digest != b.machine.digest  # versions differ: the digest says so


def test_a_restore_of_a_backup_with_hashes_needs_format_5() -> None:
    source = v5_log()
    hop(source, hset("h", a="1"))
    backup = source.machine.snapshot()
    below = Log()
    below.apply(encode_format(3, now=0.0))
    refused = restore(below, backup)
    assert error(refused) is ErrorCode.COMMAND_VERSION_NOT_ENABLED
    assert isinstance(refused, CommandError)
    assert "holds hashes" in refused.message
    assert len(below.machine) == 0
    target = v5_log()
    result = restore(target, backup)
    assert isinstance(result, RestoreResult)
    assert result.keys == 1
    assert fields_of(target.machine, "h") == {b"a": b"1"}
    item = target.machine.get("h", NOW)
    assert item is not None
    assert item.version == result.version


def test_watch_history_records_hash_changes() -> None:
    history = WatchHistory()
    log = v5_log(CacheStateMachine(watch=history))
    hop(log, hset("h", a="1"))
    hop(log, HashOp("h", "del", (b"a",)))
    read = history.read(1)
    [(first, (set_change,)), (second, (delete_change,))] = read.entries
    assert (first, second) == (2, 3)
    assert set_change[:2] == ("set", "h")
    assert delete_change == ("delete", "h", None)
    record = set_change[2]
    assert isinstance(record, bytes)
    assert record_is_hash(record)
    assert decode_fields(record_value(record)) == {b"a": b"1"}


# --- the model ---------------------------------------------------------------------------------

_KEYS = st.sampled_from(["h1", "h2", "s"])
_FIELDS = st.sampled_from([b"a", b"b", b"c"])
_VALUES = st.sampled_from([b"1", b"-7", b"x", b"9223372036854775807", b"2.5"])

_op = st.one_of(
    st.tuples(
        st.just("hset"), _KEYS, st.lists(st.tuples(_FIELDS, _VALUES), min_size=1, max_size=3)
    ),
    st.tuples(st.just("hsetnx"), _KEYS, _FIELDS, _VALUES),
    st.tuples(st.just("hdel"), _KEYS, st.lists(_FIELDS, min_size=1, max_size=3)),
    st.tuples(st.just("hincrby"), _KEYS, _FIELDS, st.integers(-(2**63), 2**63 - 1)),
    st.tuples(st.just("set"), _KEYS, _VALUES),
    st.tuples(st.just("del"), _KEYS),
)


def _model_apply(model: dict[str, Any], op: tuple[Any, ...]) -> Any:
    """The expected outcome (a result, or an ErrorCode) and the model's change."""
    kind, key = op[0], op[1]
    current = model.get(key)
    if kind == "set":
        model[key] = op[2]
        return "ok"
    if kind == "del":
        return model.pop(key, None) is not None
    if isinstance(current, bytes):
        return ErrorCode.WRONG_TYPE
    fields = dict(current or {})
    if kind == "hset":
        added = 0
        for field, value in op[2]:
            added += field not in fields
            fields[field] = value
        result: Any = added
    elif kind == "hsetnx":
        result = int(op[2] not in fields)
        fields.setdefault(op[2], op[3])
    elif kind == "hdel":
        result = sum(fields.pop(f, None) is not None for f in op[2])
    else:
        old = fields.get(op[2], b"0")
        try:
            base = int(old)
        except ValueError:
            return ErrorCode.HASH_VALUE
        if str(base).encode() != old:
            return ErrorCode.HASH_VALUE
        total = base + op[3]
        if not -(2**63) <= total < 2**63:
            return ErrorCode.HASH_VALUE
        fields[op[2]] = str(total).encode()
        result = total
    if fields:
        model[key] = fields
    else:
        model.pop(key, None)
    return result


def _machine_apply(log: Log, op: tuple[Any, ...]) -> Any:
    kind, key = op[0], op[1]
    if kind == "set":
        log.apply(encode_set(key, op[2], now=NOW))
        return "ok"
    if kind == "del":
        return log.apply(encode_delete(key, now=NOW))
    if kind == "hset":
        fields = tuple(f for f, _ in op[2])
        cmd = HashOp(key, "set", fields, tuple(v for _, v in op[2]))
    elif kind == "hsetnx":
        cmd = HashOp(key, "set", (op[2],), (op[3],), nx=True)
    elif kind == "hdel":
        cmd = HashOp(key, "del", tuple(op[2]))
    else:
        cmd = HashOp(key, "incr", (op[2],), by=op[3])
    result = hop(log, cmd)
    return result.code if isinstance(result, CommandError) else result[0]


@settings(max_examples=150, deadline=None)
@given(st.lists(_op, max_size=30))
def test_the_machine_matches_a_dict_of_dicts_model(ops: list[tuple[Any, ...]]) -> None:
    log = v5_log()
    model: dict[str, Any] = {}
    for op in ops:
        assert _machine_apply(log, op) == _model_apply(model, op), op
    for key in ("h1", "h2", "s"):
        item = log.machine.get(key, NOW)
        expected = model.get(key)
        if expected is None:
            assert item is None
        elif isinstance(expected, bytes):
            assert item is not None
            assert item.kind == "string"
            assert item.value == expected
        else:
            assert item is not None
            assert item.kind == "hash"
            assert decode_fields(item.value) == expected
    log.machine.check_invariants()
    copy = CacheStateMachine()
    copy.restore(log.machine.snapshot())
    assert copy.digest == log.machine.digest
    assert not copy.local_faults


def test_the_encoding_is_a_msgpack_map_in_insertion_order() -> None:
    encoded = encode_fields({b"z": b"1", b"a": b"2"})
    assert msgpack.unpackb(encoded, raw=True, strict_map_key=False) == {b"z": b"1", b"a": b"2"}
    assert list(decode_fields(encoded)) == [b"z", b"a"]
