"""End to end over the stream transport: real ``raftcache serve --raft-transport stream``
processes. Writes through a follower, ``kill -9`` of a follower and its restart, and every node
holds the same data afterwards; Raft traffic went through the stream, not the HTTP routes. And a
mixed cluster (n1 on ``http``, n2 and n3 on ``stream``) where each node leads in turn."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.nodes import (
    ProcessCluster,
    eventually_equal,
    mget,
    node_stats,
    node_status,
    wait_applied,
    wait_for,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e

STREAM = ["--raft-transport", "stream"]


async def _put(http: aiohttp.ClientSession, url: str, key: str, value: bytes) -> None:
    async with http.put(f"{url}/v1/keys/{key}", data=value) as resp:
        assert resp.status == 200, await resp.text()


async def _same_everywhere(
    cluster: ProcessCluster, http: aiohttp.ClientSession, expected: dict[str, bytes]
) -> None:
    """Every running node applies the leader's commit index and holds exactly ``expected``."""
    leader = await wait_for_leader(cluster, http)
    status = await node_status(http, leader.url)
    assert status is not None
    keys = sorted(expected)
    want: list[str | None] = [base64.b64encode(expected[k]).decode() for k in keys]
    for node in cluster.live():
        await wait_applied(cluster, http, node, status["commit_index"])
        stale = functools.partial(mget, http, node.url, keys, "stale")
        await eventually_equal(stale, want, f"{node.node_id}'s data", cluster=cluster)


async def _stream_route(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/raft/v1/stream") as resp:
        return resp.status  # 426: served (a plain GET is told to upgrade); 404: not served


async def _http_append_entries(http: aiohttp.ClientSession, url: str) -> float:
    """How many AppendEntries the node's HTTP route served (its /metrics, all statuses)."""
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("raftcache_http_requests_total") and "/raft/append-entries" in line
    )


async def test_stream_cluster_follower_kill_and_restart(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, extra_args=STREAM) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            via, victim = (n for n in cluster.nodes.values() if n is not leader)
            expected: dict[str, bytes] = {}
            for i in range(30):
                key, value = f"before-{i:02d}", bytes([i]) * (i + 1)
                await _put(http, via.url, key, value)  # forwarded to the leader
                expected[key] = value
            assert cluster.kill(victim.node_id) == -9
            for i in range(30):
                key, value = f"during-{i:02d}", f"value {i}".encode()
                await _put(http, via.url, key, value)  # leader + via are a quorum
                expected[key] = value
            cluster.start(victim.node_id)  # same port, same data directory

            async def victim_up() -> bool | None:
                return True if await node_status(http, victim.url) is not None else None

            await wait_for(victim_up, f"{victim.node_id} serving again", cluster=cluster)
            await _put(http, via.url, "after", b"restarted")
            expected["after"] = b"restarted"
            await _same_everywhere(cluster, http, expected)

            leader = await wait_for_leader(cluster, http)
            for node in cluster.live():
                assert await _stream_route(http, node.url) == 426
                if node is not leader:
                    # Replication reached the followers through the stream only.
                    assert await _http_append_entries(http, node.url) == 0
                    inbound = (await node_stats(http, node.url))["network"]["inbound"]
                    assert inbound["AppendEntries"][leader.node_id]["ok"] > 0


async def test_mixed_transports_each_node_leading(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path) as cluster:
        cluster.start("n1")  # HTTP only: it does not even serve the stream
        cluster.extra_args = STREAM
        cluster.start("n2")
        cluster.start("n3")
        cluster.extra_args = []
        async with aiohttp.ClientSession() as http:
            expected: dict[str, bytes] = {}
            for lead in ("n1", "n2", "n3"):
                leader = await wait_for_leader(cluster, http)
                if leader.node_id != lead:
                    async with http.post(
                        leader.url + "/v1/leader/transfer", json={"to": lead}
                    ) as resp:
                        assert resp.status == 200, await resp.text()
                    assert (await wait_for_leader(cluster, http)).node_id == lead
                for node in cluster.nodes.values():
                    key, value = f"{lead}-{node.node_id}", f"{lead} via {node.node_id}".encode()
                    await _put(http, node.url, key, value)
                    expected[key] = value
                await _same_everywhere(cluster, http, expected)
            assert await _stream_route(http, cluster.nodes["n1"].url) == 404
            assert await _stream_route(http, cluster.nodes["n2"].url) == 426
            # While n2 and n3 led, they could reach n1 over HTTP only.
            assert await _http_append_entries(http, cluster.nodes["n1"].url) > 0
