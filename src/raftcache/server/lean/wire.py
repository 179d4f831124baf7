"""Bytes on the wire for the lean front: a finished ``web.Response`` as one HTTP/1.x answer.

Rule: the answer carries what aiohttp would send for the same response object — its status and
reason, its headers (``Content-Type``, ``ETag``, ``Retry-After``, ``Allow``, ...), a
``Content-Length``, ``Date``, ``Server`` and the keep-alive decision as ``Connection`` — in the
request's HTTP version; the whole answer is built as one ``bytes`` so it leaves in one ``write``.
The ``Date`` comes from the wall clock the front was given (``DateHeader``), never read here:
the composition root hands every part of the node its clock.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import formatdate
from typing import Final

import orjson
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from raftcache.server.lean.request import LeanRequest

# Recomputed here, never copied from the response object.
_OWN_HEADERS: Final = frozenset(
    {"content-length", "connection", "transfer-encoding", "date", "server"}
)
_SERVER: Final = f"Server: {SERVER_SOFTWARE}".encode("latin-1")


class DateHeader:
    """The ``Date`` value from a wall clock (seconds since the epoch), formatted once a second:
    formatting it per answer would cost more than the rest of the answer."""

    __slots__ = ("_clock", "_second", "_value")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(self._clock())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value


def encode_response(
    response: web.StreamResponse, request: LeanRequest, keep_alive: bool, date: bytes
) -> bytes:
    """The HTTP/1.x bytes of ``response`` answering ``request``, ``date`` its ``Date`` value.

    Raises:
        TypeError: the response is not a ``web.Response`` with a bytes body (a stream): the
            lean routes never produce one.
    """
    if not isinstance(response, web.Response):
        raise TypeError(f"the lean front cannot send a {type(response).__name__}")
    body = response.body
    if body is None:
        body = b""
    elif not isinstance(body, bytes | bytearray):
        raise TypeError("the lean front sends bytes bodies only")
    major, minor = request.version
    lines = [f"HTTP/{major}.{minor} {response.status} {response.reason}".encode("latin-1")]
    for name, value in response.headers.items():
        if name.lower() not in _OWN_HEADERS:
            lines.append(f"{name}: {value}".encode("utf-8", "surrogateescape"))
    lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Date: " + date)
    lines.append(_SERVER)
    if not keep_alive:
        lines.append(b"Connection: close")
    elif (major, minor) == (1, 0):
        lines.append(b"Connection: keep-alive")
    lines.append(b"")
    lines.append(b"" if request.method == "HEAD" else bytes(body))
    return b"\r\n".join(lines)


def error_bytes(status: int, message: str) -> bytes:
    """A JSON error answer (``{"error": message}``) that closes the connection: for bytes the
    front could not parse as a request, so there is no request to answer in kind."""
    reason = {400: "Bad Request", 500: "Internal Server Error"}.get(status, "Error")
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body
