"""The node server: one aiohttp application per node serving the client API, the operational
API and (mounted) the Raft endpoints, plus the ``raftcache serve`` composition root.

Rule: importing this package is cheap and side-effect free; the names below are re-exported
lazily, so ``raftcache.server.cli`` can build its parser without pulling in the whole node.

- ``create_app(node, service, settings)`` — the application (embed it in your own program).
- ``NodeServer`` / ``build_node_server(options)`` — a node with its HTTP server on one port.
- ``serve_node(options)`` / ``run_serve(options)`` — run a node until SIGTERM/SIGINT.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raftcache.server.app import create_app
    from raftcache.server.config import ServeOptions
    from raftcache.server.context import ServerSettings
    from raftcache.server.serve import NodeServer, build_node_server, run_serve, serve_node

__all__ = [
    "NodeServer",
    "ServeOptions",
    "ServerSettings",
    "build_node_server",
    "create_app",
    "run_serve",
    "serve_node",
]

_LAZY = {
    "create_app": "raftcache.server.app",
    "ServeOptions": "raftcache.server.config",
    "ServerSettings": "raftcache.server.context",
    "NodeServer": "raftcache.server.serve",
    "build_node_server": "raftcache.server.serve",
    "run_serve": "raftcache.server.serve",
    "serve_node": "raftcache.server.serve",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftcache.server' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
