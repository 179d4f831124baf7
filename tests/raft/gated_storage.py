"""A follower whose fsync the test holds: shared by the persist-thread tests.

The storage's ``sync`` blocks on a ``threading.Event`` the test controls (the driver persists
in a worker thread, as in production), so "the fsync is still running" is a fact, not a window
of time. Timers are long enough that nothing but the test's own messages happens.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.messages import LogEntry
from raftcache.raft.node import RaftNode
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import FAST, ListMachine

__all__ = ["CONFIG", "WAIT", "GatedStorage", "follower", "running_follower"]

CONFIG = dataclasses.replace(
    FAST, persist_in_thread=True, election_timeout_min=30.0, election_timeout_max=60.0
)
WAIT = 10.0  # generous bound for things that must happen (a loaded 2-core box)


class GatedStorage(MemoryStorage):
    """``sync`` waits for ``open`` once ``hold()`` was called, says so through ``entered`` and
    counts its calls; ``broken`` / ``sync_error``, when set, are raised by append / sync."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.syncs = 0
        self.broken: BaseException | None = None  # raised by append
        self.sync_error: BaseException | None = None  # raised by sync

    def hold(self) -> None:
        self.entered.clear()
        self.open.clear()

    def append(self, entries: Sequence[LogEntry]) -> None:
        if self.broken is not None:
            raise self.broken
        super().append(entries)

    def sync(self) -> None:
        self.entered.set()
        assert self.open.wait(WAIT), "the test never released the fsync"
        if self.sync_error is not None:
            raise self.sync_error
        self.syncs += 1
        super().sync()


async def follower(storage: GatedStorage) -> RaftNode:
    """Node n1 of {n1, n2, n3}, started on ``storage``, persisting in its thread."""
    net = InMemoryNetwork("n1", hub=InMemoryHub(), seed=1)
    node = RaftNode(
        "n1", ["n1", "n2", "n3"], net, storage, ListMachine(), CONFIG, rng=random.Random(1)
    )
    await node.start()
    return node


@asynccontextmanager
async def running_follower() -> AsyncIterator[tuple[GatedStorage, RaftNode]]:
    """A started ``follower`` on a fresh GatedStorage; afterwards the fsync is let go (a failed
    test may have left it held) and the node stopped."""
    storage = GatedStorage()
    node = await follower(storage)
    try:
        yield storage, node
    finally:
        storage.open.set()
        await node.stop()
