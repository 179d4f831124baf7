"""End to end: hashes on real ``raftcache serve`` processes, through redis-py.

A hash with a TTL written on the leader survives the leader's SIGKILL (the new leader serves
its fields and its TTL); more hash writes follow while the old leader is down, every log is
compacted by a snapshot, and the old leader, restarted, can only catch up by InstallSnapshot —
which must carry the hashes: its own replica (a READONLY connection reads it) then holds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.e2e.nodes import (
    ProcessCluster,
    node_stats,
    node_status,
    wait_applied,
    wait_for,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e

FAST = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]


async def _eventually(call: Any, cluster: ProcessCluster) -> Any:
    """``await call()`` once it stops failing (an election in progress answers TRYAGAIN)."""

    async def attempt() -> Any:
        try:
            return await call()
        except aioredis.RedisError:
            return None

    return await wait_for(attempt, "the command to succeed", cluster=cluster)


async def test_a_hash_with_a_ttl_survives_a_leader_kill_and_travels_by_snapshot(
    tmp_path: Path,
) -> None:
    cluster = ProcessCluster(tmp_path, 3, extra_args=FAST)
    resp = cluster.give_resp_ports()
    with cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            r: Any = aioredis.Redis(port=resp[leader.node_id], socket_timeout=10)
            try:
                assert await r.hset("user:1", mapping={"name": "alice", "visits": "1"}) == 2
                assert await r.hincrby("user:1", "visits", 41) == 42
                assert await r.expire("user:1", 600) is True
            finally:
                await r.aclose()

            assert cluster.kill(leader.node_id) == -9
            survivor = await wait_for_leader(cluster, http)
            s: Any = aioredis.Redis(port=resp[survivor.node_id], socket_timeout=10)
            try:
                fields = await _eventually(lambda: s.hgetall("user:1"), cluster)
                assert fields == {b"name": b"alice", b"visits": b"42"}
                assert 590 <= await s.ttl("user:1") <= 600
                for i in range(5):  # writes the killed node never sees
                    await s.hset(f"user:{i + 2}", mapping={"n": str(i)})
                assert await s.hdel("user:1", "name") == 1
                last = int((await node_status(http, survivor.url) or {})["commit_index"])
            finally:
                await s.aclose()

            for node in cluster.live():  # compact every log past those writes
                await wait_applied(cluster, http, node, last)
                async with http.post(node.url + "/v1/snapshot") as answer:
                    assert answer.status == 200, await answer.text()

            cluster.start(leader.node_id)
            await wait_applied(cluster, http, leader, last)
            received = (await node_stats(http, leader.url))["raft"]["rpcs_received"]
            assert received.get("InstallSnapshot", 0) >= 1, received
            local: Any = aioredis.Redis(
                port=resp[leader.node_id], socket_timeout=10, single_connection_client=True
            )
            try:
                assert await local.execute_command("READONLY") in (True, b"OK")  # its replica
                assert await local.hgetall("user:1") == {b"visits": b"42"}
                assert 0 < await local.ttl("user:1") <= 600
                assert await local.type("user:2") == b"hash"
                assert await local.hget("user:6", "n") == b"4"
            finally:
                await local.aclose()
        assert cluster.crashed() == []
