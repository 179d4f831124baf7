"""Fixtures of the RESP tests: one real 3-node cluster per module, and redis-py clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from .cluster import RespCluster, start_resp_cluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def resp_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RespCluster]:
    tmp: Path = tmp_path_factory.mktemp("resp")
    cluster = await start_resp_cluster(tmp)
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest_asyncio.fixture(loop_scope="module", params=["leader", "follower"])
async def r(resp_cluster: RespCluster, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A redis-py client of the module's cluster, on its leader and (a second run) on a
    follower, which forwards what it cannot serve."""
    if request.param == "leader":
        port = await resp_cluster.leader_port()
    else:
        port = await resp_cluster.follower_port()
    client: Any = aioredis.Redis(port=port, socket_timeout=10)  # redis-py: partly untyped
    yield client
    await client.aclose()
