"""The lean front: one listener whose connections start on ``LeanProtocol`` (httptools) and move
to aiohttp's own protocol at the first request that is not on a hot route.

Rule: the front owns no behaviour of the API. It builds, once the application is frozen, the
same middleware chain aiohttp runs (``app.middlewares`` around the route's handler) for each hot
route (``lean.routes``: the key routes and the mounted Raft routes), and dispatches lean
requests through it — so auth, admission, drain, metrics, errors, forwarding and the hand-over
hold for them exactly as for aiohttp's, and the handlers are the ones aiohttp would call
(``routes_keys``, ``network.httpserver.RaftRoutes``). The listener is an ``aiohttp`` site
(``LeanSite``) so the runner lists and stops it like any other; its owner closes the front's
connections (``close_connections``) when it stops, as the runner's cleanup does for aiohttp's.

httptools is a dependency; where it cannot be imported ``lean_available()`` is False and the
node serves through aiohttp alone (the fallback, tested).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from raftcache.network.httpclient import lean_client_available
from raftcache.network.listener import SockSite, TCPSite
from raftcache.server.drain import DRAIN
from raftcache.server.errors import json_error
from raftcache.server.lean.request import LeanRequest
from raftcache.server.lean.routes import LEAN_BODY_MAX, Chain, HotRoutes
from raftcache.server.lean.wire import DateHeader

if lean_client_available():  # else no front is ever made (``lean_available``)
    from raftcache.server.lean.protocol import LeanProtocol

__all__ = [
    "DEFAULT_MAX_FIELD_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "KEEPALIVE_TIMEOUT_S",
    "LEAN_BODY_MAX",
    "LeanFront",
    "LeanSite",
    "LeanSockSite",
    "lean_available",
]

log = logging.getLogger("raftcache.server.lean")

#: Idle keep-alive connections are closed after this long: aiohttp's default, so a client sees
#: the same whichever front its connection is on. Checked once a minute.
KEEPALIVE_TIMEOUT_S = 3630.0
_SWEEP_INTERVAL_S = 60.0


def lean_available() -> bool:
    """Whether httptools can be imported: the same check as the lean Raft client's."""
    return lean_client_available()


