"""Shared builders and the harness that runs one contract suite against both storages."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from raftcache.raft.configuration import Configuration
from raftcache.raft.messages import EntryKind, LogEntry
from raftcache.storage import FileStorage, MemoryStorage, SnapshotMeta
from raftcache.storage.segments import parse_segment_name

from .faultfs import CrashDisk

AnyStorage = MemoryStorage | FileStorage


def make_entries(first: int, last: int, term: int = 1, size: int = 8) -> list[LogEntry]:
    """Entries ``first..last`` whose commands encode their index and term (so a mix-up shows)."""
    return [
        LogEntry(term, i, f"{i}:{term}:".encode().ljust(size, b"x"), EntryKind.COMMAND)
        for i in range(first, last + 1)
    ]


def meta(index: int, term: int, *voters: str) -> SnapshotMeta:
    return SnapshotMeta(index, term, Configuration.of(voters or ("n1", "n2", "n3")))


def rows(entries: list[LogEntry]) -> list[tuple[int, int, bytes, int]]:
    return [(e.index, e.term, e.command, int(e.kind)) for e in entries]


@dataclass
class Harness:
    """Creates a storage of one kind and restarts it cleanly or after a power loss."""

    kind: str
    directory: str
    segment_size: int = 256
    disk: CrashDisk = field(default_factory=CrashDisk)

    def make(self) -> AnyStorage:
        if self.kind == "memory":
            return MemoryStorage()
        # CrashDisk: fsync=True code paths without paying for real fsyncs.
        return FileStorage(self.directory, segment_size=self.segment_size, file_ops=self.disk)

    def restart(self, storage: AnyStorage) -> AnyStorage:
        """Clean process restart (everything synced before is kept)."""
        storage.close()
        if isinstance(storage, MemoryStorage):
            return storage
        return FileStorage(self.directory, segment_size=self.segment_size, file_ops=self.disk)

    def power_loss(self, storage: AnyStorage) -> AnyStorage:
        """Restart after a power cut: only what was synced survives."""
        storage.close()
        if isinstance(storage, MemoryStorage):
            storage.crash()
            return storage
        self.disk.crash()
        return FileStorage(self.directory, segment_size=self.segment_size, file_ops=self.disk)


def seg_files(directory: str) -> list[str]:
    return sorted(os.listdir(os.path.join(directory, "log")))


def seg_start(name: str) -> int:
    """The first index of a segment file name (``<index>-<salt>.seg`` or ``<index>.seg``)."""
    parsed = parse_segment_name(name)
    assert parsed is not None, name
    return parsed[0]


def seg_salt(name: str) -> int | None:
    """The salt of a segment file name (None: an old, unsalted segment)."""
    parsed = parse_segment_name(name)
    assert parsed is not None, name
    return parsed[1]
