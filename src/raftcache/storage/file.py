"""FileStorage: the durable Storage — a segmented log, a hard-state file and a snapshot file.

Rule: nothing is acknowledged that is not on disk. Layout of a data directory::

    LOCK        flock'd for the storage's lifetime (one opener, across processes)
    IDENTITY    JSON: format version, node_id, cluster_id (written by the first ``bind``)
    BOOTSTRAP   JSON: the voters the cluster started with (written once, ``bootstrap.py``)
    hardstate   term and vote, replaced atomically by ``sync`` when they changed
    snapshot    the latest snapshot, replaced atomically by ``save_snapshot``
    log/        segments ``<first index, 20 digits>-<salt, 16 hex>.seg`` (see ``segments``)

``append`` and ``set_hard_state`` are buffered (in the page cache and in memory respectively);
``sync`` fsyncs the last segment, the log directory when a segment was created, and rewrites
``hardstate`` if it changed. Every mutation goes through a ``FileOps`` (``fsio``) so tests can
record the order of operations, inject ENOSPC or EIO, and simulate power loss.

Failure behaviour: a failed fsync (or any unexpected I/O error while writing) poisons the
storage — this call and every later one except ``close`` raise ``StorageFailedError``.
ENOSPC raises ``DiskFullError`` after the partial write is removed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from types import TracebackType

from raftcache.protocol.messages import LogEntry
from raftcache.storage.base import (
    RecoveredState,
    SnapshotMeta,
    StorageError,
    StorageFailedError,
)
from raftcache.storage.bootstrap import BOOTSTRAP_NAME, decode_bootstrap, encode_bootstrap
from raftcache.storage.checks import check_batch, check_snapshot_order, merge_identity
from raftcache.storage.fsio import FileOps, atomic_write, read_file, remove_quietly
from raftcache.storage.hardstate import HARDSTATE_NAME, decode_hard_state, encode_hard_state
from raftcache.storage.identity import (
    IDENTITY_NAME,
    decode_identity,
    encode_identity,
    identity_format,
)
from raftcache.storage.identity import VERSION as IDENTITY_VERSION
from raftcache.storage.lock import DirectoryLock
from raftcache.storage.segments import SegmentLog
from raftcache.storage.snapshots import (
    SNAPSHOT_NAME,
    FileSnapshotReader,
    FileSnapshotWriter,
    open_snapshot,
    read_data,
)

DEFAULT_SEGMENT_SIZE = 64 * 1024 * 1024
LOG_DIR = "log"


class FileStorage:
    """A durable ``Storage`` in one directory (created if missing), locked while open.

    Args:
        directory: the data directory.
        fsync: if False, skip every fsync (tests and throw-away clusters only: a power loss
            may then lose acknowledged writes).
        segment_size: rotate to a new log segment once the current one reaches this size.
        file_ops: the file-I/O seam; tests pass a recording or fault-injecting ``FileOps``.

    Raises:
        StorageLockedError: another FileStorage (in any process) holds the directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        fsync: bool = True,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        file_ops: FileOps | None = None,
    ) -> None:
        self._dir = os.path.abspath(os.fspath(directory))
        self._fsync = fsync
        self._ops = file_ops if file_ops is not None else FileOps()
        self._lock = DirectoryLock(self._dir)
        self._log = SegmentLog(
            os.path.join(self._dir, LOG_DIR), self._ops, fsync=fsync, segment_size=segment_size
        )
        self._failed: StorageFailedError | None = None
        self._open = False
        self._recovered = False
        self._identity: tuple[str, str | None] | None = None
        self._identity_stale = False
        self._hard_state: tuple[int, str | None] = (0, None)  # as last written to disk
        self._pending_hard_state: tuple[int, str | None] | None = None
        self._snapshot: SnapshotMeta | None = None
        self._tmp_counter = 0
        self._reopen()

    # -- the Storage protocol ------------------------------------------------------------------

    @property
    def directory(self) -> str:
        return self._dir

    def bind(self, node_id: str, cluster_id: str | None = None) -> None:
        """Record (first use) or check the directory's owner; durable when it returns."""
        with self._guard(reopen=True):
            path = os.path.join(self._dir, IDENTITY_NAME)
            merged = merge_identity(
                self._identity, node_id, cluster_id, f"data directory {self._dir}"
            )
            if merged != self._identity or self._identity_stale:
                atomic_write(self._ops, path, encode_identity(*merged), fsync=self._fsync)
                self._identity = merged
                self._identity_stale = False

    def record_bootstrap(self, voters: Sequence[str]) -> tuple[str, ...]:
        """Record the bootstrap voters in ``BOOTSTRAP`` once (durable when it returns);
        return the recorded ones (see ``storage/bootstrap.py``)."""
        with self._guard(reopen=True):
            path = os.path.join(self._dir, BOOTSTRAP_NAME)
            raw = read_file(path)
            if raw is not None:
                return decode_bootstrap(raw, path)
            if not voters:
                raise ValueError("a bootstrap configuration needs at least one voter")
            atomic_write(self._ops, path, encode_bootstrap(voters), fsync=self._fsync)
            return tuple(sorted(voters))

    def load(self) -> RecoveredState:
        """Recover from disk (truncating a torn log tail) and return what a restart sees.

        Raises:
            StorageCorruptError: damage recovery must not paper over (file and offset named).
            StorageFormatError: a file of an unknown format version.
        """
        with self._guard(reopen=True):
            return self._recover()

    def set_hard_state(self, term: int, voted_for: str | None) -> None:
        """Remember term and vote; ``sync`` writes ``hardstate`` if they changed."""
        with self._guard():
            self._ensure_recovered()
            hs = (term, voted_for)
            self._pending_hard_state = None if hs == self._hard_state else hs

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Write the batch with one pwrite (discarding a conflicting suffix first, durably).

        Raises:
            ValueError: the batch is not contiguous, leaves a hole or reaches into the snapshot.
            DiskFullError: no space; nothing of the batch was written.
            StorageFailedError: an I/O error; the storage is now poisoned.
        """
        with self._guard():
            self._ensure_recovered()
            if entries:
                check_batch(entries, self._log.first_index - 1, self._log.last_index)
                self._log.append(entries)

    def sync(self) -> None:
        """fsync the last segment (and ``log/`` if a segment was created), write a changed
        hard state atomically. One call covers every write since the previous one."""
        with self._guard():
            self._ensure_recovered()
            self._sync()

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Durably replace the snapshot (streamed to disk in bounded chunks), then compact."""
        with self.snapshot_writer(meta) as writer:
            writer.write(data)
            writer.commit()

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest snapshot with its data (CRC checked), or None."""
        with self._guard(reopen=True):
            path = os.path.join(self._dir, SNAPSHOT_NAME)
            opened = open_snapshot(path)
            if opened is None:
                return None
            fd, loc = opened
            try:
                return loc.meta, read_data(fd, loc, path, keep=True)
            finally:
                os.close(fd)

    def close(self) -> None:
        """Close files and release the lock (unsynced hard state is dropped). Idempotent."""
        if not self._open:
            return
        self._open = False
        self._recovered = False
        self._pending_hard_state = None
        try:
            self._log.close()
        finally:
            self._lock.release()

    def __enter__(self) -> FileStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- streaming snapshots -------------------------------------------------------------------

    def open_snapshot_reader(self) -> FileSnapshotReader | None:
        """A reader over the latest snapshot (its data CRC checked first), or None."""
        with self._guard(reopen=True):
            path = os.path.join(self._dir, SNAPSHOT_NAME)
            try:
                return FileSnapshotReader(path)
            except FileNotFoundError:
                return None

    def snapshot_writer(self, meta: SnapshotMeta) -> FileSnapshotWriter:
        """Start streaming a snapshot into a temp file; ``commit()`` installs it."""
        with self._guard():
            self._ensure_recovered()
            check_snapshot_order(meta.last_index, self._log.first_index - 1)
            self._tmp_counter += 1
            return FileSnapshotWriter(
                self._ops,
                self._dir,
                f"{SNAPSHOT_NAME}.{self._tmp_counter}.tmp",
                meta,
                fsync=self._fsync,
                guard=self._guard,
                on_commit=self._install_snapshot,
            )

    # -- introspection -------------------------------------------------------------------------

    @property
    def identity(self) -> tuple[str, str | None] | None:
        return self._identity

    @property
    def snapshot_index(self) -> int:
        return self._log.first_index - 1

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def segment_paths(self) -> list[str]:
        return self._log.segment_paths

    @property
    def failed(self) -> bool:
        return self._failed is not None

    # -- internals -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self, *, reopen: bool = False) -> Iterator[None]:
        """Refuse calls on a failed or closed storage, and poison it on StorageFailedError."""
        if self._failed is not None:
            raise StorageFailedError(f"storage failed earlier: {self._failed}")
        if not self._open:
            if not reopen:
                raise StorageError(f"FileStorage {self._dir} is closed (load() reopens it)")
            self._reopen()
        try:
            yield
        except StorageFailedError as exc:
            self._failed = exc
            raise

    def _reopen(self) -> None:
        os.makedirs(os.path.join(self._dir, LOG_DIR), exist_ok=True)
        self._lock.acquire()
        self._open = True
        try:
            for name in os.listdir(self._dir):
                if name.endswith(".tmp"):  # left by a crash mid-write: never renamed, so unused
                    remove_quietly(self._ops, os.path.join(self._dir, name))
            path = os.path.join(self._dir, IDENTITY_NAME)
            raw = read_file(path)
            self._identity = decode_identity(raw, path) if raw is not None else None
            # Written by an older layout: rewrite it (marking this layout) at the next bind.
            self._identity_stale = raw is not None and identity_format(raw) != IDENTITY_VERSION
        except BaseException:
            self.close()
            raise

    def _recover(self) -> RecoveredState:
        path = os.path.join(self._dir, HARDSTATE_NAME)
        raw = read_file(path)
        self._hard_state = decode_hard_state(raw, path) if raw is not None else (0, None)
        self._pending_hard_state = None
        snap_path = os.path.join(self._dir, SNAPSHOT_NAME)
        opened = open_snapshot(snap_path)
        self._snapshot = None
        if opened is not None:
            fd, loc = opened
            try:
                # Refuse to start on a damaged snapshot rather than discover it at restore.
                read_data(fd, loc, snap_path, keep=False)
            finally:
                os.close(fd)
            self._snapshot = loc.meta
        entries = self._log.recover(self._snapshot)
        self._recovered = True
        term, vote = self._hard_state
        return RecoveredState(term=term, voted_for=vote, snapshot=self._snapshot, entries=entries)

    def _ensure_recovered(self) -> None:
        if not self._recovered:
            self._recover()

    def _sync(self) -> None:
        self._log.sync()
        if self._pending_hard_state is not None:
            hs = self._pending_hard_state
            path = os.path.join(self._dir, HARDSTATE_NAME)
            atomic_write(self._ops, path, encode_hard_state(*hs), fsync=self._fsync)
            self._hard_state = hs
            self._pending_hard_state = None

    def _install_snapshot(self, writer: FileSnapshotWriter) -> None:
        with self._guard():
            self._ensure_recovered()
            check_snapshot_order(writer.meta.last_index, self._log.first_index - 1)
            self._sync()  # every earlier write durable first, as the contract promises
            writer.install()
            self._snapshot = writer.meta
            self._log.compact(writer.meta)