class LeanFront:
    """The per-listener state of the lean front; called, it makes a connection's protocol.

    Args:
        app: the node's application, frozen (``AppRunner.setup`` done).
        server: the runner's aiohttp ``web.Server``, which makes aiohttp's protocols.
        max_line_bytes: longest request line served here (longer: aiohttp judges it).
        max_field_bytes: largest header line served here (larger: aiohttp judges it).
        raft: serve the mounted Raft routes here too (False: aiohttp serves them; for A/B).
        clock: wall-clock seconds since the epoch, for the answers' ``Date``.
    """

    def __init__(
        self,
        app: web.Application,
        server: web.Server,
        *,
        max_line_bytes: int,
        max_field_bytes: int,
        raft: bool = True,
        clock: Callable[[], float],
    ) -> None:
        self.app = app
        self._server = server
        self.max_line_bytes = max_line_bytes
        self.max_field_bytes = max_field_bytes
        self.drain = app[DRAIN]
        # aiohttp's protocols get the runner's keyword arguments; auto_decompress is on unless
        # the runner turned it off (``NodeServer`` does).
        decompresses = bool(getattr(server, "_kwargs", {}).get("auto_decompress", True))
        self.routes = HotRoutes(app, raft=raft, decompresses=decompresses)
        self.dates = DateHeader(clock)
        self.connections: set[LeanProtocol] = set()
        #: Requests answered here, connections handed to aiohttp and bytes read on this front
        #: (tests wait on them to know for certain what the front has seen; debugging).
        self.served = 0
        self.handed_off = 0
        self.received = 0
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep())

    def __call__(self) -> LeanProtocol:
        return LeanProtocol(self)

    def aiohttp_protocol(self) -> RequestHandler:
        """A fresh aiohttp protocol for a connection handed over."""
        self.handed_off += 1
        return self._server()

    async def dispatch(self, request: LeanRequest, chain: Chain) -> web.StreamResponse:
        """Run ``request`` through its route's middleware ``chain`` and handler."""
        self.served += 1
        as_aiohttp = cast(web.Request, request)
        try:
            response = await chain(as_aiohttp)
            if self.app.on_response_prepare:  # an embedding program's hook, as aiohttp fires it
                await self.app.on_response_prepare.send(as_aiohttp, response)
            return response
        except asyncio.CancelledError:
            raise
        except web.HTTPException as exc:
            return json_error(exc.status, exc.reason.lower())
        except Exception as exc:
            # The error middleware inside the chain maps everything a handler raises: this is a
            # bug in the outer middlewares. A JSON 500, as aiohttp's path gives, never a crash.
            log.exception("unhandled error serving %s %s", request.method, request.raw_path)
            return json_error(500, f"internal error: {type(exc).__name__}")

    def now(self) -> float:
        # Loop time, not the node's wall clock: the idle sweep sleeps on the loop's clock.
        return self._loop.time()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL_S)
            self.close_idle(self.now() - KEEPALIVE_TIMEOUT_S)

    def close_idle(self, idle_since: float) -> int:
        """Close the connections with no request on them and no byte read since
        ``idle_since`` (loop time); returns how many were closed."""
        return sum(c.close_if_idle(idle_since) for c in list(self.connections))

    def stop_sweeping(self) -> None:
        """Stop closing idle connections (the listener is closing)."""
        self._sweeper.cancel()

    def close_connections(self) -> None:
        """Close every connection still on the lean front (at shutdown, once the listener is
        closed and the drain has waited for the requests in progress)."""
        self.stop_sweeping()
        for connection in list(self.connections):
            if not connection.close_if_idle():
                connection.abort()


#: Defaults of the limits above; ``raftcache serve`` passes its own (``serve.py``).
DEFAULT_MAX_LINE_BYTES = 64 * 1024
DEFAULT_MAX_FIELD_BYTES = 16 * 1024


def _front_of(
    site: web.BaseSite,
    max_line_bytes: int,
    max_field_bytes: int,
    raft: bool,
    clock: Callable[[], float],
) -> LeanFront:
    runner = cast(web.AppRunner, site._runner)
    server = runner.server
    assert server is not None  # setup() ran
    return LeanFront(
        runner.app,
        server,
        max_line_bytes=max_line_bytes,
        max_field_bytes=max_field_bytes,
        raft=raft,
        clock=clock,
    )


class LeanSite(TCPSite):
    """A TCP (or TLS) site whose connections start on the lean front.

    ``clock`` (wall-clock seconds, for ``Date``) is the node's: ``raftcache serve`` passes the
    one it hands every part of the node. Its default is the clock aiohttp's own ``Date`` reads,
    so that the two fronts of a node embedded without one still date answers alike.
    """

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None,
        port: int,
        *,
        ssl_context: Any = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
        raft: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._limits = (max_line_bytes, max_field_bytes, raft, clock)
        self.front: LeanFront | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self.front = _front_of(self, *self._limits)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.front,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port

    async def stop(self) -> None:
        if self.front is not None:
            self.front.stop_sweeping()
        await super().stop()


class LeanSockSite(SockSite):
    """The lean front on a socket already bound (embedding programs, aiohttp's test server).

    Made by aiohttp's own code, which passes no clock: its ``Date`` reads the clock aiohttp's
    does (``time.time``), as ``LeanSite``'s default.
    """

    front: LeanFront | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)
        self.front = _front_of(
            self, DEFAULT_MAX_LINE_BYTES, DEFAULT_MAX_FIELD_BYTES, raft=True, clock=time.time
        )
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.front, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )

    async def stop(self) -> None:
        if self.front is not None:
            self.front.stop_sweeping()
        await super().stop()
