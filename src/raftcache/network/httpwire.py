"""The HTTP wire contract between nodes: routes, error bodies and what each status means.

Rule: one ``POST`` per RPC, the body being the message in the JSON wire codec (or msgpack,
negotiated: see below); every status other than 200 carries an error object
``{"error": "...", "code": "..."}``, whatever the request's Content-Type, and the client maps it
back to the error family with ``status_error``:

=====================================  ===============  =========================================
server side                            status / code    client raises
=====================================  ===============  =========================================
token missing or wrong                 401 unauthorized permanent ``NetworkError``
no handlers registered                 503 no_handlers  permanent "Node X has no handlers ..."
body over ``client_max_size``          413 too_large    permanent, kind ``too_large``
content coding it cannot decode        415 unsupported  resent once uncompressed, else permanent
undecodable or wrongly typed body      400 bad_request  permanent ``NetworkError``
handler raised                         500              permanent ``NetworkError`` (its message)
handler raised a ``NetworkError``      500/503 (kind)   the same message, kind and permanence
other 502/503/504 (a proxy, say)       —                transient ``NetworkError``
404/405 (a route it does not serve)    —                permanent, kind ``not_found``
any other status                       —                permanent ``NetworkError``
=====================================  ===============  =========================================

A handler's ``NetworkError`` (``GroupNotHostedError``: a group this node does not host) is its
verdict, not a bug: the body's code is its kind and ``"permanent"`` its flag, the status 503 when
transient (what an older client retries) and 500 when permanent. Both sides of the table live
here so that they cannot drift apart.

Body formats: JSON is the default and what a request whose Content-Type names anything else is
parsed as; ``application/msgpack`` (``raftcache.network.msgpack_codec``) is the binary twin. A
server answers in the format of the request and advertises the formats it reads in an
``Accept-Post`` response header and the content codings it decodes in ``Accept-Encoding``
(RFC 7694); a client sends msgpack or a compressed body only to a peer that advertised it.

Batches: ``POST /raft/append-batch`` carries an ``AppendEntriesBatch`` (many groups'
AppendEntries to one store, ``raftcache.network.batching``) and answers an
``AppendEntriesBatchResponse``: one answer per item, a response or the error its single RPC
would have raised (its message, kind and permanence), so an item's refusal is never the
batch's; its ``hold`` is the most the receiver may wait for its first item with entries. The
statuses above concern the batch as a whole (an invalid item refuses it: 400). A node serving
the route says ``Raft-Batch: append-entries`` on its 200 and 415 answers; a client sends
batches only to a peer that did, and single RPCs after a 404 or 405 there (an older build now
at its address) or a 413 (the batch over the peer's limit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from raftcache.network import codec, msgpack_codec
from raftcache.network.errors import NetworkError, no_handlers, relayed
from raftcache.protocol.messages import (
    AppendEntriesBatch,
    AppendEntriesRequest,
    InstallSnapshotRequest,
    RequestVoteRequest,
)

__all__ = [
    "ACCEPT_POST",
    "CONTENT_TYPE_OF",
    "DEFAULT_CLIENT_MAX_SIZE",
    "FORMATS",
    "HANDLER_OF",
    "JSON",
    "MSGPACK",
    "PATHS",
    "RAFT_BATCH",
    "RAFT_BATCH_APPEND",
    "decode_body",
    "encode_body",
    "error_response",
    "format_of",
    "json_errors",
    "parse_formats",
    "status_error",
]

DEFAULT_CLIENT_MAX_SIZE = 64 * 1024 * 1024
"""64 MiB: a 1 MiB snapshot chunk is ~1.4 MiB of base64 JSON; room for much larger chunks."""

PATHS: dict[type[Any], str] = {
    RequestVoteRequest: "/raft/request-vote",
    AppendEntriesRequest: "/raft/append-entries",
    InstallSnapshotRequest: "/raft/install-snapshot",
    AppendEntriesBatch: "/raft/append-batch",
}
"""The route of each request type."""

HANDLER_OF: dict[type[Any], str] = {
    RequestVoteRequest: "handle_request_vote",
    AppendEntriesRequest: "handle_append_entries",
    InstallSnapshotRequest: "handle_install_snapshot",
    AppendEntriesBatch: "",  # not a handler's: ``batching.serve_append_batch`` steps each item
}
"""The ``RpcHandlers`` method that serves each request type."""

JSON = "application/json"
MSGPACK = msgpack_codec.CONTENT_TYPE
FORMATS = ("json", "msgpack")
CONTENT_TYPE_OF = {"json": JSON, "msgpack": MSGPACK}
ACCEPT_POST = "Accept-Post"
#: A node that serves ``AppendEntriesBatch`` says so on its Raft answers: ``Raft-Batch:
#: append-entries`` (an older node says nothing and gets single RPCs).
RAFT_BATCH = "Raft-Batch"
RAFT_BATCH_APPEND = "append-entries"
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})


def format_of(content_type: str | None) -> str:
    """The body format a Content-Type names: ``"msgpack"`` for msgpack, else ``"json"``."""
    base = (content_type or "").partition(";")[0].strip().lower()
    return "msgpack" if base in _MSGPACK_TYPES else "json"


def parse_formats(header: str | None) -> frozenset[str]:
    """The body formats an ``Accept-Post`` value names (JSON is always understood)."""
    names = {format_of(item) for item in (header or "").split(",") if item.strip()}
    return frozenset(names | {"json"})


def encode_body(fmt: str, msg: Any) -> bytes:
    """A message in body format ``fmt``."""
    return msgpack_codec.encode(msg) if fmt == "msgpack" else codec.encode(msg)


def decode_body(fmt: str, cls: type[Any], data: bytes) -> Any:
    """A message of class ``cls`` from a body in format ``fmt`` (``CodecError`` if invalid)."""
    return msgpack_codec.decode(cls, data) if fmt == "msgpack" else codec.decode(cls, data)


def error_response(status: int, message: str, code: str, **extra: Any) -> web.Response:
    """A JSON error answer: ``{"error": message, "code": code, **extra}``."""
    body = orjson.dumps({"error": message, "code": code, **extra})
    return web.Response(status=status, body=body, content_type=JSON)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unknown routes and methods answer JSON errors too (on a standalone listener)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason, "http_error")


def status_error(target: str, status: int, data: bytes) -> NetworkError:
    """The client-side error for a non-200 answer from ``target`` (see the table above)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        detail, code = obj["error"], obj.get("code")
    else:
        detail, code = data[:200].decode("utf-8", "replace"), None
    if code == "no_handlers":
        return no_handlers(target)
    permanent = obj.get("permanent") if isinstance(obj, dict) else None
    if status in (500, 503) and isinstance(permanent, bool):
        return relayed(detail, code, permanent)
    if status == 500 and code == "handler_error":
        return NetworkError(detail, permanent=True)
    if status in (502, 503, 504):
        return NetworkError(f"Node {target} unavailable (HTTP {status}): {detail}")
    if status == 413:  # a batch may still go as its items (``HttpNetwork.send_append_batch``)
        return NetworkError(
            f"Node {target} answered HTTP 413: {detail}", permanent=True, kind="too_large"
        )
    if status in (404, 405):  # a route this node does not serve (an older build): "not_found"
        return NetworkError(
            f"Node {target} answered HTTP {status}: {detail}", permanent=True, kind="not_found"
        )
    return NetworkError(f"Node {target} answered HTTP {status}: {detail}", permanent=True)
