"""Snapshots streamed between disk and network, never held whole in memory.

Rule: on a storage that offers ``StreamingSnapshots`` (both built-in ones do), a snapshot only
ever exists as a file (or the storage's own bytes) plus one chunk in flight:

- **Sending.** The Raft core slices InstallSnapshot chunks from a ``SnapshotView``: each slice
  is one ``read_at`` on the stored snapshot, taken when the chunk is sent.
- **Receiving.** Chunks go to a ``SnapshotWriter`` (a temp file) as they arrive, at contiguous
  offsets only: a duplicate or a gap is answered with the offset expected next, so the leader
  resends from there. A chunk at offset 0 or from a newer term aborts a partial transfer.
  Nothing of a partial transfer is visible: the writer installs the file atomically (fsync,
  rename, directory fsync) only on ``commit``, which the driver runs in its ready loop; the
  core and the state machine adopt the snapshot only after that (``RaftNode``).
- **Taking.** A state machine with ``prepare_snapshot_stream`` encodes straight into a writer
  in a worker thread (``prepare_snapshot`` and ``snapshot`` are the fallbacks).
- **Restoring.** A state machine with ``restore_stream(file)`` reads the snapshot from disk
  piece by piece; otherwise ``restore(bytes)`` gets it whole (``StateMachine``, docs/design.md).

Every storage call runs under the driver's storage lock (in a worker thread when
``persist_in_thread``), so it never interleaves with the ready loop's own writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import InstallSnapshotRequest
from raftcache.raft.config import RaftConfig
from raftcache.storage.base import SnapshotMeta, SnapshotWriter, StorageError
from raftcache.storage.views import SnapshotView

T = TypeVar("T")


@dataclass(slots=True)
class Incoming:
    """A snapshot being received: who sends it (term, leader), what it covers, where it goes."""

    key: tuple[int, str, int, int]  # sender's term, sender, last index, last term
    meta: SnapshotMeta
    writer: SnapshotWriter


@dataclass(slots=True)
class ChunkResult:
    """What to answer a chunk, and the finished transfer once its last chunk is written."""

    success: bool
    next_offset: int
    complete: Incoming | None = None


class SnapshotTransfer:
    """The node's streaming snapshot paths over one storage (see the module rule)."""

    def __init__(
        self, storage: Any, state_machine: Any, lock: asyncio.Lock, config: RaftConfig
    ) -> None:
        self._storage = storage
        self._sm = state_machine
        self._lock = lock
        self._config = config
        #: False for a storage with only the base ``Storage`` protocol: the node then keeps
        #: the in-memory path (the core assembles chunks and ``save_snapshot`` writes them).
        self.streaming = callable(getattr(storage, "snapshot_writer", None)) and callable(
            getattr(storage, "open_snapshot_reader", None)
        )
        #: Storage calls waiting for the lock: the ready loop lets its persist thread go idle
        #: (and the lock go) instead of keeping it busy, so they are not starved.
        self.io_waiting = 0
        self._incoming: Incoming | None = None
        self._views: list[SnapshotView] = []

    # ------------------------------------------------------------------ storage access
    async def storage_io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run one storage call under the storage lock (in a worker thread when persisting
        in threads); the node's non-streaming snapshot path uses it too."""
        self.io_waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.io_waiting -= 1
        try:
            if self._config.persist_in_thread:
                return await asyncio.to_thread(fn, *args)
            return fn(*args)
        finally:
            self._lock.release()

    def open_stored(self) -> SnapshotView | None:
        """A view over the stored snapshot (at start, before the loops run), or None."""
        reader = self._storage.open_snapshot_reader()
        if reader is None:
            return None
        view = SnapshotView(reader)
        self._views.append(view)
        return view

    def _commit_and_open(self, writer: SnapshotWriter, meta: SnapshotMeta) -> SnapshotView:
        writer.commit()
        reader = self._storage.open_snapshot_reader()
        if reader is None:
            raise StorageError("the snapshot just installed cannot be read back")
        if (reader.meta.last_index, reader.meta.last_term) != (meta.last_index, meta.last_term):
            reader.close()
            raise StorageError(f"the stored snapshot is not the one just installed ({meta})")
        return SnapshotView(reader)

    async def commit(self, incoming: Incoming) -> SnapshotView:
        """Install a received snapshot durably (under the storage lock) and open it for
        reading; on any error the writer is aborted and the old snapshot stays."""
        try:
            view = await self.storage_io(self._commit_and_open, incoming.writer, incoming.meta)
        except BaseException:
            incoming.writer.abort()
            raise
        self._views.append(view)
        return view

    # ------------------------------------------------------------------ receiving
    async def receive(self, req: InstallSnapshotRequest, current: Configuration) -> ChunkResult:
        """Write one chunk of the leader's snapshot (the caller checked the term and holds the
        receive lock). ``current`` is the configuration in force, for a sender that sends none.
        """
        key = (req.term, req.leader_id, req.last_included_index, req.last_included_term)
        inc = self._incoming
        if inc is not None and (req.offset == 0 or req.term > inc.key[0]):
            self.abort_incoming()  # a new transfer, or a newer leader: the partial one is dead
            inc = None
        if req.offset == 0:
            conf = Configuration.decode(req.configuration) if req.configuration else current
            meta = SnapshotMeta(req.last_included_index, req.last_included_term, conf)
            writer = await self.storage_io(self._storage.snapshot_writer, meta)
            inc = self._incoming = Incoming(key, meta, writer)
        elif inc is None or inc.key != key:
            return ChunkResult(False, 0)  # we hold no part of this one: start over
        expected = inc.writer.size
        if req.offset != expected:
            return ChunkResult(False, expected)  # a duplicate or a gap: resend from here
        try:
            await self.storage_io(inc.writer.write, req.data)
        except BaseException:
            if self._incoming is inc:
                self.abort_incoming()
            raise
        if not req.done:
            return ChunkResult(True, inc.writer.size)
        self._incoming = None
        return ChunkResult(True, inc.writer.size, inc)

    def abort_incoming(self) -> None:
        inc, self._incoming = self._incoming, None
        if inc is not None:
            inc.writer.abort()

    @property
    def receiving(self) -> SnapshotMeta | None:
        """What the partial transfer under way covers (for tests and introspection)."""
        return self._incoming.meta if self._incoming is not None else None

    # ------------------------------------------------------------------ taking
    async def save_local(
        self, meta: SnapshotMeta, still_wanted: Callable[[], bool]
    ) -> SnapshotView | None:
        """Snapshot the state machine (captured now, on the event loop) into the storage;
        None if ``still_wanted()`` turned False meanwhile (nothing is installed then)."""
        encode, threaded = self._encoder()
        writer = await self.storage_io(self._storage.snapshot_writer, meta)
        try:
            # Outside the storage lock: the writer touches only its temp file (and is safe
            # against an abort from another thread), so the ready loop keeps persisting.
            if threaded:
                await asyncio.to_thread(encode, writer.write)
            else:
                encode(writer.write)
            if not still_wanted():
                return None
            view = await self.storage_io(self._commit_and_open, writer, meta)
        finally:
            writer.abort()  # a no-op once committed
        self._views.append(view)
        return view

    def _encoder(self) -> tuple[Callable[[Callable[[bytes], object]], object], bool]:
        """A function that writes the state captured now, and whether to run it in a worker
        thread: always for a machine that prepares its snapshot for one (docs/design.md: a
        large state must not block the event loop), else only when persisting in threads
        (simulations on virtual time stay single-threaded, hence replayable)."""
        stream = getattr(self._sm, "prepare_snapshot_stream", None)
        if stream is not None:
            encode: Callable[[Callable[[bytes], object]], object] = stream()
            return encode, True
        prepare = getattr(self._sm, "prepare_snapshot", None)
        if prepare is not None:
            make: Callable[[], bytes] = prepare()
            return (lambda write: write(make())), True
        data: bytes = self._sm.snapshot()
        return (lambda write: write(data)), self._config.persist_in_thread

    # ------------------------------------------------------------------ restoring, views
    def restore(self, view: SnapshotView) -> None:
        """Replace the state machine's state with the snapshot's (streamed if it can)."""
        restore_stream = getattr(self._sm, "restore_stream", None)
        if restore_stream is not None:
            restore_stream(view.stream())
        else:
            self._sm.restore(view[0 : len(view)])

    def keep_only(self, used: object) -> None:
        """Close every view but ``used`` (what the core sends from now): its file may be gone
        from the directory already, and the open fd is all that keeps its disk space."""
        for view in [v for v in self._views if v is not used]:
            view.close()
            self._views.remove(view)

    def close(self) -> None:
        """Abort a partial transfer and close every view (the node stops)."""
        self.abort_incoming()
        self.keep_only(None)
