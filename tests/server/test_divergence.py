"""Divergence detection in a real cluster (HTTP on loopback, docs/divergence.md): a follower
whose store is altered behind Raft's back is caught within one check interval — the alarm on
every node's /v1/status, the metric, the dashboard — and refuses reads of every consistency
while the healthy nodes serve; the operator clears the alarm."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from raftcache.cache.entries import NEVER
from tests.server.cluster import start_cluster

TOKEN = "cluster-secret"


async def _json(cluster: Any, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with cluster.session.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_a_follower_altered_behind_raft_is_alarmed_and_refuses_reads(
    tmp_path: Path,
) -> None:
    cluster = await start_cluster(tmp_path, digest_check_interval_s=1.0, cluster_token=TOKEN)
    try:
        leader = await cluster.leader()
        for i in range(10):
            status, _ = await _json(cluster, "PUT", f"{leader.url}/v1/keys/k{i}", data=b"v")
            assert status == 200
        followers = await cluster.followers()
        diverged, healthy = followers
        diverged_id = diverged.node.node_id
        machine = diverged.service.machine
        async with asyncio.timeout(10):
            while machine.get("k9", 0) is None:
                await asyncio.sleep(0.05)
        # The internal digest route needs the cluster token.
        status, _ = await _json(cluster, "GET", f"{diverged.url}/raft/digest?index=1")
        assert status == 401

        # Behind Raft's back: one follower's store changes, no log entry says so.
        machine._store.put("k3", b"tampered", 10**6, NEVER, 0.0)

        async with asyncio.timeout(8):  # one interval, the format raise, the ALARM entry
            while not all(s.service.machine.alarms for s in cluster.servers):
                await asyncio.sleep(0.1)
        for server in cluster.servers:
            status, body = await _json(cluster, "GET", f"{server.url}/v1/status")
            assert status == 200
            assert [a["node"] for a in body["alarms"]] == [diverged_id]
            assert "digest" in body["alarms"][0]["reason"]
            assert body["cluster_command_format"] >= 3  # the gate may go on to the newest
        async with cluster.session.get(f"{diverged.url}/metrics") as resp:
            assert "raftcache_cache_divergence_alarms 1.0" in await resp.text()
        status, view = await _json(cluster, "GET", f"{healthy.url}/dashboard/cluster.json")
        assert status == 200
        assert [a["node"] for a in view["alarms"]] == [diverged_id]
        assert {row["id"]: row["diverged"] for row in view["nodes"]}[diverged_id] is True

        # The diverged replica refuses reads of every consistency, naming the reason.
        for consistency in ("linearizable", "lease", "stale"):
            url = f"{diverged.url}/v1/keys/k1?consistency={consistency}"
            async with cluster.session.get(url) as resp:
                assert resp.status == 503
                assert "Retry-After" in resp.headers
                body = await resp.json()
                assert body["diverged"] is True
                assert body["node"] == diverged_id
                assert diverged_id in body["error"]
        # The healthy ones serve.
        async with cluster.session.get(f"{healthy.url}/v1/keys/k3?consistency=stale") as resp:
            assert resp.status == 200
            assert await resp.read() == b"v"
        async with cluster.session.get(f"{leader.url}/v1/keys/k3") as resp:
            assert resp.status == 200
        # It still forwards writes.
        status, _ = await _json(cluster, "PUT", f"{diverged.url}/v1/keys/w", data=b"x")
        assert status == 200

        # The operator rebuilds the replica (here: undoes the change) and clears the alarm,
        # through any node (forwarded to the leader).
        version = leader.service.machine.get("k3", 0)
        assert version is not None
        machine._store.put("k3", b"v", version.version, NEVER, 0.0)
        status, body = await _json(cluster, "DELETE", f"{diverged.url}/v1/alarms/{diverged_id}")
        assert (status, body["alarms_left"]) == (200, 0)
        async with asyncio.timeout(5):
            while any(s.service.machine.alarms for s in cluster.servers):
                await asyncio.sleep(0.05)
        async with cluster.session.get(f"{diverged.url}/v1/keys/k1?consistency=stale") as resp:
            assert resp.status == 200
        outcome = await leader.service.divergence.check_now()
        assert outcome is not None
        assert outcome.diverged == {}
        assert set(outcome.digests) == {s.node.node_id for s in cluster.servers}
    finally:
        await cluster.stop()
