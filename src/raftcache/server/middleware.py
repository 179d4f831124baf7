"""The middleware chain of the server, outermost first: drain → admission → metrics → errors →
auth → query → forwarding.

Rule: handlers raise, middlewares translate. ``admission`` refuses work past the node's bounds
(503, see ``admission``) before anything else is done — the cheapest answer the node can give,
which is what an overloaded node needs (only ``drain``, which counts requests in progress for a
graceful stop, comes before it). ``metrics`` sees the final status of every request
(including errors and forwarded answers). ``errors`` turns every exception into a JSON error
response — ``ApiError``, aiohttp's own 404/405/413, domain errors via ``api_error_for`` and
any bug as a JSON 500 — so the node keeps serving whatever a handler does. ``auth`` checks the
client tokens before any work is done (read-write, or read-only: 403 for a write). ``query``
refuses a query parameter the route does not read (400 naming it, ``server.query``).
``forwarding`` catches ``NotLeaderError`` and hands the request to the ``Forwarder``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from time import perf_counter

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from raftcache.raft.errors import NotLeaderError
from raftcache.server.admission import TICKET, is_exempt
from raftcache.server.context import context_of
from raftcache.server.drain import drain_middleware
from raftcache.server.errors import (
    ApiError,
    api_error_for,
    is_write_request,
    json_error,
    unavailable,
)
from raftcache.server.forwarding import Handler
from raftcache.server.query import query_middleware

log = logging.getLogger("raftcache.server.http")

# Open without the client token: liveness probes, and the Raft endpoints (cluster token).
# Static, data-free pages a browser must load without a bearer token (the dashboard asks for
# the token itself before it fetches /dashboard/cluster.json, which stays protected).
_OPEN_PATHS = frozenset(
    {"/v1/health", "/openapi.json", "/", "/dashboard/dashboard.js", "/dashboard/dashboard.css"}
)
_RAFT_PREFIX = "/raft/"


def route_label(request: web.Request) -> str:
    """The route pattern that matched (bounded cardinality), or ``unmatched``."""
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by route pattern, method and final status."""
    started = perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        elapsed = perf_counter() - started
        route = route_label(request)
        context_of(request).metrics.observe(route, request.method, status, elapsed)
        if log.isEnabledFor(logging.DEBUG):  # the extra dict is built per request otherwise
            log.debug(
                "request",
                extra={"method": request.method, "route": route, "status": status, "s": elapsed},
            )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as a JSON error; a bug becomes a JSON 500, never a dead node."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.to_response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_error(exc.status, exc.reason.lower(), headers=headers)
    except RequestPayloadError:
        # The body broke off, or its content coding was corrupt (an embedding app that lets
        # aiohttp decompress): the client's fault, whoever reads it (Raft routes included).
        return json_error(400, "request body could not be read")
    except NotLeaderError:
        # Only reached if forwarding is bypassed (e.g. a sub-application): never a 500.
        return unavailable("not the leader").to_response()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        mapped = api_error_for(exc, is_write=is_write_request(request))
        if mapped is not None:
            return mapped.to_response()
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return json_error(500, f"internal error: {type(exc).__name__}")


def _matches(given: bytes, token: str | None) -> bool:
    # compare_digest: the time taken must not reveal how much of the token matched.
    return token is not None and hmac.compare_digest(given, token.encode("utf-8"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With a client token configured, require ``Authorization: Bearer <token>``: the
    read-write token may do anything, the read-only one only reads (403 for a write)."""
    settings = context_of(request).settings
    read_write, read_only = settings.client_token, settings.client_token_ro
    path = request.path
    if (read_write is None and read_only is None) or path in _OPEN_PATHS:
        return await handler(request)
    if path.startswith(_RAFT_PREFIX):
        return await handler(request)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    raw = given.strip().encode("utf-8", "surrogatepass")
    # Both comparisons always run, so the timing does not tell which token was nearly right.
    may_write = _matches(raw, read_write)
    may_read = _matches(raw, read_only)
    if scheme.lower() != "bearer" or not (may_write or may_read):
        raise ApiError(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    if not may_write and is_write_request(request):
        raise ApiError(403, "this token may only read")
    return await handler(request)


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the request's share of the node's capacity, or refuse it at once (503).

    Outermost, and answering directly rather than raising through the chain: under overload
    most requests are refused, so a refusal must cost as little as possible. It is still
    counted in the HTTP metrics.
    """
    if is_exempt(request.path):
        return await handler(request)
    ctx = context_of(request)
    try:
        ticket = ctx.admission.admit(is_write_request(request))
    except ApiError as refused:
        ctx.metrics.count(route_label(request), request.method, refused.status)
        return refused.to_response()
    request[TICKET] = ticket
    try:
        return await handler(request)
    finally:
        ticket.release()


@web.middleware
async def forwarding_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send requests that need the leader on to it (see ``raftcache.server.forwarding``)."""
    try:
        return await handler(request)
    except NotLeaderError as exc:
        return await context_of(request).forwarder.handle_not_leader(request, handler, exc)


MIDDLEWARES = (
    drain_middleware,
    admission_middleware,
    metrics_middleware,
    error_middleware,
    auth_middleware,
    query_middleware,
    forwarding_middleware,
)
