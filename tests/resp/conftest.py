"""Fixtures of the RESP tests: one real 3-node cluster per module, and redis-py clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from .cluster import RespCluster, start_resp_cluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def resp_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RespCluster]:
    tmp: Path = tmp_path_factory.mktemp("resp")
    cluster = await start_resp_cluster(tmp)
    try:
        yield cluster
    finally:
        await cluster.stop()
