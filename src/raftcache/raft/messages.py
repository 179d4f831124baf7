"""The Raft messages under their first name: ``raftcache.protocol.messages`` re-exported.

Rule: nothing is defined here. The messages live in the leaf package ``raftcache.protocol``, which
the core, the network and the storage share; this name stays importable for callers that use it.
"""

from __future__ import annotations

from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    EntryKind,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RaftRequest,
    RaftResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = [
    "AppendEntriesRequest",
    "AppendEntriesResponse",
    "EntryKind",
    "InstallSnapshotRequest",
    "InstallSnapshotResponse",
    "LogEntry",
    "RaftRequest",
    "RaftResponse",
    "RequestVoteRequest",
    "RequestVoteResponse",
]
