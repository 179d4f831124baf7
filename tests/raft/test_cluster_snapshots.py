"""Snapshots and membership on a simulated cluster."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from raftcache.raft.core import Role
from tests.raft.sim import FAST, SimCluster

pytestmark = pytest.mark.looptime

SNAP = dataclasses.replace(FAST, snapshot_threshold=20, snapshot_chunk_size=64)


@pytest.mark.parametrize("drop_rate", [0.0, 0.1])
async def test_lagging_follower_catches_up_by_snapshot(drop_rate: float) -> None:
    c = SimCluster(3, seed=31, config=SNAP, drop_rate=drop_rate)
    await c.start()
    try:
        leader = await c.wait_leader()
        lagging = next(i for i in c.ids if i != leader.node_id)
        c.hub.fail_node(lagging)
        for i in range(100):
            await c.propose(f"s{i}".encode())
        leader = await c.wait_leader()
        assert leader.core.log.snapshot_index > 0, "the leader should have compacted its log"
        c.hub.recover_node(lagging)
        await c.propose(b"last")
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index, timeout=30)
        assert c.machines[lagging].commands() == c.machines[leader.node_id].commands()
    finally:
        await c.stop()


async def test_snapshot_install_with_crashes() -> None:
    c = SimCluster(3, seed=32, config=SNAP)
    await c.start()
    try:
        leader = await c.wait_leader()
        lagging = next(i for i in c.ids if i != leader.node_id)
        await c.crash(lagging)
        for i in range(80):
            await c.propose(f"s{i}".encode())
        await c.restart(lagging)
        await asyncio.sleep(0.05)
        await c.crash(lagging)  # crash again, maybe mid-transfer
        await c.restart(lagging)
        await c.propose(b"end")
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index, timeout=30)
        assert c.machines[lagging].commands() == c.machines[leader.node_id].commands()
    finally:
        await c.stop()


async def test_restart_restores_snapshot_then_replays_tail() -> None:
    c = SimCluster(3, seed=33, config=SNAP)
    await c.start()
    try:
        for i in range(45):
            await c.propose(f"s{i}".encode())
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index)
        for nid in c.ids:
            await c.crash(nid)
        for nid in c.ids:
            await c.restart(nid)
        await c.propose(b"after")
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index)
        expected = [f"s{i}".encode() for i in range(45)] + [b"after"]
        for m in c.machines.values():
            assert m.commands() == expected
    finally:
        await c.stop()


async def test_membership_change_under_load() -> None:
    c = SimCluster(3, seed=34)
    await c.start()
    try:
        leader = await c.wait_leader()
        stop = asyncio.Event()
        written: list[bytes] = []

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                cmd = f"w{i}".encode()
                try:
                    await c.propose(cmd, timeout=5)
                    written.append(cmd)
                except TimeoutError:
                    pass
                i += 1

        task = asyncio.create_task(writer())
        new = await c.restart("n4", peers=c.ids)  # a new node: must not disrupt
        c.ids.append("n4")
        leader = await c.wait_leader()
        await leader.add_member("n4")
        assert "n4" in leader.members
        leader = await c.wait_leader()
        victim = next(i for i in c.ids if i not in (leader.node_id, "n4"))
        await leader.remove_member(victim)
        await c.nodes[victim].stop()
        c.ids.remove(victim)
        # Remove the leader itself: it steps down once the change commits.
        leader = await c.wait_leader()
        old_leader = leader.node_id
        await leader.remove_member(old_leader)
        await asyncio.sleep(1.0)
        await c.nodes[old_leader].stop()
        c.ids.remove(old_leader)
        leader = await c.wait_leader()
        assert leader.node_id != old_leader
        stop.set()
        await task
        await leader.propose(b"fin")
        await c.wait_applied(leader.commit_index)
        applied = set(c.machines[leader.node_id].commands())
        assert set(written) <= applied
        assert c.machines[new.node_id].commands() == c.machines[leader.node_id].commands()
        assert sorted(leader.members) == sorted(c.ids)
        assert leader.role is Role.LEADER
    finally:
        await c.stop()


async def test_a_byte_bound_triggers_snapshots_when_the_count_does_not() -> None:
    """Few large commands stay under the entry count: the byte bound compacts them anyway."""
    config = dataclasses.replace(
        FAST, snapshot_threshold=10_000, snapshot_threshold_bytes=4096, snapshot_chunk_size=1024
    )
    c = SimCluster(3, seed=33, config=config)
    await c.start()
    try:
        await c.wait_leader()
        for i in range(12):
            await c.propose(bytes([i]) * 1000)  # 12 kB in 12 entries: far below 10,000
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index, timeout=30)
        for node in c.nodes.values():
            async with asyncio.timeout(30):
                while node.core.log.snapshot_index < 4:  # the first 4 kB crossed the bound
                    await asyncio.sleep(0.01)
            assert node._applied_bytes - node._snapshot_mark < 4096 + 1000
    finally:
        await c.stop()
