"""Unit tests of the cache state machine: each command, its results and its error results."""

from __future__ import annotations

import pytest

from raftcache.cache.commands import (
    DeleteOp,
    GetOp,
    SetOp,
    encode_batch,
    encode_decr,
    encode_delete,
    encode_expire,
    encode_incr,
    encode_set,
    encode_touch,
)
from raftcache.cache.entries import Item
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode, IncrResult
from raftcache.cache.snapshot import decode_snapshot
from tests.cache.helpers import Log


def error_code(result: object) -> ErrorCode:
    assert isinstance(result, CommandError), result
    return result.code


def test_set_returns_the_log_index_as_version() -> None:
    log = Log()
    assert log.apply(encode_set("k", b"v1", now=10.0), gap=5) == 5
    assert log.machine.get("k", 10.0) == Item(b"v1", 5, None)
    assert log.apply(encode_set("k", b"v2", now=10.0), gap=2) == 7
    assert log.machine.get("k", 10.0) == Item(b"v2", 7, None)


def test_ttl_hides_the_key_at_expires_at_judged_by_the_readers_now() -> None:
    log = Log()
    log.apply(encode_set("k", b"v", now=100.0, ttl=5.0))
    assert log.machine.get("k", 104.999) == Item(b"v", 1, 105.0)
    assert log.machine.get("k", 105.0) is None
    assert log.machine.list_keys("", None, 10, 105.0) == ([], None)
    # Still stored (only EXPIRE removes it) until then.
    assert log.machine.stats()["keys"] == 1


def test_set_without_ttl_clears_an_earlier_ttl() -> None:
    log = Log()
    log.apply(encode_set("k", b"v", now=0.0, ttl=1.0))
    log.apply(encode_set("k", b"w", now=0.5))
    assert log.machine.get("k", 1e9) == Item(b"w", 2, None)


def test_compare_and_set() -> None:
    log = Log()
    v1 = log.version(encode_set("k", b"a", now=0.0))
    assert log.apply(encode_set("k", b"b", now=0.0, if_version=v1)) == 2
    failed = log.apply(encode_set("k", b"c", now=0.0, if_version=v1))
    assert isinstance(failed, CommandError)
    assert (failed.code, failed.version) == (ErrorCode.PRECONDITION_FAILED, 2)
    assert log.machine.get("k", 0.0) == Item(b"b", 2, None)


def test_if_version_zero_and_if_absent_mean_missing() -> None:
    log = Log()
    assert log.apply(encode_set("k", b"a", now=0.0, if_version=0)) == 1
    failed = log.apply(encode_set("k", b"b", now=0.0, if_absent=True))
    assert isinstance(failed, CommandError)
    assert (failed.code, failed.version) == (ErrorCode.PRECONDITION_FAILED, 1)
    missing = log.apply(encode_set("other", b"b", now=0.0, if_version=7))
    assert isinstance(missing, CommandError)
    assert missing.version == 0


def test_an_expired_key_is_missing_for_writes() -> None:
    log = Log()
    log.apply(encode_set("k", b"a", now=0.0, ttl=1.0))
    assert log.apply(encode_set("k", b"b", now=2.0, if_absent=True)) == 2
    assert log.machine.stats()["expirations"] == 1  # the expired entry was replaced
    log.apply(encode_set("n", b"41", now=0.0, ttl=1.0))
    assert log.apply(encode_incr("n", 1, now=5.0)) == IncrResult(1, 4)


def test_delete() -> None:
    log = Log()
    log.apply(encode_set("k", b"a", now=0.0))
    assert log.apply(encode_delete("k", now=0.0)) is True
    assert log.apply(encode_delete("k", now=0.0)) is False
    assert log.machine.get("k", 0.0) is None


def test_delete_honours_if_version() -> None:
    log = Log()
    log.apply(encode_set("k", b"a", now=0.0))
    failed = log.apply(encode_delete("k", now=0.0, if_version=9))
    assert isinstance(failed, CommandError)
    assert (failed.code, failed.version) == (ErrorCode.PRECONDITION_FAILED, 1)
    assert log.apply(encode_delete("k", now=0.0, if_version=1)) is True


