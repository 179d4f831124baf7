"""RESP over the cache's command format 2, with redis-py against a real 3-node cluster:
EXPIRE/PERSIST are TTL-only changes (the value is never rewritten), SET KEEPTTL/EXAT are one
batch, FLUSHDB is one log entry, a MULTI of plain ops (INCR included) is one batch with no read
first — on the leader and through a follower. Then the same commands on a cluster whose nodes
are capped at format 1 (a rolling upgrade not finished) take the old routes and still answer
as Redis does."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from raftcache.cache.commands import BatchCommand, SetOp, decode
from raftcache.cache.commands_v2 import FlushCommand, IncrOp, TtlOp
from raftcache.cache.formats import COMMAND_VERSION
from raftcache.process.serve import NodeServer
from raftcache.resp import start_resp_server
from tests.server.cluster import start_cluster

from .cluster import RespCluster

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def v2(resp_cluster: RespCluster) -> RespCluster:
    """The module's cluster with command format 2 enabled (the leader would do it by itself
    within seconds; the tests must not depend on when)."""
    leader = await resp_cluster.cluster.leader()
    await leader.service.ensure_format(2)
    return resp_cluster


@pytest_asyncio.fixture(loop_scope="module", params=["leader", "follower"])
async def r(v2: RespCluster, request: pytest.FixtureRequest) -> AsyncIterator[aioredis.Redis]:
    port = await (v2.leader_port() if request.param == "leader" else v2.follower_port())
    client = aioredis.Redis(port=port, socket_timeout=10)
    await client.flushdb()
    yield client
    await client.aclose()


def commands_since(server: NodeServer, index: int) -> list[Any]:
    """The cache commands the leader's log holds after ``index``."""
    log = server.node.core.log
    found = []
    for i in range(index + 1, log.last_index() + 1):
        entry = log.entry(i)
        if entry.command:
            try:
                found.append(decode(entry.command))
            except Exception:  # a Raft-internal entry (no-op, configuration)
                continue
    return found


async def test_info_reports_the_command_formats(v2: RespCluster, r: aioredis.Redis) -> None:
    info = await r.info("raft")
    assert info["raft_command_format_max"] == COMMAND_VERSION
    assert info["raft_command_format"] >= 2  # the background gate may go on to the newest


async def test_expire_changes_the_ttl_alone(v2: RespCluster, r: aioredis.Redis) -> None:
    leader = await v2.cluster.leader()
    await r.set("k", "value", ex=100)
    before = leader.node.commit_index
    version = (await leader.service.get("k")).version  # type: ignore[union-attr]
    assert await r.expire("k", 50) is True
    written = [c for c in commands_since(leader, before) if isinstance(c, BatchCommand)]
    ops = [op for c in written for op in c.ops]
    assert any(isinstance(op, TtlOp) and op.key == "k" for op in ops)
    assert not any(isinstance(op, SetOp) for op in ops)  # the value was not rewritten
    assert 45 <= await r.ttl("k") <= 50
    assert await r.get("k") == b"value"
    assert (await leader.service.get("k")).version > version  # type: ignore[union-attr]
    assert await r.expire("k", 10, gt=True) is False
    assert await r.expire("k", 10, lt=True) is True
    assert await r.expire("k", 99, nx=True) is False
    assert await r.expire("k", 60, xx=True, gt=True) is True
    assert await r.expire("k", 30, xx=True, lt=True) is True  # the transaction route
    assert await r.persist("k") is True
    assert await r.ttl("k") == -1
    assert await r.persist("k") is False
    assert await r.pexpireat("k", int(time.time() * 1000) + 20_000) is True
    assert 15_000 <= await r.pttl("k") <= 20_000
    assert await r.expire("k", -1) is True  # a past expiry deletes
    assert await r.exists("k") == 0
    assert await r.expire("missing", 5) is False


async def test_set_keepttl_and_exat_are_one_batch(v2: RespCluster, r: aioredis.Redis) -> None:
    await r.set("s", "a", ex=100)
    assert await r.set("s", "b", keepttl=True) is True
    assert 95 <= await r.ttl("s") <= 100
    assert await r.get("s") == b"b"
    assert await r.set("s", "c", keepttl=True, get=True) == b"b"
    assert await r.ttl("s") > 90
    assert await r.set("s", "d", exat=int(time.time()) + 500) is True
    assert 490 <= await r.ttl("s") <= 500
    assert await r.set("s", "e", exat=int(time.time()) - 10) is True  # already past
    assert await r.get("s") is None
    assert await r.set("fresh", "x", keepttl=True) is True
    assert await r.ttl("fresh") == -1


async def test_flushdb_is_one_log_entry(v2: RespCluster, r: aioredis.Redis) -> None:
    leader = await v2.cluster.leader()
    for start in range(0, 2700, 900):  # more than one listing page; a batch holds ≤ 1000 ops
        await r.mset({f"f:{i:05d}": i for i in range(start, start + 900)})
    before = leader.node.commit_index
    assert await r.flushdb() is True
    assert await r.dbsize() == 0
    written = commands_since(leader, before)
    assert [type(c) for c in written if not hasattr(c, "keys")] == [FlushCommand]
    assert not any(isinstance(c, BatchCommand) for c in written)


