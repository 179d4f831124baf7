"""Classic Raft scenarios on a simulated cluster (driver + InMemoryNetwork + MemoryStorage).

Virtual time (looptime): timeouts of seconds cost milliseconds, and runs are reproducible.
"""

from __future__ import annotations

import asyncio

import pytest

from raftcache.raft.core import Role
from raftcache.raft.errors import MembershipChangeError, NotLeaderError
from tests.raft.sim import SimCluster

pytestmark = pytest.mark.looptime


async def test_reelection_after_leader_fails() -> None:
    c = SimCluster(3, seed=11)
    await c.start()
    try:
        old = await c.wait_leader()
        term = old.current_term
        c.hub.fail_node(old.node_id)
        new = await c.wait_leader(among=[i for i in c.ids if i != old.node_id])
        assert new.node_id != old.node_id
        assert new.current_term > term
        c.hub.recover_node(old.node_id)
        await asyncio.sleep(1.0)
        assert old.role is Role.FOLLOWER
        assert old.leader_id == new.node_id
    finally:
        await c.stop()


async def test_no_leader_without_quorum() -> None:
    c = SimCluster(3, seed=12)
    await c.start()
    try:
        leader = await c.wait_leader()
        others = [i for i in c.ids if i != leader.node_id]
        for i in others:
            c.hub.fail_node(i)
        await asyncio.sleep(2.0)  # > several election timeouts: check-quorum deposes the leader
        assert c.leaders() == [] or all(
            n.node_id == leader.node_id and n.role is not Role.LEADER for n in c.leaders()
        )
        assert leader.role is not Role.LEADER
    finally:
        await c.stop()


async def test_agreement_despite_failed_follower() -> None:
    c = SimCluster(3, seed=13)
    await c.start()
    try:
        leader = await c.wait_leader()
        down = next(i for i in c.ids if i != leader.node_id)
        c.hub.fail_node(down)
        for i in range(10):
            await leader.propose(f"a{i}".encode())
        c.hub.recover_node(down)
        for i in range(10):
            await leader.propose(f"b{i}".encode())
        await c.wait_applied(leader.commit_index)
        assert c.machines[down].commands() == c.machines[leader.node_id].commands()
    finally:
        await c.stop()


async def test_no_commit_without_quorum() -> None:
    c = SimCluster(5, seed=14)
    await c.start()
    try:
        leader = await c.wait_leader()
        await leader.propose(b"ok")
        followers = [i for i in c.ids if i != leader.node_id]
        for i in followers[:3]:
            c.hub.fail_node(i)
        commit = leader.commit_index
        with pytest.raises((TimeoutError, NotLeaderError, Exception)):
            await leader.propose(b"lost?", timeout=0.5)
        assert leader.commit_index == commit
        for i in followers[:3]:
            c.hub.recover_node(i)
        new = await c.wait_leader()
        await new.propose(b"after")
        await c.wait_applied(new.commit_index)
        c.check_applied_prefixes()
    finally:
        await c.stop()


async def test_concurrent_proposals_all_applied_once() -> None:
    c = SimCluster(3, seed=15)
    await c.start()
    try:
        leader = await c.wait_leader()
        cmds = [f"c{i}".encode() for i in range(300)]
        await asyncio.gather(*(leader.propose(cmd) for cmd in cmds))
        await c.wait_applied(leader.commit_index)
        for m in c.machines.values():
            assert sorted(m.commands()) == sorted(cmds)
            assert len(set(m.commands())) == len(cmds)
        c.check_applied_prefixes()
    finally:
        await c.stop()


async def test_partitioned_leader_rejoins_with_divergent_entries() -> None:
    c = SimCluster(5, seed=16)
    await c.start()
    try:
        old = await c.wait_leader()
        await old.propose(b"base")
        c.hub.isolate(old.node_id)
        # The isolated leader appends entries that can never commit.
        pending = [asyncio.create_task(old.propose(f"x{i}".encode(), timeout=5)) for i in range(5)]
        new = await c.wait_leader(among=[i for i in c.ids if i != old.node_id])
        for i in range(5):
            await new.propose(f"y{i}".encode())
        c.hub.rejoin(old.node_id)
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, Exception) for r in results), results
        await c.propose(b"final")
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index)
        cmds = c.machines[old.node_id].commands()
        assert not any(cmd.startswith(b"x") for cmd in cmds)
        assert cmds == c.machines[leader.node_id].commands()
    finally:
        await c.stop()


async def test_backup_over_many_conflicting_entries() -> None:
    c = SimCluster(5, seed=17)
    await c.start()
    try:
        old = await c.wait_leader()
        await old.propose(b"base")
        c.hub.isolate(old.node_id)
        tasks = [asyncio.create_task(old.propose(f"x{i}".encode(), timeout=8)) for i in range(60)]
        new = await c.wait_leader(among=[i for i in c.ids if i != old.node_id])
        for i in range(60):
            await new.propose(f"y{i}".encode())
        c.hub.rejoin(old.node_id)
        await asyncio.gather(*tasks, return_exceptions=True)
        leader = await c.wait_leader()
        await leader.propose(b"z")
        await c.wait_applied(leader.commit_index)
        assert c.machines[old.node_id].commands() == c.machines[leader.node_id].commands()
    finally:
        await c.stop()


