"""The per-application state every handler and middleware of the server reads.

Rule: one ``ServerContext`` per aiohttp application, stored under ``CONTEXT`` and reached with
``request.config_dict[CONTEXT]`` (which also works from sub-applications). Nothing else is
global: two nodes in one process each have their own context, metrics registry and forwarder.

A store's application (``server.groups``) has one context per data group, sharing the settings,
admission, metrics and client session; ``CONTEXT`` holds the store's own (its service routes
each key to its group). Routes that act on one group (``?group=gN``: membership, snapshots,
backups, alarms, watches) find theirs with ``request_context``, which the store's routing sets
on the request (``ROUTED``); the hot key routes read ``context_of`` alone, which costs a
single-group application nothing more than it did.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from raftcache.server.admission import Admission, AdmissionLimits
from raftcache.server.forwarding import ForwarderPort
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
    forwarder: ForwarderPort
    metrics: ServerMetrics
    admission: Admission
    #: This node's RESP endpoints as clients should reach them (``/v1/status``'s ``resp``;
    #: ``address`` and ``cluster_address``, ``host:port``), set once the listeners are bound.
    resp_endpoints: dict[str, str] = field(default_factory=dict)
    #: The data group this context serves, on a store (None: a single-group node's context).
    group: str | None = None


CONTEXT = web.AppKey("raftcache.server.context", ServerContext)
#: On a store: the context of the group a request was routed to (``server.groups``).
ROUTED = web.RequestKey("raftcache.server.routed", ServerContext)


def context_of(request: web.Request) -> ServerContext:
    """The server context of the application serving ``request``.

    The application's own mapping first: ``config_dict`` builds a ``ChainMapProxy`` over the
    app and its parents on every call (3.9% of a leader's samples under load, when four
    middlewares and the handler each asked). Sub-applications have no context of their own
    and fall back to it.
    """
    context = request.app.get(CONTEXT)
    return context if context is not None else request.config_dict[CONTEXT]


def request_context(request: web.Request) -> ServerContext:
    """The context of the group a store routed ``request`` to, else ``context_of``'s.

    For the routes that act on one group (membership, snapshots, backups, alarms, watches);
    the hot key routes use ``context_of`` (a store's own context routes them by key)."""
    routed = request.get(ROUTED)
    return routed if routed is not None else context_of(request)
