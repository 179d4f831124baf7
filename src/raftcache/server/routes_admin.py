"""Handlers of the operational API: status, stats, health, metrics, the cluster map
(``/v1/shards``), membership, leadership transfer and snapshots.

Rule: read-only endpoints answer from this node's own state (no forwarding: ``/v1/status`` of a
follower must describe the follower). Membership changes and leadership transfer need the leader
and so are forwarded like writes; ``/v1/snapshot`` compacts this node's own log.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from raftcache.cache.upgrade import CommandVersionGate
from raftcache.server.bodies import read_body
from raftcache.server.context import context_of, request_context
from raftcache.server.errors import ApiError, bad_request, json_error
from raftcache.server.format_probe import HttpCommandVersionProbe
from raftcache.server.metrics import CONTENT_TYPE
from raftcache.server.openapi import openapi_document
from raftcache.server.ports import NodePort
from raftcache.server.results import json_response
from raftcache.server.routes_keys import SMALL_BODY_BYTES, single_query
from raftcache.server.validation import (
    check_fields,
    parse_json_object,
    parse_node_id,
    parse_node_url,
)
from raftcache.slots import SLOTS


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
    """``GET /v1/stats``: ``{"cache": {...}, "raft": {...}, "process": {...}}``."""
    ctx = context_of(request)
    node = ctx.node
    body: dict[str, Any] = {"cache": dict(await cache_stats(request)), "raft": node.raft_stats()}
    body["process"] = ctx.metrics.process_stats()
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


class MapVersion:
    """The ``version`` of ``GET /v1/shards``: the sum of the terms of the groups this process
    hosts (a new leader is a new term) plus how many times it saw the map change otherwise
    (a member added or removed, another store's leader guess moved). It changes whenever a
    group's leader or members change, only grows while the process runs, and says nothing
    about another store's version (each counts its own groups' terms)."""

    __slots__ = ("_changes", "_last")

    def __init__(self) -> None:
        self._last: tuple[tuple[Any, ...], ...] | None = None
        self._changes = 0

    def of(self, shards: Sequence[Mapping[str, Any]], terms: int) -> int:
        """The version of the map ``shards`` (``/v1/shards``'s entries), ``terms`` summed."""
        seen = tuple((s["leader"], tuple(s["members"])) for s in shards)
        if self._last is not None and seen != self._last:
            self._changes += 1
        self._last = seen
        return terms + self._changes


def shards_body(
    groups: int,
    store: str,
    stores: Mapping[str, str],
    shards: list[dict[str, Any]],
    version: MapVersion,
) -> dict[str, Any]:
    """The ``GET /v1/shards`` body (docs/api.md, "The cluster map")."""
    terms = sum(s["term"] or 0 for s in shards)
    return {
        "groups": groups,
        "store": store,
        "version": version.of(shards, terms),
        "stores": dict(sorted(stores.items())),
        "shards": shards,
    }


def shards_handler() -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /v1/shards`` of a single-group node: one shard of every slot, its leader, term
    and members as this node knows them (a client then knows the cluster is not sharded)."""
    version = MapVersion()

    async def get_shards(request: web.Request) -> web.Response:
        ctx = context_of(request)
        node = ctx.node
        stores = dict(ctx.settings.peer_urls)
        leader = node.leader_id
        address = node.leader_address() if leader is not None else None
        if leader is not None and address and leader not in stores:
            stores[leader] = address
        shard = {
            "group": "g0",
            "slots": [0, SLOTS - 1],
            "leader": leader,
            "term": node.current_term,
            "hosted": True,
            "members": sorted(node.members),
        }
        return json_response(shards_body(1, node.node_id, stores, [shard], version))

    return get_shards


def parse_config_index(raw: object) -> int | None:
    """The optional ``config_index`` of a membership change (body field or query)."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 19:
        return int(raw)
    if type(raw) is int and raw >= 0:
        return raw
    raise bad_request("config_index must be a non-negative integer")


def check_config_index(node: NodePort, expected: int | None) -> None:
    """409 when the leader's configuration is no longer the one a change was planned from
    (docs/sharding.md invariant 3: a stale driver never undoes a newer driver's step)."""
    if expected is None:
        return
    current = getattr(getattr(node, "core", None), "config_index", None)
    if current != expected:
        raise ApiError(
            409,
            f"configuration changed: the leader's is at index {current}, the change was "
            f"planned from {expected}",
            extra={"config_index": current},
        )


async def add_member(request: web.Request) -> web.Response:
    """``POST /v1/members`` ``{"id", "url", "config_index"?}``: returns once the node is a
    voter. With ``config_index``, refused (409) unless the leader's configuration is still
    the one at that index.

    A node that answers with a command version below the cluster's is refused (409) before the
    change is proposed (``CommandVersionGate.admit``)."""
    obj = parse_json_object(await read_body(request, SMALL_BODY_BYTES))
    check_fields(obj, frozenset({"id", "url", "config_index"}), "members body")
    node_id = parse_node_id(obj.get("id"))
    url = parse_node_url(obj.get("url"))
    expected = parse_config_index(obj.get("config_index"))
    context = request_context(request)
    node = context.node
    if node_id not in node.members:  # re-adding a voter is a no-op: no probe needed
        gate = getattr(context.service, "command_versions", None)  # not part of ServicePort
        if isinstance(gate, CommandVersionGate) and isinstance(gate.probe, HttpCommandVersionProbe):
            gate.admit(node_id, await gate.probe.at(url))  # CommandVersionNotEnabledError: 409
    # No await between the check and the proposal: nothing can change the configuration
    # in between (the node proposes before its first suspension).
    check_config_index(node, expected)
    await node.add_member(node_id, url)
    return json_response({"added": node_id, "members": sorted(node.members)})


async def remove_member(request: web.Request) -> web.Response:
    """``DELETE /v1/members/{id}`` (``?config_index=``: as for ``POST``)."""
    node_id = parse_node_id(request.match_info["id"])
    expected = parse_config_index(single_query(request, "config_index"))
    node = request_context(request).node
    check_config_index(node, expected)  # then proposed at once, as above
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
    app.router.add_get("/v1/shards", shards_handler())
    app.router.add_post("/v1/members", add_member)
    app.router.add_delete("/v1/members/{id}", remove_member)
    app.router.add_post("/v1/leader/transfer", transfer_leader)
    app.router.add_post("/v1/snapshot", take_snapshot)
