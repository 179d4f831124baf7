"""The aiohttp application of one node: client API, operational API, and (mounted) Raft RPCs.

Rule: ``create_app`` only wires things together — routes, middlewares, the per-app context —
and owns nothing but the forwarder's client session, which it closes on cleanup. The node, the
service and the network are started and stopped by whoever created them (``serve`` or the
embedding program), so the app can be used in tests and in a user's own asyncio program alike.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from raftcache.dashboard import add_dashboard_routes
from raftcache.server.admission import Admission
from raftcache.server.context import CONTEXT, ServerContext, ServerSettings
from raftcache.server.drain import DRAIN, Drain
from raftcache.server.forwarding import Forwarder
from raftcache.server.metrics import ServerMetrics
from raftcache.server.middleware import MIDDLEWARES
from raftcache.server.ports import NodePort, ServicePort
from raftcache.server.routes_admin import add_admin_routes
from raftcache.server.routes_backup import add_backup_routes
from raftcache.server.routes_divergence import add_divergence_routes
from raftcache.server.routes_keys import add_key_routes
from raftcache.server.routes_watch import WatchSettings, add_watch_routes


def create_app(
    node: NodePort,
    service: ServicePort,
    settings: ServerSettings | None = None,
    *,
    mount: Callable[[web.Application], None] | None = None,
    watch: WatchSettings | None = None,
) -> web.Application:
    """Build the node's aiohttp application.

    Args:
        node: the node's ``RaftNode``.
        service: the node's ``CacheService``.
        settings: limits, tokens and forwarding behaviour (defaults when None).
        mount: called with the app to add the Raft endpoints (``HttpNetwork``'s mount), so one
            port serves both; None when the Raft transport lives elsewhere (in-memory tests).
        watch: behaviour of ``/v1/watch`` streams (defaults when None).

    Returns:
        The application; serve it with ``aiohttp.web.AppRunner``.
    """
    settings = settings or ServerSettings()
    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=settings.max_request_bytes)
    forwarder = Forwarder(
        node,
        peer_urls=settings.peer_urls,
        leader_wait_s=settings.leader_wait_s,
        timeout_s=settings.forward_timeout_s,
        ssl_context=settings.client_ssl_context,
    )
    admission = Admission(settings.admission)
    metrics = ServerMetrics(node, lambda: forwarder.forwarded_total, admission.snapshot)
    app[CONTEXT] = ServerContext(
        node=node,
        service=service,
        settings=settings,
        forwarder=forwarder,
        metrics=metrics,
        admission=admission,
    )
    app[DRAIN] = Drain()
    add_key_routes(app)
    add_watch_routes(app, watch)
    add_admin_routes(app)
    add_backup_routes(app)
    add_divergence_routes(app)
    add_dashboard_routes(
        app,
        peer_urls=settings.peer_urls,
        self_id=node.node_id,
        ssl_context=settings.client_ssl_context,
    )
    if mount is not None:
        mount(app)

    async def close_forwarder(_: web.Application) -> None:
        await forwarder.close()

    app.on_cleanup.append(close_forwarder)
    return app
