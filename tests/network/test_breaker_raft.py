"""The circuit breaker under Raft: a follower back from a failure is caught up in bounded time.

A simulated 3-node cluster (``tests.raft.sim``) whose every node sends through
``CircuitBreakerNetwork(MeteredNetwork(InMemoryNetwork))``, under virtual time. While a follower
is down the leader's breaker towards it opens (asserted, else the test proves nothing); once it
is back, the first heartbeat after the cool-down probes it and replication resumes: the
follower must have applied everything the leader committed within ``reset_timeout`` plus a
generous margin of virtual time.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from raftcache.network.breaker import BreakerState, CircuitBreakerNetwork
from raftcache.network.memory import InMemoryNetwork
from raftcache.network.metered import MeteredNetwork
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from tests.raft.sim import ListMachine, SimCluster

pytestmark = pytest.mark.looptime

RESET_TIMEOUT = 1.0
# The leader probes with its first heartbeat after the cool-down (30 ms in FAST), then needs a
# few round trips to find the follower's log end and send the missing entries.
CATCH_UP_BOUND = RESET_TIMEOUT + 0.5


class BreakerCluster(SimCluster):
    """A SimCluster whose nodes send through a circuit breaker (and are metered)."""

    def __init__(self, n: int = 3, *, seed: int = 1, threshold: int = 3) -> None:
        super().__init__(n, seed=seed)
        self.threshold = threshold
        self.breakers: dict[str, CircuitBreakerNetwork] = {}

    def _make(self, node_id: str, peers: list[str]) -> RaftNode:
        inner = InMemoryNetwork(
            node_id,
            hub=self.hub,
            seed=self.rng.randrange(2**32),
            **self.net_opts,
        )
        net = CircuitBreakerNetwork(
            MeteredNetwork(inner), failure_threshold=self.threshold, reset_timeout=RESET_TIMEOUT
        )
        machine = ListMachine()
        node = RaftNode(
            node_id,
            peers,
            net,
            self.storages[node_id],
            machine,
            self.config,
            rng=random.Random(self.rng.randrange(2**32)),
        )
        self.networks[node_id], self.machines[node_id], self.nodes[node_id] = inner, machine, node
        self.breakers[node_id] = net
        return node


async def _fill(c: SimCluster, start: int, count: int) -> None:
    for i in range(start, start + count):
        await c.propose(f"cmd{i}".encode())


async def _outage(c: BreakerCluster, follower: str, kind: str) -> None:
    if kind == "crash":
        await c.crash(follower)
    else:
        c.hub.isolate(follower)


async def _recover(c: BreakerCluster, follower: str, kind: str) -> None:
    if kind == "crash":
        await c.restart(follower)
    else:
        c.hub.rejoin(follower)


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("kind", ["crash", "isolate"])
async def test_follower_back_from_failure_is_caught_up_in_bounded_time(
    kind: str, seed: int
) -> None:
    loop = asyncio.get_running_loop()
    c = BreakerCluster(3, seed=seed)
    await c.start()
    try:
        leader = await c.wait_leader()
        await _fill(c, 0, 10)
        follower = next(i for i in c.ids if i != leader.node_id)
        await _outage(c, follower, kind)
        await _fill(c, 10, 40)  # the two others still commit
        await asyncio.sleep(0.5)  # heartbeats keep failing: the breaker must be open by now
        breaker = c.breakers[leader.node_id]
        assert breaker.state(follower) in (BreakerState.OPEN, BreakerState.HALF_OPEN)
        metrics = breaker.metrics
        assert metrics is not None
        refused = metrics.snapshot()["outbound"]["AppendEntries"][follower]["errors"]
        assert refused.get("circuit_open", 0) > 0

        await _recover(c, follower, kind)
        back = loop.time()
        target = leader.commit_index
        async with asyncio.timeout(CATCH_UP_BOUND * 4):  # a hang fails here, not forever
            while c.nodes[follower].last_applied < target:
                await asyncio.sleep(0.005)
        elapsed = loop.time() - back
        assert elapsed <= CATCH_UP_BOUND, f"caught up after {elapsed:.3f}s (seed {seed})"
        assert leader.role is Role.LEADER
        # The follower applies what an AppendEntries carried before its reply reaches the
        # leader: give the reply (and the breaker's verdict on it) a few heartbeats to land.
        await asyncio.sleep(0.1)
        assert breaker.state(follower) is BreakerState.CLOSED
        assert c.machines[follower].commands()[-1] == b"cmd49"
        c.check_applied_prefixes()
    finally:
        await c.stop()


async def test_breaker_does_not_disturb_a_healthy_cluster() -> None:
    c = BreakerCluster(3, seed=21)
    await c.start()
    try:
        await c.wait_leader()
        await _fill(c, 0, 30)
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index)
        for net in c.breakers.values():
            assert set(net.states().values()) <= {"closed"}
            metrics = net.metrics
            assert metrics is not None
            assert metrics.snapshot()["breakers"] == {
                peer: {"state": "closed", "opened": 0} for peer in net.states()
            }
    finally:
        await c.stop()
