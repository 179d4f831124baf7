"""Transparent forwarding of client requests from a follower to the leader.

Rule: a request that hits ``NotLeaderError`` was certainly not applied here, so it is safe to
send on. The follower waits a bounded time for a leader to be known, then proxies the request
(method, raw path and query, body, end-to-end headers including session headers and
``If-Match``) to the leader with ``X-Raftcache-Forwarded: 1`` and relays the answer. A forwarded
request is never forwarded again: if its receiver is not the leader either, it answers 503 with
``Retry-After`` and ``X-Raftcache-Not-Leader`` (certainly not applied there). If this node becomes
the leader while waiting, it serves the request itself.

The follower keeps trying within ``leader_wait_s`` while the leader it chose has moved on — a
connection refused (the old leader stopped listening) or a ``Not-Leader`` 503 (it handed
leadership over) both mean the request never took effect there — so a client sees the new leader's
answer instead of a 503 during a hand-over or an election. Any other answer is relayed as is.

On a store hosting many groups (``server.groups``) each group has its own ``Forwarder`` over
one shared ``PeerSession``; for a group the store holds no replica of, the "node" is the
store's ``RemoteGroup`` (a guess at the group's leader) and ``on_moved`` tells it each time its
guess did not take a request, so the next try goes to the hint or the next replica.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raftcache.network.groups import shared_urls
from raftcache.raft.errors import NotLeaderError
from raftcache.server.bodies import BODY
from raftcache.server.errors import indeterminate, is_write_request, unavailable
from raftcache.vocabulary import EXPIRES_AT_HEADER

FORWARDED_HEADER: Final = "X-Raftcache-Forwarded"
#: On a 503 to a forwarded request: the receiver is not the leader (value: its hint, or empty).
NOT_LEADER_HEADER: Final = "X-Raftcache-Not-Leader"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones aiohttp recomputes must not be copied.
_REQUEST_SKIP: Final = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
        FORWARDED_HEADER.lower(),
    }
)
_RESPONSE_KEEP: Final = ("Content-Type", "ETag", "Retry-After", EXPIRES_AT_HEADER)

log = logging.getLogger("raftcache.server.forwarding")


class LeaderView(Protocol):
    """What a forwarder reads of the node it forwards for (a ``RaftNode``, or a store's
    ``RemoteGroup`` for a group it holds no replica of)."""

    @property
    def node_id(self) -> str: ...

    @property
    def leader_id(self) -> str | None: ...

    def leader_address(self) -> str | None: ...


class ForwarderPort(Protocol):
    """What the middleware chain and the metrics use of a forwarder (a ``Forwarder``, or a
    store's per-group dispatcher, ``server.groups.StoreForwarder``)."""

    @property
    def forwarded_total(self) -> int: ...

    async def handle_not_leader(
        self, request: web.Request, handler: Handler, error: NotLeaderError
    ) -> web.StreamResponse: ...

    async def close(self) -> None: ...


class PeerSession:
    """The keep-alive client session forwarded requests travel on: made lazily inside the
    running loop, shared by every forwarder of one application (a store's groups).

    Args:
        ssl_context: client TLS context for ``https`` peers (mutual TLS when it has a cert).
    """

    __slots__ = ("_session", "_ssl_context")

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session (created at the first call; keep-alive to the leaders)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=50, ssl=self._ssl_context or True)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
            # aiohttp silently resends an idempotent-method request (PUT, DELETE) once when a
            # reused keep-alive connection turns out broken. For a forwarded write that copy
            # may be applied twice (a CAS answered 412 although it won), or fail to connect and
            # be reported 503 "not appended" although the first copy was applied. A lost
            # answer must surface as 504 indeterminate instead; the client decides to retry
            # (with its session, safely). tests/faults/test_forwarded_resend.py holds it to that.
            self._session._retry_connection = False
        return self._session

    async def close(self) -> None:
        """Close the session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class _LeaderMovedError(Exception):
    """The chosen leader certainly did not take the request: try whoever leads now."""

    def __init__(self, hint: str | None, why: str) -> None:
        super().__init__(why)
        self.hint = hint
        self.why = why


class Forwarder:
    """Proxies requests that reached a follower to the current leader.

    Args:
        node: the local Raft node (its ``leader_id`` and ``leader_address()``), or a store's
            ``RemoteGroup``.
        peer_urls: fallback addresses by node id, for leaders whose configuration entry has none.
        leader_wait_s: how long to wait for a leader to become known before answering 503.
        timeout_s: total timeout of one proxied request.
        ssl_context: client TLS context for ``https`` peers (mutual TLS when it has a cert).
        poll_interval_s: how often ``leader_id`` is polled while waiting.
        session: the client session to share (None: this forwarder's own, closed by ``close``).
        on_moved: called with the hint (or None) each time the leader tried did not take the
            request — unreachable, not the leader, or no address known for it.
    """

    def __init__(
        self,
        node: LeaderView,
        *,
        peer_urls: Mapping[str, str] | None = None,
        leader_wait_s: float = 2.0,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        poll_interval_s: float = 0.05,
        session: PeerSession | None = None,
        on_moved: Callable[[str | None], None] | None = None,
    ) -> None:
        self._node = node
        self._peer_urls = shared_urls(peer_urls)
        self._leader_wait_s = leader_wait_s
        self._timeout_s = timeout_s
        self._poll_interval_s = poll_interval_s
        self._owns_session = session is None
        self._session = session if session is not None else PeerSession(ssl_context)
        self._on_moved = on_moved
        self.forwarded_total = 0

    async def close(self) -> None:
        """Close the client session if it is this forwarder's own (idempotent)."""
        if self._owns_session:
            await self._session.close()

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop, and reused: keep-alive to the leader.
        return self._session.get()

    def leader_url(self, leader_id: str) -> str | None:
        """The base URL of ``leader_id``: the configuration's, else the static peer list's."""
        url: str | None = None
        if self._node.leader_id == leader_id:
            url = self._node.leader_address()
        return url or self._peer_urls.get(leader_id)

    async def handle_not_leader(
        self, request: web.Request, handler: Handler, error: NotLeaderError
    ) -> web.StreamResponse:
        """Answer a request whose handler raised ``NotLeaderError``: forward, retry or 503."""
        if request.headers.get(FORWARDED_HEADER):
            refused = unavailable("not the leader (request was already forwarded once)")
            refused.headers[NOT_LEADER_HEADER] = error.leader_id or ""
            raise refused
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._leader_wait_s
        hint = error.leader_id
        moved: _LeaderMovedError | None = None
        while True:
            leader = self._node.leader_id or hint
            hint = None  # the hint is only good once: it may be stale
            if leader == self._node.node_id:
                try:
                    return await handler(request)
                except NotLeaderError as again:
                    hint = again.leader_id
            elif leader is not None:
                url = self.leader_url(leader)
                if url is not None:
                    try:
                        return await self.proxy(request, leader, url)
                    except _LeaderMovedError as exc:
                        moved, hint = exc, exc.hint
                        if self._on_moved is not None:
                            self._on_moved(exc.hint)
                elif self._on_moved is not None:
                    self._on_moved(None)  # no address for this guess: try the next one
            if loop.time() >= deadline:
                if moved is not None:
                    raise unavailable(moved.why)
                raise unavailable("no leader known; the cluster may be electing one")
            await asyncio.sleep(self._poll_interval_s)

    async def proxy(self, request: web.Request, leader: str, base_url: str) -> web.Response:
        """Send ``request`` to ``base_url`` and relay the leader's answer."""
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_SKIP
        )
        headers[FORWARDED_HEADER] = "1"
        # The body the handler read (bounded and charged there); a handler that raised before
        # reading one (GET, DELETE) has none worth sending, so nothing is read here.
        body = request.get(BODY, b"")
        url = URL(base_url.rstrip("/") + request.raw_path, encoded=True)
        self.forwarded_total += 1
        log.debug("forwarding %s %s to leader %s", request.method, request.path, leader)
        try:
            async with self._client().request(
                request.method,
                url,
                data=body if body else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                if resp.status == 503 and NOT_LEADER_HEADER in resp.headers:
                    why = f"{leader} is no longer the leader"
                    raise _LeaderMovedError(resp.headers[NOT_LEADER_HEADER] or None, why)
                out = {h: resp.headers[h] for h in _RESPONSE_KEEP if h in resp.headers}
                return web.Response(status=resp.status, body=payload, headers=out)
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            # The connection was never made: the request certainly did not reach the leader.
            why = f"leader {leader} unreachable: {type(exc).__name__}"
            raise _LeaderMovedError(None, why) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The request may have reached the leader and been applied there.
            if not is_write_request(request):
                raise unavailable(f"leader {leader} did not answer") from exc
            raise indeterminate(f"leader {leader} did not answer the forwarded write") from exc
