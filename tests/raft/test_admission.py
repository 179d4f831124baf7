"""Admission control in ``RaftNode.propose``: past ``max_pending_proposals`` a proposal is
refused at once (``ProposalDroppedError``, certainly not appended: retry later) instead of
queueing, and a flood costs the leader neither its leadership nor the proposals it admitted.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from raftcache.raft.config import RaftConfig
from raftcache.raft.errors import ProposalDroppedError
from tests.raft.sim import FAST, SimCluster

pytestmark = pytest.mark.looptime

CAP = 32


async def test_proposals_past_the_cap_are_refused_and_the_leader_keeps_its_leadership() -> None:
    cluster = SimCluster(3, seed=5, config=dataclasses.replace(FAST, max_pending_proposals=CAP))
    await cluster.start()
    try:
        leader = await cluster.wait_leader()
        await leader.propose(b"warm-up")  # the leader's no-op is committed too
        term = leader.current_term
        before = leader.commit_index
        # A flood: 2,000 proposals at once, far past what one round trip can commit.
        tasks = [asyncio.ensure_future(leader.propose(f"f{i}".encode())) for i in range(2000)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        refused = [r for r in results if isinstance(r, ProposalDroppedError)]
        admitted = [r for r in results if not isinstance(r, BaseException)]
        others = [r for r in results if isinstance(r, BaseException) and r not in refused]
        assert not others, others[:3]
        assert len(admitted) == CAP  # all submitted before any could commit
        assert len(refused) == 2000 - CAP
        assert "overloaded" in str(refused[0])
        # Refused ones were never appended: exactly the admitted ones commit.
        assert leader.commit_index == before + CAP
        # Capacity frees as proposals commit: a later one is admitted again.
        await leader.propose(b"after")
        await asyncio.sleep(FAST.election_timeout_max * 3)  # several election timeouts
        assert leader.role.value == "leader"
        assert leader.current_term == term
        await cluster.wait_applied(leader.commit_index)
        cluster.check_applied_prefixes()
    finally:
        await cluster.stop()


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pending_proposals"):
        RaftConfig(max_pending_proposals=0).validate()
