"""MultiPathNetwork under Raft: no needless rejections with pinning, and failover keeps replicas.

A simulated 3-node cluster (``tests.raft.sim``) where every node reaches the others over two
paths (two ``InMemoryHub``s) of very different latency, under virtual time. Pipelined
AppendEntries spread over both paths overtake each other and followers reject them (the control
run shows it, so the test can fail); pinned to one path per peer, followers reject none.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.interface import RpcHandlers
from raftcache.network.memory import InMemoryNetwork
from raftcache.network.multipath import MultiPathNetwork
from raftcache.raft.messages import AppendEntriesRequest, AppendEntriesResponse
from raftcache.raft.node import RaftNode
from tests.raft.sim import ListMachine, SimCluster

pytestmark = pytest.mark.looptime

DELAYS = (0.001, 0.04)  # one-way delay of the fast and the slow path


class CountingMultiPath(MultiPathNetwork):
    """Counts the AppendEntries this node's handlers rejected (success False)."""

    rejections = 0

    def register_handlers(self, handlers: RpcHandlers) -> None:
        super().register_handlers(_Counting(handlers, self))


class _Counting:
    def __init__(self, inner: RpcHandlers, owner: CountingMultiPath) -> None:
        self._inner, self._owner = inner, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        resp = await self._inner.handle_append_entries(req)
        if not resp.success:
            self._owner.rejections += 1
        return resp


class TwoPathCluster(SimCluster):
    def __init__(self, *, seed: int, pin: bool) -> None:
        super().__init__(3, seed=seed)
        self.pin = pin
        self.hubs = [InMemoryHub(), InMemoryHub()]
        self.multi: dict[str, CountingMultiPath] = {}

    def _make(self, node_id: str, peers: list[str]) -> RaftNode:
        paths = [
            InMemoryNetwork(node_id, hub=hub, base_delay=delay, seed=self.rng.randrange(2**32))
            for hub, delay in zip(self.hubs, DELAYS, strict=True)
        ]
        net = CountingMultiPath(paths, pin_append_entries=self.pin)
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
        self.networks[node_id], self.machines[node_id], self.nodes[node_id] = (
            paths[0],
            machine,
            node,
        )
        self.multi[node_id] = net
        return node

    def rejections(self) -> int:
        return sum(net.rejections for net in self.multi.values())


async def _pipelined_load(c: TwoPathCluster, count: int, every: float = 0.002) -> None:
    """A proposal every ``every`` seconds without waiting for the previous ones, so that the
    leader keeps many AppendEntries in flight per follower."""
    leader = await c.wait_leader()
    pending = []
    for i in range(count):
        pending.append(asyncio.create_task(leader.propose(f"p{i}".encode())))
        await asyncio.sleep(every)
    results = await asyncio.gather(*pending)
    assert len(results) == count
    await c.wait_applied(leader.commit_index)


async def _run(pin: bool, seed: int) -> int:
    c = TwoPathCluster(seed=seed, pin=pin)
    await c.start()
    try:
        leader = await c.wait_leader()
        for i in range(3):  # warm up: logs equal everywhere, pins chosen
            await leader.propose(f"w{i}".encode())
        await c.wait_applied(leader.commit_index)
        for net in c.multi.values():
            net.rejections = 0
        for _ in range(5):
            await _pipelined_load(c, 40)
            await asyncio.sleep(0.05)
        assert c.leaders() == [leader], "leadership changed: the run measures something else"
        c.check_applied_prefixes()
        return c.rejections()
    finally:
        await c.stop()


@pytest.mark.parametrize("seed", [1, 2])
async def test_pinned_append_entries_cause_no_needless_rejections(seed: int) -> None:
    assert await _run(pin=True, seed=seed) == 0


async def test_control_unpinned_append_entries_are_rejected() -> None:
    # The same load balanced call by call: later AppendEntries on the fast path overtake
    # earlier ones on the slow path and the followers reject them.
    assert await _run(pin=False, seed=1) > 0


async def test_failover_keeps_an_isolated_path_follower_replicated() -> None:
    c = TwoPathCluster(seed=3, pin=True)
    await c.start()
    try:
        leader = await c.wait_leader()
        follower = next(i for i in c.ids if i != leader.node_id)
        for hub in c.hubs:  # cut whichever path carries the follower's traffic, then the other
            hub.isolate(follower)
            before = leader.commit_index
            for i in range(20):
                await leader.propose(f"{follower}-{i}".encode())
            await c.wait_applied(leader.commit_index, timeout=2.0)
            assert leader.commit_index >= before + 20
            hub.rejoin(follower)
        stats = c.multi[leader.node_id].snapshot()
        assert sum(p["failovers"] for p in stats["paths"]) > 0
        c.check_applied_prefixes()
    finally:
        await c.stop()
