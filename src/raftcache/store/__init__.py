"""The store: one process hosting replicas of many Raft groups (docs/sharding.md).

Rule: a store is assembled from the layers below — one transport with its ``GroupRouter``, and
per group a storage, a ``CacheStateMachine``, a ``RaftNode`` and a ``CacheService`` — and is
the only way the HTTP and Redis fronts above reach a group: by key, through ``replica_for``.
"""

from raftcache.store.store import (
    GroupNotHereError,
    GroupReplica,
    RemoteGroup,
    Store,
    group_id,
)

__all__ = ["GroupNotHereError", "GroupReplica", "RemoteGroup", "Store", "group_id"]
