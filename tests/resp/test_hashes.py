"""Hash commands through redis-py against a real 3-node cluster, on the leader and through a
follower (forwarded over HTTP): Redis's replies and error texts, WRONGTYPE both ways, TTL on a
hash key, MULTI, and the HTTP API's view of a hash."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from raftcache import AsyncClient

from .cluster import RespCluster, refused

pytestmark = pytest.mark.asyncio(loop_scope="module")

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


async def test_hset_hget_and_the_reads(r: Any) -> None:
    await r.delete("h:a")
    assert await r.hset("h:a", mapping={"f1": "v1", "f2": "v2"}) == 2
    assert await r.hset("h:a", mapping={"f2": "w2", "f3": "v3"}) == 1
    assert await r.hget("h:a", "f2") == b"w2"
    assert await r.hget("h:a", "nope") is None
    assert await r.hget("h:missing", "f") is None
    assert await r.hmget("h:a", ["f1", "nope", "f3"]) == [b"v1", None, b"v3"]
    assert await r.hgetall("h:a") == {b"f1": b"v1", b"f2": b"w2", b"f3": b"v3"}
    assert await r.hgetall("h:missing") == {}
    assert await r.hkeys("h:a") == [b"f1", b"f2", b"f3"]
    assert await r.hvals("h:a") == [b"v1", b"w2", b"v3"]
    assert await r.hlen("h:a") == 3
    assert await r.hexists("h:a", "f1") is True
    assert await r.hexists("h:a", "nope") is False
    assert await r.hstrlen("h:a", "f1") == 2
    assert await r.hsetnx("h:a", "f1", "x") == 0
    assert await r.hsetnx("h:a", "f4", "v4") == 1
    assert await r.execute_command("HMSET", "h:a", "f5", "v5") is True  # hmset() is deprecated
    assert await r.hrandfield("h:a") in {b"f1", b"f2", b"f3", b"f4", b"f5"}
    assert sorted(await r.hrandfield("h:a", 10)) == [b"f1", b"f2", b"f3", b"f4", b"f5"]
    assert len(await r.hrandfield("h:a", -7)) == 7
    pairs = await r.hrandfield("h:a", 2, withvalues=True)
    assert len(pairs) == 4
    assert (await r.hgetall("h:a"))[pairs[0]] == pairs[1]
    cursor, found = await r.hscan("h:a", 0, match="f[12]")
    assert (cursor, found) == (0, {b"f1": b"v1", b"f2": b"w2"})
    assert await r.hdel("h:a", "f1", "f2", "nope") == 2
    assert await r.type("h:a") == b"hash"
    assert await r.exists("h:a") == 1
    assert await r.object("encoding", "h:a") == b"listpack"
    assert await r.hdel("h:a", "f3", "f4", "f5") == 3
    assert await r.exists("h:a") == 0  # the last field gone, the key goes too
    await refused(r.execute_command("HSET", "h:a", "f"),
                  "wrong number of arguments for 'hset' command")  # fmt: skip
    await refused(r.execute_command("HSET", "h:a", "f", "v", "g"),
                  "wrong number of arguments for 'hset' command")  # fmt: skip


async def test_hincrby_and_hincrbyfloat(r: Any) -> None:
    await r.delete("h:n")
    assert await r.hincrby("h:n", "c", 5) == 5
    assert await r.hincrby("h:n", "c", -7) == -2
    assert await r.hincrbyfloat("h:n", "f", 10.5) == 10.5
    assert await r.hincrbyfloat("h:n", "f", 0.1) == pytest.approx(10.6)
    assert await r.hget("h:n", "f") == b"10.6"
    await r.hset("h:n", "s", "text")
    await refused(r.hincrby("h:n", "s", 1), "hash value is not an integer")
    await refused(r.hincrbyfloat("h:n", "s", 1), "hash value is not a float")
    await refused(r.execute_command("HINCRBY", "h:n", "c", "x"),
                  "value is not an integer or out of range")  # fmt: skip
    await refused(r.execute_command("HINCRBYFLOAT", "h:n", "f", "inf"), "value is NaN or Infinity")
    await r.hset("h:n", "big", str(2**63 - 1))
    await refused(r.hincrby("h:n", "big", 1), "increment or decrement would overflow")
    assert await r.hget("h:n", "big") == str(2**63 - 1).encode()


async def test_wrongtype_both_ways(r: Any) -> None:
    await r.delete("wt:s", "wt:h")
    await r.set("wt:s", "1")
    await r.hset("wt:h", "f", "1")
    for call in (r.hset("wt:s", "f", "v"), r.hget("wt:s", "f"), r.hgetall("wt:s")):
        await refused(call, WRONGTYPE)
    for call in (
        r.get("wt:h"),
        r.incr("wt:h"),
        r.append("wt:h", "x"),
        r.strlen("wt:h"),
        r.getdel("wt:h"),
        r.incrbyfloat("wt:h", 1),
        r.set("wt:h", "x", get=True),
        r.getex("wt:h", ex=10),
    ):
        await refused(call, WRONGTYPE)
    assert await r.hgetall("wt:h") == {b"f": b"1"}  # nothing changed
    assert await r.mget("wt:s", "wt:h") == [b"1", None]  # MGET: nil, as Redis
    assert await r.type("wt:s") == b"string"
    assert await r.set("wt:h", "now a string") is True  # SET replaces any type
    assert await r.get("wt:h") == b"now a string"


async def test_a_hash_key_has_a_ttl(r: Any) -> None:
    await r.delete("ht:a", "ht:b")
    await r.hset("ht:a", mapping={"f": "1"})
    assert await r.expire("ht:a", 100) is True
    assert await r.hset("ht:a", "g", "2") == 1  # a write keeps the TTL
    assert await r.hincrby("ht:a", "f", 1) == 2
    assert 99 <= await r.ttl("ht:a") <= 100
    assert await r.persist("ht:a") is True
    assert await r.ttl("ht:a") == -1
    assert await r.hgetall("ht:a") == {b"f": b"2", b"g": b"2"}
    assert await r.pexpire("ht:a", 150) is True
    # A loaded machine may take longer than 150 ms for the next call, so the
    # read of the contents comes before the short TTL, and its end is awaited.
    assert await r.pttl("ht:a") in (-2, *range(1, 151))
    await asyncio.sleep(0.2)
    assert await r.exists("ht:a") == 0
    await r.hset("ht:a", mapping={"f": "1"})
    await r.expire("ht:a", 100)
    assert await r.rename("ht:a", "ht:b") is True  # moves the hash and its TTL
    assert await r.hgetall("ht:b") == {b"f": b"1"}
    assert 99 <= await r.ttl("ht:b") <= 100
    assert await r.copy("ht:b", "ht:a") is True
    assert await r.type("ht:a") == b"hash"
    assert await r.hgetall("ht:a") == {b"f": b"1"}
    assert [k async for k in r.scan_iter(match="ht:*", _type="hash")] != []
    assert sorted([k async for k in r.scan_iter(match="ht:*", _type="string")]) == []


async def test_in_multi(r: Any) -> None:
    await r.delete("hm:a", "hm:s")
    pipe = r.pipeline(transaction=True)
    pipe.hset("hm:a", mapping={"x": "1", "y": "2"})
    pipe.hincrby("hm:a", "x", 10)
    pipe.hget("hm:a", "x")
    pipe.hgetall("hm:a")
    pipe.set("hm:s", "v")
    pipe.type("hm:a")
    assert await pipe.execute() == [2, 11, b"11", {b"x": b"11", b"y": b"2"}, True, b"hash"]
    # A call's own error is its reply; the others apply (the engine's route).
    pipe = r.pipeline(transaction=True)
    pipe.hset("hm:s", "f", "v")
    pipe.hset("hm:a", "z", "3")
    pipe.get("hm:a")
    pipe.hlen("hm:a")
    replies = await pipe.execute(raise_on_error=False)
    assert [str(x) if isinstance(x, Exception) else x for x in replies] == [
        WRONGTYPE,
        1,
        WRONGTYPE,
        3,
    ]


async def test_the_http_api_shows_a_hash(resp_cluster: RespCluster, r: Any) -> None:
    await r.delete("hh:a")
    await r.hset("hh:a", mapping={"f": "v", "g": "w"})
    await r.set("hh:s", "x")
    leader = await resp_cluster.cluster.leader()
    base = leader.url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/v1/keys/hh:a") as answer:
            assert answer.status == 200
            assert answer.headers["X-Raftcache-Type"] == "hash"
            assert answer.content_type == "application/vnd.msgpack"
            assert msgpack.unpackb(await answer.read()) == {b"f": b"v", b"g": b"w"}
        async with http.post(f"{base}/v1/mget", json={"keys": ["hh:s", "hh:a"]}) as answer:
            body = await answer.json()
            assert body["hashes"] == [1]
        batch = {"ops": [{"op": "get", "key": "hh:a"}]}
        async with http.post(f"{base}/v1/batch", json=batch) as answer:
            assert answer.status == 409
            assert (await answer.json())["code"] == "wrong_type"
        ops = {
            "ops": [
                {
                    "op": "hash",
                    "key": "hh:a",
                    "action": "set",
                    "fields": ["aA=="],
                    "values": ["MQ=="],
                },
                {"op": "hash", "key": "hh:a", "action": "incr", "fields": ["aA=="], "by": 2},
                {"op": "hash", "key": "hh:a", "action": "read"},
            ]
        }
        async with http.post(f"{base}/v1/batch", json=ops) as answer:
            assert answer.status == 200
            results = (await answer.json())["results"]
            assert results[:2] == [{"count": 1}, {"value": 3}]
            assert len(results[2]["fields"]) == 6
        async with http.get(f"{base}/v1/keys/hh:a") as answer:
            version = int(answer.headers["ETag"].strip('"'))
    # A watch sees a hash's change as a set of the whole hash, typed.
    async with AsyncClient([base]) as client:
        watch = client.watch("hh:a", from_version=version - 1)
        async with asyncio.timeout(10):
            event = await anext(watch)
        await watch.aclose()
    assert (event.type, event.key, event.version, event.value_type) == (
        "set",
        "hh:a",
        version,
        "hash",
    )
    # The batch set h, then incremented it: this first change is the hash after the set.
    assert msgpack.unpackb(event.value) == {b"f": b"v", b"g": b"w", b"h": b"1"}
    async with aiohttp.ClientSession() as http:
        bad = {"ops": [{"op": "hash", "key": "hh:a", "action": "nope"}]}
        async with http.post(f"{base}/v1/batch", json=bad) as answer:
            assert answer.status == 400
            assert "action must be one of" in (await answer.json())["error"]
