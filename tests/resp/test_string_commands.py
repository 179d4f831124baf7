"""INCRBYFLOAT, APPEND, RENAME, RENAMENX, COPY, RANDOMKEY and OBJECT through redis-py against a
real 3-node cluster, on the leader and through a follower (forwarded over HTTP), with Redis's
replies and error texts. (Their routing on a sharded store: ``test_sharded_routing``.)"""

from __future__ import annotations

from typing import Any

import pytest
from redis.exceptions import ResponseError

from raftcache.cache.hashes import format_float
from raftcache.resp.protocol import RespError
from raftcache.resp.strings import parse_float

from .cluster import refused

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_incrbyfloat_reads_and_writes_floats_as_redis_does() -> None:
    # Redis's documented examples, and its "human" form: fixed notation, no trailing zeros.
    assert format_float(10.5 + 0.1) == b"10.6"
    assert format_float(5.0e3 + 2.0e2) == b"5200"
    assert format_float(-0.0) == b"0"
    assert format_float(1e21) == b"1000000000000000000000"
    assert format_float(1.5e-7) == b"0.00000015"
    for good in (b"1", b"-1.5", b".5", b"5.", b"+3e2", b"1E-3", b"inf", b"-Infinity"):
        parse_float(good)
    for bad in (b"", b" 1", b"1 ", b"1_0", b"nan", b"0x10", b"1e", b"abc", b"1.2.3"):
        with pytest.raises(RespError, match="not a valid float"):
            parse_float(bad)


async def test_incrbyfloat(r: Any) -> None:
    await r.delete("f:a", "f:b")
    assert await r.incrbyfloat("f:a", 10.5) == 10.5
    assert await r.get("f:a") == b"10.5"
    assert await r.incrbyfloat("f:a", 0.1) == pytest.approx(10.6)
    assert await r.get("f:a") == b"10.6"
    assert await r.incrbyfloat("f:a", -5) == pytest.approx(5.6)
    await r.set("f:b", "5.0e3", ex=100)
    assert await r.execute_command("INCRBYFLOAT", "f:b", "2.0e2") == 5200.0
    assert await r.get("f:b") == b"5200"
    assert 99 <= await r.ttl("f:b") <= 100  # keeps the TTL
    await r.set("f:b", "text")
    await refused(r.incrbyfloat("f:b", 1), "value is not a valid float")
    await refused(r.execute_command("INCRBYFLOAT", "f:a", "x"), "value is not a valid float")
    await refused(r.execute_command("INCRBYFLOAT", "f:a", "inf"),
                  "increment would produce NaN or Infinity")  # fmt: skip
    await r.set("f:b", "1.7e308")
    await refused(r.execute_command("INCRBYFLOAT", "f:b", "1.7e308"),
                  "increment would produce NaN or Infinity")  # fmt: skip
    assert await r.get("f:b") == b"1.7e308"  # nothing written


async def test_append_keeps_the_ttl(r: Any) -> None:
    await r.delete("ap:a")
    assert await r.append("ap:a", "Hello") == 5
    assert await r.append("ap:a", " World") == 11
    assert await r.get("ap:a") == b"Hello World"
    await r.expire("ap:a", 100)
    assert await r.append("ap:a", "!") == 12
    assert 99 <= await r.ttl("ap:a") <= 100
    await refused(r.execute_command("APPEND", "ap:a"),
                  "wrong number of arguments for 'append' command")  # fmt: skip


async def test_rename_and_renamenx_move_value_and_ttl(r: Any) -> None:
    await r.delete("rn:a", "rn:b", "rn:c")
    await refused(r.rename("rn:a", "rn:b"), "no such key")
    await r.set("rn:a", "1", ex=100)
    await r.set("rn:b", "2")
    assert await r.rename("rn:a", "rn:b") is True
    assert await r.mget("rn:a", "rn:b") == [None, b"1"]
    assert 99 <= await r.ttl("rn:b") <= 100
    assert await r.rename("rn:b", "rn:b") is True  # the same key: OK, nothing changes
    assert await r.get("rn:b") == b"1"
    await r.set("rn:c", "3")
    assert await r.renamenx("rn:b", "rn:c") is False
    assert await r.mget("rn:b", "rn:c") == [b"1", b"3"]
    assert await r.renamenx("rn:b", "rn:d") is True
    assert await r.mget("rn:b", "rn:d") == [None, b"1"]
    assert 99 <= await r.ttl("rn:d") <= 100
    await refused(r.renamenx("rn:missing", "rn:e"), "no such key")
    await r.delete("rn:d")


async def test_copy(r: Any) -> None:
    await r.delete("cp:a", "cp:b")
    assert await r.copy("cp:a", "cp:b") is False  # no source
    await r.set("cp:a", "v", ex=100)
    assert await r.copy("cp:a", "cp:b") is True
    assert await r.mget("cp:a", "cp:b") == [b"v", b"v"]
    assert 99 <= await r.ttl("cp:b") <= 100
    await r.set("cp:a", "w")
    assert await r.copy("cp:a", "cp:b") is False  # exists, no REPLACE
    assert await r.copy("cp:a", "cp:b", replace=True) is True
    assert await r.get("cp:b") == b"w"
    assert await r.ttl("cp:b") == -1
    assert await r.execute_command("COPY", "cp:a", "cp:c", "DB", "0") == 1
    await refused(r.execute_command("COPY", "cp:a", "cp:b", "DB", "1"), "DB index is out of range")
    await refused(r.execute_command("COPY", "cp:a", "cp:b", "NOPE"), "syntax error")
    await refused(r.copy("cp:a", "cp:a"), "source and destination objects are the same")
    await r.delete("cp:a", "cp:b", "cp:c")


async def test_randomkey_and_object(r: Any) -> None:
    await r.flushdb()
    assert await r.randomkey() is None
    await r.mset({f"rk:{i}": i for i in range(20)})
    seen = {await r.randomkey() for _ in range(40)}
    assert seen <= {f"rk:{i}".encode() for i in range(20)}
    assert len(seen) > 1
    await r.set("ob:i", "12345")
    await r.set("ob:s", "x" * 44)
    await r.set("ob:r", "x" * 45)
    await r.set("ob:z", "012")
    assert [await r.object("encoding", k) for k in ("ob:i", "ob:s", "ob:r", "ob:z")] == [
        b"int",
        b"embstr",
        b"raw",
        b"embstr",
    ]
    assert await r.object("encoding", "ob:missing") is None
    assert await r.object("refcount", "ob:i") == 1
    idle = "idle time is not tracked: the cache's LRU is a replicated order, not a clock"
    await refused(r.object("idletime", "ob:i"), idle)
    with pytest.raises(ResponseError, match="LFU maxmemory policy is not selected"):
        await r.object("freq", "ob:i")
    assert b"ENCODING <key>" in await r.execute_command("OBJECT", "HELP")
    unknown = "unknown subcommand or wrong number of arguments for 'NOPE'. Try OBJECT HELP."
    await refused(r.execute_command("OBJECT", "NOPE", "k"), unknown)


async def test_in_multi(r: Any) -> None:
    await r.delete("mx:a", "mx:b")
    pipe = r.pipeline(transaction=True)
    pipe.set("mx:a", "1.5")
    pipe.incrbyfloat("mx:a", 1)
    pipe.append("mx:a", "0")
    pipe.rename("mx:a", "mx:b")
    pipe.get("mx:b")
    assert await pipe.execute() == [True, 2.5, 4, True, b"2.50"]
