"""redis-py (RESP2 and RESP3) against a real 3-node cluster: commands on the leader and on a
follower (forwarded to the leader over HTTP), pipelines, MULTI/EXEC, introspection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ExecAbortError, ResponseError

from tests.server.cluster import touched_since

from .cluster import RespCluster, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def leader(resp_cluster: RespCluster) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=await resp_cluster.leader_port(), socket_timeout=10)
    yield client
    await client.aclose()


@pytest_asyncio.fixture(loop_scope="module", params=[2, 3])
async def follower(
    resp_cluster: RespCluster, request: pytest.FixtureRequest
) -> AsyncIterator[aioredis.Redis]:
    port = await resp_cluster.follower_port()
    client = aioredis.Redis(port=port, protocol=request.param, socket_timeout=10)
    yield client
    await client.aclose()


async def raw(r: aioredis.Redis, *words: str) -> Any:
    """Send a command on one of ``r``'s connections, bypassing redis-py's reply callbacks."""
    pool: Any = r.connection_pool  # redis-py leaves parts of its pool API untyped
    conn = await pool.get_connection()
    try:
        await conn.send_command(*words)
        return await conn.read_response()
    finally:
        await pool.release(conn)


async def command(r: aioredis.Redis, *words: str | int) -> Any:
    """``r.execute_command`` (untyped in redis-py)."""
    client: Any = r
    return await client.execute_command(*words)


def protocol_of(r: aioredis.Redis) -> int:
    kwargs: dict[str, Any] = r.connection_pool.connection_kwargs
    return int(kwargs.get("protocol") or 2)


async def test_strings_on_the_leader(leader: aioredis.Redis) -> None:
    r = leader
    assert await r.ping() is True
    assert await r.echo("hé") == "hé".encode()
    assert await r.set("s:a", "1") is True
    assert await r.get("s:a") == b"1"
    assert await r.set("s:a", "2", nx=True) is None
    assert await r.set("s:b", "2", xx=True) is None
    assert await r.set("s:a", "3", xx=True, get=True) == b"1"
    assert await r.setnx("s:a", "x") is False
    assert await r.setnx("s:c", "x") is True
    assert await r.getset("s:c", "y") == b"x"
    assert await r.getdel("s:c") == b"y"
    assert await r.getdel("s:c") is None
    assert await r.mset({"s:m1": "a", "s:m2": "b"}) is True
    assert await r.mget("s:m1", "s:zz", "s:m2") == [b"a", None, b"b"]
    assert await r.strlen("s:m1") == 1
    assert await r.incr("s:n") == 1
    assert await r.incrby("s:n", 10) == 11
    assert await r.decr("s:n") == 10
    assert await r.decrby("s:n", 20) == -10
    with pytest.raises(ResponseError, match="not an integer"):
        await r.incr("s:m1")
    assert await r.exists("s:a", "s:a", "s:none") == 2
    assert await r.type("s:a") == b"string"
    assert await r.delete("s:a", "s:m1", "s:none") == 2
    assert await r.get("s:a") is None


async def test_expiry_commands(leader: aioredis.Redis) -> None:
    r = leader
    await r.set("e:a", "v", ex=100)
    assert 99 <= await r.ttl("e:a") <= 100
    assert await r.ttl("e:none") == -2
    await r.set("e:p", "v")
    assert await r.ttl("e:p") == -1
    assert await r.expire("e:p", 50, nx=True) is True
    assert await r.expire("e:p", 10, gt=True) is False
    assert await r.pexpire("e:p", 200_000, gt=True) is True
    assert 199_000 < await r.pttl("e:p") <= 200_000
    assert await r.persist("e:p") is True
    assert await r.ttl("e:p") == -1
    await r.set("e:a", "w", keepttl=True)
    assert await r.get("e:a") == b"w"
    assert 98 <= await r.ttl("e:a") <= 100
    await r.set("e:short", "v", px=150)
    await asyncio.sleep(0.4)
    assert await r.get("e:short") is None  # hidden from reads at once on expiry
    assert await r.expire("e:a", 0) is True  # an expiry in the past deletes
    assert await r.exists("e:a") == 0


async def test_writes_through_a_follower_reach_the_leader(
    follower: aioredis.Redis, leader: aioredis.Redis
) -> None:
    key = f"f:{protocol_of(follower)}"
    assert await follower.set(key, "v") is True
    assert await leader.get(key) == b"v"  # the leader has it: the write went through it
    assert await follower.get(key) == b"v"
    assert await follower.incr(key + ":n") == 1
    assert await follower.expire(key, 300) is True
    assert 299 <= await follower.ttl(key) <= 300
    assert 299 <= await leader.ttl(key) <= 300
    assert await follower.getdel(key) == b"v"
    assert await leader.exists(key) == 0
    assert await follower.dbsize() == await leader.dbsize()
    info = await follower.info("raft")
    assert info["raft_role"] == "follower"


async def test_a_pipeline_of_1000_commands_keeps_order(leader: aioredis.Redis) -> None:
    pipe = leader.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"p:{i}", i)
    for _ in range(200):
        pipe.incr("p:counter")
    for i in range(50):  # interleaved kinds: each must see the one before it
        pipe.set(f"p:{i}", -i)
        pipe.incr("p:counter")
        pipe.get(f"p:{i}")
        pipe.get("p:counter")
    for i in range(300):
        pipe.get(f"p:{i}")
    replies = await pipe.execute()
    assert len(replies) == 1000
    assert replies[:300] == [True] * 300
    assert replies[300:500] == list(range(1, 201))
    for i in range(50):
        expected = [True, 201 + i, str(-i).encode(), str(201 + i).encode()]
        assert replies[500 + 4 * i : 504 + 4 * i] == expected
    assert replies[700:] == [str(-i if i < 50 else i).encode() for i in range(300)]


async def test_a_pipeline_through_a_follower_keeps_order(follower: aioredis.Redis) -> None:
    key = f"fp:{protocol_of(follower)}"
    pipe = follower.pipeline(transaction=False)
    pipe.set(key, 0)
    for _ in range(100):
        pipe.incr(key)
    pipe.set(key + ":x", "a")
    pipe.get(key)
    replies = await pipe.execute()
    assert replies == [True, *range(1, 101), True, b"100"]


async def test_multi_exec_is_atomic_under_concurrency(resp_cluster: RespCluster) -> None:
    """Transfers between two counters keep their sum, as seen by transactional readers."""
    port = await resp_cluster.leader_port()
    clients = [aioredis.Redis(port=port, socket_timeout=20) for _ in range(6)]
    try:
        await clients[0].mset({"t:a": 1000, "t:b": 0})

        async def transfer(r: aioredis.Redis) -> None:
            for _ in range(15):
                pipe = r.pipeline(transaction=True)
                pipe.decrby("t:a", 3)
                pipe.incrby("t:b", 3)
                await pipe.execute()

        async def audit(r: aioredis.Redis) -> list[int]:
            sums = []
            for _ in range(15):
                pipe = r.pipeline(transaction=True)
                pipe.get("t:a")
                pipe.get("t:b")
                a, b = await pipe.execute()
                sums.append(int(a) + int(b))
            return sums

        results = await asyncio.gather(
            *(transfer(c) for c in clients[:4]), *(audit(c) for c in clients[4:])
        )
        assert all(s == 1000 for sums in results[4:] if sums for s in sums)
        assert await clients[0].mget("t:a", "t:b") == [b"820", b"180"]
    finally:
        for c in clients:
            await c.aclose()


async def test_multi_exec_errors(leader: aioredis.Redis) -> None:
    pool: Any = leader.connection_pool
    conn = await pool.get_connection()  # one connection: MULTI state is per connection
    try:

        async def send(*words: str) -> object:
            await conn.send_command(*words)
            try:
                return await conn.read_response()
            except ResponseError as exc:
                return exc

        assert await send("EXEC") is not None
        assert await send("MULTI") in (b"OK", "OK", True)
        assert await send("SET", "x:1", "a") in (b"QUEUED", "QUEUED")
        refused = await send("KEYS", "*")
        assert isinstance(refused, ResponseError)
        assert "inside MULTI" in str(refused)
        aborted = await send("EXEC")
        assert isinstance(aborted, ExecAbortError)
        assert await leader.get("x:1") is None  # nothing ran
        await send("MULTI")
        await send("SET", "x:1", "a")
        assert await send("DISCARD") in (b"OK", "OK", True)
        assert await leader.get("x:1") is None
        await send("MULTI")
        await send("SET", "x:2", "a", "EX", "nope")  # argument error: its own reply in EXEC
        await send("SET", "x:3", "b")
        replies = await send("EXEC")
        assert isinstance(replies, list)
        assert isinstance(replies[0], ResponseError)
        assert replies[1] in (b"OK", "OK")
    finally:
        await pool.release(conn)
    assert await leader.get("x:3") == b"b"


async def test_keys_scan_and_flush(resp_cluster: RespCluster) -> None:
    r = aioredis.Redis(port=await resp_cluster.follower_port(), socket_timeout=10)
    try:
        await r.mset({f"k:{i:03}": i for i in range(120)} | {"other": 1})
        assert len(await r.keys("k:*")) == 120
        assert await r.keys("k:00[0-4]") == [b"k:000", b"k:001", b"k:002", b"k:003", b"k:004"]
        seen = [key async for key in r.scan_iter(match="k:1*", count=7)]
        assert sorted(seen) == sorted(f"k:{i:03}".encode() for i in range(100, 120))
        with pytest.raises(ResponseError, match="invalid cursor"):
            await r.scan(cursor=10**9)
        assert await r.flushdb() is True
        assert await r.dbsize() == 0
        assert await r.keys("*") == []
    finally:
        await r.aclose()


async def test_connection_and_introspection(leader: aioredis.Redis) -> None:
    port = leader.connection_pool.connection_kwargs["port"]
    r = aioredis.Redis(port=port, protocol=3, client_name="t1", decode_responses=True)
    try:
        assert await r.client_getname() == "t1"
        assert isinstance(await r.client_id(), int)
        assert await command(r, "SELECT", 0) is True
        with pytest.raises(ResponseError, match="out of range"):
            await command(r, "SELECT", 1)
        info = await r.info()
        assert info["redis_version"] == "7.0.0"
        assert info["raft_role"] == "leader"
        assert {"raft_term", "raft_commit_index", "raft_members"} <= set(info)
        commands = await r.command()
        assert commands["get"]["arity"] == 2
        assert commands["mset"]["step_count"] == 2
        assert len(commands) > 40
        docs = await raw(r, "COMMAND", "DOCS", "GET")  # redis-py misparses COMMAND DOCS
        assert docs == {"get": {"summary": "Get a value", "since": "1.0.0", "group": "string"}}
        assert await raw(r, "COMMAND", "COUNT") == len(commands)
        assert "t1" in await command(r, "CLIENT", "LIST")
        assert await r.config_get("save") == {"save": ""}
        with pytest.raises(ResponseError, match="unknown command"):
            await command(r, "LPUSH", "l", "x")
        with pytest.raises(ResponseError, match="wrong number of arguments"):
            await command(r, "GET")
        with pytest.raises(ResponseError, match="WATCH is not supported"):
            await command(r, "WATCH", "k")
    finally:
        await r.aclose()


async def test_readonly_connections_read_their_own_replica(resp_cluster: RespCluster) -> None:
    follower = (await resp_cluster.cluster.followers())[0]
    resp = resp_cluster.resp[resp_cluster.cluster.servers.index(follower)]
    writer = aioredis.Redis(port=await resp_cluster.leader_port())
    reader = aioredis.Redis(port=resp.port, single_connection_client=True)
    try:
        await writer.set("ro:stale", "v")
        assert await command(reader, "READONLY") is True
        forwarded = resp.state.router.forwarded_total

        async def replicated() -> bool:
            return await reader.get("ro:stale") == b"v"

        await wait_for(replicated)
        assert await reader.mget("ro:stale", "ro:none") == [b"v", None]
        assert resp.state.router.forwarded_total == forwarded  # served here, not by the leader
        assert await command(reader, "READWRITE") is True
        assert await reader.get("ro:stale") == b"v"
        assert resp.state.router.forwarded_total > forwarded  # linearizable: via the leader
    finally:
        await writer.aclose()
        await reader.aclose()


async def test_client_no_touch_reads_leave_recency_alone(resp_cluster: RespCluster) -> None:
    leader = await resp_cluster.cluster.leader()
    follower = (await resp_cluster.cluster.followers())[0]
    writer = aioredis.Redis(port=resp_cluster.port_of(leader))
    # One connection each: NO-TOUCH is a connection's state. On the follower, reads are
    # forwarded to the leader over HTTP, which must not touch either.
    readers = [
        aioredis.Redis(port=resp_cluster.port_of(server), single_connection_client=True)
        for server in (leader, follower)
    ]
    try:
        await writer.mset({"nt:a": "1", "nt:b": "2"})
        start = leader.node.last_applied
        for r in readers:
            assert await r.client_no_touch("ON") == b"OK"
            assert await r.get("nt:a") == b"1"
            assert await r.mget("nt:a", "nt:b", "nt:none") == [b"1", b"2", None]
            assert await r.exists("nt:a", "nt:b") == 2
            assert await r.ttl("nt:a") == -1  # a transaction's read
            # A MULTI that only reads (sent on this connection: a redis-py pipeline takes
            # another one from the pool, without NO-TOUCH).
            assert await command(r, "MULTI") == b"OK"
            assert await command(r, "GET", "nt:a") == b"QUEUED"
            assert await command(r, "STRLEN", "nt:b") == b"QUEUED"
            assert await command(r, "EXEC") == [b"1", 1]
        await asyncio.sleep(1.5)  # more than the leader's touch interval (1 s)
        assert [k for k in touched_since(leader, start) if k.startswith("nt:")] == []
        # OFF again (and RESET, as in Redis) turns it off: reads touch once more.
        assert await command(readers[0], "CLIENT", "NO-TOUCH", "off") == b"OK"
        assert await readers[0].get("nt:a") == b"1"
        assert await readers[1].client_no_touch("ON") == b"OK"
        assert await command(readers[1], "RESET") in (b"RESET", "RESET")
        assert await readers[1].get("nt:b") == b"2"
        async with asyncio.timeout(10):
            while {"nt:a", "nt:b"} - set(touched_since(leader, start)):
                await asyncio.sleep(0.05)
        with pytest.raises(ResponseError, match=r"^syntax error$"):
            await command(readers[0], "CLIENT", "NO-TOUCH", "maybe")
        with pytest.raises(
            ResponseError, match=r"wrong number of arguments for 'client\|no-touch'"
        ):
            await command(readers[0], "CLIENT", "NO-TOUCH")
    finally:
        await writer.aclose()
        for r in readers:
            await r.aclose()
