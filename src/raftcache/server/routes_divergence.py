"""Divergence detection over HTTP: the replicas' internal digest routes, the leader's probe of
them, and the operator's alarm routes (docs/divergence.md).

Rule: the internal routes live under ``/raft/`` — node to node, like the Raft RPCs — and need
the cluster token (``Authorization: Bearer <cluster token>``) when one is set, never a client
token; they answer from this node's own state and are never forwarded:

- ``GET /raft/digest?index=N``: this replica's ``DigestReport`` about the CHECK entry at N;
- ``POST /raft/digest/kick``: "check now" (a follower that installed a snapshot asks its
  leader); 202, the check runs in the background.

The operator's routes are client API routes (client token): ``GET /v1/alarms`` lists the
replicated alarms; ``DELETE /v1/alarms/{id}`` (``*``: all) lowers one through the log, after the
replica was rebuilt (docs/operations.md) — it needs the leader and is forwarded like a write.

``HttpDigestProbe`` is the leader's side: a node that cannot be reached, or answers anything
but a readable report, is "unknown" (no verdict), never diverged.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web

from raftcache.cache.commands_v3 import ALL_NODES
from raftcache.cache.divergence import DigestReport, report_of
from raftcache.server.context import context_of, request_context
from raftcache.server.errors import ApiError, bad_request
from raftcache.server.peer_probe import PeerProbe
from raftcache.server.results import json_response
from raftcache.server.validation import parse_node_id

log = logging.getLogger("raftcache.server.divergence")

DIGEST_PATH = "/raft/digest"
KICK_PATH = "/raft/digest/kick"


def check_cluster_token(request: web.Request) -> None:
    token = context_of(request).settings.cluster_token
    if token is None:
        return
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise ApiError(
            401, "missing or invalid cluster token", headers={"WWW-Authenticate": "Bearer"}
        )


def _monitor_of(request: web.Request) -> Any:
    service = request_context(request).service
    monitor = getattr(service, "divergence", None)
    if monitor is None:
        raise ApiError(404, "this node does not check divergence")
    return monitor


async def get_digest(request: web.Request) -> web.Response:
    """``GET /raft/digest?index=N``: this replica's digest at the CHECK entry N."""
    check_cluster_token(request)
    monitor = _monitor_of(request)
    raw = request.query.get("index", "")
    if not raw.isdigit() or len(raw) > 19:
        raise bad_request("index must be a non-negative integer")
    report = report_of(monitor.machine, int(raw))
    return json_response({"id": request_context(request).node.node_id, **report.to_json()})


async def kick(request: web.Request) -> web.Response:
    """``POST /raft/digest/kick``: run a digest check soon (on the leader)."""
    check_cluster_token(request)
    _monitor_of(request).kick()
    return json_response({"kicked": True}, status=202)


async def get_alarms(request: web.Request) -> web.Response:
    """``GET /v1/alarms``: the replicated divergence alarms (the same on every node)."""
    service = request_context(request).service
    info = getattr(service, "divergence_info", None)
    alarms = [] if info is None else info()["alarms"]
    return json_response({"alarms": alarms})


async def clear_alarm(request: web.Request) -> web.Response:
    """``DELETE /v1/alarms/{id}``: lower that replica's alarm (``*``: every alarm)."""
    raw = request.match_info["id"]
    node_id = raw if raw == ALL_NODES else parse_node_id(raw)
    service = request_context(request).service
    clear = getattr(service, "clear_alarm", None)
    if clear is None:
        raise ApiError(404, "this node does not check divergence")
    left = await clear(node_id)
    return json_response({"cleared": node_id, "alarms_left": left})


def add_divergence_routes(app: web.Application) -> None:
    """Register the internal digest routes and the operator's alarm routes on ``app``."""
    app.router.add_get(DIGEST_PATH, get_digest)
    app.router.add_post(KICK_PATH, kick)
    app.router.add_get("/v1/alarms", get_alarms)
    app.router.add_delete("/v1/alarms/{id}", clear_alarm)


class HttpDigestProbe(PeerProbe):
    """``DigestProbe`` over HTTP (see the module docstring); ``token``: the cluster token;
    ``group``: the data group probed, on stores hosting many (sent as ``?group=``)."""

    def __init__(self, node: Any, *, group: str | None = None, **options: Any) -> None:
        super().__init__(node, **options)
        self._group = group

    def _in_group(self, path: str) -> str:
        if self._group is None:
            return path
        return f"{path}{'&' if '?' in path else '?'}group={self._group}"

    async def _request(self, method: str, node_id: str, path: str) -> Any:
        url = self.url_of(node_id)
        return None if url is None else await self.fetch_json(method, url, self._in_group(path))

    async def digest(self, node_id: str, index: int) -> DigestReport | None:
        body = await self._request("GET", node_id, f"{DIGEST_PATH}?index={index}")
        if body is None:
            return None
        try:
            report = DigestReport.from_json(body)
        except ValueError as exc:
            log.debug("unreadable digest report from %s: %s", node_id, exc)
            return None
        return report if report.index == index else None

    async def kick(self, node_id: str) -> bool:
        return await self._request("POST", node_id, KICK_PATH) is not None
