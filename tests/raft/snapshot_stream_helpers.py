"""Helpers for the streamed-snapshot tests: a follower node under test, chunk feeds, seeded disks.

Rule: chunk bytes are generated on the fly from (seed, chunk number), so a test never holds a
whole snapshot itself and can still check the installed bytes by their digest.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from typing import Any

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.messages import (
    EntryKind,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
)
from raftcache.raft.node import RaftNode
from raftcache.storage.base import SnapshotMeta
from raftcache.storage.file import FileStorage
from raftcache.storage.snapshots import SNAPSHOT_NAME, open_snapshot

CONF = Configuration.of(["n1", "n2"])
#: Real-time timings with room for a loaded 2-core box: n1 never wins an election alone.
SLOW = RaftConfig(
    election_timeout_min=1.0,
    election_timeout_max=2.0,
    heartbeat_interval=0.1,
    snapshot_threshold=0,
    rpc_timeout=5.0,
)


class DigestMachine:
    """A state machine that keeps only a digest of the snapshot it restored (so restoring
    costs it no memory of its own) and the commands applied after it."""

    def __init__(self, *, streaming: bool = True) -> None:
        self.digest = hashlib.sha256(b"").hexdigest()
        self.size = 0
        self.restores = 0
        self.applied: list[bytes] = []
        if not streaming:
            self.restore_stream = None  # type: ignore[assignment]

    def apply(self, command: bytes) -> Any:
        self.applied.append(command)
        return len(self.applied)

    def snapshot(self) -> bytes:
        return b"digest:" + self.digest.encode()

    def restore(self, data: bytes) -> None:
        self.digest, self.size = hashlib.sha256(data).hexdigest(), len(data)
        self.restores += 1
        self.applied = []

    def restore_stream(self, stream: Any) -> None:
        h, size = hashlib.sha256(), 0
        while piece := stream.read(64 * 1024):
            h.update(piece)
            size += len(piece)
        self.digest, self.size = h.hexdigest(), size
        self.restores += 1
        self.applied = []


def chunk(seed: int, number: int, size: int) -> bytes:
    """Chunk ``number`` of snapshot ``seed``: pseudo-random, made in one allocation."""
    return hashlib.shake_256(f"{seed}:{number}".encode()).digest(size)


def digest(seed: int, count: int, size: int) -> str:
    h = hashlib.sha256()
    for i in range(count):
        h.update(chunk(seed, i, size))
    return h.hexdigest()


def requests(
    seed: int,
    count: int,
    size: int,
    *,
    index: int,
    term: int = 1,
    snap_term: int = 1,
    leader: str = "n2",
) -> Iterator[InstallSnapshotRequest]:
    """The leader's chunks of one snapshot, generated one at a time."""
    for i in range(count):
        yield InstallSnapshotRequest(
            term,
            leader,
            index,
            snap_term,
            i * size,
            chunk(seed, i, size),
            i == count - 1,
            CONF.encode(),
        )


async def feed(node: RaftNode, reqs: Iterator[InstallSnapshotRequest]) -> InstallSnapshotResponse:
    """Send every chunk in order; each must be accepted. Returns the last answer."""
    resp = InstallSnapshotResponse(0)
    for req in reqs:
        resp = await node.handle_install_snapshot(req)
        assert resp.success, (req.offset, resp)
        assert resp.next_offset == req.offset + len(req.data)
    return resp


def seed_storage(
    storage: FileStorage,
    *,
    snapshot: tuple[int, bytes] | None = (3, b"old snapshot"),
    entries: int = 3,
    term: int = 1,
) -> None:
    """Give n1's storage an old snapshot (index, data) at term 1, ``entries`` log entries after
    it and the hard state ``term``, all durable."""
    storage.bind("n1")
    storage.load()
    start = 0
    if snapshot is not None:
        storage.save_snapshot(SnapshotMeta(snapshot[0], 1, CONF), snapshot[1])
        start = snapshot[0]
    storage.append(
        [LogEntry(1, start + i, f"e{start + i}".encode(), EntryKind.COMMAND) for i in (1, 2, 3)][
            :entries
        ]
    )
    storage.set_hard_state(term, None)
    storage.sync()


def stored_meta(directory: str | os.PathLike[str]) -> SnapshotMeta | None:
    """The metadata of the installed snapshot file, read without the storage object."""
    opened = open_snapshot(os.path.join(os.fspath(directory), SNAPSHOT_NAME))
    if opened is None:
        return None
    os.close(opened[0])
    return opened[1].meta


def temp_files(directory: str | os.PathLike[str]) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


async def start_follower(
    storage: Any, machine: Any, config: RaftConfig = SLOW, hub: InMemoryHub | None = None
) -> RaftNode:
    """n1 of the cluster {n1, n2}; n2 (the leader) is the test itself."""
    net = InMemoryNetwork("n1", hub=hub or InMemoryHub(), seed=1)
    node = RaftNode("n1", ["n1", "n2"], net, storage, machine, config, rng=random.Random(1))
    await node.start()
    return node
