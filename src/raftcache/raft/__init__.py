"""Raft consensus for raftcache (docs/design.md#the-public-raft-surface).

Rule: this package ``__init__`` re-exports lazily, so that ``import raftcache.raft.messages``
(a leaf) never pulls the asyncio driver, the network or the storage in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcache.lazy import lazy_exports

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

__getattr__ = lazy_exports(__name__, _LAZY)
