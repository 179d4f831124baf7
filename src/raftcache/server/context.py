"""The per-application state every handler and middleware of the server reads.

Rule: one ``ServerContext`` per aiohttp application, stored under ``CONTEXT`` and reached with
``request.config_dict[CONTEXT]`` (which also works from sub-applications). Nothing else is
global: two nodes in one process each have their own context, metrics registry and forwarder.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from raftcache.server.forwarding import Forwarder
from raftcache.server.metrics import ServerMetrics
from raftcache.server.ports import NodePort, ServicePort
from raftcache.server.validation import Limits

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Operator-tunable behaviour of the HTTP server.

    Attributes:
        limits: size limits of the client API.
        client_token: when set, client API requests need ``Authorization: Bearer <token>``.
        leader_wait_s: how long a follower waits for a leader before answering 503.
        forward_timeout_s: total timeout of a request forwarded to the leader.
        peer_urls: static node id → base URL map (fallback for forwarding).
        client_ssl_context: TLS context for connections to peers (forwarding).
        max_request_bytes: hard cap on any request body (the Raft endpoints share the port and
            carry snapshot chunks and entry batches, so it is well above ``max_value_bytes``).
    """

    limits: Limits = field(default_factory=Limits)
    client_token: str | None = None
    leader_wait_s: float = 2.0
    forward_timeout_s: float = 10.0
    peer_urls: Mapping[str, str] = field(default_factory=dict)
    client_ssl_context: ssl.SSLContext | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES


@dataclass(slots=True)
class ServerContext:
    """Everything a request handler needs."""

    node: NodePort
    service: ServicePort
    settings: ServerSettings
    forwarder: Forwarder
    metrics: ServerMetrics


CONTEXT = web.AppKey("raftcache.server.context", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    """The server context of the application serving ``request``."""
    return request.config_dict[CONTEXT]
