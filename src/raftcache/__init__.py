"""raftcache: a distributed, strongly consistent cache replicated with Raft."""

from __future__ import annotations

from raftcache.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    "Client": "raftcache.client",
    "AsyncClient": "raftcache.client",
    "RaftcacheError": "raftcache.client.errors",
    "WatchCompactedError": "raftcache.client.watch",
    "WatchEvent": "raftcache.client.watch",
}

__getattr__ = lazy_exports(__name__, _LAZY)
