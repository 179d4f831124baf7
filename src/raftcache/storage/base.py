"""The storage contract: one object holds the log, the hard state and the latest snapshot.

Rule: *persist before you answer.* Writes (``append``, ``set_hard_state``) may be buffered; they
are durable only once ``sync()`` returns. The Raft driver calls ``sync()`` before any response,
vote or acknowledgement leaves the node, so one fsync covers a whole batch (group commit).
``save_snapshot`` is durable when it returns.

Indices are Raft log indices (1-based). The log held by storage is contiguous: it starts right
after the snapshot's ``last_included_index`` (or at 1) and has no holes.

Errors: ``StorageError`` and subclasses. ``StorageFailedError`` means the storage can no longer
promise durability (a failed fsync): the node must stop (fail-stop), never retry and carry on.
``DiskFullError`` means a write was rejected for lack of space; nothing was half-written, reads
still work, and the caller may retry later. Corruption found on open raises
``StorageCorruptError`` with a message naming the file and offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from raftcache.raft.configuration import Configuration
from raftcache.raft.messages import LogEntry


class StorageError(Exception):
    """Base of storage errors."""


class StorageFailedError(StorageError):
    """Durability can no longer be guaranteed (failed fsync): the node must stop."""


class DiskFullError(StorageError):
    """A write was refused for lack of space; state is unchanged and reads still work."""


class StorageCorruptError(StorageError):
    """The on-disk data is corrupt in a way recovery must not paper over."""


class StorageLockedError(StorageError):
    """Another process holds the data directory."""


class StorageIdentityError(StorageError):
    """The directory belongs to another node or cluster."""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """What a snapshot covers: the log up to ``last_index`` (whose term is ``last_term``)."""

    last_index: int
    last_term: int
    configuration: Configuration


@dataclass(slots=True)
class RecoveredState:
    """Everything a node needs to restart, as read back by ``Storage.load``."""

    term: int = 0
    voted_for: str | None = None
    snapshot: SnapshotMeta | None = None
    entries: list[LogEntry] = field(default_factory=list)


class Storage(Protocol):
    """Durable state of one Raft node. All methods are synchronous and called from one thread."""

    def bind(self, node_id: str, cluster_id: str | None = None) -> None:
        """Record (first use) or check the owner; raise ``StorageIdentityError`` on mismatch."""
        ...

    def load(self) -> RecoveredState:
        """Read back the hard state, the snapshot metadata and the log after the snapshot."""
        ...

    def set_hard_state(self, term: int, voted_for: str | None) -> None:
        """Record the current term and vote (durable after ``sync``)."""
        ...

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append entries; if the first index is ≤ the last stored one, the stored suffix from
        there is discarded first (a follower overwriting a conflicting tail). Durable after
        ``sync``. Indices must be contiguous with what remains."""
        ...

    def sync(self) -> None:
        """Make every earlier write durable (one fsync per batch)."""
        ...

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Durably and atomically replace the snapshot, then drop log entries ≤ meta.last_index.
        If the log does not contain meta.last_index with meta.last_term, drop the whole log."""
        ...

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest snapshot, if any."""
        ...

    def close(self) -> None:
        """Release files and the directory lock. Idempotent."""
        ...
