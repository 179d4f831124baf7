"""What the pure core hands its driver: messages to send and state to persist and apply.

Rule (docs/architecture.md#core-and-driver): the driver persists ``hard_state``, ``entries`` and
``snapshot`` (and syncs) *before* it sends ``messages`` or answers any RPC, then calls
``RaftCore.advance(ready)``; it applies ``committed`` in order and resolves ``reads``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftcache.protocol.messages import LogEntry, RaftRequest
from raftcache.storage.base import SnapshotMeta


@dataclass(slots=True)
class Outbound:
    """One request to send. ``round`` is the broadcast round current when it was produced (for
    ReadIndex and the leader lease); ``heartbeat`` requests do not count against pipelining."""

    target: str
    message: RaftRequest
    round: int = 0
    heartbeat: bool = False


@dataclass(slots=True)
class Ready:
    hard_state: tuple[int, str | None] | None = None
    entries: list[LogEntry] = field(default_factory=list)
    #: The log's hand-off mark for ``entries`` (``RaftLog.stable_to`` takes it back).
    log_mark: int = 0
    snapshot: tuple[SnapshotMeta, bytes] | None = None
    messages: list[Outbound] = field(default_factory=list)
    committed: list[LogEntry] = field(default_factory=list)
    #: Reads confirmed by a quorum: (read_id, read_index).
    reads: list[tuple[int, int]] = field(default_factory=list)
    #: Reads that can no longer be served here (leadership lost): read ids.
    dropped_reads: list[int] = field(default_factory=list)
    #: Current broadcast round, and the highest one a quorum acknowledged (leader only).
    round: int = 0
    confirmed_round: int = 0
    #: The newest acknowledged round a lease may rest on (0: none), and the core's lease epoch
    #: when this Ready was made (a lease is valid only within one epoch).
    lease_round: int = 0
    lease_epoch: int = 0

    def needs_persist(self) -> bool:
        return self.hard_state is not None or bool(self.entries) or self.snapshot is not None
