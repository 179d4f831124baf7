"""Command encoding: round trips, and validation on both the encode and the decode side."""

from __future__ import annotations

import math
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from raftcache.cache.commands import (
    BatchCommand,
    Command,
    DeleteCommand,
    DeleteOp,
    ExpireCommand,
    GetOp,
    IncrCommand,
    Session,
    SetCommand,
    SetOp,
    TouchCommand,
    decode,
    encode,
    encode_batch,
    encode_decr,
    encode_delete,
    encode_incr,
    encode_set,
)
from raftcache.cache.errors import InvalidCommand

S = Session("client-1", 7)

ROUND_TRIPS: list[Command] = [
    SetCommand(1.5, "k", b"v"),
    SetCommand(2, "ключ", b"\x00\xff", ttl=0.25, if_version=3, session=S),
    SetCommand(2.0, "k", b"", if_absent=True),
    DeleteCommand(3.0, "k"),
    DeleteCommand(3.0, "k", if_version=0, session=S),
    IncrCommand(4.0, "n", -(2**63), session=S),
    BatchCommand(
        5.0,
        (
            GetOp("a"),
            SetOp("a", b"x", 1.0, 2, False),
            SetOp("b", b"", if_absent=True),
            DeleteOp("c", 4),
            DeleteOp("d"),
        ),
        S,
    ),
    BatchCommand(5.0, ()),
    ExpireCommand(6.0, ("a", "b")),
    TouchCommand(7.0, ()),
]


@pytest.mark.parametrize("cmd", ROUND_TRIPS)
def test_round_trip(cmd: Command) -> None:
    assert decode(encode(cmd)) == cmd


def test_helpers_build_the_same_commands() -> None:
    assert decode(encode_set("k", b"v", now=1.0, ttl=2.0, session=S)) == SetCommand(
        1.0, "k", b"v", 2.0, session=S
    )
    assert decode(encode_delete("k", now=1.0, if_version=5)) == DeleteCommand(1.0, "k", 5)
    assert decode(encode_incr("n", 3, now=1.0)) == IncrCommand(1.0, "n", 3)
    assert decode(encode_decr("n", 3, now=1.0)) == IncrCommand(1.0, "n", -3)
    assert decode(encode_batch([GetOp("a")], now=1.0)) == BatchCommand(1.0, (GetOp("a"),))


def test_optional_fields_are_omitted_from_the_wire() -> None:
    assert msgpack.unpackb(encode_set("k", b"v", now=1.0)) == {
        "o": "set",
        "n": 1.0,
        "k": "k",
        "v": b"v",
    }


@pytest.mark.parametrize(
    "build",
    [
        lambda: encode_set("", b"v", now=0.0),
        lambda: encode_set(5, b"v", now=0.0),  # type: ignore[arg-type]
        lambda: encode_set("k", "v", now=0.0),  # type: ignore[arg-type]
        lambda: encode_set("k", b"v", now=math.nan),
        lambda: encode_set("k", b"v", now=0.0, ttl=0),
        lambda: encode_set("k", b"v", now=0.0, ttl=-1.0),
        lambda: encode_set("k", b"v", now=0.0, ttl=math.inf),
        lambda: encode_set("k", b"v", now=0.0, if_version=-1),
        lambda: encode_set("k", b"v", now=0.0, if_version=True),
        lambda: encode_incr("k", True, now=0.0),
        lambda: encode_incr("k", 2**63, now=0.0),
        lambda: encode_incr("k", 1.0, now=0.0),  # type: ignore[arg-type]
        lambda: encode_set("k", b"v", now=0.0, session=Session("", 1)),
        lambda: encode_set("k", b"v", now=0.0, session=Session("c", -1)),
        lambda: encode_set("k", b"v", now=0.0, session=Session("c" * 300, 1)),
        lambda: encode_batch([GetOp("")], now=0.0),
        lambda: encode_batch(["get"], now=0.0),  # type: ignore[list-item]
        lambda: encode_batch([GetOp("k")] * 10_001, now=0.0),
    ],
)
def test_encoders_reject_bad_arguments(build: Any) -> None:
    with pytest.raises(InvalidCommand):
        build()


def _wire(**fields: Any) -> bytes:
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        _wire(),
        msgpack.packb([1, 2]),
        _wire(o="set", n=1.0, k="k"),  # no value
        _wire(o="set", n=1.0, k="k", v="text"),  # value not bin
        _wire(o="set", n="now", k="k", v=b""),
        _wire(o="set", n=1.0, k="k", v=b"", ia=1),
        _wire(o="incr", n=1.0, k="k", b=1.5),
        _wire(o="del", n=1.0, k="k", c="client"),  # client without seq
        _wire(o="batch", n=1.0, ops={"o": "get"}),
        _wire(o="batch", n=1.0, ops=[{"o": 7, "k": "k"}]),  # an unknown name: fail stop
        _wire(o="batch", n=1.0, ops=[7]),
        _wire(o="expire", n=1.0, ks="abc"),
        _wire(o="touch", n=1.0, ks=[1]),
    ],
)
def test_decode_rejects_malformed_entries(data: bytes) -> None:
    with pytest.raises(InvalidCommand):
        decode(data)
