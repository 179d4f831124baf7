"""The lean front's connection: httptools parses, the hot routes are answered here, anything
else is handed — with the whole connection — to aiohttp.

Rule: a connection starts on this protocol. Each request is parsed with httptools; at the end of
its headers it is either *hot* (a route of ``lean.routes.HotRoutes`` — the key routes, the
mounted Raft routes — over HTTP/1.x, a declared body within the route's lean limit, headers the
route admits, no ``Transfer-Encoding``, no ``Expect``, no upgrade) or not. A hot request is
answered here, through the same middleware chain and handler aiohttp would run
(``HotRoute.chain``), and pipelined requests are answered in order; reading pauses while the
requests waiting hold ``_MAX_QUEUED`` requests or ``_MAX_QUEUED_BYTES`` of bodies. The first
request that is not hot — or the first malformed-for-us one (an oversize line or header
block) — ends this protocol's part: once every earlier answer is written, the transport is
re-pointed at a fresh aiohttp ``RequestHandler``, which is fed the bytes from that request's
first byte on and serves the connection from then on exactly as it would have from the start.

Finding that first byte: httptools reports where a message ends only through callbacks, not as
an offset, so the protocol keeps the bytes since the last point where it knew a message began
(``_buf``) and how many messages completed in them (``_done``); the boundary is recovered, only
when needed, by parsing prefixes of ``_buf`` with a scratch parser (``message_boundary``). The
buffer is cut back at every chunk that starts between messages, and whenever it grows past
``_TRIM_BYTES``, so a long pipelined stream does not grow it.

Bytes that are not HTTP at all get a 400 JSON error and the connection is closed: never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Final, Protocol, cast

import httptools
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from multidict import CIMultiDict, CIMultiDictProxy

from raftcache.server.drain import Drain
from raftcache.server.lean.request import LeanRequest
from raftcache.server.lean.routes import Chain, HotRoute, HotRoutes
from raftcache.server.lean.wire import DateHeader, encode_response, error_bytes

log = logging.getLogger("raftcache.server.lean")

_TRIM_BYTES: Final = 256 * 1024
#: Parsed requests waiting for their turn before the connection stops reading, and the bytes
#: of their bodies (Raft bodies reach megabytes: a pipelining peer is held to about 1 MiB).
_MAX_QUEUED: Final = 32
_MAX_QUEUED_BYTES: Final = 1024 * 1024
_VERSIONS: Final = {"1.1": (1, 1), "1.0": (1, 0)}


class _HandOffError(Exception):
    """Raised from a parser callback: this request goes to aiohttp."""


class _Counter:
    """Scratch parser protocol: counts completed messages."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = 0

    def on_message_complete(self) -> None:
        self.done += 1


def _completed(data: memoryview) -> int:
    counter = _Counter()
    parser = httptools.HttpRequestParser(counter)
    # What completed before a message the scratch parser refuses still counts.
    with contextlib.suppress(httptools.HttpParserError, httptools.HttpParserUpgrade):
        parser.feed_data(data)
    return counter.done


def message_boundary(buf: bytes | bytearray, count: int) -> int:
    """The offset in ``buf`` (which starts at a message's first byte) right after its
    ``count``-th complete message: the smallest prefix in which ``count`` messages complete."""
    if count <= 0:
        return 0
    view = memoryview(buf)
    lo, hi = 0, len(buf)
    while lo < hi:
        mid = (lo + hi) // 2
        if _completed(view[:mid]) >= count:
            hi = mid
        else:
            lo = mid + 1
    return lo


class Front(Protocol):
    """What a connection uses of the front of its listener (``lean.front.LeanFront``, which
    makes the connections and so imports this module, not the other way round)."""

    app: web.Application
    routes: HotRoutes
    drain: Drain
    #: The connections open on the front; each adds itself and removes itself when it ends.
    connections: set[LeanProtocol]
    received: int
    max_line_bytes: int
    max_field_bytes: int
    #: The answers' ``Date``, from the node's wall clock.
    dates: DateHeader

    def now(self) -> float: ...

    async def dispatch(self, request: LeanRequest, chain: Chain) -> web.StreamResponse: ...

    def aiohttp_protocol(self) -> RequestHandler: ...


