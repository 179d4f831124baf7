"""The RESP parser and encoder, without sockets: framing, limits, inline commands, RESP2/3."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.resp.protocol import (
    NULL_ARRAY,
    OK,
    ProtocolError,
    RespError,
    RespParser,
    Simple,
    Verbatim,
    encode,
    split_inline,
)


def parser(max_bulk: int = 1024, max_buffer: int = 4096) -> RespParser:
    return RespParser(max_bulk_bytes=max_bulk, max_buffer_bytes=max_buffer)


def request(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%b\r\n" % (len(w), w) for w in words)


def test_pipelined_commands_come_out_in_order() -> None:
    data = request(b"SET", b"k", b"v") + request(b"GET", b"k") + b"PING\r\n"
    assert parser().feed(data) == [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"PING"]]


def test_every_split_point_gives_the_same_commands() -> None:
    data = request(b"SET", b"key", b"a\r\nb") + request(b"MGET", b"x", b"") + b"ECHO hi\r\n"
    expected = [[b"SET", b"key", b"a\r\nb"], [b"MGET", b"x", b""], [b"ECHO", b"hi"]]
    for cut in range(len(data) + 1):
        p = parser()
        assert p.feed(data[:cut]) + p.feed(data[cut:]) == expected, cut
        assert p.error is None
        assert p.buffered == 0


def test_byte_by_byte() -> None:
    data = request(b"SET", b"k", b"x" * 300)
    p = parser()
    out: list[list[bytes]] = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    assert out == [[b"SET", b"k", b"x" * 300]]


def test_empty_and_null_multibulk_are_skipped() -> None:
    assert parser().feed(b"*0\r\n*-1\r\n\r\n" + request(b"PING")) == [[b"PING"]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*x\r\n", "invalid multibulk length"),
        (b"*2000000\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$+3\r\nabc\r\n", "invalid bulk length"),
        (b"*1\r\n$2000\r\n", "invalid bulk length"),
        (b"*1\r\n:3\r\n", "expected '$', got ':'"),
        (b"*1\r\n$3\r\nabcXY", "not terminated"),
        (b"*1\r\n$" + b"9" * 40, "invalid bulk length"),
        (b'SET "unbalanced\r\n', "unbalanced quotes"),
        (b"x" * 70_000, "too big inline request"),
    ],
)
def test_malformed_input_sets_an_error(data: bytes, message: str) -> None:
    p = parser(max_bulk=1024, max_buffer=100_000)
    before = request(b"PING")
    assert p.feed(before + data) == [[b"PING"]]  # what came before the error still runs
    assert p.error is not None
    assert message in str(p.error)
    assert p.feed(request(b"PING")) == []  # nothing more is parsed after an error


def test_buffer_limit_bounds_an_incomplete_command() -> None:
    p = parser(max_bulk=1024, max_buffer=256)
    # Many small arguments that never complete the command.
    p.feed(b"*1000\r\n" + b"$3\r\nabc\r\n" * 100)
    assert isinstance(p.error, ProtocolError)


def test_inline_quoting_like_redis_cli() -> None:
    assert split_inline(b"SET k \"a b\\n\\x41\" 'it\\'s'") == [b"SET", b"k", b"a b\nA", b"it's"]
    assert split_inline(b"  GET   k  ") == [b"GET", b"k"]
    assert split_inline(b'"" x') == [b"", b"x"]
    with pytest.raises(ProtocolError):
        split_inline(b'"a"b')


@pytest.mark.parametrize(
    ("reply", "resp2", "resp3"),
    [
        (b"v", b"$1\r\nv\r\n", b"$1\r\nv\r\n"),
        (None, b"$-1\r\n", b"_\r\n"),
        (OK, b"+OK\r\n", b"+OK\r\n"),
        (7, b":7\r\n", b":7\r\n"),
        (-2, b":-2\r\n", b":-2\r\n"),
        (True, b":1\r\n", b"#t\r\n"),
        (1.5, b"$3\r\n1.5\r\n", b",1.5\r\n"),
        ([b"a", None], b"*2\r\n$1\r\na\r\n$-1\r\n", b"*2\r\n$1\r\na\r\n_\r\n"),
        ({"k": 1}, b"*2\r\n$1\r\nk\r\n:1\r\n", b"%1\r\n$1\r\nk\r\n:1\r\n"),
        ({Simple("x")}, b"*1\r\n+x\r\n", b"~1\r\n+x\r\n"),
        (Verbatim("hi"), b"$2\r\nhi\r\n", b"=6\r\ntxt:hi\r\n"),
        (RespError("ERR bad\r\nthing"), b"-ERR bad  thing\r\n", b"-ERR bad  thing\r\n"),
        (NULL_ARRAY, b"*-1\r\n", b"_\r\n"),
    ],
)
def test_encoding(reply: object, resp2: bytes, resp3: bytes) -> None:
    assert encode(reply, 2) == resp2
    assert encode(reply, 3) == resp3


def test_encoding_refuses_unknown_types() -> None:
    with pytest.raises(TypeError):
        encode(object())


words = st.lists(st.binary(max_size=40), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(commands=st.lists(words, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 400)))
def test_any_commands_in_any_chunks_round_trip(
    commands: list[list[bytes]], cuts: list[int]
) -> None:
    data = b"".join(request(*command) for command in commands)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    p = parser()
    out: list[list[bytes]] = []
    for start, end in itertools.pairwise(points):
        out += p.feed(data[start:end])
    assert out == commands
    assert p.error is None


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_garbage_never_raises(garbage: bytes) -> None:
    p = parser(max_bulk=64, max_buffer=512)
    commands = p.feed(garbage)
    assert all(isinstance(c, list) and c for c in commands)
    assert p.buffered <= 512