def test_delete_of_an_expired_key_reports_false_and_counts_an_expiration() -> None:
    log = Log()
    log.apply(encode_set("k", b"a", now=0.0, ttl=1.0))
    assert log.apply(encode_delete("k", now=1.0)) is False
    stats = log.machine.stats()
    assert (stats["keys"], stats["expirations"]) == (0, 1)


def test_incr_and_decr() -> None:
    log = Log()
    assert log.apply(encode_incr("n", now=0.0)) == IncrResult(1, 1)
    assert log.apply(encode_incr("n", 41, now=0.0)) == IncrResult(42, 2)
    assert log.apply(encode_decr("n", 50, now=0.0)) == IncrResult(-8, 3)
    item = log.machine.get("n", 0.0)
    assert item is not None
    assert item.value == b"-8"


def test_incr_keeps_the_keys_expiry() -> None:
    log = Log()
    log.apply(encode_set("n", b"1", now=0.0, ttl=10.0))
    log.apply(encode_incr("n", now=1.0))
    assert log.machine.get("n", 1.0) == Item(b"2", 2, 10.0)


@pytest.mark.parametrize(
    "value", [b"x", b"", b"1.5", b" 1", b"1_000", b"+1", b"\xd9\xa3", b"1" * 33]
)
def test_incr_of_a_non_counter(value: bytes) -> None:
    log = Log()
    log.apply(encode_set("k", value, now=0.0))
    assert error_code(log.apply(encode_incr("k", now=0.0))) is ErrorCode.NOT_A_COUNTER
    assert log.machine.get("k", 0.0) == Item(value, 1, None)


def test_incr_of_a_stored_value_outside_int64_is_not_a_counter() -> None:
    log = Log()
    log.apply(encode_set("k", b"9223372036854775808", now=0.0))
    assert error_code(log.apply(encode_incr("k", -1, now=0.0))) is ErrorCode.NOT_A_COUNTER


@pytest.mark.parametrize(
    ("start", "by"), [(b"9223372036854775807", 1), (b"-9223372036854775808", -1), (b"0", 2**63 - 1)]
)
def test_incr_overflow(start: bytes, by: int) -> None:
    log = Log()
    log.apply(encode_set("k", start, now=0.0))
    result = log.apply(encode_incr("k", by, now=0.0))
    if start == b"0":
        assert result == IncrResult(2**63 - 1, 2)
    else:
        assert error_code(result) is ErrorCode.COUNTER_OVERFLOW
        assert log.machine.get("k", 0.0) == Item(start, 1, None)


def test_batch_applies_in_order_with_one_version() -> None:
    log = Log()
    log.apply(encode_set("a", b"old", now=0.0))
    result = log.apply(
        encode_batch(
            [GetOp("a"), SetOp("a", b"new"), GetOp("a"), DeleteOp("b"), SetOp("b", b"x", ttl=1.0)],
            now=0.0,
        )
    )
    assert result == (b"old", 2, b"new", False, 2)
    assert log.machine.get("b", 0.5) == Item(b"x", 2, 1.0)


def test_batch_is_all_or_nothing() -> None:
    log = Log()
    log.apply(encode_set("a", b"1", now=0.0))
    before = decode_snapshot(log.machine.snapshot())
    result = log.apply(
        encode_batch(
            [SetOp("b", b"2"), DeleteOp("a", if_version=1), SetOp("a", b"3", if_version=1)], now=0.0
        )
    )
    assert isinstance(result, CommandError)
    # The delete at position 1 made "a" missing, so the CAS at position 2 sees version 0.
    assert (result.code, result.version, result.op_index) == (ErrorCode.PRECONDITION_FAILED, 0, 2)
    after = decode_snapshot(log.machine.snapshot())
    assert (after.records, after.counters, after.index) == (before.records, before.counters, 2)
    assert log.machine.get("b", 0.0) is None


