"""Exactly-once sessions: retries answered from the table, the window, expiry and bounds."""

from __future__ import annotations

from raftcache.cache.commands import Session, encode_expire, encode_incr, encode_set
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode, IncrResult
from tests.cache.helpers import Log


def counter(log: Log, key: str = "n") -> bytes | None:
    item = log.machine.get(key, 0.0)
    return None if item is None else item.value


def test_a_retried_incr_is_answered_from_the_table_not_applied_twice() -> None:
    log = Log()
    s = Session("c", 1)
    first = log.apply(encode_incr("n", 5, now=0.0, session=s))
    assert first == IncrResult(5, 1)
    assert log.apply(encode_incr("n", 5, now=1.0, session=s)) == first
    assert counter(log) == b"5"
    assert log.apply(encode_incr("n", 5, now=1.0, session=Session("c", 2))) == IncrResult(10, 3)


def test_a_retried_cas_returns_its_first_outcome() -> None:
    log = Log()
    v1 = log.version(encode_set("k", b"a", now=0.0))
    cas = encode_set("k", b"b", now=0.0, if_version=v1, session=Session("c", 1))
    assert log.apply(cas) == 2
    # The retry would fail as a fresh CAS (version is now 2); it gets the remembered success.
    assert log.apply(cas) == 2
    failing = encode_set("k", b"c", now=0.0, if_version=v1, session=Session("c", 2))
    first_failure = log.apply(failing)
    assert isinstance(first_failure, CommandError)
    log.apply(encode_set("k", b"d", now=0.0, if_version=0))  # irrelevant write, also fails
    assert log.apply(failing) == first_failure


def test_seqs_below_the_window_are_stale() -> None:
    log = Log(CacheStateMachine(session_window=2))
    for seq in (1, 2, 3):
        log.apply(encode_incr("n", now=0.0, session=Session("c", seq)))
    stale = log.apply(encode_incr("n", now=0.0, session=Session("c", 1)))
    assert isinstance(stale, CommandError)
    assert stale.code is ErrorCode.STALE_SEQUENCE
    assert log.apply(encode_incr("n", now=0.0, session=Session("c", 2))) == IncrResult(2, 2)
    assert counter(log) == b"3"


def test_pipelined_writes_may_reach_the_log_out_of_order() -> None:
    log = Log(CacheStateMachine(session_window=4))
    for seq in (2, 4, 1, 3):
        log.apply(encode_incr("n", now=0.0, session=Session("c", seq)))
    assert counter(log) == b"4"
    for seq in (1, 2, 3, 4):  # every retry is answered from the table
        result = log.apply(encode_incr("n", now=0.0, session=Session("c", seq)))
        assert isinstance(result, IncrResult)
    assert counter(log) == b"4"


def test_clients_are_independent() -> None:
    log = Log()
    log.apply(encode_incr("n", now=0.0, session=Session("a", 1)))
    log.apply(encode_incr("n", now=0.0, session=Session("b", 1)))
    assert counter(log) == b"2"


def test_an_idle_session_expires_by_the_commands_now() -> None:
    log = Log(CacheStateMachine(session_ttl_s=10.0))
    s = Session("c", 1)
    log.apply(encode_incr("n", now=100.0, session=s))
    log.apply(encode_incr("n", now=110.0, session=s))  # idle exactly 10 s: still remembered
    assert counter(log) == b"1"
    log.apply(encode_incr("n", now=120.5, session=s))  # idle 10.5 s: forgotten, applied again
    assert counter(log) == b"2"


def test_expire_commands_sweep_idle_sessions() -> None:
    log = Log(CacheStateMachine(session_ttl_s=10.0))
    log.apply(encode_set("k", b"v", now=0.0, session=Session("old", 1)))
    log.apply(encode_set("k", b"v", now=5.0, session=Session("young", 1)))
    assert log.machine.stats()["sessions"] == 2
    log.apply(encode_expire([], now=12.0))
    assert log.machine.stats()["sessions"] == 1
    log.apply(encode_expire([], now=16.0))
    assert log.machine.stats()["sessions"] == 0


def test_max_sessions_forgets_the_least_recently_active() -> None:
    log = Log(CacheStateMachine(max_sessions=2))
    for client in ("a", "b"):
        log.apply(encode_incr(client, now=0.0, session=Session(client, 1)))
    log.apply(encode_incr("a", now=0.0, session=Session("a", 1)))  # a retries: a is active
    log.apply(encode_incr("c", now=0.0, session=Session("c", 1)))  # forgets b
    assert log.machine.stats()["sessions"] == 2
    log.apply(encode_incr("a", now=0.0, session=Session("a", 1)))
    log.apply(encode_incr("b", now=0.0, session=Session("b", 1)))
    assert (counter(log, "a"), counter(log, "b")) == (b"1", b"2")


def test_session_expiry_is_identical_on_replicas_and_after_restore() -> None:
    leader = Log(CacheStateMachine(session_ttl_s=10.0, max_sessions=3))
    for i in range(12):
        client = f"c{i % 5}"
        leader.apply(encode_incr("n", now=float(i * 3), session=Session(client, i)))
        leader.apply(encode_incr("n", now=float(i * 3 + 1), session=Session(client, i)))
    replica = CacheStateMachine(session_ttl_s=10.0, max_sessions=3)
    for index, data in leader.entries:
        replica.apply_entry(index, data)
    assert replica.snapshot() == leader.machine.snapshot()
    restored = CacheStateMachine(session_ttl_s=10.0, max_sessions=3)
    restored.restore(leader.machine.snapshot())
    retry = encode_incr("n", now=34.0, session=Session("c1", 11))
    assert restored.apply_entry(100, retry) == leader.machine.apply_entry(100, retry)
    assert restored.snapshot() == leader.machine.snapshot()


def test_a_long_client_id_already_in_the_log_applies_as_every_release_applied_it() -> None:
    """A node refuses client ids over 128 characters from clients, but an entry already in a
    log with a longer one (up to 256, what every release applied) must apply the same way on
    every replica, or replicas of two releases would diverge."""
    log = Log()
    assert log.apply(encode_incr("n", 5, now=0.0, session=Session("c" * 200, 1))) == IncrResult(
        5, 1
    )
    at_the_limit = log.apply(encode_incr("n", 5, now=0.0, session=Session("d" * 256, 1)))
    assert at_the_limit == IncrResult(10, 2)
