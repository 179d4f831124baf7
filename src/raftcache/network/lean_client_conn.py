"""One keep-alive HTTP/1.1 client connection to a peer, parsed with httptools.

Rule: a connection carries one exchange at a time (no pipelining). ``send`` writes the whole request
at once and returns a future that completes when the answer's last body byte is parsed, or fails
with ``ConnectionLostError`` (``started`` tells whether any answer byte had arrived, which decides
whether the caller may retry) or ``MalformedAnswerError``. Bytes that arrive while no exchange is
running, an answer that cannot be parsed, an upgrade: the connection can no longer be trusted and is
closed. An answer without ``Content-Length`` or chunking ends when the peer closes.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

__all__ = [
    "ConnectionLost",
    "ConnectionLostError",
    "LeanConnection",
    "MalformedAnswer",
    "MalformedAnswerError",
]


class ConnectionLostError(Exception):
    """The connection closed before the answer was complete."""

    def __init__(self, cause: BaseException | None, *, started: bool) -> None:
        super().__init__(str(cause) if cause else "connection closed by peer")
        self.started = started


class MalformedAnswerError(Exception):
    """The peer's bytes are not an HTTP/1.1 answer we read."""


class LeanConnection(asyncio.Protocol):
    """An asyncio protocol speaking the client half of HTTP/1.1, one exchange at a time."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, live: set[LeanConnection] | None = None
    ) -> None:
        self._loop = loop
        self._live = live  # the client's open connections: this one leaves it when it closes
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keep_alive = False
        self.started = False
        self.status = 0
        self.content_type: str | None = None
        self.accept_encoding: str | None = None
        self.accept_post: str | None = None
        self.raft_batch: str | None = None
        self.content_encoding: str | None = None
        self._body: list[bytes] = []
        self._headers_done = False
        self._length_known = False

    # -- the caller's side ----------------------------------------------------------------------

    def send(self, head: bytes, body: bytes) -> asyncio.Future[None]:
        """Write one request; the future completes when its whole answer has been read."""
        self.started = self.keep_alive = False
        waiter = self._waiter = self._loop.create_future()
        transport = self.transport
        if self.closed or transport is None:
            waiter.set_exception(ConnectionLostError(None, started=False))
            return waiter
        if len(body) < 16 * 1024:
            transport.write(head + body)  # one small copy beats two sends
        else:
            transport.writelines((head, body))
        return waiter

    def body(self) -> bytes:
        return self._body[0] if len(self._body) == 1 else b"".join(self._body)

    def close(self) -> None:
        """Close the connection; an exchange still running fails with ``ConnectionLostError``."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._live is not None:
            self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._live is not None:
            self._live.discard(self)
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if exc is None and self._headers_done and not self._length_known:
            self.keep_alive = False  # an answer delimited by the close: it is complete now
            waiter.set_result(None)
        else:
            waiter.set_exception(ConnectionLostError(exc, started=self.started))

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # nobody asked: whatever this is, the stream is out of step
            return
        self.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedAnswerError("the peer switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(MalformedAnswerError(f"malformed HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost settles the exchange

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    # -- httptools callbacks (raising stops the parser: only a stray answer does) ---------------

    def on_message_begin(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            # A second answer to one request: stop before it overwrites the first one's fields.
            raise MalformedAnswerError("an answer nobody asked for")
        self._headers_done = self._length_known = False
        self.status = 0
        self.content_type = self.accept_encoding = self.accept_post = self.raft_batch = None
        self.content_encoding = None
        self._body = []

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key == b"content-type":
            self.content_type = value.decode("latin-1")
        elif key == b"content-length":
            self._length_known = True
        elif key == b"transfer-encoding":
            self._length_known = self._length_known or b"chunked" in value.lower()
        elif key == b"accept-encoding":
            self.accept_encoding = value.decode("latin-1")
        elif key == b"accept-post":
            self.accept_post = value.decode("latin-1")
        elif key == b"raft-batch":
            self.raft_batch = value.decode("latin-1")
        elif key == b"content-encoding":
            self.content_encoding = value.decode("latin-1").strip().lower()

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self.status = self._parser.get_status_code()
        if self.status in (204, 304) or 100 <= self.status < 200:
            self._length_known = True  # no body by definition

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:
            return  # an interim answer: the real one follows (on_message_begin resets)
        self.keep_alive = self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
ConnectionLost = ConnectionLostError
MalformedAnswer = MalformedAnswerError
