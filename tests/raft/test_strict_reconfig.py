"""The strict reconfiguration check (docs/sharding.md invariant 4a), attacked: a leader
changes its voters only to a configuration a quorum of which it really heard from in its term
— not on a just-elected leader's grace, not when promoting a learner that went silent — and a
follower asked for a change answers "not the leader" (the fronts forward it), not 409."""

from __future__ import annotations

import asyncio

import pytest

from raftcache.raft.core import Role
from raftcache.raft.errors import MembershipChangeError, NotLeaderError
from tests.raft.sim import SimCluster

pytestmark = pytest.mark.looptime


async def test_remove_on_a_follower_is_not_leader_not_409() -> None:
    """Before bfa8ca6, remove_member on a follower raised NotLeaderError (forwarded to the
    leader by the HTTP layer). Now a follower's empty progress fails the quorum check first."""
    c = SimCluster(3, seed=21)
    await c.start()
    try:
        leader = await c.wait_leader()
        await asyncio.sleep(0.5)
        follower = next(c.nodes[i] for i in c.ids if i != leader.node_id)
        victim = next(i for i in c.ids if i not in (leader.node_id, follower.node_id))
        with pytest.raises(NotLeaderError):
            await follower.remove_member(victim)
    finally:
        await c.stop()


async def test_just_elected_leader_counts_unheard_voter_as_active() -> None:
    """A new leader gives every peer last_active = now (check-quorum grace), so for one
    election timeout the strict check passes for a configuration whose remaining voters
    it has never heard from."""
    c = SimCluster(3, seed=22)
    await c.start()
    try:
        old = await c.wait_leader()
        b, cc = (i for i in c.ids if i != old.node_id)
        c.hub.partition(b, cc)  # b cannot hear cc (nor cc b)
        await asyncio.sleep(0.3)
        await old.transfer_leadership(b)
        new = c.nodes[b]
        assert new.role is Role.LEADER
        # wait until the new leader committed in its term (propose_config requires it)
        await asyncio.sleep(0.1)
        # removing old leaves {b, cc}: b has never heard cc in this term; must be refused
        with pytest.raises(MembershipChangeError, match="without a quorum"):
            await asyncio.wait_for(new.remove_member(old.node_id), 3.0)
    finally:
        await c.stop()


async def test_promoting_an_unheard_learner_is_refused_like_a_removal() -> None:
    """The strict check guards remove_member only. A learner that caught up and then went
    silent (idle group: match_index stays >= commit_index) is promoted by add_member at
    once; with one voter also unheard, the new 4-voter configuration has no active quorum
    and the group is wedged (2 of 4) — invariant 4a."""
    c = SimCluster(3, seed=23)
    await c.start()
    try:
        await c.restart("n4", peers=c.ids)
        c.ids.append("n4")
        leader = await c.wait_leader()
        await c.propose(b"first")
        # A learner only (``add_member`` would promote it as soon as it caught up).
        await leader._propose_config(leader.configuration.with_learner("n4", None), None)
        await c.propose(b"x")
        await asyncio.sleep(1.0)  # n4 catches up
        other = next(i for i in ("n1", "n2", "n3") if i != leader.node_id)
        c.hub.fail_node("n4")
        c.hub.fail_node(other)
        await asyncio.sleep(0.5)  # < election timeout: leader still leads with 2 of 3
        assert leader.role is Role.LEADER
        with pytest.raises(MembershipChangeError, match="without a quorum"):
            await asyncio.wait_for(leader.add_member("n4"), 5.0)
        assert "n4" not in leader.members
        assert leader.role is Role.LEADER  # still leading with 2 of 3
    finally:
        await c.stop()
