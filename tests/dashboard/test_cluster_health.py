"""The dashboard's data endpoint on real in-process nodes: quorum margin, memory, errors,
version, uptime and read counts come from the nodes' own ``/v1/stats``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raftcache import __version__
from tests.server.cluster import Cluster, start_cluster


async def _view(cluster: Cluster, url: str) -> Any:
    async with cluster.session.get(f"{url}/dashboard/cluster.json") as resp:
        assert resp.status == 200
        return await resp.json()


async def test_quorum_warning_and_node_health_from_real_nodes(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, 3)
    try:
        leader = await cluster.leader()
        http = cluster.session
        async with http.put(f"{leader.url}/v1/keys/k", data=b"v") as resp:
            assert resp.status == 200
        for _ in range(3):
            async with http.get(f"{leader.url}/v1/keys/k") as resp:
                assert resp.status == 200
        async with http.get(f"{leader.url}/v1/stats") as resp:
            process = (await resp.json())["process"]
        assert process["version"] == __version__
        assert process["uptime_s"] > 0
        assert process["requests"] >= 4  # the PUT and the GETs, this one not yet
        assert process["server_errors"] == 0
        assert process["rss_bytes"] is None or process["rss_bytes"] > 1_000_000

        view = await _view(cluster, leader.url)
        assert view["quorum"]["tolerance"] == 1
        assert view["quorum"]["at_risk"] is False
        rows = {row["id"]: row for row in view["nodes"]}
        me = rows[leader.node.node_id]
        assert me["version"] == __version__
        assert me["reads"] >= 3
        assert view["totals"]["reads"] >= 3
        assert view["totals"]["requests"] >= 4

        follower = next(s for s in cluster.servers if s is not leader)
        await follower.stop()
        view = await _view(cluster, leader.url)
        assert view["quorum"]["at_risk"] is True
        assert view["quorum"]["up"] == 2
        assert {r["id"]: r["reachable"] for r in view["nodes"]}[follower.node.node_id] is False
    finally:
        await cluster.stop()
