"""Storage for raftcache: the log, the hard state and snapshots (docs/storage.md).

Rule: this package depends only on the leaf ``raftcache.protocol`` (messages and configuration),
never on the Raft driver, so the driver can import it and ``import raftcache.storage`` stays cheap.
"""

from __future__ import annotations

from raftcache.storage.base import (
    DiskFullError,
    RecoveredState,
    SnapshotMeta,
    SnapshotReader,
    SnapshotWriter,
    Storage,
    StorageCorruptError,
    StorageError,
    StorageFailedError,
    StorageFormatError,
    StorageIdentityError,
    StorageLockedError,
    StreamingSnapshots,
)
from raftcache.storage.file import FileStorage
from raftcache.storage.fsio import FileOps
from raftcache.storage.memory import MemoryStorage

__all__ = [
    "DiskFullError",
    "FileOps",
    "FileStorage",
    "MemoryStorage",
    "RecoveredState",
    "SnapshotMeta",
    "SnapshotReader",
    "SnapshotWriter",
    "Storage",
    "StorageCorruptError",
    "StorageError",
    "StorageFailedError",
    "StorageFormatError",
    "StorageIdentityError",
    "StorageLockedError",
    "StreamingSnapshots",
]
