"""Handlers of the operational API: status, stats, health, metrics, membership, leadership
transfer and snapshots.

Rule: read-only endpoints answer from this node's own state (no forwarding: ``/v1/status`` of a
follower must describe the follower). Membership changes and leadership transfer need the leader
and so are forwarded like writes; ``/v1/snapshot`` compacts this node's own log.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from raftcache.cache.upgrade import CommandVersionGate
from raftcache.server.bodies import read_body
from raftcache.server.context import context_of, request_context
from raftcache.server.errors import json_error
from raftcache.server.format_probe import HttpCommandVersionProbe
from raftcache.server.metrics import CONTENT_TYPE
from raftcache.server.openapi import openapi_document
from raftcache.server.ports import NodePort
from raftcache.server.results import json_response
from raftcache.server.routes_keys import SMALL_BODY_BYTES
from raftcache.server.validation import (
    check_fields,
    parse_json_object,
    parse_node_id,
    parse_node_url,
)


def _role(node: NodePort) -> str:
    role = getattr(node, "role", None)
    return str(getattr(role, "value", role))


def node_status(node: NodePort) -> dict[str, Any]:
    """The ``/v1/status`` body: docs/api.md's fields from the node's properties, plus its extras."""
    extra: Mapping[str, Any] = node.status()
    status = dict(extra)
    status.update(
        {
            "id": node.node_id,
            "role": _role(node),
            "term": node.current_term,
            "leader": node.leader_id,
            "commit_index": node.commit_index,
            "last_applied": node.last_applied,
            "members": sorted(node.members),
        }
    )
    return status


async def cache_stats(request: web.Request) -> Mapping[str, Any]:
    """The cache service's stats (the service may expose them sync or async)."""
    result: Any = context_of(request).service.stats()
    if inspect.isawaitable(result):
        result = await result
    stats: Mapping[str, Any] = result
    return stats


async def get_status(request: web.Request) -> web.Response:
    """``GET /v1/status``: this node's view of the cluster."""
    ctx = context_of(request)
    status = node_status(ctx.node)
    version_info = getattr(ctx.service, "command_version_info", None)
    if version_info is not None:  # command_format, cluster_command_format (cache/formats.py)
        status.update(version_info())
    divergence_info = getattr(ctx.service, "divergence_info", None)
    if divergence_info is not None:  # alarms, divergence (docs/divergence.md)
        status.update(divergence_info())
    if ctx.resp_endpoints:  # where Redis clients reach this node (CLUSTER SLOTS, MOVED)
        status["resp"] = dict(ctx.resp_endpoints)
    return json_response(status)


async def get_stats(request: web.Request) -> web.Response:
    """``GET /v1/stats``: ``{"cache": {...}, "raft": {...}}``."""
    node = context_of(request).node
    body: dict[str, Any] = {"cache": dict(await cache_stats(request)), "raft": node.raft_stats()}
    metrics = getattr(getattr(node, "network", None), "metrics", None)
    if metrics is not None and hasattr(metrics, "snapshot"):
        body["network"] = metrics.snapshot()  # per RPC type and peer (HttpNetwork)
    return json_response(body)


async def get_health(request: web.Request) -> web.Response:
    """``GET /v1/health``: 200 while this node knows a leader, else 503."""
    node = context_of(request).node
    leader = node.leader_id
    if leader is None:
        return json_error(503, "no leader known", extra={"id": node.node_id})
    return json_response({"status": "ok", "id": node.node_id, "leader": leader})


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition."""
    metrics = context_of(request).metrics
    body = metrics.render(await cache_stats(request))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def add_member(request: web.Request) -> web.Response:
    """``POST /v1/members`` ``{"id", "url"}``: returns once the node is a voter.

    A node that answers with a command version below the cluster's is refused (409) before the
    change is proposed (``CommandVersionGate.admit``)."""
    obj = parse_json_object(await read_body(request, SMALL_BODY_BYTES))
    check_fields(obj, frozenset({"id", "url"}), "members body")
    node_id = parse_node_id(obj.get("id"))
    url = parse_node_url(obj.get("url"))
    context = request_context(request)
    node = context.node
    if node_id not in node.members:  # re-adding a voter is a no-op: no probe needed
        gate = getattr(context.service, "command_versions", None)  # not part of ServicePort
        if isinstance(gate, CommandVersionGate) and isinstance(gate.probe, HttpCommandVersionProbe):
            gate.admit(node_id, await gate.probe.at(url))  # CommandVersionNotEnabledError: 409
    await node.add_member(node_id, url)
    return json_response({"added": node_id, "members": sorted(node.members)})


async def remove_member(request: web.Request) -> web.Response:
    """``DELETE /v1/members/{id}``."""
    node_id = parse_node_id(request.match_info["id"])
    node = request_context(request).node
    await node.remove_member(node_id)
    return json_response({"removed": node_id, "members": sorted(node.members)})


async def transfer_leader(request: web.Request) -> web.Response:
    """``POST /v1/leader/transfer`` ``{"to": id | null}`` (an empty body means any)."""
    obj = parse_json_object(await read_body(request, SMALL_BODY_BYTES), allow_empty=True)
    check_fields(obj, frozenset({"to"}), "transfer body")
    raw_to = obj.get("to")
    to = None if raw_to is None else parse_node_id(raw_to, "to")
    node = request_context(request).node
    if to is not None and to == node.node_id == node.leader_id:
        # Already done; the Raft core would refuse a transfer to itself as "not a voter".
        return json_response({"leader": to})
    await node.transfer_leadership(to)
    return json_response({"leader": node.leader_id})


async def take_snapshot(request: web.Request) -> web.Response:
    """``POST /v1/snapshot``: snapshot this node's state and compact its log."""
    node = request_context(request).node
    result = await node.take_snapshot()
    index = result if isinstance(result, int) and not isinstance(result, bool) else None
    return json_response({"snapshot_index": index, "last_applied": node.last_applied})


async def get_openapi(request: web.Request) -> web.Response:
    """``GET /openapi.json``: the OpenAPI document, with this node's limits."""
    document = openapi_document(context_of(request).settings.limits)
    return json_response(document)


def add_admin_routes(app: web.Application) -> None:
    """Register the operational routes on ``app``."""
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/stats", get_stats)
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_post("/v1/members", add_member)
    app.router.add_delete("/v1/members/{id}", remove_member)
    app.router.add_post("/v1/leader/transfer", transfer_leader)
    app.router.add_post("/v1/snapshot", take_snapshot)
