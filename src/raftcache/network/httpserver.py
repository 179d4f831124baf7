"""The serving half of ``HttpNetwork``: the three Raft routes.

Rule: authenticate, then read the body (bounded), then decode, then call the handler, then
answer in the request's body format; every failure is a JSON error (``httpwire``). The order is
the point: the cluster token is checked (in constant time) before the body is read, so an
unauthenticated peer cannot make the node buffer a large body; the size limit applies to the
body as decoded, so a small compressed body cannot inflate past ``client_max_size`` either.

Content codings: on a standalone listener (``standalone``; aiohttp's own decompression is off
there) the body is decoded here, with every coding ``compression.available()`` lists. Mounted on
an application whose server decodes bodies itself (aiohttp does by default, zstd only with the
library it knows), the body arrives decoded; a body still encoded (a host with decompression
off) is decoded here. A coding that cannot be decoded gets 415 with ``Accept-Encoding``.

Every 200 and 415 answer advertises what this node reads: ``Accept-Encoding`` (content codings),
``Accept-Post`` (body formats) and ``Raft-Batch`` (the batch route, ``batching``). Each served
call is recorded in ``metrics`` as ``inbound`` (peer = the sender the request names), with its
wire and body sizes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from aiohttp import web

from raftcache.network import codec, compression
from raftcache.network.batching import serve_append_batch
from raftcache.network.errors import NetworkError, no_handlers, remote_handler_error
from raftcache.network.httpwire import (
    ACCEPT_POST,
    CONTENT_TYPE_OF,
    HANDLER_OF,
    JSON,
    MSGPACK,
    PATHS,
    RAFT_BATCH,
    RAFT_BATCH_APPEND,
    decode_body,
    encode_body,
    error_response,
    format_of,
)
from raftcache.network.interface import RpcHandlers
from raftcache.network.metered import sender_of
from raftcache.network.metrics import NetworkMetrics, rpc_name
from raftcache.network.wrapper import Clock
from raftcache.protocol.validation import InvalidMessageError, validate_message

__all__ = ["RaftRoute", "RaftRoutes", "aiohttp_decodes_zstd"]

logger = logging.getLogger(__name__)


def aiohttp_decodes_zstd() -> bool:
    """Whether aiohttp's own body decompression knows zstd (it needs ``backports.zstd``)."""
    try:
        from aiohttp import compression_utils
    except ImportError:  # pragma: no cover - aiohttp without the module
        return False
    return bool(getattr(compression_utils, "HAS_ZSTD", False))


class _RefusedError(Exception):
    """The body cannot be read: answer ``response`` instead."""

    def __init__(self, response: web.Response, kind: str) -> None:
        self.response = response
        self.kind = kind


class RaftRoute:
    """One Raft route: ``handle`` is its aiohttp handler.

    Also what a front that parses requests itself (``server.lean.front``) reads to serve the
    route as aiohttp does: the body limit, and the token check it makes before buffering a body.
    """

    __slots__ = ("cls", "method", "routes")

    def __init__(self, routes: RaftRoutes, cls: type[Any]) -> None:
        self.routes = routes
        self.cls = cls
        self.method = HANDLER_OF[cls]

    @property
    def body_limit(self) -> int:
        """The largest body the route reads (as sent and as decoded)."""
        return self.routes.client_max_size

    def authorized(self, authorization: str | None) -> bool:
        """Whether a request with this ``Authorization`` value gets past the token check."""
        return self.routes.authorized(authorization)

    async def handle(self, request: web.Request) -> web.Response:
        return await self.routes.serve(request, self.cls, self.method)


