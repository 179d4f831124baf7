"""``POST /v1/publish``: a pub/sub message through the log, for the Redis front's followers.

Rule: the route proposes one PUBLISH entry (``CacheService.publish``, command version 6) and
answers once it is applied here: ``{"channel": base64, "message": base64}`` → ``{"index":
N}``. Every replica hands the message to its own Redis subscribers as it applies the entry
(docs/resp.md, Pub/sub), so the route delivers nothing itself and returns no subscriber count:
a RESP follower that forwards PUBLISH here answers with the count of its own subscribers. On a
store it acts on the group ``?group=`` names (``on_group``), the one pub/sub runs through. A
follower forwards it to the leader, as every write; a retried request may deliver twice.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from aiohttp import web

from raftcache.cache.commands_pubsub import MAX_CHANNEL_BYTES
from raftcache.server.bodies import read_body
from raftcache.server.context import request_context
from raftcache.server.errors import ApiError, bad_request, too_large
from raftcache.server.results import json_response
from raftcache.server.validation import check_fields, parse_base64, parse_json_object

PUBLISH_PATH: Final = "/v1/publish"


@runtime_checkable
class Publisher(Protocol):
    """A service that publishes (``CacheService``); the server's ``ServicePort`` need not."""

    async def publish(self, channel: bytes, message: bytes) -> int: ...


_FIELDS: Final = frozenset({"channel", "message"})


def publish_body_limit(request: web.Request) -> int:
    """The largest body: a message of ``max_value_bytes`` and the longest channel, base64."""
    limits = request_context(request).settings.limits
    return (limits.max_value_bytes + MAX_CHANNEL_BYTES) * 4 // 3 + 1024


async def publish(request: web.Request) -> web.Response:
    """``POST /v1/publish`` (module docstring)."""
    ctx = request_context(request)
    body = await read_body(request, publish_body_limit(request))
    obj = parse_json_object(body)
    check_fields(obj, _FIELDS, "publish body")
    if "channel" not in obj or "message" not in obj:
        raise bad_request("publish body needs channel and message (base64)")
    channel = parse_base64(obj["channel"], "channel")
    message = parse_base64(obj["message"], "message")
    if len(channel) > MAX_CHANNEL_BYTES:
        raise too_large(f"channel larger than {MAX_CHANNEL_BYTES} bytes")
    if len(message) > ctx.settings.limits.max_value_bytes:
        raise too_large(f"message larger than {ctx.settings.limits.max_value_bytes} bytes")
    service = ctx.service
    if not isinstance(service, Publisher):  # an embedding's service without pub/sub
        raise ApiError(501, "this node's service does not publish")
    index = await service.publish(channel, message)
    return json_response({"index": int(index)})


def add_pubsub_routes(app: web.Application) -> None:
    """Register ``POST /v1/publish`` on a node's application."""
    app.router.add_post(PUBLISH_PATH, publish)
