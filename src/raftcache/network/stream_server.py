"""The serving half of the stream transport: ``GET /raft/v1/stream``, upgraded, frames in and out.

Rule: authenticate before upgrading (a wrong or missing cluster token gets the HTTP transport's
401 JSON error, and no WebSocket), then greet (``HELLO``), then for every request frame, in the
order received: decode and validate it (a bad one gets an ``ERROR`` frame, the connection goes
on), and start its handler as a task. Tasks start in arrival order, so pipelined AppendEntries
from one leader reach the node in the order they were sent (one connection per peer keeps the
order HTTP's many connections did not). Answers leave as they finish, in any order, matched by
id, through a ``FrameWriter`` (batched sends).

Bounds: a message over ``client_max_size`` closes the connection (1009, aiohttp's reader); at
most ``max_in_flight`` handlers run per connection — beyond that the server stops reading until
one finishes (TCP back-pressure to the sender). A message that is not msgpack frames closes the
connection with 1002 (protocol error): after a framing error nothing that follows can be trusted.

Lifecycle: ``close()`` (the network stops, or the node starts draining) closes every connection
with 1001 and answers further upgrades 503 until ``open()``; handlers still running finish, their
answers are dropped. Each served call is recorded in the metrics as ``inbound``, like the HTTP
routes do (peer = the sender named in the request).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from raftcache.network.codec import CodecError, from_dict
from raftcache.network.errors import NetworkError, remote_handler_error
from raftcache.network.httpserver import RaftRoutes
from raftcache.network.httpwire import HANDLER_OF, error_response
from raftcache.network.metered import sender_of
from raftcache.network.metrics import rpc_name
from raftcache.network.stream_wire import (
    ERROR,
    HELLO,
    MAX_FRAME_HEADER,
    REQUEST,
    REQUEST_CLASSES,
    RESPONSE,
    STREAM_PATH,
    SUBPROTOCOL,
    VERSION,
    Frame,
    FrameError,
    decode_message,
    encode_frame,
)
from raftcache.network.stream_writer import FrameWriter
from raftcache.protocol.validation import InvalidMessageError, validate_request

__all__ = ["StreamServer"]

logger = logging.getLogger(__name__)

_DEFAULT_CLIENT_FRAME = 64 * 1024  # answers are tens of bytes; a client that says nothing


class _Connection:
    """One upgraded connection: its socket, its writer and the handlers it started."""

    def __init__(self, ws: web.WebSocketResponse, writer: FrameWriter) -> None:
        self.ws = ws
        self.writer = writer
        self.tasks: set[asyncio.Task[None]] = set()
        self.room = asyncio.Event()
        self.room.set()


class StreamServer:
    """Serves the stream route for one node, next to the HTTP routes of ``routes``.

    Args:
        routes: the node's HTTP routes: their handlers, token, body limit, metrics and clock
            are the stream's too, so both transports serve the same node the same way.
        max_in_flight: handlers running at once per connection before reading pauses.
        heartbeat: seconds between WebSocket pings; a peer that does not answer one within
            half of it is dropped (a half-open connection of a crashed host).
    """

    def __init__(
        self, routes: RaftRoutes, *, max_in_flight: int = 1024, heartbeat: float = 30.0
    ) -> None:
        self.routes = routes
        self.max_in_flight = max_in_flight
        self.heartbeat = heartbeat
        self.connections: set[_Connection] = set()
        self.closing = False
        self._closers: set[asyncio.Task[bool]] = set()
        self._running: set[asyncio.Task[None]] = set()  # every handler, whatever its connection

    def route(self) -> web.RouteDef:
        return web.get(STREAM_PATH, self.handle, allow_head=False)

    def open(self) -> None:
        """Accept upgrades again (after ``close``)."""
        self.closing = False

    def close(self) -> None:
        """Close every connection (1001) and refuse new ones until ``open``; returns at once."""
        self.closing = True
        for conn in list(self.connections):
            conn.writer.close()
            task = asyncio.get_running_loop().create_task(
                conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"node stopping")
            )
            self._closers.add(task)  # a reference until it is done
            task.add_done_callback(self._closers.discard)

    async def shutdown(self) -> None:
        """``close``, wait for the closing handshakes, and cancel the handlers still running
        (the network stops: nobody will read their answers)."""
        self.close()
        await asyncio.gather(*list(self._closers), return_exceptions=True)
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Authenticate, upgrade, then serve frames until the connection ends."""
        auth = self.routes.auth
        if auth is not None:
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, auth):
                response = error_response(401, "missing or wrong cluster token", "unauthorized")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        if self.closing:
            return error_response(503, "node stopping", "stopping")
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            max_msg_size=self.routes.client_max_size,
            compress=False,
            heartbeat=self.heartbeat,
        )
        if not ws.can_prepare(request).ok:
            response = error_response(426, "upgrade to a WebSocket", "upgrade_required")
            response.headers["Upgrade"] = "websocket"
            return response
        await ws.prepare(request)
        limit = _client_limit(request.headers.get(MAX_FRAME_HEADER))
        conn = _Connection(ws, FrameWriter(ws.send_bytes, limit, lambda _exc: None))
        hello = {"node": self.routes.node_id, "max_frame": self.routes.client_max_size}
        conn.writer.write(encode_frame(HELLO, 0, VERSION, hello))
        self.connections.add(conn)
        try:
            await self._serve(conn)
        finally:
            self.connections.discard(conn)
            conn.writer.close()
        return ws

    async def _serve(self, conn: _Connection) -> None:
        ws = conn.ws
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.BINARY:
                if msg.type is WSMsgType.TEXT:
                    await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"binary frames")
                return  # CLOSE, CLOSING, CLOSED or ERROR (too large: aiohttp closed it 1009)
            try:
                frames = decode_message(msg.data)
            except FrameError as exc:
                logger.warning("%s: closing a Raft stream: %s", self.routes.node_id, exc)
                await ws.close(code=WSCloseCode.PROTOCOL_ERROR, message=b"bad frames")
                return
            for frame in frames:
                if len(conn.tasks) >= self.max_in_flight:
                    conn.room.clear()  # stop reading: TCP pushes back on the sender
                    await conn.room.wait()
                self._dispatch(conn, frame)

    def _dispatch(self, conn: _Connection, frame: Frame) -> None:
        """Decode one request frame and start its handler (synchronously: order is kept)."""
        if frame.kind != REQUEST:
            return  # nothing else is sent to a server; ignored like an unknown JSON key
        routes = self.routes
        cls = REQUEST_CLASSES.get(frame.code)
        if cls is None:
            self._refuse(conn, frame, f"unknown RPC code {frame.code}", "bad_request")
            return
        try:
            req = from_dict(cls, frame.body)
            validate_request(req)
        except (CodecError, InvalidMessageError) as exc:
            self._refuse(conn, frame, f"invalid {cls.__name__}: {exc}", "bad_request")
            return
        handlers = routes.handlers
        if handlers is None:
            message = f"Node {routes.node_id} has no handlers registered"
            self._refuse(conn, frame, message, "no_handlers")
            return
        started = routes.clock()
        call = getattr(handlers, HANDLER_OF[cls])(req)
        task = asyncio.get_running_loop().create_task(self._answer(conn, frame, req, call, started))
        conn.tasks.add(task)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda t: _finished(conn, t, self.max_in_flight))

    async def _answer(
        self, conn: _Connection, frame: Frame, req: Any, call: Any, started: float
    ) -> None:
        routes = self.routes
        peer, rpc = sender_of(req), rpc_name(req)
        try:
            response = await call
        except asyncio.CancelledError:
            raise
        except NetworkError as exc:  # the handler's own verdict (a group not hosted): relayed
            logger.debug("%s: %s refused: %s", routes.node_id, rpc, exc)
            routes.metrics.record("inbound", rpc, peer, routes.clock() - started, exc)
            body = {"error": str(exc), "code": exc.kind, "permanent": exc.permanent}
            conn.writer.write(encode_frame(ERROR, frame.id, frame.code, body))
            return
        except Exception as exc:
            logger.warning("%s: %s handler raised", routes.node_id, rpc, exc_info=True)
            error = remote_handler_error(routes.node_id, repr(exc))
            routes.metrics.record("inbound", rpc, peer, routes.clock() - started, error)
            body = {"error": str(error), "code": "handler_error"}
            conn.writer.write(encode_frame(ERROR, frame.id, frame.code, body))
            return
        out = encode_frame(RESPONSE, frame.id, frame.code, response)
        routes.metrics.record("inbound", rpc, peer, routes.clock() - started)
        routes.metrics.record_bytes("inbound", rpc, peer, received=frame.size, sent=len(out))
        conn.writer.write(out)

    def _refuse(self, conn: _Connection, frame: Frame, message: str, code: str) -> None:
        rpc = REQUEST_CLASSES[frame.code].__name__ if frame.code in REQUEST_CLASSES else "?"
        self.routes.metrics.record_rejected(
            "inbound", rpc.removesuffix("Request"), "?", NetworkError("", kind=code)
        )
        body = {"error": message, "code": code}
        conn.writer.write(encode_frame(ERROR, frame.id, frame.code, body))


def _finished(conn: _Connection, task: asyncio.Task[None], limit: int) -> None:
    conn.tasks.discard(task)
    if len(conn.tasks) < limit:
        conn.room.set()
    if not task.cancelled() and task.exception() is not None:  # pragma: no cover - a bug
        logger.error("Raft stream answer failed", exc_info=task.exception())


def _client_limit(header: str | None) -> int:
    with contextlib.suppress(TypeError, ValueError):
        value = int(header or "")
        if value > 0:
            return value
    return _DEFAULT_CLIENT_FRAME