class RaftRoutes:
    """Serves the Raft routes for one node (see the module rule).

    Args:
        node_id: this node's id (in error messages).
        auth: the exact ``Authorization`` value required, or None.
        client_max_size: largest accepted body, as decoded, in bytes.
        metrics: where inbound calls are recorded.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        node_id: str,
        *,
        auth: bytes | None,
        client_max_size: int,
        metrics: NetworkMetrics,
        clock: Clock,
    ) -> None:
        self.node_id = node_id
        self.auth = auth
        self.client_max_size = client_max_size
        self.metrics = metrics
        self.clock = clock
        self.handlers: RpcHandlers | None = None
        self.standalone = False  # set by the listener, which turns aiohttp's decompression off

    def routes(self) -> list[web.RouteDef]:
        """The three ``POST /raft/...`` routes; each handler is a ``RaftRoute``'s bound
        ``handle``, so a front that serves them itself finds their limits from the router."""
        # Unnamed: route names must be unique per application, and the host app owns its names.
        return [web.post(path, RaftRoute(self, cls).handle) for cls, path in PATHS.items()]

    def accepted_encodings(self) -> tuple[str, ...]:
        """The content codings this node can take on a request body, best first."""
        ours = compression.available()
        if self.standalone:
            return ours
        # Mounted: the host's aiohttp intercepts zstd and refuses it unless it knows zstd.
        return tuple(e for e in ours if e != "zstd" or aiohttp_decodes_zstd())

    def advertisement(self) -> dict[str, str]:
        return {
            "Accept-Encoding": compression.format_accept_encoding(self.accepted_encodings()),
            ACCEPT_POST: f"{JSON}, {MSGPACK}",
            RAFT_BATCH: RAFT_BATCH_APPEND,
        }

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value carries the cluster token (constant time)."""
        if self.auth is None:
            return True
        given = (authorization or "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self.auth)

    async def serve(self, request: web.Request, cls: type[Any], method: str) -> web.Response:
        """Answer one Raft request (see the module rule for the order of the checks)."""
        if not self.authorized(request.headers.get("Authorization")):
            response = error_response(401, "missing or wrong cluster token", "unauthorized")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        handlers = self.handlers
        if handlers is None:
            return error_response(503, str(no_handlers(self.node_id)), "no_handlers")
        started = self.clock()
        rpc = cls.__name__.removesuffix("Request")
        try:
            body, wire_size = await self._read_body(request)
        except _RefusedError as refused:
            self.metrics.record_rejected("inbound", rpc, "?", NetworkError("", kind=refused.kind))
            return refused.response
        fmt = format_of(request.content_type)
        try:
            req = decode_body(fmt, cls, body)
            validate_message(req)
        except InvalidMessageError as exc:
            self.metrics.record_rejected("inbound", rpc, "?", NetworkError("", kind="bad_request"))
            return error_response(400, f"invalid {cls.__name__}: {exc}", "bad_request")
        except codec.CodecError as exc:
            self.metrics.record_rejected("inbound", rpc, "?", NetworkError("", kind="bad_request"))
            return error_response(
                400, f"invalid {cls.__name__}: {exc}", "bad_request", field=exc.field
            )
        return await self._answer(handlers, method, req, fmt, started, (wire_size, len(body)))

    async def _answer(
        self,
        handlers: RpcHandlers,
        method: str,
        req: Any,
        fmt: str,
        started: float,
        sizes: tuple[int, int],
    ) -> web.Response:
        peer, rpc = sender_of(req), rpc_name(req)
        try:
            if method:
                response = await getattr(handlers, method)(req)
            else:  # a batch: each item its group's own (``batching``)
                response = await serve_append_batch(self.node_id, handlers, req)
        except NetworkError as exc:  # the handler's own verdict (a group not hosted): relayed
            logger.debug("%s: %s refused: %s", self.node_id, rpc, exc)
            self.metrics.record("inbound", rpc, peer, self.clock() - started, exc)
            status = 500 if exc.permanent else 503
            return error_response(status, str(exc), exc.kind, permanent=exc.permanent)
        except Exception as exc:
            logger.warning("%s: %s handler raised", self.node_id, rpc, exc_info=True)
            error = remote_handler_error(self.node_id, repr(exc))
            self.metrics.record("inbound", rpc, peer, self.clock() - started, error)
            return error_response(500, str(error), "handler_error")
        out = encode_body(fmt, response)
        self.metrics.record("inbound", rpc, peer, self.clock() - started)
        self.metrics.record_bytes(
            "inbound", rpc, peer, received=sizes[0], body_received=sizes[1], sent=len(out)
        )
        return web.Response(
            body=out, content_type=CONTENT_TYPE_OF[fmt], headers=self.advertisement()
        )

    async def _read_body(self, request: web.Request) -> tuple[bytes, int]:
        """The decoded body and its size on the wire, bounded by ``client_max_size``."""
        limit = self.client_max_size
        length = request.content_length
        if length is not None and length > limit:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise self._too_large()
            chunks.append(chunk)
        # join() of a single chunk returns it without copying: the common small-body case.
        raw = b"".join(chunks)
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding in ("", compression.IDENTITY):
            return raw, len(raw)
        decoded_by_aiohttp = getattr(request.content, "total_compressed_bytes", None)
        if decoded_by_aiohttp is not None:
            return raw, int(decoded_by_aiohttp)
        if encoding not in compression.available():
            raise _RefusedError(self._unsupported(encoding), "unsupported_encoding")
        try:
            # Off the event loop: inflating a snapshot chunk takes milliseconds.
            body = await asyncio.to_thread(compression.codec(encoding).decompress, raw, limit)
        except compression.BodyTooLargeError:
            raise self._too_large() from None
        except compression.DecompressionError as exc:
            raise _RefusedError(
                error_response(400, str(exc), "bad_request"), "bad_request"
            ) from None
        return body, len(raw)

    def _too_large(self) -> _RefusedError:
        limit = self.client_max_size
        response = error_response(413, f"body larger than {limit} bytes", "too_large", limit=limit)
        return _RefusedError(response, "too_large")

    def _unsupported(self, encoding: str) -> web.Response:
        response = error_response(
            415, f"content coding {encoding!r} not supported", "unsupported_encoding"
        )
        response.headers.update(self.advertisement())
        return response
