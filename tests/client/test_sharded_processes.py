"""The blocking ``Client`` on ``raftcache serve --groups 4`` processes: it reads the map from
the stores, sends each key to its group leader's store, and when that store is killed with
SIGKILL every call still succeeds — through the stores left, which elect new leaders — and no
acknowledged write is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from raftcache.client import Client
from raftcache.slots import key_group
from tests.e2e.nodes import ProcessCluster, node_status, wait_for

pytestmark = pytest.mark.e2e

GROUPS = 4
FAST = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]


async def _group_leaders(cluster: ProcessCluster) -> dict[str, str]:
    """Group id → leader store, once the live stores agree on one for every group."""

    async def probe() -> dict[str, str] | None:
        async with aiohttp.ClientSession() as http:
            statuses = await asyncio.gather(*(node_status(http, n.url) for n in cluster.live()))
        seen: dict[str, set[str | None]] = {}
        for status in statuses:
            if status is None:
                return None
            for group in status["groups"]:
                if group["hosted"]:
                    seen.setdefault(group["group"], set()).add(group["leader"])
        live = {n.node_id for n in cluster.live()}
        if len(seen) != GROUPS or any(len(s) != 1 or not s <= live for s in seen.values()):
            return None
        return {g: str(next(iter(s))) for g, s in sorted(seen.items())}

    return await wait_for(probe, "a leader for every group", cluster=cluster)


def test_the_sync_client_routes_by_group_and_survives_a_killed_store(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3, extra_args=["--groups", str(GROUPS), *FAST])
    with cluster:
        cluster.start_all()
        asyncio.run(_group_leaders(cluster))
        keys = [f"item:{i}" for i in range(24)]
        assert {key_group(k, GROUPS) for k in keys} == set(range(GROUPS))
        with Client(cluster.endpoints, timeout=10.0) as client:
            for key in keys:
                client.set(key, key)
            assert client.shards is not None
            assert client.shards["groups"] == GROUPS
            assert client.mget(keys) == [k.encode() for k in keys]
            assert client.routing.direct >= len(keys)

            victim = asyncio.run(_group_leaders(cluster))["g0"]
            cluster.kill(victim)
            started = time.monotonic()
            for i, key in enumerate(keys):  # no call fails: the stores left take over
                assert client.get(key) == key.encode()
                client.set(key, f"after-{i}")
                assert client.incr("{item}:n") == i + 1
            assert time.monotonic() - started < 10.0
            assert client.mget(keys) == [f"after-{i}".encode() for i in range(len(keys))]
            assert client.routing.unreachable >= 1
            after = asyncio.run(_group_leaders(cluster))
            assert victim not in after.values()
        assert cluster.crashed() == []
