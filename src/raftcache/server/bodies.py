"""Reading request bodies of the client API: bounded per request and charged to the node.

Rule: a handler reads its body only through ``read_body``, which refuses a content-coded body
(415), refuses (413) a body over the handler's own limit — by ``Content-Length`` before reading
anything, else as soon as the bytes read pass it — and charges every byte to the request's
admission ``Ticket`` (503 when the node-wide budget is spent). Nothing ever buffers a body up to
the application's much larger ``client_max_size``. The bytes read are kept on the request
(``BODY``) so that the forwarder can send them on to the leader without reading the stream a
second time.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from raftcache.server.admission import TICKET
from raftcache.server.errors import ApiError, too_large

BODY: Final = web.RequestKey("raftcache.server.body", bytes)


async def read_body(request: web.Request, limit: int, what: str = "request body") -> bytes:
    """The request body, at most ``limit`` bytes (else 413), charged to the request's ticket.

    Args:
        request: the request being served.
        limit: the largest body this handler accepts.
        what: how the 413 message names the body (``"value"``).
    """
    if BODY in request:
        return request[BODY]
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if coding not in ("", "identity"):
        # Clients send values as they are; an encoded body would have to be inflated, and a
        # small gzip body can inflate to gigabytes.
        raise ApiError(415, f"content coding {coding[:40]!r} not supported: send the body as is")
    ticket = request.get(TICKET)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large(f"{what} larger than {limit} bytes")
    charged = 0
    if declared and ticket is not None:
        ticket.charge(declared)  # fail fast, before a byte is read
        charged = declared
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise too_large(f"{what} larger than {limit} bytes")
        if size > charged and ticket is not None:
            ticket.charge(size - charged)
            charged = size
        chunks.append(chunk)
    body = b"".join(chunks)
    request[BODY] = body
    return body
