"""The assembly of a node process: ``raftcache serve`` from argv to exit code.

Rule: this package is where the layers below become one operating-system process. ``cli`` turns
argv and the environment into ``ServeOptions`` (``config``); ``serve`` is the composition root
(the only place that reads the wall clock and makes an unseeded generator) and builds the
storage, the transport, the Raft node, the cache service, the HTTP application and its fronts,
runs them until a signal and stops them in order; ``logs`` configures logging, ``exposure``
warns about an open listener without tokens, ``gcpolicy`` tunes the collector once the node
serves. Nothing below imports this package. Importing it is cheap and side-effect free; the
names below are re-exported lazily, so ``raftcache.process.cli`` can build its parser without
pulling in the whole node.

- ``ServeOptions`` — the validated options of ``raftcache serve``.
- ``NodeServer`` / ``build_node_server(options)`` — a node with its HTTP server on one port.
- ``serve_node(options)`` / ``run_serve(options)`` — run a node until SIGTERM/SIGINT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcache.lazy import lazy_exports

if TYPE_CHECKING:
    from raftcache.process.config import ServeOptions
    from raftcache.process.serve import NodeServer, build_node_server, run_serve, serve_node

__all__ = ["NodeServer", "ServeOptions", "build_node_server", "run_serve", "serve_node"]

_LAZY = {
    "ServeOptions": "raftcache.process.config",
    "NodeServer": "raftcache.process.serve",
    "build_node_server": "raftcache.process.serve",
    "run_serve": "raftcache.process.serve",
    "serve_node": "raftcache.process.serve",
}

__getattr__ = lazy_exports(__name__, _LAZY)
