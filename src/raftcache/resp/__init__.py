"""The Redis protocol (RESP2, and RESP3 through HELLO 3) over a raftcache node.

Rule: a thin front-end. Every command runs on the node's ``CacheService`` (the same replicated
state as the HTTP API), or — when this node is not the leader — on the leader through its HTTP
client API, so plain Redis clients need no redirects. Importing this package is cheap: the
names below load lazily.

- ``RespServer(service, node, *, host, port, clock, client_token=None, ...)`` with
  ``start()``/``stop()``.
- ``start_resp_server(service, node, host, port, **options)`` — create and start one.

See ``docs/resp.md`` for the commands, their semantics on a replicated cache, and limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcache.lazy import lazy_exports

if TYPE_CHECKING:
    from raftcache.resp.server import RespServer, start_resp_server

__all__ = ["RespServer", "start_resp_server"]

__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "raftcache.resp.server"))
