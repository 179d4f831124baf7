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

from raftcache.server.admission import Admission, AdmissionLimits
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
        client_token: when set, client API requests need ``Authorization: Bearer <token>``
            (this token may read and write).
        client_token_ro: a token that may only read (GET, HEAD and ``mget``); a write
            presented with it gets 403. Either token set turns client authentication on.
        leader_wait_s: how long a follower waits for a leader before answering 503.
        forward_timeout_s: total timeout of a request forwarded to the leader.
        peer_urls: static node id → base URL map (fallback for forwarding).
        client_ssl_context: TLS context for connections to peers (forwarding).
        max_request_bytes: hard cap on any request body (the Raft endpoints share the port and
            carry snapshot chunks and entry batches, so it is well above ``max_value_bytes``).
        admission: bounds on the client work in flight (see ``admission``).
        cluster_token: the Raft endpoints' bearer token, also required by the internal digest
            routes (``raftcache.server.digest_routes``) and presented to the peers' ones.
    """

    limits: Limits = field(default_factory=Limits)
    client_token: str | None = field(default=None, repr=False)
    client_token_ro: str | None = field(default=None, repr=False)
    leader_wait_s: float = 2.0
    forward_timeout_s: float = 10.0
    peer_urls: Mapping[str, str] = field(default_factory=dict)
    client_ssl_context: ssl.SSLContext | None = None
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    cluster_token: str | None = field(default=None, repr=False)


@dataclass(slots=True)
class ServerContext:
    """Everything a request handler needs."""

    node: NodePort
    service: ServicePort
    settings: ServerSettings
    forwarder: Forwarder
    metrics: ServerMetrics
    admission: Admission
    #: This node's RESP endpoints as clients should reach them (``/v1/status``'s ``resp``;
    #: ``address`` and ``cluster_address``, ``host:port``), set once the listeners are bound.
    resp_endpoints: dict[str, str] = field(default_factory=dict)


CONTEXT = web.AppKey("raftcache.server.context", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    """The server context of the application serving ``request``.

    The application's own mapping first: ``config_dict`` builds a ``ChainMapProxy`` over the
    app and its parents on every call (3.9% of a leader's samples under load, when four
    middlewares and the handler each asked). Sub-applications have no context of their own
    and fall back to it.
    """
    context = request.app.get(CONTEXT)
    return context if context is not None else request.config_dict[CONTEXT]
