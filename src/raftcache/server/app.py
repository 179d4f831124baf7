"""The aiohttp application of one node: client API, operational API, and (mounted) Raft RPCs.

Rule: ``create_app`` only wires things together — routes, middlewares, the per-app context —
and owns nothing but the forwarder's client session, which it closes on cleanup. The node, the
service and the network are started and stopped by whoever created them (``serve`` or the
embedding program), so the app can be used in tests and in a user's own asyncio program alike.

``create_store_app`` builds the same API in front of a store hosting many Raft groups
(``server.groups``, ``server.routes_store``): the key routes served by each key's group, here or
forwarded to its leader's store; ``create_app`` is untouched by it, so a single-group node's
request path does no more work than before.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from raftcache.dashboard import add_dashboard_routes
from raftcache.server.admission import Admission
from raftcache.server.context import CONTEXT, ServerContext, ServerSettings
from raftcache.server.drain import DRAIN, Drain
from raftcache.server.forwarding import Forwarder
from raftcache.server.groups import STORE_FRONT, StoreFront
from raftcache.server.metrics import ServerMetrics
from raftcache.server.middleware import MIDDLEWARES
from raftcache.server.ports import NodePort, ServicePort
from raftcache.server.query import STORE_QUERY
from raftcache.server.routes_admin import add_admin_routes
from raftcache.server.routes_backup import add_backup_routes
from raftcache.server.routes_divergence import add_divergence_routes
from raftcache.server.routes_keys import add_key_routes
from raftcache.server.routes_meta import add_meta_routes
from raftcache.server.routes_moves import add_move_routes
from raftcache.server.routes_pubsub import add_pubsub_routes
from raftcache.server.routes_scripts import SCRIPTS_PATH, post_scripts
from raftcache.server.routes_store import add_store_routes
from raftcache.server.routes_watch import WatchSettings, add_watch_routes
from raftcache.store import Store
from raftcache.store.agent import MetaAgent


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
    app[STORE_QUERY] = False  # the routes take only their own query parameters
    add_key_routes(app)
    app.router.add_post(SCRIPTS_PATH, post_scripts)
    add_pubsub_routes(app)
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


def create_store_app(
    store: Store,
    settings: ServerSettings | None = None,
    *,
    mount: Callable[[web.Application], None] | None = None,
    watch: WatchSettings | None = None,
    meta: MetaAgent | None = None,
) -> web.Application:
    """Build the aiohttp application of a store hosting replicas of many Raft groups.

    The API of ``create_app``, with every key served by its group (docs/sharding.md,
    "Routing"): on this store when its replica can, else forwarded to the group leader's
    store; multi-key requests fanned out over the groups (a batch spanning groups is a 400
    ``CROSSSLOT``); the routes that act on one group take ``?group=gN``.

    Args:
        store: the store (built, started or not: the app reads its replicas when serving).
        settings: limits, tokens and forwarding behaviour (defaults when None); ``peer_urls``
            must name every store, by store id.
        mount: called with the app to add the Raft endpoints (``HttpNetwork``'s mount).
        watch: behaviour of ``/v1/watch`` streams (defaults when None).
        meta: the store's meta agent, on a cluster with a meta group (``/raft/meta/``).

    Returns:
        The application; ``app[CONTEXT]`` is the store's own context (its metrics registry
        and ``resp_endpoints`` as on a node), ``app[STORE_FRONT]`` its per-group contexts.
    """
    settings = settings or ServerSettings()
    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=settings.max_request_bytes)
    front = StoreFront(store, settings)
    app[CONTEXT] = front.context
    app[STORE_FRONT] = front
    app[STORE_QUERY] = True  # every route also takes ?group=
    app[DRAIN] = Drain()
    add_store_routes(app, front, watch)
    add_move_routes(app, store)
    if meta is not None:
        front.meta_agent = meta
        add_meta_routes(app, meta)
    add_dashboard_routes(
        app,
        peer_urls=settings.peer_urls,
        self_id=store.store_id,
        ssl_context=settings.client_ssl_context,
    )
    if mount is not None:
        mount(app)

    async def close_session(_: web.Application) -> None:
        await front.session.close()

    app.on_cleanup.append(close_session)
    return app
