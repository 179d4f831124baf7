"""A rolling upgrade with real ``raftcache serve`` processes: n3 plays the previous release
(``--max-command-format 1``). Format-2 requests answer 409 naming n3 while plain ones work; n3
restarted without the cap lets them through on every node; n3 started capped again — a
downgrade — finds entries it cannot apply and stops with a clear message instead of skipping
them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.nodes import (
    ProcessCluster,
    node_status,
    wait_applied,
    wait_for,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e

CAP = ["--max-command-format", "1"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    with ProcessCluster(tmp_path) as running:
        running.start("n1")
        running.start("n2")
        running.extra_args = CAP  # only n3 runs "the old release"
        running.start("n3")
        running.extra_args = []
        yield running


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_rolling_upgrade_with_real_processes(cluster: ProcessCluster) -> None:
    async with aiohttp.ClientSession() as http:
        leader = await wait_for_leader(cluster, http)
        async with http.put(leader.url + "/v1/keys/k?ttl=300", data=b"v") as resp:
            assert resp.status == 200
        status, body = await post(http, leader.url + "/v1/keys/k/ttl", {"ttl": 100})
        assert status == 409, body
        assert body["nodes"]["n3"] == 1
        assert "n3" in body["error"]
        ops = {"ops": [{"op": "incr", "key": "n"}]}
        status, body = await post(http, leader.url + "/v1/batch", ops)
        assert status == 409
        status, body = await post(http, leader.url + "/v1/keys/n/incr", {"by": 1})
        assert (status, body["value"]) == (200, 1)
        n3 = await node_status(http, cluster.nodes["n3"].url)
        assert n3 is not None
        assert (n3["command_format"], n3["cluster_command_format"]) == (1, 1)

        # Upgrade n3: a graceful stop, then the same data directory without the cap.
        assert cluster.terminate("n3") == 0
        cluster.start("n3")

        async def upgraded() -> tuple[int, Any] | None:
            leader = await wait_for_leader(cluster, http)
            answer = await post(http, leader.url + "/v1/keys/k/ttl", {"ttl": 100})
            return answer if answer[0] == 200 else None  # 409 until n3 answers its status

        _, body = await wait_for(upgraded, "the TTL change to be accepted", cluster=cluster)
        assert body["changed"] is True
        leader = await wait_for_leader(cluster, http)
        status, body = await post(http, leader.url + "/v1/batch", ops)
        assert (status, body) == (200, {"results": [{"value": 2}]})
        index = (await node_status(http, leader.url) or {})["commit_index"]
        for node in cluster.live():
            applied = await wait_applied(cluster, http, node, index)
            assert applied["cluster_command_format"] >= 2  # the gate may go on to 3
            async with http.get(node.url + "/v1/keys/n?consistency=stale") as resp:
                assert await resp.read() == b"2"

        # A downgrade: n3 capped again meets format-2 entries and stops, saying why.
        assert cluster.terminate("n3") == 0
        cluster.extra_args = CAP
        cluster.start("n3")
        cluster.extra_args = []
        code = await cluster.wait_exit("n3")
        assert code != 0
        assert "upgrade this node" in cluster.nodes["n3"].log_tail(80)
