"""Raft consensus for raftcache (docs/design.md#the-public-raft-surface).

Rule: this package ``__init__`` re-exports lazily, so that ``import raftcache.raft.messages``
(a leaf) never pulls the asyncio driver, the network or the storage in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raftcache.raft.config import RaftConfig
    from raftcache.raft.core import Role
    from raftcache.raft.errors import NotLeaderError
    from raftcache.raft.node import RaftNode, StateMachine
    from raftcache.storage import FileStorage, MemoryStorage

__all__ = [
    "FileStorage",
    "MemoryStorage",
    "NotLeaderError",
    "RaftConfig",
    "RaftNode",
    "Role",
    "StateMachine",
]

_LAZY = {
    "RaftNode": "raftcache.raft.node",
    "RaftConfig": "raftcache.raft.config",
    "NotLeaderError": "raftcache.raft.errors",
    "StateMachine": "raftcache.raft.node",
    "Role": "raftcache.raft.core",
    "MemoryStorage": "raftcache.storage",
    "FileStorage": "raftcache.storage",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'raftcache.raft' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