async def test_multi_with_incrs_is_one_batch(v2: RespCluster, r: aioredis.Redis) -> None:
    leader = await v2.cluster.leader()
    before = leader.node.commit_index
    async with r.pipeline(transaction=True) as pipe:
        # One call per line: redis-py's typing does not follow a chain of pipeline calls.
        pipe.incr("n")
        pipe.incrby("n", 10)
        pipe.get("n")
        pipe.expire("n", 100)
        pipe.set("o", "1")
        pipe.decr("o")
        replies = await pipe.execute()
    assert replies == [1, 11, b"11", True, True, 0]
    batches = [c for c in commands_since(leader, before) if isinstance(c, BatchCommand)]
    assert len(batches) == 1
    assert sum(isinstance(op, IncrOp) for op in batches[0].ops) == 3
    assert 95 <= await r.ttl("n") <= 100

    # A MULTI that only reads stays a read (one barrier): no log entry.
    before = leader.node.commit_index
    async with r.pipeline(transaction=True) as pipe:
        pipe.get("n")
        pipe.exists("n", "o")
        pipe.strlen("n")
        assert await pipe.execute() == [b"11", 2, 2]
    assert not any(isinstance(c, BatchCommand) for c in commands_since(leader, before))

    # An INCR on text fails alone, as in Redis: the engine gives each call its own reply.
    await r.set("text", "abc")
    async with r.pipeline(transaction=True) as pipe:
        pipe.incr("n")
        pipe.incr("text")
        pipe.incr("n")
        replies = await pipe.execute(raise_on_error=False)
    assert replies[0] == 12
    assert isinstance(replies[1], ResponseError)
    assert replies[2] == 13


@pytest_asyncio.fixture(loop_scope="module")
async def old(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[int]]:
    """RESP ports of a cluster whose nodes are all capped at command format 1."""
    cluster = await start_cluster(tmp_path_factory.mktemp("old"), max_command_format=1)
    servers = []
    try:
        for server in cluster.servers:
            servers.append(
                await start_resp_server(
                    server.service, server.node, "127.0.0.1", 0, clock=time.time
                )
            )
        leader = await cluster.leader()
        yield [servers[cluster.servers.index(leader)].port] + [
            s.port for i, s in enumerate(servers) if cluster.servers[i] is not leader
        ]
    finally:
        for started in servers:
            await started.stop()
        await cluster.stop()


@pytest.mark.parametrize("which", [0, 1])
async def test_before_the_upgrade_the_old_routes_answer_the_same(
    old: list[int], which: int
) -> None:
    r = aioredis.Redis(port=old[which], socket_timeout=10)
    try:
        await r.flushdb()  # the paged fallback
        await r.set("k", "v", ex=100)
        assert await r.expire("k", 50) is True
        assert 45 <= await r.ttl("k") <= 50
        assert await r.persist("k") is True
        assert await r.set("k", "w", keepttl=True) is True
        assert await r.get("k") == b"w"
        async with r.pipeline(transaction=True) as pipe:
            pipe.incr("n")
            pipe.incr("n")
            pipe.get("n")
            assert await pipe.execute() == [1, 2, b"2"]
        # GETEX with an option: a transaction on the key's version (its batch needs version 2).
        assert await r.getex("k", ex=100) == b"w"
        assert 95 <= await r.ttl("k") <= 100
        assert await r.getex("k", persist=True) == b"w"
        assert await r.pexpiretime("k") == -1
        assert await r.getex("k", exat=1) == b"w"  # past: deleted
        assert await r.exists("k") == 0
        await r.mset({f"x{i}": i for i in range(900)})
        await r.mset({f"y{i}": i for i in range(900)})
        assert await r.flushdb() is True
        assert await r.dbsize() == 0
    finally:
        await r.aclose()


@pytest.mark.parametrize("which", [0, 1])
async def test_before_the_upgrade_hash_commands_answer_which_format_they_need(
    old: list[int], which: int
) -> None:
    r: Any = aioredis.Redis(port=old[which], socket_timeout=10)
    try:
        with pytest.raises(ResponseError, match="needs command format 5") as refused:
            await r.hset("h", "f", "v")
        assert "finish upgrading every node" in str(refused.value)
        # Pipelined with string writes (one shared log entry): only the hash write fails.
        async with r.pipeline(transaction=False) as pipe:
            pipe.set("s", "1")
            pipe.hset("h", "f", "v")
            pipe.incr("s")
            replies = await pipe.execute(raise_on_error=False)
        assert replies[0] is True
        assert isinstance(replies[1], ResponseError)
        assert replies[2] == 2
        assert await r.exists("h") == 0
    finally:
        await r.aclose()
