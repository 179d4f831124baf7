"""Metering for any transport: count, time and classify every RPC in both directions.

Rule: ``MeteredNetwork`` records each outbound call (``peer`` = target) when it finishes, and
each inbound call (``peer`` = the sender named in the request) by wrapping the handlers it
registers. Durations come from the injected clock (default: the loop's, virtual under looptime).
A cancelled call is recorded with the kind ``"cancelled"``. ``HttpNetwork`` meters itself (bytes
included): wrap it only to meter at another level, with another ``NetworkMetrics``, or you count
every call twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.metrics import Direction, NetworkMetrics, rpc_name
from raftcache.network.wrapper import Clock, NetworkWrapper, Send, loop_clock
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = ["MeteredNetwork", "sender_of"]


class _CancelledError(Exception):
    kind = "cancelled"


def sender_of(req: Any) -> str:
    """The node that sent a request, as the request itself names it (a batch: its first item)."""
    items = getattr(req, "items", None)
    if isinstance(items, list) and items:
        req = items[0]
    sender = getattr(req, "leader_id", None) or getattr(req, "candidate_id", None)
    return sender if isinstance(sender, str) else "?"


class MeteredNetwork(NetworkWrapper):
    """Records every RPC through ``underlying`` into ``metrics``.

    Args:
        underlying: the transport to meter.
        metrics: the sink (default: a new ``NetworkMetrics``, readable as ``.metrics``).
        clock: monotonic seconds (default: the running loop's time).
    """

    def __init__(
        self,
        underlying: NetworkInterface,
        metrics: NetworkMetrics | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(underlying)
        self._metrics = metrics if metrics is not None else NetworkMetrics()
        self._clock = clock or loop_clock

    @property
    def metrics(self) -> NetworkMetrics:
        return self._metrics

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self.underlying.register_handlers(_MeteredHandlers(handlers, self))

    async def _call(self, rpc: str, send: Send, target: str, req: Any) -> Any:
        return await self.timed("outbound", rpc, target, send(target, req))

    async def timed(self, direction: Direction, rpc: str, peer: str, call: Awaitable[Any]) -> Any:
        """Await ``call`` and record its duration and outcome."""
        started = self._clock()
        try:
            result = await call
        except asyncio.CancelledError:
            self._metrics.record(direction, rpc, peer, self._clock() - started, _CancelledError())
            raise
        except Exception as exc:
            self._metrics.record(direction, rpc, peer, self._clock() - started, exc)
            raise
        self._metrics.record(direction, rpc, peer, self._clock() - started)
        return result


class _MeteredHandlers:
    """The node's handlers, timed on the way through."""

    def __init__(self, inner: RpcHandlers, owner: MeteredNetwork) -> None:
        self._inner = inner
        self._owner = owner

    async def _serve(self, req: Any, call: Awaitable[Any]) -> Any:
        return await self._owner.timed("inbound", rpc_name(req), sender_of(req), call)

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        resp: RequestVoteResponse = await self._serve(req, self._inner.handle_request_vote(req))
        return resp

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        resp: AppendEntriesResponse = await self._serve(req, self._inner.handle_append_entries(req))
        return resp

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        resp: InstallSnapshotResponse = await self._serve(
            req, self._inner.handle_install_snapshot(req)
        )
        return resp
