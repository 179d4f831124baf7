"""raftcache: a distributed, strongly consistent cache replicated with Raft."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Client": "raftcache.client",
    "AsyncClient": "raftcache.client",
    "RaftcacheError": "raftcache.client.errors",
    "WatchCompactedError": "raftcache.client.watch",
    "WatchEvent": "raftcache.client.watch",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftcache' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
