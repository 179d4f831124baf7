"""The stream transport: Raft RPCs as msgpack frames over one upgraded connection per peer.

Rule: ``StreamNetwork`` is an ``HttpNetwork`` (same options, same listener or mount, same TLS,
cluster token, addresses and metrics) that also serves ``GET /raft/v1/stream`` and *sends*
through it: one persistent WebSocket per peer (``stream_client.StreamLink``), many RPCs in
flight on it, answers matched by id, frames written in call order. InstallSnapshot chunks go
through it too (binary, no base64).

Negotiation, per peer: the first call opens the stream. A peer that does not serve it (404, 405
or 426 to the upgrade: an older node, or one run with ``--raft-transport http``) is talked to over
plain HTTP for ``renegotiate_after`` seconds, then probed again — and at once after an HTTP
connection error to it (it restarted, perhaps upgraded) or a change of its address. So a rolling
upgrade works in both directions, and a cluster may mix both transports.

Errors and metrics are those of ``HttpNetwork``: the same ``NetworkError`` classes, messages of
the same shape and ``permanent`` flags (``stream_client``), and every call is recorded in
``metrics`` as ``outbound`` (count, latency, error kind, bytes) whichever way it went.
``stream_stats()`` tells per peer which way that is, and how often its stream (re)connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, TypeVar

from aiohttp import web

from raftcache.network.errors import NetworkError, no_address
from raftcache.network.http import HttpNetwork
from raftcache.network.interface import NetworkInterface
from raftcache.network.metrics import rpc_name
from raftcache.network.stream_client import StreamLink, StreamUnsupported
from raftcache.network.stream_server import StreamServer
from raftcache.network.stream_wire import STREAM_PATH
from raftcache.protocol.messages import (
    DEFAULT_BATCH_HOLD,
    AppendEntriesRequest,
    AppendEntriesResponse,
)

__all__ = ["StreamNetwork"]

Resp = TypeVar("Resp")


class StreamNetwork(HttpNetwork):
    """Raft RPCs over one multiplexed WebSocket per peer, HTTP for peers without it.

    Takes every ``HttpNetwork`` option (``wire_format`` then applies to the HTTP fallback),
    and:

    Args:
        renegotiate_after: seconds a peer that refused the stream is talked to over HTTP
            before the stream is tried again, on the network's ``clock`` like its latencies.
        reconnect_min, reconnect_max: back-off after failed connection attempts, in seconds
            of the network's ``clock`` (calls fail at once meanwhile, with the attempt's error).
        max_in_flight: requests served at once per inbound connection before reading pauses.
        stream_heartbeat: seconds between pings of an inbound connection (a peer that does not
            answer within half of it is dropped).

    Example:
        >>> net = StreamNetwork("n1", port=0, node_addresses={"n2": "http://127.0.0.1:8002"})
        >>> [r.path for r in net.routes()][-1]
        '/raft/v1/stream'
    """

    def __init__(
        self,
        node_id: str,
        *,
        renegotiate_after: float = 30.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 1.0,
        max_in_flight: int = 1024,
        stream_heartbeat: float = 30.0,
        **options: Any,
    ) -> None:
        if renegotiate_after <= 0 or not 0 < reconnect_min <= reconnect_max:
            raise ValueError("renegotiate_after > 0 and 0 < reconnect_min <= reconnect_max")
        if max_in_flight <= 0 or stream_heartbeat <= 0:
            raise ValueError("max_in_flight and stream_heartbeat must be > 0")
        self.renegotiate_after = renegotiate_after
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._links: dict[str, StreamLink] = {}
        self._http_until: dict[str, float] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Mounted after the stream server exists: it serves with the base's RaftRoutes.
        app: web.Application | None = options.pop("app", None)
        super().__init__(node_id, **options)
        self._streams = StreamServer(
            self._server, max_in_flight=max_in_flight, heartbeat=stream_heartbeat
        )
        if app is not None:
            self.mount(app)

    # -- configuration --------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The HTTP routes and ``GET /raft/v1/stream``."""
        return [*super().routes(), self._streams.route()]

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        changed = self.node_addresses.get(node_id) != address
        super().set_peer_address(node_id, address)
        if changed:  # another node may be there now: negotiate afresh
            self._http_until.pop(node_id, None)
            link = self._links.pop(node_id, None)
            if link is not None:
                self._close_later(link)

    def stream_stats(self) -> dict[str, dict[str, Any]]:
        """Per peer: ``mode`` (``stream``, ``http`` or ``idle``), ``connects``, ``losses`` and
        ``in_flight`` of its stream."""
        now = self._clock()
        out: dict[str, dict[str, Any]] = {}
        for peer in sorted(set(self._links) | set(self._http_until)):
            link = self._links.get(peer)
            http = self._http_until.get(peer, 0.0) > now
            mode = "http" if http else "stream" if link is not None and link.connected else "idle"
            out[peer] = {
                "mode": mode,
                "connects": link.connects if link else 0,
                "losses": link.losses if link else 0,
                "in_flight": link.in_flight if link else 0,
            }
        return out

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._streams.open()
        await super().start()

    async def stop(self) -> None:
        """Close every stream (both directions), then what ``HttpNetwork.stop`` closes."""
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.close() for link in links))
        await asyncio.gather(*list(self._closing), return_exceptions=True)
        await self._streams.shutdown()
        self._http_until.clear()
        await super().stop()

    def close_inbound_streams(self) -> None:
        """Close the streams peers opened to us and refuse new ones (a node draining before it
        stops: a stream would otherwise hold the drain open until its timeout)."""
        self._streams.close()

    def drop_connections(self, peer: str | None = None) -> None:
        """Cut the outbound stream to ``peer`` (every peer: None) at the socket, as a failing
        network would: calls in flight fail, the next call reconnects. For fault tests."""
        for node_id, link in self._links.items():
            if peer is None or node_id == peer:
                link.drop()

    def _close_later(self, link: StreamLink) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the link cannot have a connection (or an attempt) yet
            return
        task = loop.create_task(link.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- client ---------------------------------------------------------------------------------

    async def send_append_batch(
        self, target: str, reqs: Sequence[AppendEntriesRequest], *, hold: float = DEFAULT_BATCH_HOLD
    ) -> list[AppendEntriesResponse | Exception]:
        """One frame each on the stream (it multiplexes them already; no batch frame yet)."""
        return await NetworkInterface.send_append_batch(self, target, reqs)

    async def _post(self, target: str, req: Any, response_cls: type[Resp]) -> Resp:
        until = self._http_until.get(target)
        if until is not None:
            if self._clock() < until:
                return await self._post_http(target, req, response_cls)
            del self._http_until[target]
        link = self._links.get(target)
        if link is None:
            link = self._link(target)
        rpc = rpc_name(req)
        started = self._clock()
        try:
            resp, sent, received = await link.call(req, response_cls, self.timeout)
        except StreamUnsupported:
            self._http_until[target] = self._clock() + self.renegotiate_after
            return await self._post_http(target, req, response_cls)
        except NetworkError as exc:
            self.metrics.record("outbound", rpc, target, self._clock() - started, exc)
            raise
        self.metrics.record("outbound", rpc, target, self._clock() - started)
        self.metrics.record_bytes("outbound", rpc, target, sent=sent, received=received)
        return resp

    async def _post_http(self, target: str, req: Any, response_cls: type[Resp]) -> Resp:
        try:
            return await super()._post(target, req, response_cls)
        except NetworkError as exc:
            if exc.kind == "connection":  # it went away: it may come back with the stream
                self._http_until.pop(target, None)
            raise

    def _link(self, target: str) -> StreamLink:
        base = self.node_addresses.get(target)
        if base is None:
            raise no_address(target)
        link = StreamLink(
            target,
            base,
            STREAM_PATH,
            session=lambda: self._session,
            headers=self._auth_header,
            ssl=self._client_ssl,
            max_frame=self.client_max_size,
            reconnect_min=self.reconnect_min,
            reconnect_max=self.reconnect_max,
            clock=self._clock,
        )
        self._links[target] = link
        return link
