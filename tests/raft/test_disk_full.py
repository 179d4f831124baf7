"""A full disk: writes are refused (503-able) but the cluster keeps electing and serving reads,
and nothing is acknowledged that is not on disk. Writes resume once space is freed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from raftcache.raft.errors import ProposalDroppedError
from raftcache.raft.messages import LogEntry
from raftcache.storage.base import DiskFullError
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import SimCluster

pytestmark = pytest.mark.looptime


class FullableStorage(MemoryStorage):
    """MemoryStorage whose appends fail with ENOSPC while ``full`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def append(self, entries: Sequence[LogEntry]) -> None:
        if self.full:
            raise DiskFullError("No space left on device (simulated)")
        super().append(entries)


async def test_full_disk_on_leader_refuses_writes_keeps_reads_then_recovers() -> None:
    c = SimCluster(3, seed=41)
    c.storages = {i: FullableStorage() for i in c.ids}
    await c.start()
    try:
        leader = await c.wait_leader()
        await leader.propose(b"before")
        storage = c.storages[leader.node_id]
        assert isinstance(storage, FullableStorage)
        storage.full = True
        # The first proposal may be appended in memory and wait; later ones are refused at once.
        first = asyncio.create_task(leader.propose(b"during", timeout=5))
        await asyncio.sleep(0.2)
        with pytest.raises(ProposalDroppedError):
            await leader.propose(b"refused")
        # Reads and leadership go on.
        assert await leader.read_index() >= 2
        durable = storage.durable()
        assert b"during" not in [e.command for e in durable.entries]
        storage.full = False
        await first  # committed by the followers' majority, or once the leader can write again
        async with asyncio.timeout(5):  # the node notices the free space at its next write retry
            while True:
                try:
                    await leader.propose(b"after")
                    break
                except ProposalDroppedError:
                    await asyncio.sleep(0.05)
        await c.wait_applied(leader.commit_index)
        for m in c.machines.values():
            assert m.commands() == [b"before", b"during", b"after"]
    finally:
        await c.stop()


async def test_full_disk_on_follower_never_acknowledges_unwritten_entries() -> None:
    c = SimCluster(3, seed=42)
    c.storages = {i: FullableStorage() for i in c.ids}
    await c.start()
    try:
        leader = await c.wait_leader()
        followers = [i for i in c.ids if i != leader.node_id]
        for f in followers:
            s = c.storages[f]
            assert isinstance(s, FullableStorage)
            s.full = True
        # No follower can write: nothing commits, and nothing is acknowledged as durable.
        with pytest.raises((TimeoutError, Exception)):
            await leader.propose(b"x", timeout=1.0)
        commit = leader.commit_index
        for f in followers:
            assert all(e.command != b"x" for e in c.storages[f].durable().entries)
        assert leader.commit_index == commit
        for f in followers:
            s = c.storages[f]
            assert isinstance(s, FullableStorage)
            s.full = False
        await c.propose(b"y")
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index)
        c.check_applied_prefixes()
    finally:
        await c.stop()
