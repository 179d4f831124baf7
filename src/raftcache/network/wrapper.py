"""A base for transports that wrap another one (breaker, metering, ...).

Rule: a wrapper keeps the wrapped network's ``node_id``, passes the lifecycle
(``register_handlers``, ``start``, ``stop``, ``set_peer_address``) straight through, and funnels
the three RPCs into one ``_call(rpc, send, target, req)`` so that its policy is written once.
``metrics`` is the wrapped network's ``NetworkMetrics`` when it has one, so a stack of wrappers
exposes the same object at every level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.metrics import NetworkMetrics
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = ["Clock", "NetworkWrapper", "loop_clock", "metrics_of"]

Resp = TypeVar("Resp")
Send = Callable[[str, Any], Awaitable[Any]]
Clock = Callable[[], float]


def loop_clock() -> float:
    """The running event loop's monotonic time (virtual under looptime)."""
    return asyncio.get_running_loop().time()


def metrics_of(network: NetworkInterface) -> NetworkMetrics | None:
    """The ``NetworkMetrics`` a network records into, if it has one."""
    metrics = getattr(network, "metrics", None)
    return metrics if isinstance(metrics, NetworkMetrics) else None


class NetworkWrapper(NetworkInterface):
    """Delegates everything to ``underlying``; subclasses override ``_call``."""

    def __init__(self, underlying: NetworkInterface) -> None:
        self.underlying = underlying
        self.node_id = underlying.node_id

    @property
    def metrics(self) -> NetworkMetrics | None:
        return metrics_of(self.underlying)

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self.underlying.register_handlers(handlers)

    async def start(self) -> None:
        await self.underlying.start()

    async def stop(self) -> None:
        await self.underlying.stop()

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        self.underlying.set_peer_address(node_id, address)

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        resp: RequestVoteResponse = await self._call(
            "RequestVote", self.underlying.send_request_vote, target, req
        )
        return resp

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        resp: AppendEntriesResponse = await self._call(
            "AppendEntries", self.underlying.send_append_entries, target, req
        )
        return resp

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        resp: InstallSnapshotResponse = await self._call(
            "InstallSnapshot", self.underlying.send_install_snapshot, target, req
        )
        return resp

    async def _call(self, rpc: str, send: Send, target: str, req: Any) -> Any:
        return await send(target, req)
