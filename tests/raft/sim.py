"""A simulated cluster for driver-level tests: RaftNode + InMemoryNetwork + MemoryStorage.

Rule: everything random comes from one seed; time is the event loop's (virtual under looptime),
so a failing run replays exactly from its seed.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.storage.memory import MemoryStorage

FAST = RaftConfig(
    election_timeout_min=0.15,
    election_timeout_max=0.3,
    heartbeat_interval=0.03,
    tick_interval=0.01,
    rpc_timeout=0.1,
    snapshot_threshold=0,
    propose_timeout=3.0,
    persist_in_thread=False,
)


class ListMachine:
    """A state machine that records every command it applies (and the index)."""

    def __init__(self) -> None:
        self.applied: list[tuple[int, bytes]] = []

    def apply_entry(self, index: int, command: bytes) -> Any:
        self.applied.append((index, command))
        return len(self.applied)

    def apply(self, command: bytes) -> Any:  # pragma: no cover - apply_entry wins
        raise AssertionError("apply_entry should be used")

    def snapshot(self) -> bytes:
        import orjson

        return orjson.dumps([[i, c.decode("latin-1")] for i, c in self.applied])

    def restore(self, data: bytes) -> None:
        import orjson

        self.applied = [(i, c.encode("latin-1")) for i, c in orjson.loads(data)]

    def commands(self) -> list[bytes]:
        return [c for _, c in self.applied]


class SimCluster:
    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 1,
        config: RaftConfig | None = None,
        base_delay: float = 0.002,
        jitter: float = 0.5,
        drop_rate: float = 0.0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.hub = InMemoryHub()
        self.config = config or FAST
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.net_opts = {"base_delay": base_delay, "jitter": jitter, "drop_rate": drop_rate}
        self.storages: dict[str, MemoryStorage] = {i: MemoryStorage() for i in self.ids}
        self.machines: dict[str, ListMachine] = {}
        self.nodes: dict[str, RaftNode] = {}
        self.networks: dict[str, InMemoryNetwork] = {}

    def _make(self, node_id: str, peers: list[str]) -> RaftNode:
        net = InMemoryNetwork(
            node_id, hub=self.hub, seed=self.rng.randrange(2**32), **self.net_opts
        )
        machine = ListMachine()
        node = RaftNode(
            node_id,
            peers,
            net,
            self.storages.setdefault(node_id, MemoryStorage()),
            machine,
            self.config,
            rng=random.Random(self.rng.randrange(2**32)),
        )
        self.networks[node_id], self.machines[node_id], self.nodes[node_id] = net, machine, node
        return node

    async def start(self) -> None:
        for node_id in self.ids:
            await self._make(node_id, self.ids).start()

    async def stop(self) -> None:
        for node in self.nodes.values():
            await node.stop()

    async def crash(self, node_id: str, *, lose_unsynced: bool = True) -> None:
        await self.nodes[node_id].stop()
        if lose_unsynced:
            self.storages[node_id].crash()

    async def restart(self, node_id: str, peers: list[str] | None = None) -> RaftNode:
        node = self._make(node_id, peers or self.ids)
        await node.start()
        return node

    def running(self) -> list[RaftNode]:
        return [n for n in self.nodes.values() if n._running]

    def leaders(self) -> list[RaftNode]:
        return [n for n in self.running() if n.role is Role.LEADER]

    async def wait_leader(self, timeout: float = 10.0, among: list[str] | None = None) -> RaftNode:
        async with asyncio.timeout(timeout):
            while True:
                cands = [n for n in self.leaders() if among is None or n.node_id in among]
                if cands:
                    return max(cands, key=lambda n: n.current_term)
                await asyncio.sleep(0.01)

    async def propose(self, command: bytes, timeout: float = 10.0) -> Any:
        """Propose through whoever is leader, retrying on leader changes."""
        async with asyncio.timeout(timeout):
            while True:
                leader = await self.wait_leader(timeout)
                try:
                    return await leader.propose(command, timeout=1.0)
                except Exception:
                    await asyncio.sleep(0.05)

    async def wait_applied(
        self, index: int, ids: list[str] | None = None, timeout: float = 10.0
    ) -> None:
        async with asyncio.timeout(timeout):
            while any(self.nodes[i].last_applied < index for i in (ids or self.ids)):
                await asyncio.sleep(0.01)

    def check_applied_prefixes(self) -> None:
        """Safety: every pair of state machines applied the same sequence (one a prefix)."""
        seqs = [m.applied for m in self.machines.values()]
        for a in seqs:
            for b in seqs:
                n = min(len(a), len(b))
                assert a[:n] == b[:n], f"state machines diverged (seed {self.seed})"
