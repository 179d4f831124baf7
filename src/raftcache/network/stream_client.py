"""The calling half of the stream transport: one persistent upgraded connection to one peer.

Rule: ``StreamLink.call`` sends a request frame with a fresh id on the peer's one connection and
waits for the answer carrying that id; any number of calls are in flight at once (pipelined),
answers may arrive in any order. Calls made while connected are written synchronously, in call
order, so requests reach the peer in the order they were made (AppendEntries must not overtake
each other). Failures map onto the ``NetworkError`` family exactly as the HTTP transport maps
them:

* connecting: refused, reset or unreachable → transient, kind ``connection``; TLS that does not
  verify → permanent; 401/403 → permanent (the cluster token); 502/503/504 → transient; a peer
  that does not serve the stream (404, 405, 426, or another sub-protocol) →
  ``StreamUnsupportedError`` (the caller talks HTTP to it instead: rolling upgrades);
* the connection breaks: every call in flight fails at once with a transient ``connection``
  error, and the next call reconnects;
* a call's own deadline (``timeout``, the connection included) → ``NetworkTimeoutError``; if a
  call times out or is abandoned by its caller after at least half of ``timeout`` and nothing
  at all arrived on the connection since that request left, the connection is presumed dead
  (a half-open socket) and dropped, so the next call reconnects;
* an ``ERROR`` frame → ``stream_wire.frame_error``; a request larger than the peer reads →
  permanent ``too_large``, before anything is sent.

Reconnecting backs off: after a failed attempt, calls fail at once with that attempt's error
until ``reconnect_min`` seconds have passed, doubling per failure up to ``reconnect_max``; a
successful connection resets it. Concurrent calls share one connection attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import aiohttp
from yarl import URL

from raftcache.network.codec import CodecError, from_dict
from raftcache.network.errors import NetworkError, NetworkTimeoutError
from raftcache.network.stream_wire import (
    ERROR,
    HELLO,
    MAX_FRAME_HEADER,
    REQUEST,
    RESPONSE,
    SUBPROTOCOL,
    VERSION,
    Frame,
    FrameError,
    decode_message,
    encode_frame,
    frame_error,
    request_code,
    too_large,
)
from raftcache.network.stream_writer import FrameWriter
from raftcache.network.wrapper import Clock, loop_clock

__all__ = ["StreamLink", "StreamUnsupported", "StreamUnsupportedError"]

Resp = TypeVar("Resp")
_WebSocket = aiohttp.ClientWebSocketResponse[Literal[True]]

_UNSUPPORTED_STATUSES = frozenset({404, 405, 426})


class StreamUnsupportedError(Exception):
    """The peer does not serve the stream transport: talk HTTP to it."""


class StreamLink:
    """The connection to one peer (see the module rule).

    Args:
        target: the peer's node id (in error messages).
        base: the peer's base URL (``http(s)://host:port``).
        path: the stream route.
        session: returns the client session (None: the network is stopped).
        headers: sent with the upgrade (the cluster token).
        ssl: the client TLS setting of the session's requests.
        max_frame: the largest message this side reads (told to the peer).
        reconnect_min, reconnect_max: the back-off after failed connection attempts (s).
        clock: monotonic seconds for the back-off, the network's clock (default: the running
            loop's time). A call's own deadline is on the loop's clock: asyncio arms it.
    """

    def __init__(
        self,
        target: str,
        base: str,
        path: str,
        *,
        session: Callable[[], aiohttp.ClientSession | None],
        headers: Mapping[str, str],
        ssl: Any,
        max_frame: int,
        reconnect_min: float = 0.05,
        reconnect_max: float = 1.0,
        clock: Clock = loop_clock,
    ) -> None:
        self.target = target
        self.url = URL(base.rstrip("/") + path)
        self._session = session
        self._headers = {**headers, MAX_FRAME_HEADER: str(max_frame)}
        self._ssl = ssl
        self.max_frame = max_frame
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self._clock = clock
        self._ws: _WebSocket | None = None
        self._writer: FrameWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[_WebSocket] | None = None
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._ids = itertools.count(1)
        self._peer_max = 0
        self._last_received = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._failure: NetworkError | None = None
        self.connects = 0  # connections opened
        self.losses = 0  # connections that broke (or were dropped) while open

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def call(
        self, req: Any, response_cls: type[Resp], timeout: float
    ) -> tuple[Resp, int, int]:
        """Send ``req`` and return ``(response, bytes sent, bytes received)``."""
        loop = asyncio.get_running_loop()
        # Loop time, not the injected clock: loop.call_at and asyncio.timeout_at arm it.
        deadline = loop.time() + timeout
        writer = self._writer if self._ws is not None else None
        if writer is None:
            writer = await self._connect(deadline, timeout)
        frame_id = next(self._ids)
        code = request_code(req)
        out = encode_frame(REQUEST, frame_id, code, req)
        if len(out) > self._peer_max:
            raise too_large(self.target, len(out), self._peer_max)
        fut: asyncio.Future[Frame] = loop.create_future()
        self._pending[frame_id] = fut
        sent_at = loop.time()
        timer = loop.call_at(deadline, self._expire, frame_id, timeout)
        writer.write(out)
        try:
            answer = await fut
        except (NetworkTimeoutError, asyncio.CancelledError):
            self._abandoned(sent_at, timeout)
            raise
        finally:
            timer.cancel()
            self._pending.pop(frame_id, None)
        if answer.kind == ERROR:
            raise frame_error(self.target, answer.body)
        try:
            return from_dict(response_cls, answer.body), len(out), answer.size
        except CodecError as exc:
            raise NetworkError(
                f"Malformed {response_cls.__name__} from node {self.target}: {exc}", permanent=True
            ) from exc

    def _expire(self, frame_id: int, timeout: float) -> None:
        fut = self._pending.pop(frame_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(
                NetworkTimeoutError(f"RPC to node {self.target} timed out after {timeout:g}s")
            )

    def _abandoned(self, sent_at: float, timeout: float) -> None:
        """A call timed out or its caller gave up (Raft's own RPC deadline usually comes
        first): if the connection stayed silent for at least half the timeout since that
        request left, the peer is presumed dead behind a half-open socket — drop it."""
        now = asyncio.get_running_loop().time()
        if self._ws is not None and self._last_received < sent_at and now - sent_at >= timeout / 2:
            self.drop()

    # -- connecting ---------------------------------------------------------------------------

    async def _connect(self, deadline: float, timeout: float) -> FrameWriter:
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            if self._failure is not None and self._clock() < self._retry_at:
                raise NetworkError(str(self._failure), kind=self._failure.kind)
            self._connecting = loop.create_task(self._open(timeout))
            self._connecting.add_done_callback(self._connected)
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(self._connecting)
        except TimeoutError:
            raise NetworkTimeoutError(
                f"RPC to node {self.target} timed out after {timeout:g}s"
            ) from None
        writer = self._writer
        if writer is None:  # connected and lost again before this caller woke up
            raise NetworkError(f"Connection to node {self.target} lost", kind="connection")
        return writer

    def _connected(self, task: asyncio.Task[_WebSocket]) -> None:
        self._connecting = None
        loop = asyncio.get_running_loop()
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, NetworkError) and not exc.permanent:
            self._failure = exc
            self._backoff = min(max(self._backoff * 2, self.reconnect_min), self.reconnect_max)
            self._retry_at = self._clock() + self._backoff
            return
        if exc is not None:
            return
        ws = task.result()
        self._failure, self._backoff = None, 0.0
        self.connects += 1
        self._ws = ws
        # Loop time, as sent_at: both are measured against a deadline the loop's timer fires.
        self._last_received = loop.time()
        self._writer = FrameWriter(ws.send_bytes, self._peer_max, lambda _e: self.drop())
        self._reader = loop.create_task(self._read(ws))

    async def _open(self, timeout: float) -> _WebSocket:
        session = self._session()
        if session is None:
            raise NetworkError(f"Stream to node {self.target}: network not started", permanent=True)
        try:
            # Bounded by itself too: callers stop waiting at their deadlines, the attempt
            # would otherwise hang on a peer that accepts the upgrade and never greets.
            async with asyncio.timeout(timeout):
                return await self._upgrade(session)
        except TimeoutError:
            raise NetworkTimeoutError(
                f"RPC to node {self.target} timed out after {timeout:g}s"
            ) from None

    async def _upgrade(self, session: aiohttp.ClientSession) -> _WebSocket:
        try:
            ws = await session.ws_connect(
                self.url,
                protocols=(SUBPROTOCOL,),
                headers=self._headers,
                ssl=self._ssl,
                max_msg_size=self.max_frame,
                compress=0,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise _handshake_error(self.target, exc.status) from None
        except aiohttp.ClientSSLError as exc:
            raise NetworkError(
                f"TLS with node {self.target} failed: {exc}", permanent=True
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise NetworkError(
                f"Cannot reach node {self.target} at {self.url.origin()}: {exc}", kind="connection"
            ) from exc
        try:
            if ws.protocol != SUBPROTOCOL:
                raise StreamUnsupportedError(f"node {self.target} speaks {ws.protocol!r}")
            self._peer_max = await self._hello(ws)
        except BaseException:
            await ws.close()
            raise
        return ws

    async def _hello(self, ws: _WebSocket) -> int:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise NetworkError(f"Stream to node {self.target} closed before its greeting")
        try:
            frames = decode_message(msg.data)
        except FrameError as exc:
            raise StreamUnsupportedError(f"node {self.target}: {exc}") from None
        hello = frames[0] if frames else None
        if hello is None or hello.kind != HELLO or hello.code != VERSION:
            raise StreamUnsupportedError(f"node {self.target} did not greet with version {VERSION}")
        limit = hello.body.get("max_frame") if isinstance(hello.body, dict) else None
        if type(limit) is not int or limit <= 0:
            raise StreamUnsupportedError(f"node {self.target} greeted without a frame limit")
        return limit

    # -- reading and losing the connection ----------------------------------------------------

    async def _read(self, ws: _WebSocket) -> None:
        loop = asyncio.get_running_loop()
        reason = "closed by the peer"
        try:
            while True:
                msg = await ws.receive()
                if msg.type is not aiohttp.WSMsgType.BINARY:
                    if msg.type is aiohttp.WSMsgType.ERROR:
                        reason = f"{ws.exception()!r}"
                    elif ws.close_code is not None:
                        reason = f"closed by the peer ({ws.close_code})"
                    break
                self._last_received = loop.time()
                try:
                    frames = decode_message(msg.data)
                except FrameError as exc:
                    reason = f"protocol error: {exc}"
                    break
                pending = self._pending
                for frame in frames:
                    if frame.kind in (RESPONSE, ERROR):
                        fut = pending.pop(frame.id, None)
                        if fut is not None and not fut.done():
                            fut.set_result(frame)
        except Exception as exc:  # pragma: no cover - aiohttp reports errors as messages
            reason = repr(exc)
        finally:
            self._lost(ws, reason)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()

    def _lost(self, ws: _WebSocket, reason: str) -> None:
        if self._ws is not ws:
            return
        self.losses += 1
        self._ws = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reader = None
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(
                    NetworkError(
                        f"Connection to node {self.target} lost: {reason}", kind="connection"
                    )
                )

    def drop(self) -> None:
        """Cut the connection at the socket (both directions): what a network failure does.
        Calls in flight fail as the reader notices; the next call reconnects."""
        ws = self._ws
        if ws is None:
            return
        sock = ws.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        else:  # pragma: no cover - every aiohttp transport has its socket
            self._lost(ws, "dropped")

    async def close(self) -> None:
        """Close the connection and fail what is in flight (the network stops)."""
        connecting = self._connecting
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
        ws, reader = self._ws, self._reader
        if ws is None:
            return
        self._lost(ws, "the network stopped")
        with contextlib.suppress(Exception):
            await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader


def _handshake_error(target: str, status: int) -> Exception:
    if status in _UNSUPPORTED_STATUSES:
        return StreamUnsupportedError(f"node {target} answered HTTP {status}")
    if status in (401, 403):
        return NetworkError(
            f"Node {target} answered HTTP {status}: missing or wrong cluster token", permanent=True
        )
    if status in (502, 503, 504):
        return NetworkError(f"Node {target} unavailable (HTTP {status})")
    return NetworkError(f"Node {target} answered HTTP {status} to the upgrade", permanent=True)


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
StreamUnsupported = StreamUnsupportedError
