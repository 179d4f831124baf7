"""Rendering of ``CacheService`` results as the JSON bodies of docs/api.md, and session headers.

Rule: this is the one place that knows the shapes the cache service returns; handlers pass
results through these functions and never index into them. Bytes go out as RFC 4648 base64
with padding.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from raftcache.cache.commands import BatchOp, Session
from raftcache.cache.entries import HASH, Item
from raftcache.cache.results import BatchItem
from raftcache.cache.service import batch_op
from raftcache.server.errors import ApiError
from raftcache.server.validation import ParsedBatchOp, parse_session_headers

CLIENT_ID_HEADER = "X-Raftcache-Client-Id"
SEQ_HEADER = "X-Raftcache-Seq"


def json_response(body: Mapping[str, Any], status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def b64(value: bytes | None) -> str | None:
    """Base64 with padding, None for None."""
    return None if value is None else base64.b64encode(value).decode("ascii")


def session_from_headers(request: web.Request) -> Session | None:
    """The write's ``Session`` from ``X-Raftcache-Client-Id``/``X-Raftcache-Seq``, or None."""
    parsed = parse_session_headers(
        request.headers.get(CLIENT_ID_HEADER), request.headers.get(SEQ_HEADER)
    )
    if parsed is None:
        return None
    return Session(client_id=parsed[0], seq=parsed[1])


def reused_sequence() -> ApiError:
    """The 409 for a session ``(client id, seq)`` already used by a *different* write.

    The session table answers a duplicate with the remembered result of the first write with
    that seq, which is a retry's answer — but for another kind of write it is the wrong answer
    (an incr's result for a PUT). A correct client never does this; it must not cause a 500.
    """
    return ApiError(
        409,
        "X-Raftcache-Seq was already used by a different write of this client id",
        extra={"reused_seq": True},
    )


def expect_result(
    result: object, expected: type | tuple[type, ...], session: Session | None
) -> None:
    """Check the shape of a write's result; a mismatch under a session is a reused seq (409)."""
    if isinstance(result, expected) and not (expected is int and isinstance(result, bool)):
        return
    if session is not None:
        raise reused_sequence()
    raise RuntimeError(f"the cache returned {type(result).__name__} for a write")


def to_cache_ops(ops: Sequence[ParsedBatchOp]) -> list[BatchOp]:
    """Validated HTTP batch ops → the cache's batch op objects (``batch_op`` reads the same
    attribute names, so there is one conversion, in the cache layer)."""
    return [batch_op(op) for op in ops]


def _hash_result(action: str | None, result: BatchItem) -> dict[str, Any]:
    """A hash op's result as docs/api.md spells it: set/del → ``{"count": n}``, incr →
    ``{"value": int}``, incrf → ``{"value": base64}``, read → ``{"fields": [base64, ...]}``
    (field, value, field, value…) or ``{"fields": null}``."""
    if action == "read":
        if result is None:
            return {"fields": None}
        # A tuple; a list when a session answers a retry from a restored snapshot's table.
        if not isinstance(result, tuple | list):
            raise RuntimeError(f"hash read returned {type(result).__name__}")
        return {"fields": [b64(x) for x in result]}
    if action == "incrf":
        if not isinstance(result, bytes):
            raise RuntimeError(f"hash incrf returned {type(result).__name__}")
        return {"value": b64(result)}
    if type(result) is not int:
        raise RuntimeError(f"hash {action} returned {type(result).__name__}")
    return {"value": result} if action == "incr" else {"count": result}


def to_values(items: Sequence[Item | None]) -> list[str | None]:
    """An ``mget`` result → base64 values in key order (None for missing keys); a hash's value
    is its fields as a msgpack map, its position listed by ``hash_positions``."""
    return [None if item is None else b64(item.value) for item in items]


def hash_positions(items: Sequence[Item | None]) -> list[int]:
    """The positions of ``items`` that are hashes (``"hashes"`` of an ``mget`` answer)."""
    return [i for i, item in enumerate(items) if item is not None and item.kind == HASH]


def batch_response(
    ops: Sequence[ParsedBatchOp], results: Sequence[BatchItem]
) -> list[dict[str, Any]]:
    """A ``batch`` result (get → bytes | None, set → version, delete → bool, incr → value,
    ttl → changed) → the per-op objects of docs/api.md, in op order (incr → ``{"value": int}``,
    ttl → ``{"changed": bool}``)."""
    if len(results) != len(ops):
        raise RuntimeError(f"batch returned {len(results)} results for {len(ops)} ops")
    rendered: list[dict[str, Any]] = []
    for op, result in zip(ops, results, strict=True):
        if op.op == "get":
            if result is not None and not isinstance(result, bytes):
                raise RuntimeError(f"batch get returned {type(result).__name__}")
            rendered.append({"value": b64(result)})
        elif op.op == "set":
            rendered.append({"version": result if type(result) is int else 0})
        elif op.op == "incr":
            if type(result) is not int:
                raise RuntimeError(f"batch incr returned {type(result).__name__}")
            rendered.append({"value": result})
        elif op.op == "ttl":
            rendered.append({"changed": bool(result)})
        elif op.op == "hash":
            rendered.append(_hash_result(op.action, result))
        else:
            rendered.append({"deleted": bool(result)})
    return rendered
