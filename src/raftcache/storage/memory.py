"""MemoryStorage: the in-memory twin of FileStorage, with an explicit model of unsynced writes.

Rule: the object is its own "disk". Writes land in a *written* view; ``sync()`` copies them into
a *durable* view; ``crash()`` (power loss) and ``load()`` (a restart) throw away whatever was not
synced. One exception mirrors FileStorage exactly: an append that discards a conflicting suffix
makes the truncated log durable at once (see ``Storage.append``). A restarted node handed the
same object therefore recovers exactly what a real disk would guarantee, and a driver that
forgets to sync before answering loses data in tests.

Snapshots and the identity are durable at once, as in FileStorage. ``fail()`` simulates a failed
fsync: the storage is poisoned and every later call except ``close()`` raises
``StorageFailedError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from raftcache.protocol.messages import LogEntry
from raftcache.storage.base import (
    RecoveredState,
    SnapshotMeta,
    StorageError,
    StorageFailedError,
)
from raftcache.storage.checks import check_batch, check_snapshot_order, merge_identity


def _copy(entry: LogEntry) -> LogEntry:
    # Entries are mutable dataclasses: store our own copies so a caller mutating its objects
    # cannot rewrite "durable" history behind the storage's back.
    return LogEntry(entry.term, entry.index, bytes(entry.command), int(entry.kind))


class MemoryStorage:
    """A ``Storage`` kept in memory; see the module docstring for the durability model."""

    def __init__(self) -> None:
        self._identity: tuple[str, str | None] | None = None
        self._bootstrap: tuple[str, ...] | None = None
        self._snapshot: tuple[SnapshotMeta, bytes] | None = None
        # Both logs start right after the snapshot; save_snapshot syncs first, so they share it.
        self._log: list[LogEntry] = []
        self._durable_log: list[LogEntry] = []
        self._term = 0
        self._vote: str | None = None
        self._durable_hard_state: tuple[int, str | None] = (0, None)
        # Lowest list position where the written log may differ from the durable one.
        self._dirty_from: int | None = None
        self._closed = False
        self._failed: StorageFailedError | None = None
        self.sync_count = 0

    # -- the Storage protocol ------------------------------------------------------------------

    def bind(self, node_id: str, cluster_id: str | None = None) -> None:
        """Record or check the owner (durable at once)."""
        self._check_usable(reopen=True)
        self._identity = merge_identity(self._identity, node_id, cluster_id, "this MemoryStorage")

    def record_bootstrap(self, voters: Sequence[str]) -> tuple[str, ...]:
        """Record the bootstrap voters once (durable at once); return the recorded ones."""
        self._check_usable(reopen=True)
        if self._bootstrap is None:
            if not voters:
                raise ValueError("a bootstrap configuration needs at least one voter")
            self._bootstrap = tuple(sorted(voters))
        return self._bootstrap

    def load(self) -> RecoveredState:
        """What a restarted node reads back: the synced state only (pending writes are lost)."""
        self._check_usable(reopen=True)
        self.crash()
        term, vote = self._durable_hard_state
        return RecoveredState(
            term=term,
            voted_for=vote,
            snapshot=self._snapshot[0] if self._snapshot else None,
            entries=[_copy(e) for e in self._durable_log],
        )

    def set_hard_state(self, term: int, voted_for: str | None) -> None:
        """Record term and vote in the written view (durable after ``sync``)."""
        self._check_usable()
        self._term, self._vote = term, voted_for

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append (copies of) ``entries``; see ``Storage.append`` for the overwrite rule."""
        self._check_usable()
        if not entries:
            return
        check_batch(entries, self.snapshot_index, self.last_index)
        pos = entries[0].index - self.snapshot_index - 1
        if pos < len(self._log):
            # Discarding a conflicting suffix is durable at once, together with everything
            # before it, exactly as in FileStorage (which must fsync a truncation before
            # writing after it). Raft allows it: a conflicting suffix is never committed.
            del self._log[pos:]
            self._durable_log = list(self._log)
        self._log.extend(_copy(e) for e in entries)
        self._dirty_from = pos if self._dirty_from is None else min(self._dirty_from, pos)

    def sync(self) -> None:
        """Make the written view durable."""
        self._check_usable()
        if self._dirty_from is not None:
            del self._durable_log[self._dirty_from :]
            self._durable_log.extend(self._log[self._dirty_from :])
            self._dirty_from = None
        self._durable_hard_state = (self._term, self._vote)
        self.sync_count += 1

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Sync, replace the snapshot and compact the log (durable at once)."""
        self._check_usable()
        check_snapshot_order(meta.last_index, self.snapshot_index)
        self.sync()
        if self._term_at(meta.last_index) == meta.last_term:
            drop = meta.last_index - self.snapshot_index
            del self._log[:drop]
        else:
            self._log.clear()
        self._durable_log = list(self._log)
        self._snapshot = (meta, bytes(data))

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest snapshot, if any."""
        self._check_usable(reopen=True)
        return self._snapshot

    def close(self) -> None:
        """Mark closed; ``load()``/``bind()`` reopen. Pending writes stay pending (a clean
        process exit keeps them only until a ``crash()`` or the next ``load()``)."""
        self._closed = True

    # -- streaming snapshots -------------------------------------------------------------------

    def open_snapshot_reader(self) -> MemorySnapshotReader | None:
        self._check_usable(reopen=True)
        if self._snapshot is None:
            return None
        return MemorySnapshotReader(*self._snapshot)

    def snapshot_writer(self, meta: SnapshotMeta) -> MemorySnapshotWriter:
        self._check_usable()
        return MemorySnapshotWriter(self, meta)

    # -- test helpers and introspection --------------------------------------------------------

    def crash(self) -> None:
        """Simulate power loss: every write since the last ``sync()`` is lost."""
        self._log = list(self._durable_log)
        self._dirty_from = None
        self._term, self._vote = self._durable_hard_state

    def fail(self, reason: str = "simulated fsync failure") -> None:
        """Poison the storage as a failed fsync would: every later call raises."""
        self._failed = StorageFailedError(reason)

    def durable(self) -> RecoveredState:
        """The synced state, without discarding pending writes (for assertions in tests)."""
        term, vote = self._durable_hard_state
        return RecoveredState(
            term=term,
            voted_for=vote,
            snapshot=self._snapshot[0] if self._snapshot else None,
            entries=[_copy(e) for e in self._durable_log],
        )

    def current(self) -> RecoveredState:
        """The written state, synced or not (what a reader in this process would see)."""
        return RecoveredState(
            term=self._term,
            voted_for=self._vote,
            snapshot=self._snapshot[0] if self._snapshot else None,
            entries=[_copy(e) for e in self._log],
        )

    @property
    def identity(self) -> tuple[str, str | None] | None:
        return self._identity

    @property
    def snapshot_index(self) -> int:
        return self._snapshot[0].last_index if self._snapshot else 0

    @property
    def last_index(self) -> int:
        return self.snapshot_index + len(self._log)

    @property
    def has_unsynced_writes(self) -> bool:
        return self._dirty_from is not None or (self._term, self._vote) != self._durable_hard_state

    def _term_at(self, index: int) -> int | None:
        if self._snapshot is not None and index == self._snapshot[0].last_index:
            return self._snapshot[0].last_term
        pos = index - self.snapshot_index - 1
        return self._log[pos].term if 0 <= pos < len(self._log) else None

    def _check_usable(self, *, reopen: bool = False) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            if not reopen:
                raise StorageError("MemoryStorage is closed (load() reopens it)")
            self._closed = False


