"""A simulated cache cluster for service tests: CacheService + RaftNode + InMemoryNetwork +
MemoryStorage per node, under virtual time (looptime), seeded.

Rule: everything random comes from one seed; the wall clock the services stamp into commands
is the loop's (virtual) time plus a settable offset, so TTL tests jump instead of waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from raftcache.cache.divergence import DigestReport, report_of
from raftcache.cache.formats import COMMAND_FORMAT
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import FAST as RAFT_FAST

#: The simulated Raft cluster's timings (``tests.raft.sim.FAST``), with the persist thread on:
#: the cache's snapshots are written in it.
FAST = dataclasses.replace(RAFT_FAST, persist_in_thread=True)


class WallClock:
    """Epoch seconds that follow the running loop's clock, plus a jump ``offset``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.start = start
        self.offset = 0.0

    def __call__(self) -> float:
        return self.start + asyncio.get_running_loop().time() + self.offset

    def jump(self, seconds: float) -> None:
        self.offset += seconds


class CacheCluster:
    """``n`` cache nodes on one in-memory hub."""

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 1,
        machine: dict[str, Any] | None = None,
        service: dict[str, Any] | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.hub = InMemoryHub()
        self.clock = WallClock()
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.machine_kwargs = machine or {}
        self.service_kwargs = service or {}
        self.storages = {node_id: MemoryStorage() for node_id in self.ids}
        self.nodes: dict[str, RaftNode] = {}
        self.machines: dict[str, CacheStateMachine] = {}
        self.services: dict[str, CacheService] = {}
        #: Per-node ceiling of command formats (``max_format``): a node capped at 1 plays an
        #: older release in upgrade tests. Read when a node (re)starts.
        self.caps: dict[str, int] = {}
        self.running: set[str] = set()

    async def probe(self, node_id: str) -> int | None:
        """The format probe the services use: what a running node's machine applies."""
        if node_id not in self.running:
            return None
        return self.machines[node_id].max_format

    async def digest(self, node_id: str, index: int) -> DigestReport | None:
        """The digest probe the services use: a running node's report, read directly."""
        if node_id not in self.running:
            return None
        return report_of(self.machines[node_id], index)

    async def kick(self, node_id: str) -> bool:
        if node_id not in self.running:
            return False
        self.services[node_id].divergence.kick()
        return True

    async def start_node(self, node_id: str) -> None:
        machine = CacheStateMachine(
            **self.machine_kwargs, max_format=self.caps.get(node_id, COMMAND_FORMAT)
        )
        network = InMemoryNetwork(
            node_id, hub=self.hub, base_delay=0.002, jitter=0.5, seed=self.rng.randrange(2**32)
        )
        node = RaftNode(
            node_id,
            self.ids,
            network,
            self.storages[node_id],
            machine,
            FAST,
            rng=random.Random(self.rng.randrange(2**32)),
        )
        service_kwargs = {"format_probe": self.probe, "digest_probe": self, **self.service_kwargs}
        service = CacheService(node, machine, clock=self.clock, **service_kwargs)
        self.nodes[node_id], self.machines[node_id], self.services[node_id] = node, machine, service
        await node.start()
        await service.start()
        self.running.add(node_id)

    async def stop_node(self, node_id: str) -> None:
        self.running.discard(node_id)
        await self.services[node_id].stop()
        await self.nodes[node_id].stop()

    async def __aenter__(self) -> CacheCluster:
        for node_id in self.ids:
            await self.start_node(node_id)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for node_id in self.ids:
            await self.stop_node(node_id)

    async def leader(self, timeout: float = 10.0) -> str:
        """The id of the leader (waiting for one)."""
        async with asyncio.timeout(timeout):
            while True:
                leaders = [i for i, n in self.nodes.items() if n.role is Role.LEADER]
                if leaders:
                    return max(leaders, key=lambda i: self.nodes[i].current_term)
                await asyncio.sleep(0.01)

    def follower(self, leader: str) -> str:
        return next(i for i in self.ids if i != leader)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every node has applied the leader's commit index."""
        leader = self.nodes[await self.leader()]
        target = leader.commit_index
        async with asyncio.timeout(timeout):
            while any(n.last_applied < target for n in self.nodes.values()):
                await asyncio.sleep(0.01)
