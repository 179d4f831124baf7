"""The commands cache libraries send besides GET/SET — SETEX, PSETEX, GETEX, MSETNX, TOUCH,
EXPIRETIME, PEXPIRETIME, TIME, WAIT — through redis-py against a real 3-node cluster, on the
leader and through a follower (forwarded over HTTP), with Redis's replies and error texts.
(The sharded store's routing of them: ``test_sharded_routing``.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.server.cluster import touched_since

from .cluster import RespCluster, refused

pytestmark = pytest.mark.asyncio(loop_scope="module")


def wrong_args(name: str) -> str:
    return f"wrong number of arguments for '{name}' command"


async def test_setex_and_psetex(r: Any) -> None:
    # redis-py 8 deprecates its setex()/psetex() helpers; libraries still send the commands.
    assert await r.execute_command("SETEX", "sx:a", 100, "v") is True
    assert await r.get("sx:a") == b"v"
    assert 99 <= await r.ttl("sx:a") <= 100
    assert await r.execute_command("PSETEX", "sx:b", 50_000, b"w") is True
    assert 49_000 < await r.pttl("sx:b") <= 50_000
    assert await r.execute_command("SETEX", "sx:a", 5, "again") is True  # overwrites value and TTL
    assert await r.get("sx:a") == b"again"
    assert await r.ttl("sx:a") <= 5
    for seconds in ("0", "-1"):
        await refused(r.execute_command("SETEX", "sx:c", seconds, "v"),
                      "invalid expire time in 'setex' command")  # fmt: skip
    await refused(r.execute_command("PSETEX", "sx:c", "0", "v"),
                  "invalid expire time in 'psetex' command")  # fmt: skip
    await refused(r.execute_command("SETEX", "sx:c", "1.5", "v"),
                  "value is not an integer or out of range")  # fmt: skip
    await refused(r.execute_command("PSETEX", "sx:c", "ten", "v"),
                  "value is not an integer or out of range")  # fmt: skip
    await refused(r.execute_command("SETEX", "sx:c", "10"), wrong_args("setex"))
    await refused(r.execute_command("PSETEX", "sx:c", "10", "v", "x"), wrong_args("psetex"))
    assert await r.exists("sx:c") == 0


async def test_getex(r: Any) -> None:
    await r.set("gx:a", "v")
    assert await r.getex("gx:a") == b"v"  # no option: a GET
    assert await r.ttl("gx:a") == -1
    assert await r.getex("gx:a", ex=100) == b"v"
    assert 99 <= await r.ttl("gx:a") <= 100
    assert await r.getex("gx:a", px=20_000) == b"v"
    assert 19_000 < await r.pttl("gx:a") <= 20_000
    at = int(time.time()) + 500
    assert await r.getex("gx:a", exat=at) == b"v"
    assert await r.expiretime("gx:a") == at
    assert await r.getex("gx:a", pxat=at * 1000 + 250) == b"v"
    assert await r.pexpiretime("gx:a") == at * 1000 + 250
    assert await r.getex("gx:a", persist=True) == b"v"
    assert await r.ttl("gx:a") == -1
    assert await r.getex("gx:missing", ex=10) is None
    assert await r.exists("gx:missing") == 0
    # An instant already past deletes the key, which GETEX still returns (as Redis does).
    assert await r.execute_command("GETEX", "gx:a", "EXAT", "1") == b"v"
    assert await r.exists("gx:a") == 0
    await r.set("gx:a", "v")
    for argv, message in [
        (("EX", "0"), "invalid expire time in 'getex' command"),
        (("PXAT", "-5"), "invalid expire time in 'getex' command"),
        (("EX", "soon"), "value is not an integer or out of range"),
        (("EX", "10", "PX", "10"), "syntax error"),
        (("PERSIST", "EX", "10"), "syntax error"),
        (("EX", "10", "PERSIST"), "syntax error"),
        (("EX",), "syntax error"),
        (("KEEPTTL",), "syntax error"),
    ]:
        await refused(r.execute_command("GETEX", "gx:a", *argv), message)
    await refused(r.execute_command("GETEX"), wrong_args("getex"))
    assert await r.ttl("gx:a") == -1  # nothing was applied
    async with r.pipeline(transaction=True) as pipe:  # MULTI of batch ops: one batch
        pipe.execute_command("SETEX", "gx:m", 10, "1")
        pipe.getex("gx:m", ex=50)
        pipe.getex("gx:m")
        assert await pipe.execute() == [True, b"1", b"1"]
    assert 45 <= await r.ttl("gx:m") <= 50


async def test_msetnx(r: Any) -> None:
    await r.delete("nx:a", "nx:b", "nx:c")
    assert await r.msetnx({"nx:a": "1", "nx:b": "2"}) is True
    assert await r.mget("nx:a", "nx:b") == [b"1", b"2"]
    # One key exists: nothing is set.
    assert await r.msetnx({"nx:c": "3", "nx:a": "new"}) is False
    assert await r.mget("nx:a", "nx:c") == [b"1", None]
    # A key named twice gets its last value, as in Redis.
    assert await r.execute_command("MSETNX", "nx:c", "x", "nx:c", "y") == 1
    assert await r.get("nx:c") == b"y"
    await refused(r.execute_command("MSETNX", "nx:d", "1", "nx:e"), wrong_args("msetnx"))
    await refused(r.execute_command("MSETNX", "nx:d"), wrong_args("msetnx"))
    async with r.pipeline(transaction=True) as pipe:  # inside MULTI: the engine
        pipe.msetnx({"nx:d": "4", "nx:e": "5"})
        pipe.msetnx({"nx:e": "6", "nx:f": "7"})
        pipe.mget("nx:d", "nx:e", "nx:f")
        assert await pipe.execute() == [True, False, [b"4", b"5", None]]
    await r.delete("nx:a", "nx:b", "nx:c", "nx:d", "nx:e")


async def test_touch_expiretime_and_pexpiretime(r: Any) -> None:
    await r.delete("tt:a", "tt:b", "tt:missing")
    await r.set("tt:a", "1")
    at = int(time.time()) + 1000
    await r.set("tt:b", "2", pxat=at * 1000 + 600)
    assert await r.touch("tt:a", "tt:b", "tt:missing", "tt:a") == 3
    await refused(r.execute_command("TOUCH"), wrong_args("touch"))
    assert await r.expiretime("tt:missing") == -2
    assert await r.pexpiretime("tt:missing") == -2
    assert await r.expiretime("tt:a") == -1
    assert await r.pexpiretime("tt:a") == -1
    assert await r.pexpiretime("tt:b") == at * 1000 + 600
    assert await r.expiretime("tt:b") == at + 1  # rounded to the nearest second, as Redis
    await refused(r.execute_command("EXPIRETIME"), wrong_args("expiretime"))
    await refused(r.execute_command("PEXPIRETIME", "tt:a", "tt:b"), wrong_args("pexpiretime"))
    async with r.pipeline(transaction=True) as pipe:
        pipe.set("tt:a", "3", ex=100)
        pipe.expiretime("tt:a")
        pipe.touch("tt:a", "tt:missing")
        _, expiry, touched = await pipe.execute()
    assert abs(expiry - (time.time() + 100)) <= 2
    assert touched == 1


async def test_time(r: Any) -> None:
    seconds, micros = await r.time()
    assert abs(seconds + micros / 1e6 - time.time()) < 5
    assert 0 <= micros < 1_000_000
    pool: Any = r.connection_pool  # the reply itself, bypassing redis-py's callback
    conn = await pool.get_connection()
    try:
        await conn.send_command("TIME")
        parts = await conn.read_response()
    finally:
        await pool.release(conn)
    assert len(parts) == 2
    assert all(isinstance(p, bytes) and p.isdigit() for p in parts)
    await refused(r.execute_command("TIME", "now"), wrong_args("time"))
    async with r.pipeline(transaction=True) as pipe:  # in MULTI, the transaction's instant
        pipe.set("tm:a", "1")
        pipe.time()
        _, (seconds, _) = await pipe.execute()
    assert abs(seconds - time.time()) < 5


async def test_wait(r: Any) -> None:
    await r.set("w:a", "1")
    # A write is answered once committed: on a majority of the 3 voters, one follower at least.
    assert await r.wait(1, 0) >= 1
    assert 1 <= await r.wait(2, 2000) <= 2
    started = time.monotonic()
    assert 1 <= await r.wait(5, 100) <= 2  # 5 can never be reached: the timeout answers
    assert time.monotonic() - started < 2
    assert 1 <= await r.wait(5, 0) <= 2  # unreachable and no timeout: at once, not forever
    assert await r.wait(-1, 0) >= 1
    await refused(r.execute_command("WAIT", "1", "-1"), "timeout is negative")
    await refused(r.execute_command("WAIT", "one", "0"), "value is not an integer or out of range")
    await refused(
        r.execute_command("WAIT", "1", "0.5"), "timeout is not an integer or out of range"
    )
    await refused(r.execute_command("WAIT", "1"), wrong_args("wait"))


async def test_wait_on_the_leader_sees_followers_catch_up(resp_cluster: RespCluster) -> None:
    client: Any = aioredis.Redis(port=await resp_cluster.leader_port(), socket_timeout=10)
    try:
        await client.set("w:b", "1")
        assert await client.wait(2, 5000) == 2  # both followers catch up on loopback
    finally:
        await client.aclose()


async def test_touch_refreshes_recency_even_with_no_touch(resp_cluster: RespCluster) -> None:
    leader = await resp_cluster.cluster.leader()
    client: Any = aioredis.Redis(
        port=resp_cluster.port_of(leader), single_connection_client=True, socket_timeout=10
    )
    try:
        await client.set("rt:a", "1")
        start = leader.node.last_applied
        assert await client.client_no_touch("ON") == b"OK"
        assert await client.touch("rt:a", "rt:none") == 1
        async with asyncio.timeout(5):  # the leader proposes its touches once a second
            while "rt:a" not in touched_since(leader, start):
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()


async def test_command_reports_the_new_commands(r: Any) -> None:
    info = await r.command()
    expected = {  # name: (arity, first key, last key, step)
        "setex": (4, 1, 1, 1),
        "psetex": (4, 1, 1, 1),
        "getex": (-2, 1, 1, 1),
        "msetnx": (-3, 1, -1, 2),
        "touch": (-2, 1, -1, 1),
        "expiretime": (2, 1, 1, 1),
        "pexpiretime": (2, 1, 1, 1),
        "time": (1, 0, 0, 0),
        "wait": (3, 0, 0, 0),
    }
    for name, (arity, first, last, step) in expected.items():
        found = info[name]
        positions = (found["first_key_pos"], found["last_key_pos"], found["step_count"])
        assert (found["arity"], *positions) == (arity, first, last, step), name
    assert "write" in info["msetnx"]["flags"]
    assert "readonly" in info["touch"]["flags"]
