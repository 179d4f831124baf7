"""Simulated-cluster scenarios (driver + InMemoryNetwork + MemoryStorage, virtual time)."""

from __future__ import annotations

import asyncio

import pytest

from raftcache.raft.core import Role
from raftcache.raft.errors import NotLeaderError
from tests.raft.sim import SimCluster

pytestmark = pytest.mark.looptime


async def test_initial_election() -> None:
    c = SimCluster(3, seed=1)
    await c.start()
    try:
        leader = await c.wait_leader()
        await asyncio.sleep(1.0)
        assert len(c.leaders()) == 1
        terms = {n.current_term for n in c.nodes.values()}
        assert terms == {leader.current_term}
        assert all(n.leader_id == leader.node_id for n in c.nodes.values())
    finally:
        await c.stop()


async def test_replicate_and_apply_everywhere() -> None:
    c = SimCluster(3, seed=2)
    await c.start()
    try:
        leader = await c.wait_leader()
        results = await asyncio.gather(*(leader.propose(f"cmd{i}".encode()) for i in range(50)))
        assert sorted(results) == list(range(1, 51))
        await c.wait_applied(leader.commit_index)
        for m in c.machines.values():
            assert m.commands() == [f"cmd{i}".encode() for i in range(50)]
    finally:
        await c.stop()


async def test_follower_rejects_proposals_with_hint() -> None:
    c = SimCluster(3, seed=3)
    await c.start()
    try:
        leader = await c.wait_leader()
        follower = next(n for n in c.nodes.values() if n.role is Role.FOLLOWER)
        with pytest.raises(NotLeaderError) as info:
            await follower.propose(b"x")
        assert info.value.leader_id == leader.node_id
        with pytest.raises(NotLeaderError):
            await follower.read_index()
        assert await leader.read_index() >= 1
    finally:
        await c.stop()
