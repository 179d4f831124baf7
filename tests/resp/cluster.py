"""A real in-process 3-node cluster (HTTP Raft on loopback) with a RESP server on every node.

Rule: built from ``tests.server.cluster`` (imported, not copied); a test that starts one stops
it. The RESP servers use the wall clock, as ``raftcache serve`` does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError

from raftcache.process.serve import NodeServer
from raftcache.raft.config import RaftConfig
from raftcache.resp import RespServer, start_resp_server
from tests.server.cluster import Cluster, start_cluster


@dataclass
class RespCluster:
    """The cluster and, in the same order, the RESP server of each node."""

    cluster: Cluster
    resp: list[RespServer]

    def port_of(self, server: NodeServer) -> int:
        return self.resp[self.cluster.servers.index(server)].port

    async def leader_port(self) -> int:
        return self.port_of(await self.cluster.leader())

    async def follower_port(self) -> int:
        return self.port_of((await self.cluster.followers())[0])

    async def stop(self) -> None:
        for server in self.resp:
            await server.stop()
        await self.cluster.stop()


async def start_resp_cluster(
    tmp_path: Path,
    *,
    client_token: str | None = None,
    raft_config: RaftConfig | None = None,
    **resp_options: Any,
) -> RespCluster:
    """Three nodes n1..n3, each with a RESP server on a free port, a leader elected;
    ``raft_config`` replaces the fast test timings (``tests.server.cluster.fast_raft``)."""
    overrides: dict[str, Any] = {} if client_token is None else {"client_token": client_token}
    cluster = await start_cluster(tmp_path, raft_config=raft_config, **overrides)
    resp: list[RespServer] = []
    try:
        for server in cluster.servers:
            resp.append(
                await start_resp_server(
                    server.service,
                    server.node,
                    "127.0.0.1",
                    0,
                    clock=time.time,
                    client_token=client_token,
                    **resp_options,
                )
            )
        await cluster.leader()
    except BaseException:
        for started in resp:
            await started.stop()
        await cluster.stop()
        raise
    return RespCluster(cluster, resp)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll an async predicate until it holds (generous: replication on loopback)."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


async def refused(call: Any, message: str) -> None:
    """``call`` (an awaitable) answers the error ``message`` exactly (without its code ERR,
    which redis-py strips)."""
    with pytest.raises(ResponseError) as caught:
        await call
    assert str(caught.value) == message