def test_batch_conditions_see_earlier_ops_of_the_same_batch() -> None:
    log = Log()
    result = log.apply(
        encode_batch([SetOp("a", b"1", if_absent=True), SetOp("a", b"2", if_version=1)], now=0.0)
    )
    assert result == (1, 1)


def test_batch_rejects_an_oversized_entry_before_applying_anything() -> None:
    log = Log(CacheStateMachine(max_bytes=10))
    result = log.apply(encode_batch([SetOp("a", b"1"), SetOp("b", b"x" * 10)], now=0.0))
    assert isinstance(result, CommandError)
    assert (result.code, result.op_index) == (ErrorCode.VALUE_TOO_LARGE, 1)
    assert log.machine.get("a", 0.0) is None


def test_value_too_large_counts_key_and_value_bytes() -> None:
    log = Log(CacheStateMachine(max_bytes=10))
    assert log.apply(encode_set("kk", b"x" * 8, now=0.0)) == 1
    assert error_code(log.apply(encode_set("kk", b"x" * 9, now=0.0))) is ErrorCode.VALUE_TOO_LARGE
    assert error_code(log.apply(encode_set("é", b"x" * 9, now=0.0))) is ErrorCode.VALUE_TOO_LARGE


def test_expire_removes_only_keys_expired_at_the_commands_now() -> None:
    log = Log()
    log.apply(encode_set("a", b"1", now=0.0, ttl=1.0))
    log.apply(encode_set("b", b"2", now=0.0, ttl=5.0))
    log.apply(encode_set("c", b"3", now=0.0))
    assert log.machine.expired_keys(10.0, 10) == ["a", "b"]
    assert log.machine.expired_keys(10.0, 1) == ["a"]
    assert log.apply(encode_expire(["a", "b", "c", "zz"], now=2.0)) == 1
    stats = log.machine.stats()
    assert (stats["keys"], stats["expirations"]) == (2, 1)
    assert log.machine.get("b", 2.0) is not None


def test_expire_does_not_remove_a_key_rewritten_since_it_was_listed() -> None:
    log = Log()
    log.apply(encode_set("a", b"1", now=0.0, ttl=1.0))
    listed = log.machine.expired_keys(2.0, 10)
    log.apply(encode_set("a", b"fresh", now=2.0))
    assert log.apply(encode_expire(listed, now=2.0)) == 0
    assert log.machine.get("a", 3.0) == Item(b"fresh", 2, None)


def test_lru_eviction_by_max_keys_counts_evictions() -> None:
    log = Log(CacheStateMachine(max_keys=2))
    log.apply(encode_set("a", b"1", now=0.0))
    log.apply(encode_set("b", b"2", now=0.0))
    log.apply(encode_set("a", b"1'", now=0.0))  # a is now the most recently used
    log.apply(encode_set("c", b"3", now=0.0))
    assert log.machine.list_keys("", None, 10, 0.0) == (["a", "c"], None)
    assert log.machine.stats()["evictions"] == 1


def test_touch_refreshes_recency_and_local_reads_do_not() -> None:
    log = Log(CacheStateMachine(max_keys=2))
    log.apply(encode_set("a", b"1", now=0.0))
    log.apply(encode_set("b", b"2", now=0.0))
    for _ in range(5):
        assert log.machine.get("a", 0.0) is not None  # local reads: no effect on eviction
    log.apply(encode_set("c", b"3", now=0.0))
    assert log.machine.list_keys("", None, 10, 0.0) == (["b", "c"], None)
    assert log.apply(encode_touch(["b", "missing"], now=0.0)) == 1
    log.apply(encode_set("d", b"4", now=0.0))
    assert log.machine.list_keys("", None, 10, 0.0) == (["b", "d"], None)


def test_eviction_takes_expired_entries_first() -> None:
    log = Log(CacheStateMachine(max_keys=2))
    log.apply(encode_set("old", b"1", now=0.0))
    log.apply(encode_set("ttl", b"2", now=0.0, ttl=1.0))
    log.apply(encode_set("new", b"3", now=5.0))
    assert log.machine.list_keys("", None, 10, 0.0) == (["new", "old"], None)
    stats = log.machine.stats()
    assert (stats["evictions"], stats["expirations"]) == (0, 1)