class LeanProtocol(asyncio.Protocol):
    """One client connection on the lean front (see the module docstring)."""

    def __init__(self, front: Front) -> None:
        self._front = front
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # The message being parsed.
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._route: HotRoute | None = None
        self._hot = False
        # Where messages begin (see the module docstring).
        self._buf = bytearray()
        self._done = 0
        self._between = True
        # Requests parsed and not yet answered, in order; the task answering them.
        # (request, its chain, keep-alive, body size)
        self._queue: deque[tuple[LeanRequest, Chain, bool, int]] = deque()
        self._queued_bytes = 0
        self._worker: asyncio.Task[None] | None = None
        self._entered = 0  # requests counted in the drain, not yet answered
        self._handoff: bytearray | None = None
        self._paused = False
        self._writable: asyncio.Future[None] | None = None
        self._closed = False
        self._last_words = b""  # the error that ends the connection, after earlier answers
        #: Loop time of the last bytes read (the front closes connections idle for too long).
        self.last_active = front.now()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._front.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._front.received += len(data)
        self.last_active = self._front.now()
        if self._handoff is not None:
            self._handoff += data  # arrived before reading paused: aiohttp gets it too
            return
        if self._closed:
            return
        if self._between:
            self._buf = bytearray(data)
            self._done = 0
        else:
            self._buf += data
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HandOffError):
                self._start_handoff()
                return
            log.exception("lean front: parser callback failed")
            self._fail(500, "internal error while parsing the request")
            return
        except httptools.HttpParserUpgrade:
            self._start_handoff()  # not reached: upgrades are handed off at their headers
            return
        except httptools.HttpParserError as exc:
            self._fail(400, f"malformed HTTP request: {exc}")
            return
        if len(self._buf) > _TRIM_BYTES and self._done:
            cut = message_boundary(self._buf, self._done)
            del self._buf[:cut]
            self._done = 0

    def eof_received(self) -> bool | None:
        # The transport closes, as aiohttp's does on EOF: a request in progress still runs to
        # its end (see connection_lost), its answer has nowhere to go.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._front.connections.discard(self)
        # The request being served runs to its end, as aiohttp's do (its handler_cancellation
        # is off): a write's proposal is not abandoned half-way because its client went away.
        # Its answer is dropped; the requests queued behind it are not started.
        self._leave_all()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._between = False
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._hot = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._front.max_line_bytes:
            raise _HandOffError  # aiohttp answers an oversize request line as it always did

    def on_header(self, name: bytes, value: bytes) -> None:
        limit = self._front.max_field_bytes
        self._header_bytes += len(name) + len(value)
        if len(name) > limit or len(value) > limit or self._header_bytes > 8 * limit:
            raise _HandOffError  # aiohttp answers oversize headers as it always did
        self._headers.append(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        )

    def on_headers_complete(self) -> None:
        parser = self._parser
        route = self._front.routes.find(parser.get_method(), self._url)
        if route is None or parser.should_upgrade():
            raise _HandOffError
        if parser.get_http_version() not in ("1.1", "1.0"):
            raise _HandOffError
        limit = route.body_limit
        for name, value in self._headers:
            lowered = name.lower()
            if lowered in ("transfer-encoding", "expect"):
                raise _HandOffError
            if lowered == "content-length" and (not value.isdigit() or int(value) > limit):
                raise _HandOffError  # aiohttp and the handler give the 400/413 they always gave
        if not route.admits(self._headers):
            raise _HandOffError  # aiohttp refuses it before reading its body (a Raft token)
        self._route = route
        self._hot = True
        self._front.drain.enter()
        self._entered += 1

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._between = True
        self._hot = False  # its drain count now belongs to the queued request
        self._done += 1
        parser = self._parser
        route = self._route
        assert route is not None  # on_headers_complete let only hot requests through
        body = b"".join(self._body)
        request = LeanRequest(
            self._front.app,
            route.method,
            self._url.decode("ascii"),
            CIMultiDictProxy(CIMultiDict(self._headers)),
            body,
            _VERSIONS[parser.get_http_version()],
            route.match_info,
        )
        self._body = []
        self._queue.append((request, route.chain, parser.should_keep_alive(), len(body)))
        self._queued_bytes += len(body)
        if self._backlogged() and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._answer_queue())

    # -- answering -----------------------------------------------------------------------------

    async def _answer_queue(self) -> None:
        try:
            while self._queue and not self._transport_gone():
                request, chain, keep_alive, size = self._queue.popleft()
                self._queued_bytes -= size
                response = await self._front.dispatch(request, chain)
                keep_alive = keep_alive and response.keep_alive is not False
                date = self._front.dates.now()
                await self._write(encode_response(response, request, keep_alive, date))
                self._leave_one()
                if not keep_alive:
                    self._close()
                    return
                if self._paused and not self._backlogged(half=True):
                    self._paused = False
                    if self._handoff is None and self._transport is not None:
                        self._transport.resume_reading()
        finally:
            self._worker = None
        if self._handoff is not None:
            self._finish_handoff()
        elif self._closed:
            self._say_last_words()  # a malformed request's error, after the answers before it

    def _backlogged(self, *, half: bool = False) -> bool:
        """Whether the requests waiting are too many, or too large, to read more now."""
        divisor = 2 if half else 1
        return (
            len(self._queue) >= _MAX_QUEUED // divisor
            or self._queued_bytes >= _MAX_QUEUED_BYTES // divisor
        )

    async def _write(self, data: bytes) -> None:
        if self._writable is not None:
            await self._writable  # the client reads slowly: do not pile answers up in memory
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _transport_gone(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    def _leave_one(self) -> None:
        if self._entered:
            self._entered -= 1
            self._front.drain.leave()

    def _leave_all(self) -> None:
        while self._entered:
            self._leave_one()

    def _close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def close_if_idle(self, idle_since: float | None = None) -> bool:
        """Close the connection when no request is on it (and, with ``idle_since``, no byte
        arrived since then); True if it was closed."""
        if idle_since is not None and self.last_active > idle_since:
            return False
        if self._worker is None and self._between and self._handoff is None:
            self._close()
            return True
        return False

    def abort(self) -> None:
        """Drop the connection at once (shutdown past its timeout)."""
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, status: int, message: str) -> None:
        """A request this front cannot read: answer it after the earlier ones, then close."""
        self._closed = True
        self._last_words = error_bytes(status, message)
        if self._hot:  # counted in the drain at its headers; it gets no other answer
            self._leave_one()
        if self._worker is None:
            self._say_last_words()
        # else: the worker says them once the earlier requests are answered.

    def _say_last_words(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._last_words)
        self._close()

    # -- hand-off to aiohttp -------------------------------------------------------------------

    def _start_handoff(self) -> None:
        """Stop parsing; give aiohttp the connection from the non-hot request's first byte on,
        once every request before it is answered."""
        start = message_boundary(self._buf, self._done)
        self._handoff = bytearray(self._buf[start:])
        self._buf = bytearray()
        if self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()
        if self._worker is None:
            self._finish_handoff()

    def _finish_handoff(self) -> None:
        transport = self._transport
        pending = bytes(self._handoff or b"")
        self._front.connections.discard(self)
        if transport is None or transport.is_closing():
            return
        handler = self._front.aiohttp_protocol()
        transport.set_protocol(handler)
        # Reading resumes before aiohttp's own flow control gets its say (it may pause again).
        transport.resume_reading()
        handler.connection_made(transport)
        if pending:
            handler.data_received(pending)
        self._transport = None

    def details(self) -> dict[str, Any]:
        """State for debugging and tests."""
        return {"queued": len(self._queue), "handoff": self._handoff is not None}
