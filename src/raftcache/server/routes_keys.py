"""Handlers of the key-value API: ``/v1/keys`` (list; DELETE = flush by prefix),
``/v1/keys/{key}[/incr|/ttl]``, ``/v1/batch``, ``/v1/mget``.

Rule: a handler validates all of its input first (``validation``), then makes exactly one call
to the ``CacheService``, then renders the result (``results``). It never catches domain errors:
``NotLeaderError`` is forwarded and everything else mapped by the middleware chain.
"""

from __future__ import annotations

from aiohttp import web

from raftcache.cache.entries import HASH
from raftcache.cache.results import IncrResult, TtlResult
from raftcache.server.bodies import read_body
from raftcache.server.context import context_of
from raftcache.server.errors import ApiError, bad_request, too_large
from raftcache.server.forwarding import FORWARDED_HEADER, Handler
from raftcache.server.results import (
    batch_response,
    expect_result,
    hash_positions,
    json_response,
    reused_sequence,
    session_from_headers,
    to_cache_ops,
    to_values,
)
from raftcache.server.validation import (
    check_value_size,
    parse_batch_body,
    parse_consistency,
    parse_if_match,
    parse_if_none_match,
    parse_incr_body,
    parse_key_path,
    parse_limit,
    parse_mget_body,
    parse_prefix_or_after,
    parse_touch,
    parse_ttl,
    parse_ttl_body,
)
from raftcache.vocabulary import EXPIRES_AT_HEADER, MSGPACK_TYPE, VALUE_TYPE_HEADER

SMALL_BODY_BYTES = 64 * 1024


