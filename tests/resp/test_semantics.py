"""Command semantics without sockets or Raft: argument parsing, ``simulate`` on a ``View``, the
transaction engine over an in-memory backend (conflicts, retries), glob patterns."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftcache.resp import args
from raftcache.resp.args import Limits, arity_ok
from raftcache.resp.calls import Call, Entry, Mode, View
from raftcache.resp.commands import TABLE, lookup
from raftcache.resp.globs import compile_glob
from raftcache.resp.protocol import OK, RespError
from raftcache.resp.txn import run_transaction

from .fakes import FakeBackend, router_over

NOW = 1_000.0


def call(*words: bytes) -> Call:
    spec = lookup(words[0])
    assert spec is not None
    assert arity_ok(spec, len(words))
    return spec.parse(list(words[1:]), Limits(max_value_bytes=64))


def run(view: View, *words: bytes) -> object:
    return call(*words).simulate(view)


@pytest.mark.parametrize(
    ("raw", "value"),
    [(b"0", 0), (b"-1", -1), (b"42", 42), (b"9223372036854775807", 2**63 - 1)],
)
def test_integers_accepted(raw: bytes, value: int) -> None:
    assert args.integer(raw) == value


@pytest.mark.parametrize(
    "raw", [b"", b"+1", b"01", b"-0", b" 1", b"1.0", b"9223372036854775808", b"1_0", b"-"]
)
def test_integers_refused(raw: bytes) -> None:
    with pytest.raises(RespError, match="not an integer"):
        args.integer(raw)


def test_keys_must_be_utf8_and_bounded() -> None:
    assert args.key("é".encode()) == "é"
    for bad in (b"", b"\xff", b"k" * 1025):
        with pytest.raises(RespError):
            args.key(bad)


def test_set_options() -> None:
    view = View(NOW, {})
    assert run(view, b"SET", b"k", b"v", b"EX", b"10") is OK
    assert view.get("k") == Entry(b"v", NOW + 10)
    assert run(view, b"SET", b"k", b"w", b"NX") is None
    assert run(view, b"SET", b"k", b"w", b"XX", b"KEEPTTL", b"GET") == b"v"
    assert view.get("k") == Entry(b"w", NOW + 10)
    assert run(view, b"SET", b"k", b"x", b"PX", b"1500") is OK
    assert view.pttl("k") == 1500
    assert run(view, b"SET", b"gone", b"x", b"XX") is None
    assert view.get("gone") is None
    assert run(view, b"SET", b"k", b"y", b"EXAT", b"999") is OK  # in the past: deleted
    assert view.get("k") is None


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ((b"SET", b"k", b"v", b"NX", b"XX"), "syntax error"),
        ((b"SET", b"k", b"v", b"EX", b"1", b"PX", b"5"), "syntax error"),
        ((b"SET", b"k", b"v", b"KEEPTTL", b"EX", b"5"), "syntax error"),
        ((b"SET", b"k", b"v", b"EX"), "syntax error"),
        ((b"SET", b"k", b"v", b"EX", b"0"), "invalid expire time in 'set'"),
        ((b"SET", b"k", b"v", b"EX", b"x"), "not an integer"),
        ((b"SET", b"k", b"v" * 65), "value larger than 64 bytes"),
        ((b"EXPIRE", b"k", b"5", b"NX", b"XX"), "not compatible"),
        ((b"EXPIRE", b"k", b"5", b"GT", b"LT"), "not compatible"),
        ((b"EXPIRE", b"k", b"5", b"SOON"), "Unsupported option SOON"),
        ((b"MSET", b"a", b"1", b"b"), "wrong number of arguments for 'mset'"),
        ((b"SCAN", b"x"), "invalid cursor"),
        ((b"SCAN", b"0", b"COUNT", b"0"), "syntax error"),
        ((b"INCRBY", b"k", b"1.5"), "not an integer"),
    ],
)
def test_argument_errors(words: Sequence[bytes], message: str) -> None:
    with pytest.raises(RespError, match=message):
        call(*words)


def test_counters() -> None:
    view = View(NOW, {"c": Entry(b"5", NOW + 30), "s": Entry(b"abc")})
    assert run(view, b"INCRBY", b"c", b"10") == 15
    assert view.get("c") == Entry(b"15", NOW + 30)  # INCR keeps the TTL
    assert run(view, b"DECR", b"new") == -1
    with pytest.raises(RespError, match="not an integer"):
        run(view, b"INCR", b"s")
    view.put("big", b"9223372036854775807")
    with pytest.raises(RespError, match="overflow"):
        run(view, b"INCR", b"big")
    with pytest.raises(RespError, match="overflow"):
        call(b"DECRBY", b"k", b"-9223372036854775808")


def test_expire_conditions() -> None:
    view = View(NOW, {"t": Entry(b"v", NOW + 100), "p": Entry(b"v")})
    assert run(view, b"EXPIRE", b"missing", b"10") == 0
    assert run(view, b"EXPIRE", b"p", b"10", b"XX") == 0
    assert run(view, b"EXPIRE", b"t", b"10", b"NX") == 0
    assert run(view, b"EXPIRE", b"t", b"10", b"GT") == 0
    assert run(view, b"EXPIRE", b"t", b"200", b"GT") == 1
    assert view.pttl("t") == 200_000
    assert run(view, b"EXPIRE", b"p", b"50", b"LT") == 1  # no TTL counts as infinite
    assert run(view, b"PEXPIRE", b"p", b"60000", b"LT") == 0
    assert run(view, b"PERSIST", b"p") == 1
    assert run(view, b"PERSIST", b"p") == 0
    assert run(view, b"TTL", b"p") == -1
    assert run(view, b"TTL", b"missing") == -2
    assert run(view, b"EXPIRE", b"p", b"-1") == 1  # a past expiry deletes
    assert view.get("p") is None


def test_ttl_rounds_to_the_nearest_second() -> None:
    view = View(NOW, {"a": Entry(b"v", NOW + 1.4), "b": Entry(b"v", NOW + 1.6)})
    assert run(view, b"TTL", b"a") == 1
    assert run(view, b"TTL", b"b") == 2
    assert run(view, b"PTTL", b"b") == 1600


def test_delete_exists_type_and_multi_key_replies() -> None:
    view = View(NOW, {"a": Entry(b"1"), "b": Entry(b"22")})
    assert run(view, b"EXISTS", b"a", b"a", b"zz") == 2
    assert str(run(view, b"TYPE", b"a")) == "string"
    assert str(run(view, b"TYPE", b"zz")) == "none"
    assert run(view, b"STRLEN", b"b") == 2
    assert run(view, b"MGET", b"a", b"zz", b"b") == [b"1", None, b"22"]
    assert run(view, b"DEL", b"a", b"a", b"zz") == 1
    assert run(view, b"GETDEL", b"b") == b"22"
    assert view.get("b") is None


def test_modes_pick_the_cheapest_correct_route() -> None:
    assert call(b"GET", b"k").mode is Mode.READ
    assert call(b"SET", b"k", b"v", b"EX", b"5").mode is Mode.BATCH
    assert call(b"SET", b"k", b"v", b"GET").mode is Mode.BATCH
    assert call(b"SET", b"k", b"v", b"NX").mode is Mode.WRITE
    assert call(b"SET", b"k", b"v", b"XX").mode is Mode.TXN
    assert call(b"SET", b"k", b"v", b"NX", b"GET").mode is Mode.TXN
    assert call(b"INCR", b"k").mode is Mode.WRITE
    assert call(b"DEL", b"a", b"b").mode is Mode.BATCH
    # Command format 2 routes (the connection falls back to fallback_mode until enabled).
    for argv in [
        (b"EXPIRE", b"k", b"5"),
        (b"PEXPIREAT", b"k", b"5", b"GT"),
        (b"EXPIRE", b"k", b"5", b"XX", b"GT"),
        (b"PERSIST", b"k"),
        (b"SET", b"k", b"v", b"KEEPTTL"),
        (b"SET", b"k", b"v", b"EXAT", b"5", b"GET"),
    ]:
        routed = call(*argv)
        assert (routed.mode, routed.needs_format, routed.fallback_mode) == (
            Mode.BATCH,
            2,
            Mode.TXN,
        ), argv
    assert call(b"EXPIRE", b"k", b"5", b"XX", b"LT").mode is Mode.TXN  # no single condition
    assert call(b"SET", b"k", b"v", b"NX", b"KEEPTTL").mode is Mode.TXN


def test_every_command_has_a_consistent_table_entry() -> None:
    for name, spec in TABLE.items():
        assert name == spec.name == name.upper()
        assert spec.arity != 0
        assert lookup(name.lower().encode()) is spec


# --- the transaction engine over the in-memory backend --------------------------------------


async def test_transaction_commits_only_what_changed_conditioned_on_versions() -> None:
    backend = FakeBackend(lambda: NOW)
    backend.put("a", b"1")
    backend.put("b", b"x", ttl=50)
    calls = [call(b"INCR", b"a"), call(b"GET", b"b"), call(b"EXPIRE", b"b", b"99")]
    replies = await run_transaction(router_over(backend), calls, clock=lambda: NOW)
    assert replies == [2, b"x", 1]
    assert backend.data["a"][0] == b"2"
    assert backend.data["b"][2] == NOW + 99
    assert backend.commits == 1


async def test_transaction_retries_when_another_client_wrote_a_pinned_key() -> None:
    backend = FakeBackend(lambda: NOW)
    backend.put("n", b"10")

    def interfere(b: FakeBackend) -> None:
        b.put("n", b"20")  # another client's write, between the read and the commit

    backend.before_commit.append(interfere)
    replies = await run_transaction(
        router_over(backend), [call(b"INCRBY", b"n", b"5")], clock=lambda: NOW
    )
    assert replies == [25]  # recomputed on the second round: nothing lost
    assert backend.data["n"][0] == b"25"
    assert backend.commits == 2


async def test_transaction_gives_up_under_endless_contention() -> None:
    backend = FakeBackend(lambda: NOW)
    backend.put("n", b"1")

    def interfere(b: FakeBackend) -> None:
        b.put("n", b"1")
        b.before_commit.append(interfere)

    backend.before_commit.append(interfere)
    with pytest.raises(RespError, match="kept changing"):
        await run_transaction(
            router_over(backend),
            [call(b"PERSIST", b"n"), call(b"INCR", b"n")],
            clock=lambda: NOW,
            max_attempts=3,
        )
    assert backend.commits == 3


async def test_transaction_that_changes_nothing_writes_nothing() -> None:
    backend = FakeBackend(lambda: NOW)
    backend.put("k", b"v")
    calls = [call(b"SET", b"k", b"w", b"NX"), call(b"PERSIST", b"k"), call(b"TTL", b"k")]
    assert await run_transaction(router_over(backend), calls, clock=lambda: NOW) == [None, 0, -1]
    assert backend.commits == 0


async def test_errors_inside_a_transaction_are_per_command() -> None:
    backend = FakeBackend(lambda: NOW)
    backend.put("s", b"text")
    calls = [call(b"INCR", b"s"), call(b"SET", b"t", b"1"), call(b"INCR", b"t")]
    replies = await run_transaction(router_over(backend), calls, clock=lambda: NOW)
    assert isinstance(replies[0], RespError)
    assert replies[1:] == [OK, 2]
    assert backend.data["s"][0] == b"text"
    assert backend.data["t"][0] == b"2"


# --- glob patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("user:*", "user:1", True),
        ("user:*", "users", False),
        ("h?llo", "hello", True),
        ("h[ae]llo", "hallo", True),
        ("h[^e]llo", "hello", False),
        ("h[a-b]llo", "hbllo", True),
        ("h[b-a]llo", "hallo", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("*", "", True),
        ("[]x", "x", False),
    ],
)
def test_glob(pattern: str, key: str, matches: bool) -> None:
    prefix, regex = compile_glob(pattern)
    assert key.startswith(prefix) or not matches
    assert bool(regex.fullmatch(key)) is matches


@given(pattern=st.text(alphabet="ab*?", max_size=6), key=st.text(alphabet="ab", max_size=6))
def test_glob_agrees_with_fnmatch_on_wildcards(pattern: str, key: str) -> None:
    _, regex = compile_glob(pattern)
    assert bool(regex.fullmatch(key)) is fnmatch.fnmatchcase(key, pattern)
