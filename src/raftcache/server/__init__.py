"""The HTTP application of a node: the client API, the operational API and (mounted) the Raft
endpoints, with the lean front (``server.lean``) and the OpenAPI document (``server.openapi``).

Rule: importing this package is cheap and side-effect free; the names below are re-exported
lazily. The application is assembled into a running node by ``raftcache.process``, above it.

- ``create_app(node, service, settings)`` — the application (embed it in your own program).
- ``create_store_app(store, settings)`` — the same API in front of a store of many groups.
- ``ServerSettings`` — its limits, tokens and forwarding behaviour.

Kept for compatibility, from ``raftcache.process`` (through the old module paths):
``ServeOptions``, ``NodeServer``, ``build_node_server``, ``serve_node``, ``run_serve``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcache.lazy import lazy_exports

if TYPE_CHECKING:
    from raftcache.server.app import create_app, create_store_app
    from raftcache.server.config import ServeOptions
    from raftcache.server.context import ServerSettings
    from raftcache.server.serve import NodeServer, build_node_server, run_serve, serve_node

__all__ = [
    "NodeServer",
    "ServeOptions",
    "ServerSettings",
    "build_node_server",
    "create_app",
    "create_store_app",
    "run_serve",
    "serve_node",
]

_LAZY = {
    "create_app": "raftcache.server.app",
    "create_store_app": "raftcache.server.app",
    "ServerSettings": "raftcache.server.context",
    # Moved to raftcache.process; reached through the old paths kept for compatibility.
    "ServeOptions": "raftcache.server.config",
    "NodeServer": "raftcache.server.serve",
    "build_node_server": "raftcache.server.serve",
    "run_serve": "raftcache.server.serve",
    "serve_node": "raftcache.server.serve",
}

__getattr__ = lazy_exports(__name__, _LAZY)