def single_query(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once (a repeated one is ambiguous: 400)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_request(f"query parameter {name} given more than once")
    return values[0] if values else None


async def put_key(request: web.Request) -> web.Response:
    """``PUT /v1/keys/{key}``: store the body; ``?ttl``, ``If-Match``, ``If-None-Match: *``."""
    ctx = context_of(request)
    key = parse_key_path(request.raw_path)
    ttl = parse_ttl(single_query(request, "ttl"))
    if_version = parse_if_match(request.headers.get("If-Match"))
    if_absent = parse_if_none_match(request.headers.get("If-None-Match"))
    if if_version is not None and if_absent:
        raise bad_request("If-Match and If-None-Match cannot be combined")
    session = session_from_headers(request)
    limits = ctx.settings.limits
    body = await read_body(request, limits.max_value_bytes, "value")
    check_value_size(len(body), limits)
    version = await ctx.service.set(
        key, body, ttl=ttl, if_version=if_version, if_absent=if_absent, session=session
    )
    expect_result(version, int, session)
    return json_response({"version": int(version)})


async def get_key(request: web.Request) -> web.Response:
    """``GET /v1/keys/{key}``: the raw value with ``ETag: "<version>"``; 404 when missing.
    ``?touch=false``: the read leaves the key's recency alone. A forwarded request (another
    store's front) also gets the key's expiry (``X-Raftcache-Expires-At``). A hash answers its
    fields as a msgpack map, with ``X-Raftcache-Type: hash``."""
    ctx = context_of(request)
    key = parse_key_path(request.raw_path)
    consistency = parse_consistency(single_query(request, "consistency"))
    touch = parse_touch(single_query(request, "touch"))
    item = await ctx.service.get(key, consistency, touch=touch)
    if item is None:
        raise ApiError(404, "key not found")
    headers = {"ETag": f'"{item.version}"'}
    if FORWARDED_HEADER in request.headers:  # another store asks for us: say the expiry too
        expires = item.expires_at
        headers[EXPIRES_AT_HEADER] = "never" if expires is None else repr(expires)
    if item.kind == HASH:  # its fields, as a msgpack map (docs/api.md, "Hashes")
        headers[VALUE_TYPE_HEADER] = HASH
        return web.Response(body=item.value, content_type=MSGPACK_TYPE, headers=headers)
    return web.Response(body=item.value, content_type="application/octet-stream", headers=headers)


async def delete_key(request: web.Request) -> web.Response:
    """``DELETE /v1/keys/{key}`` → ``{"deleted": bool}``; honours ``If-Match``."""
    ctx = context_of(request)
    key = parse_key_path(request.raw_path)
    if_version = parse_if_match(request.headers.get("If-Match"))
    if request.headers.get("If-None-Match") is not None:
        raise bad_request("If-None-Match is not supported on DELETE")
    session = session_from_headers(request)
    deleted = await ctx.service.delete(key, if_version=if_version, session=session)
    expect_result(deleted, bool, session)
    return json_response({"deleted": bool(deleted)})


async def list_keys(request: web.Request) -> web.Response:
    """``GET /v1/keys?prefix&after&limit`` → ``{"keys": [...], "next": key | null}``."""
    ctx = context_of(request)
    prefix = parse_prefix_or_after(single_query(request, "prefix"), "prefix")
    after = parse_prefix_or_after(single_query(request, "after"), "after")
    limit = parse_limit(single_query(request, "limit"), ctx.settings.limits)
    consistency = parse_consistency(single_query(request, "consistency"))
    keys, next_key = await ctx.service.list_keys(prefix, after, limit, consistency)
    return json_response({"keys": keys, "next": next_key})


async def incr_key(request: web.Request) -> web.Response:
    """``POST /v1/keys/{key}/incr`` body ``{"by": int}`` → ``{"value": int, "version": N}``."""
    ctx = context_of(request)
    key = parse_key_path(request.raw_path)
    session = session_from_headers(request)
    by = parse_incr_body(await read_body(request, SMALL_BODY_BYTES))
    result = await ctx.service.incr(key, by=by, session=session)
    expect_result(result, IncrResult, session)
    return json_response({"value": result.value, "version": result.version})


async def ttl_key(request: web.Request) -> web.Response:
    """``POST /v1/keys/{key}/ttl`` body ``{"ttl": seconds | null}`` or ``{"at": epoch}``
    (+ ``condition``; ``If-Match`` honoured): change the expiry alone →
    ``{"changed": bool, "version": N}`` (0 when the key is missing or was deleted)."""
    ctx = context_of(request)
    key = parse_key_path(request.raw_path)
    if_version = parse_if_match(request.headers.get("If-Match"))
    if request.headers.get("If-None-Match") is not None:
        raise bad_request("If-None-Match is not supported on a TTL change")
    session = session_from_headers(request)
    ttl, at, condition = parse_ttl_body(await read_body(request, SMALL_BODY_BYTES))
    result = await ctx.service.expire(
        key, ttl, at=at, condition=condition, if_version=if_version, session=session
    )
    expect_result(result, TtlResult, session)
    return json_response({"changed": result.changed, "version": result.version})


async def flush_keys(request: web.Request) -> web.Response:
    """``DELETE /v1/keys?prefix=P``: delete every key starting with ``P`` (an empty ``P``:
    every key) as one log entry → ``{"deleted": N}`` (live keys deleted)."""
    ctx = context_of(request)
    prefix = parse_prefix_or_after(single_query(request, "prefix"), "prefix")
    if prefix is None:
        raise bad_request("DELETE /v1/keys needs ?prefix= (an empty prefix deletes every key)")
    session = session_from_headers(request)
    deleted = await ctx.service.flush(prefix, session=session)
    expect_result(deleted, int, session)
    return json_response({"deleted": int(deleted)})


def batch_body_limit(request: web.Request) -> int:
    limits = context_of(request).settings.limits
    # Base64 inflates values by 4/3; JSON framing adds a little per op.
    return limits.max_batch_bytes * 4 // 3 + limits.max_batch_ops * 2048 + 1024


async def batch(request: web.Request) -> web.Response:
    """``POST /v1/batch``: the ops applied atomically as one log entry, results in order."""
    ctx = context_of(request)
    session = session_from_headers(request)
    body = await read_body(request, batch_body_limit(request))
    ops = parse_batch_body(body, ctx.settings.limits)
    if not ops:
        return json_response({"results": []})
    try:
        results = await ctx.service.batch(to_cache_ops(ops), session=session)
        return json_response({"results": batch_response(ops, results)})
    except (ValueError, TypeError, RuntimeError) as exc:
        # Ops are paired with results (in the service and in batch_response): a reused seq
        # hands us another write's remembered result, whose shape does not fit.
        if session is None:
            raise
        raise reused_sequence() from exc


async def mget(request: web.Request) -> web.Response:
    """``POST /v1/mget`` ``{"keys": [...]}`` → ``{"values": [base64 | null, ...]}``, plus
    ``"hashes": [position, ...]`` when some keys hold hashes (their values are their fields as
    msgpack maps); ``?touch=false`` as for ``get_key``."""
    ctx = context_of(request)
    consistency = parse_consistency(single_query(request, "consistency"))
    touch = parse_touch(single_query(request, "touch"))
    body = await read_body(request, batch_body_limit(request))
    keys = parse_mget_body(body, ctx.settings.limits)
    if not keys:
        return json_response({"values": []})
    items = await ctx.service.mget(keys, consistency, touch=touch)
    # The answer is bounded like a batch's values: 1000 keys of 1 MiB would be 1.3 GB of JSON.
    size = sum(len(item.value) for item in items if item is not None)
    limit = ctx.settings.limits.max_batch_bytes
    if size > limit:
        raise too_large(f"the values total {size} bytes, over {limit}: ask for fewer keys")
    hashes = hash_positions(items)
    if hashes:  # only then: an answer without hashes is what it always was
        return json_response({"values": to_values(items), "hashes": hashes})
    return json_response({"values": to_values(items)})


async def malformed_key_path(request: web.Request) -> web.Response:
    """Any other path under ``/v1/keys/``: a wrong method on a key route (405) or a key that
    is empty or spans several segments (400)."""
    rest = request.raw_path.split("?", 1)[0][len("/v1/keys/") :]
    parts = rest.split("/")
    if len(parts) == 1 and parts[0]:
        allow = "DELETE, GET, HEAD, PUT"
    elif len(parts) == 2 and parts[0] and parts[1] in ("incr", "ttl"):
        allow = "POST"
    else:
        raise bad_request("key must be one non-empty path segment (send / as %2F)")
    raise ApiError(405, "method not allowed", headers={"Allow": allow})


#: A key's route: one path segment, braces included (aiohttp's default ``{key}`` pattern,
#: ``[^{}/]+``, would refuse a hash tag, ``user:{42}:cart``). Its label is still
#: ``/v1/keys/{key}``.
KEY_PATH = "/v1/keys/{key:[^/]+}"


def add_key_routes(
    app: web.Application,
    *,
    listing: Handler = list_keys,
    flush: Handler = flush_keys,
    multi_get: Handler = mget,
) -> None:
    """Register the key-value routes on ``app`` (a store passes its own fan-out handlers
    for the listing, the flush and ``mget``)."""
    app.router.add_get("/v1/keys", listing)
    app.router.add_delete("/v1/keys", flush)
    app.router.add_put(KEY_PATH, put_key)
    app.router.add_get(KEY_PATH, get_key)
    app.router.add_delete(KEY_PATH, delete_key)
    app.router.add_post(KEY_PATH + "/incr", incr_key)
    app.router.add_post(KEY_PATH + "/ttl", ttl_key)
    app.router.add_post("/v1/batch", batch)
    app.router.add_post("/v1/mget", multi_get)
    # Last: it catches what the routes above did not (their 405s included), see its docstring.
    app.router.add_route("*", "/v1/keys/{rest:.*}", malformed_key_path)