class MemorySnapshotReader:
    """A ``SnapshotReader`` over snapshot bytes held in memory."""

    def __init__(self, meta: SnapshotMeta, data: bytes) -> None:
        self._meta = meta
        self._data = data

    @property
    def meta(self) -> SnapshotMeta:
        return self._meta

    @property
    def size(self) -> int:
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be non-negative")
        return self._data[offset : offset + length]

    def close(self) -> None:
        pass

    def __enter__(self) -> MemorySnapshotReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemorySnapshotWriter:
    """A ``SnapshotWriter`` collecting chunks in memory until ``commit``."""

    def __init__(self, storage: MemoryStorage, meta: SnapshotMeta) -> None:
        self._storage = storage
        self._meta = meta
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        if self._done:
            raise StorageError("snapshot writer is already committed or aborted")
        # Appending to a list is atomic: an abort from another thread cannot tear it.
        self._chunks.append(bytes(chunk))
        self._size += len(chunk)

    def commit(self) -> None:
        if self._done:
            raise StorageError("snapshot writer is already committed or aborted")
        self._storage.save_snapshot(self._meta, b"".join(self._chunks))
        self._done = True
        self._chunks = []

    def abort(self) -> None:
        self._done = True
        self._chunks = []

    def __enter__(self) -> MemorySnapshotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()
