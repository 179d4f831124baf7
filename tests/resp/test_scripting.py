"""EVAL, EVALSHA and SCRIPT through redis-py against a real 3-node cluster: replies, Redis's
error texts, the replicated script table, and redis-py's ``Lock`` and ``Script``, on the leader
and through a follower (forwarded over ``POST /v1/scripts``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import LockNotOwnedError, NoScriptError, ResponseError

from raftcache.cache.scripting import sha1_hex

from .cluster import RespCluster, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", params=["leader", "follower"])
async def r(resp_cluster: RespCluster, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "leader":
        port = await resp_cluster.leader_port()
    else:
        port = await resp_cluster.follower_port()
    client = aioredis.Redis(port=port, socket_timeout=10)
    yield client
    await client.aclose()


async def test_eval_converts_replies_as_redis_does(r: Any) -> None:
    assert await r.eval("return 1", 0) == 1
    assert await r.eval("return 3.9", 0) == 3  # numbers truncate to integers
    assert await r.eval("return {1, 'two', {3}, false, 'not reached'}", 0) == [
        1,
        b"two",
        [3],
        None,
        b"not reached",
    ]
    assert await r.eval("return {1, nil, 3}", 0) == [1]  # up to the first nil
    assert await r.eval("return true", 0) == 1
    assert await r.eval("return false", 0) is None
    assert await r.eval("return redis.status_reply('FINE')", 0) == b"FINE"
    assert await r.eval("return {ok='OK'}", 0) == b"OK"
    with pytest.raises(ResponseError, match=r"^My Error$"):
        await r.eval("return redis.error_reply('My Error')", 0)
    assert await r.eval("return {KEYS[1], ARGV[1], #KEYS, #ARGV}", 1, "k", b"\xff\x00") == [
        b"k",
        b"\xff\x00",
        1,
        1,
    ]


async def test_redis_call_runs_the_machines_commands(r: Any, resp_cluster: RespCluster) -> None:
    script = """
        redis.call('SET', KEYS[1], ARGV[1], 'EX', 100)
        local n = redis.call('INCRBY', KEYS[2], 5)
        return {redis.call('GET', KEYS[1]), n, redis.call('TTL', KEYS[1]),
                redis.call('EXISTS', KEYS[1], KEYS[2], 'missing'), redis.call('GET', 'missing'),
                redis.call('SET', KEYS[1], 'x', 'NX'), redis.call('DEL', KEYS[2])}
    """
    await r.delete("s:a", "s:n")
    assert await r.eval(script, 2, "s:a", "s:n", "hello") == [b"hello", 5, 100, 2, None, None, 1]
    assert await r.get("s:a") == b"hello"
    assert 0 < await r.ttl("s:a") <= 100
    # Every replica applied the same entry: the same value and version everywhere.
    servers = resp_cluster.cluster.servers

    async def applied() -> bool:
        items = [s.service.machine.get("s:a", 0.0) for s in servers]
        return all(item is not None for item in items) and len(set(items)) == 1

    await wait_for(applied)


async def test_error_texts_are_redis_texts(r: Any) -> None:
    with pytest.raises(ResponseError, match=r"^Number of keys can't be greater than number of"):
        await r.execute_command("EVAL", "return 1", 2, "k")
    with pytest.raises(ResponseError, match=r"^Number of keys can't be negative"):
        await r.execute_command("EVAL", "return 1", -1)
    with pytest.raises(ResponseError, match=r"^value is not an integer or out of range"):
        await r.execute_command("EVAL", "return 1", "x")
    with pytest.raises(ResponseError, match=r"^Error compiling script \(new function\): user_"):
        await r.eval("return +", 0)
    with pytest.raises(ResponseError, match=r"^user_script:1: Script attempted to access nonex"):
        await r.eval("return os.time()", 0)
    with pytest.raises(ResponseError, match=r"^user_script:1: Script attempted to create global"):
        await r.eval("x = 1", 0)
    with pytest.raises(ResponseError, match=r"^This Redis command is not allowed from script"):
        await r.eval("return redis.call('TIME')", 0)
    with pytest.raises(ResponseError, match=r"^This Redis command is not allowed from script"):
        await r.eval("return redis.call('RANDOMKEY')", 0)
    with pytest.raises(ResponseError, match=r"^Unknown Redis command called from script"):
        await r.eval("return redis.call('NOSUCH')", 0)
    await r.set("s:text", "abc")
    with pytest.raises(ResponseError, match=r"^value is not an integer or out of range script: "):
        await r.eval("return redis.call('INCR', KEYS[1])", 1, "s:text")
    # redis.pcall hands the error to the script as a table.
    assert (
        await r.eval("local e = redis.pcall('INCR', KEYS[1]) return e.err", 1, "s:text")
        == b"ERR value is not an integer or out of range"
    )
    with pytest.raises(NoScriptError, match=r"No matching script. Please use EVAL."):
        await r.evalsha("0" * 40, 0)
    with pytest.raises(ResponseError, match=r"^unknown subcommand 'NOPE'. Try SCRIPT HELP."):
        await r.execute_command("SCRIPT", "NOPE")


async def test_script_load_exists_flush_and_evalsha(r: Any, resp_cluster: RespCluster) -> None:
    body = "return 'loaded ' .. ARGV[1]"
    sha = await r.script_load(body)
    assert sha == sha1_hex(body.encode())
    assert await r.script_exists(sha, "f" * 40) == [True, False]
    assert await r.evalsha(sha, 0, "x") == b"loaded x"
    assert await r.evalsha(sha.upper(), 0, "y") == b"loaded y"
    # The table is replicated: every node knows the script.

    async def everywhere() -> bool:
        return all(s.service.machine.script(sha) is not None for s in resp_cluster.cluster.servers)

    await wait_for(everywhere)
    assert await r.script_flush() is True
    assert await r.script_exists(sha) == [False]
    with pytest.raises(NoScriptError):
        await r.evalsha(sha, 0, "x")


async def test_register_script_falls_back_from_evalsha_to_eval(r: Any) -> None:
    await r.script_flush()
    add = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await r.delete("s:counter")
    assert await add(keys=["s:counter"], args=[2]) == 2  # EVALSHA → NOSCRIPT → EVAL
    assert await r.script_exists(add.sha) == [True]  # EVAL cached it, as in Redis
    assert await add(keys=["s:counter"], args=[3]) == 5  # EVALSHA now


async def test_redis_py_lock_acquire_extend_reacquire_release(r: Any) -> None:
    lock = r.lock("s:lock", timeout=30)
    other = r.lock("s:lock", timeout=30, blocking=False)
    assert await lock.acquire(blocking=False)
    assert not await other.acquire()
    assert await lock.owned()
    assert await lock.extend(10)  # a Lua script: additional time
    left = await r.pttl("s:lock")
    assert 30 < left / 1000 <= 40, left
    assert await lock.reacquire()  # a Lua script: back to the full timeout
    assert await r.pttl("s:lock") / 1000 <= 30
    impostor = r.lock("s:lock", timeout=30)
    impostor.local.token = b"not-the-owner"
    with pytest.raises(LockNotOwnedError):
        await impostor.release()  # a Lua script: refused, the token does not match
    impostor.local.token = b"not-the-owner"  # release() forgot it
    with pytest.raises(LockNotOwnedError):
        await impostor.extend(10)
    assert await lock.owned()
    await lock.release()  # a Lua script: compare and delete
    assert await r.get("s:lock") is None
    assert await other.acquire()
    await other.release()


async def test_scripts_are_refused_inside_multi(r: Any) -> None:
    pipe = r.pipeline(transaction=True)
    pipe.eval("return 1", 0)
    with pytest.raises(ResponseError):
        await pipe.execute()


async def test_a_pipeline_keeps_its_order_around_scripts(r: Any) -> None:
    """EVALSHA reads the script table before it proposes: the INCRs after it in the pipeline
    (concurrent writes) must still reach the log after it."""
    get = r.register_script("return redis.call('GET', KEYS[1])")
    await r.script_load(get.script)
    await r.set("s:order", "0")
    pipe = r.pipeline(transaction=False)
    for _ in range(5):
        pipe.evalsha(get.sha, 1, "s:order")
        pipe.incr("s:order")
    assert await pipe.execute() == [b"0", 1, b"1", 2, b"2", 3, b"3", 4, b"4", 5]


async def test_a_status_or_error_text_cannot_add_resp_frames(r: Any) -> None:
    """Redis turns ``\\r``/``\\n`` of a status or error text into spaces: a script given
    ``OK\\r\\n:42`` answers one status, and the next reply on the connection is its own."""
    assert await r.eval("return redis.status_reply(ARGV[1])", 0, "OK\r\n:42") == b"OK  :42"
    with pytest.raises(ResponseError) as failed:
        await r.eval("return redis.error_reply(ARGV[1])", 0, "ERR no\r\n+OK")
    assert str(failed.value) == "no  +OK"
    assert await r.eval("return 5", 0) == 5