def test_eviction_by_max_bytes_and_bytes_peak() -> None:
    log = Log(CacheStateMachine(max_bytes=10))
    log.apply(encode_set("a", b"1234", now=0.0))  # 5 bytes
    log.apply(encode_set("b", b"1234", now=0.0))  # 10 bytes
    log.apply(encode_set("c", b"12", now=0.0))  # 13 → evict a → 8
    stats = log.machine.stats()
    assert (stats["keys"], stats["bytes"], stats["bytes_peak"], stats["evictions"]) == (2, 8, 10, 1)


def test_list_keys_pages_by_prefix_in_key_order() -> None:
    log = Log()
    for key in ["user:3", "user:1", "item:1", "user:2", "user:4", "users"]:
        log.apply(encode_set(key, b"x", now=0.0, ttl=10.0 if key == "user:3" else None))
    m = log.machine
    assert m.list_keys("user:", None, 2, 0.0) == (["user:1", "user:2"], "user:2")
    assert m.list_keys("user:", "user:2", 2, 0.0) == (["user:3", "user:4"], None)
    assert m.list_keys("user:", "user:2", 2, 20.0) == (["user:4"], None)  # user:3 expired
    assert m.list_keys("user:", "a", 10, 0.0)[0] == ["user:1", "user:2", "user:3", "user:4"]
    assert m.list_keys("", "user:4", 10, 0.0) == (["users"], None)
    with pytest.raises(ValueError, match="limit"):
        m.list_keys("", None, 0, 0.0)


def test_a_malformed_entry_is_an_error_result_not_an_exception() -> None:
    log = Log()
    for garbage in [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa1o\xa3set"]:
        assert error_code(log.apply(garbage)) is ErrorCode.INVALID_COMMAND
    assert log.machine.stats()["keys"] == 0


def test_indices_must_increase() -> None:
    machine = CacheStateMachine()
    machine.apply_entry(3, encode_set("k", b"v", now=0.0))
    with pytest.raises(ValueError, match="applied after"):
        machine.apply_entry(3, encode_set("k", b"v", now=0.0))


def test_apply_without_index_uses_the_next_index() -> None:
    machine = CacheStateMachine()
    assert machine.apply(encode_set("k", b"v", now=0.0)) == 1
    assert machine.apply(encode_set("k", b"v", now=0.0)) == 2


def test_stats_shape_and_node_local_hits() -> None:
    machine = CacheStateMachine(max_keys=5)
    machine.record_reads(3, 1)
    stats = machine.stats()
    assert set(stats) >= {
        "keys",
        "bytes",
        "bytes_peak",
        "max_keys",
        "max_bytes",
        "hits",
        "misses",
        "hit_rate",
        "evictions",
        "expirations",
    }
    assert (stats["hits"], stats["misses"], stats["hit_rate"], stats["max_keys"]) == (3, 1, 0.75, 5)
    assert stats["max_bytes"] is None


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        CacheStateMachine(max_keys=0)


def test_random_key_draws_live_keys_by_rank_with_the_readers_source() -> None:
    log = Log()
    assert log.machine.random_key(10.0, lambda n: 0) is None
    for name in "abcd":
        log.apply(encode_set(name, b"v", now=10.0))
    log.apply(encode_set("e", b"v", ttl=1.0, now=10.0))  # expired at 11
    # The draw is a rank in key order: every rank reaches its key.
    ranks = [log.machine.random_key(10.0, lambda n, i=i: i) for i in range(5)]  # type: ignore[misc]
    assert ranks == list("abcde")
    # An expired key drawn is drawn again; all expired: the first live key, else None.
    draws = iter([4, 4, 1])
    assert log.machine.random_key(11.0, lambda n: next(draws)) == "b"
    assert log.machine.random_key(11.0, lambda n: 4) == "a"
    assert log.machine.random_key(100.0, lambda n: 4) == "a"
    for name in "abcd":
        log.apply(encode_delete(name, now=12.0))
    assert log.machine.random_key(12.0, lambda n: n - 1) is None
