"""The storage contract: one object holds the log, the hard state and the latest snapshot.

Rule: *persist before you answer.* Writes (``append``, ``set_hard_state``) may be buffered; they
are durable only once ``sync()`` returns. The Raft driver calls ``sync()`` before any response,
vote or acknowledgement leaves the node, so one fsync covers a whole batch (group commit).
``save_snapshot``, ``bind`` and ``record_bootstrap`` are durable when they return
(``save_snapshot`` also makes every earlier buffered write durable, as if ``sync()`` had been
called first).

Indices are Raft log indices (1-based). The log held by storage is contiguous: it starts right
after the snapshot's ``last_included_index`` (or at 1) and has no holes. ``append`` refuses, with
``ValueError``, a batch that is not contiguous, leaves a hole, or reaches into the snapshot.

Lifecycle: ``close()`` releases files and the directory lock. Reads (``load``,
``load_snapshot``, ``open_snapshot_reader``) and ``bind`` on a closed storage open it again, so a
restarted node may be handed the same object; writes on a closed storage raise ``StorageError``
(a write after stop is a driver bug, not a reason to retake the lock). ``load()`` models a
restart: it returns what a fresh process would read back.

Errors: ``StorageError`` and subclasses. ``StorageFailedError`` means the storage can no longer
promise durability (a failed fsync): the node must stop (fail-stop), never retry and carry on;
once raised, every later call except ``close()`` raises it again. ``DiskFullError`` means a write
was rejected for lack of space; no entry of the batch was written, reads still work, and the
caller may retry later. Corruption found on open raises ``StorageCorruptError`` with a message
naming the file and offset; a file written by an unknown format version raises
``StorageFormatError``. A second opener of a locked directory gets ``StorageLockedError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import LogEntry


class StorageError(Exception):
    """Base of storage errors."""


class StorageFailedError(StorageError):
    """Durability can no longer be guaranteed (failed fsync): the node must stop."""


class DiskFullError(StorageError):
    """A write was refused for lack of space; state is unchanged and reads still work."""


class StorageCorruptError(StorageError):
    """The on-disk data is corrupt in a way recovery must not paper over."""


class StorageFormatError(StorageError):
    """A file carries a format version this code does not know: refuse rather than guess."""


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
        """Record (first use) or check the owner; raise ``StorageIdentityError`` on mismatch.

        ``node_id`` must match the recorded one. A ``cluster_id`` of None matches any recorded
        cluster; a recorded None is filled in by the first non-None ``cluster_id``.
        """
        ...

    def record_bootstrap(self, voters: Sequence[str]) -> tuple[str, ...]:
        """The voters the cluster was bootstrapped with: the first call records ``voters``
        (durable when it returns); every later call returns the recorded ones, sorted."""
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
        ``sync``. Indices must be contiguous with what remains.

        Discarding a suffix is durable at once, together with every entry before it (so a crash
        before ``sync`` may leave the log cut short, never the discarded entries behind new
        ones). Raft allows this: a suffix that conflicts with the leader is never committed.
        """
        ...

    def sync(self) -> None:
        """Make every earlier write durable (one fsync per batch)."""
        ...

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Durably and atomically replace the snapshot, then drop log entries ≤ meta.last_index.
        If the log does not contain meta.last_index with meta.last_term, drop the whole log.
        A snapshot older than the stored one is refused with ``ValueError``."""
        ...

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest snapshot, if any."""
        ...

    def close(self) -> None:
        """Release files and the directory lock. Idempotent."""
        ...


class SnapshotReader(Protocol):
    """Chunked access to a stored snapshot (for InstallSnapshot), without loading it whole."""

    @property
    def meta(self) -> SnapshotMeta: ...

    @property
    def size(self) -> int:
        """Length of the snapshot data in bytes."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of data from ``offset`` (fewer only at the end)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> SnapshotReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SnapshotWriter(Protocol):
    """A snapshot being received or produced in chunks; nothing is visible until ``commit``.

    ``commit`` has the effect of ``Storage.save_snapshot(meta, <all chunks>)``. Leaving the
    ``with`` block without ``commit`` (or with an exception) aborts and discards the chunks.
    """

    @property
    def size(self) -> int:
        """Bytes written so far: the offset the next chunk must start at."""
        ...

    def write(self, chunk: bytes) -> None: ...

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> SnapshotWriter: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class SnapshotData(Protocol):
    """Snapshot bytes as the Raft core sends them: a length and slices.

    ``bytes`` is one; ``raftcache.storage.views.SnapshotView`` is another that reads each
    slice from disk when it is taken, so a leader never holds a large snapshot whole.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice, /) -> bytes: ...


class StreamingSnapshots(Protocol):
    """Optional extension, offered by both MemoryStorage and FileStorage."""

    def open_snapshot_reader(self) -> SnapshotReader | None:
        """A reader over the latest snapshot, or None when there is none."""
        ...

    def snapshot_writer(self, meta: SnapshotMeta) -> SnapshotWriter:
        """Start writing a snapshot covering ``meta``; see ``SnapshotWriter``."""
        ...