async def test_persistence_across_restart_of_one_node() -> None:
    c = SimCluster(3, seed=18)
    await c.start()
    try:
        leader = await c.wait_leader()
        for i in range(20):
            await leader.propose(f"p{i}".encode())
        victim = next(i for i in c.ids if i != leader.node_id)
        await c.crash(victim)
        for i in range(5):
            await leader.propose(f"q{i}".encode())
        node = await c.restart(victim)
        await c.wait_applied(leader.commit_index)
        assert c.machines[victim].commands() == c.machines[leader.node_id].commands()
        assert node.current_term >= 1
    finally:
        await c.stop()


async def test_persistence_across_restart_of_all_nodes() -> None:
    c = SimCluster(3, seed=19)
    await c.start()
    try:
        leader = await c.wait_leader()
        acked = []
        for i in range(30):
            await leader.propose(f"p{i}".encode())
            acked.append(f"p{i}".encode())
        for nid in c.ids:
            await c.crash(nid)
        for nid in c.ids:
            await c.restart(nid)
        leader = await c.wait_leader()
        await leader.propose(b"after")
        await c.wait_applied(leader.commit_index)
        for m in c.machines.values():
            assert m.commands()[: len(acked)] == acked
    finally:
        await c.stop()


async def test_deposed_leader_never_answers_read_index() -> None:
    c = SimCluster(5, seed=20)
    await c.start()
    try:
        old = await c.wait_leader()
        await old.propose(b"v1")
        c.hub.isolate(old.node_id)
        new = await c.wait_leader(among=[i for i in c.ids if i != old.node_id])
        await new.propose(b"v2")
        # The old leader may still believe it leads; its read must never be confirmed.
        if old.role is Role.LEADER:
            with pytest.raises((TimeoutError, NotLeaderError)):
                await old.read_index(timeout=1.0)
        assert await new.read_index() >= 3
    finally:
        await c.stop()


async def test_leadership_transfer() -> None:
    c = SimCluster(3, seed=21)
    await c.start()
    try:
        leader = await c.wait_leader()
        await leader.propose(b"a")
        target = next(i for i in c.ids if i != leader.node_id)
        got = await leader.transfer_leadership(target)
        assert got == target
        new = await c.wait_leader()
        assert new.node_id == target
        await new.propose(b"b")
        auto = await new.transfer_leadership(None)
        assert auto != target
    finally:
        await c.stop()


async def test_lease_read_on_leader() -> None:
    c = SimCluster(3, seed=22)
    await c.start()
    try:
        leader = await c.wait_leader()
        await leader.propose(b"a")
        await asyncio.sleep(0.2)
        idx = await leader.lease_read()
        assert idx >= leader.commit_index - 1
        follower = next(n for n in c.nodes.values() if n.role is Role.FOLLOWER)
        with pytest.raises(NotLeaderError):
            await follower.lease_read()
    finally:
        await c.stop()


@pytest.mark.parametrize("seed", [23, 24, 25, 26])
async def test_figure_8_unreliable(seed: int) -> None:
    """The paper's Figure 8 under an unreliable network (6.824's Figure8Unreliable): leaders crash
    right after appending, messages are lost and reordered; entries of old terms must never be
    committed by counting, so every acknowledged command survives and all logs agree."""
    c = SimCluster(5, seed=seed, drop_rate=0.1, base_delay=0.01, jitter=0.9)
    await c.start()
    rng = c.rng
    acked: list[bytes] = []
    try:
        for i in range(25):
            leaders = c.leaders()
            if leaders:
                leader = leaders[0]
                cmd = f"f8-{i}".encode()
                task = asyncio.create_task(leader.propose(cmd, timeout=2.0))
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                if rng.random() < 0.5:
                    await c.crash(leader.node_id)  # maybe before the entry reached anyone
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    await c.restart(leader.node_id)
                try:
                    await task
                    acked.append(cmd)
                except Exception:
                    pass
            else:
                await asyncio.sleep(0.1)
        for nid in c.ids:
            c.networks[nid].set_drop_rate(0.0)
        await c.propose(b"final", timeout=30)
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index, timeout=30)
        c.check_applied_prefixes()
        applied = c.machines[leader.node_id].commands()
        assert set(acked) <= set(applied)
        assert len(applied) == len(set(applied))
    finally:
        await c.stop()


async def test_a_removal_that_leaves_no_active_quorum_is_refused() -> None:
    """Review finding (docs/sharding.md invariant 4a): the placement driver judges stores
    down by its own view. With the leader cut off from B alone, removing C (which the leader
    still hears) would leave {leader, B}: never committed, and the leader stepping down with
    nobody able to lead. The leader refuses; removing a voter it does not hear from, while
    the rest are heard, still works."""
    c = SimCluster(4, seed=21)
    await c.start()
    try:
        leader = await c.wait_leader()
        b, cc, d = (i for i in c.ids if i != leader.node_id)
        c.hub.fail_node(d)  # down: {leader, b, cc} are the active quorum of four
        await asyncio.sleep(2.0)
        await leader.remove_member(d)  # the dead voter goes: the rest are active
        assert d not in leader.members
        c.hub.partition(leader.node_id, b)
        await asyncio.sleep(2.0)  # > an election timeout: the leader stops hearing b
        assert leader.role is Role.LEADER  # b and cc: still a quorum of three with cc
        with pytest.raises(MembershipChangeError, match="without a quorum"):
            await leader.remove_member(cc)
        assert cc in leader.members
        c.hub.heal_partition(leader.node_id, b)
        await asyncio.sleep(1.0)
        await leader.remove_member(cc)  # heard again: allowed
        assert cc not in leader.members
    finally:
        await c.stop()
