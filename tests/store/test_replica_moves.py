"""Replica moves between stores under store faults, every key's history checked.

Four ``Store``s over the in-memory network in virtual time, two groups of three replicas. A
group's replica moves from one store to another the way placement moves it (docs/sharding.md):
the target creates an empty replica under a new id, the group's leader adds it as a learner,
catches it up and promotes it, leadership leaves the source, the source's replica is removed
from the configuration, and only once that removal is committed does the source delete its
data (tombstoning the id). Then the replica moves *back*: the source hosts the group again under
its next incarnation (``s1.1``), never under its old id. Meanwhile stores are partitioned,
isolated, crashed and restarted (from their storages and ledgers), and clients write and read
linearizably through each key's group leader. Every key's history must be linearizable, every
group's replicas must end equal, and no acknowledged write may be lost.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.storage.memory import MemoryStorage
from raftcache.store import GroupReplica, Store, group_id
from raftcache.store.ledger import ReplicaLedger
from raftcache.testing.history import HistoryRecorder
from tests.raft.read_sweep import check_reads
from tests.raft.sim import FAST
from tests.raft.store_faults import (
    READ_REFUSED,
    WRITE_NOT_DONE,
    recorded,
    store_faults,
    sweep_seeds,
)

pytestmark = pytest.mark.looptime

STORES = ("s1", "s2", "s3", "s4")
GROUPS = 2
PLACEMENT = {"g0": ["s1", "s2", "s3"], "g1": ["s2", "s3", "s4"]}
KEYS = tuple(f"k{i}" for i in range(10))


class Stores:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.hub = InMemoryHub()
        #: (store, group, replica id) → its storage: a new replica id gets a new, empty one.
        self.storages: dict[tuple[str, str, str], MemoryStorage] = {}
        self.ledgers = {s: ReplicaLedger(s, None) for s in STORES}
        self.running: dict[str, Store] = {}

    def _storage(self, store_id: str, gid: str) -> MemoryStorage:
        record = self.ledgers[store_id].record(gid)
        replica = record.replica if record is not None else store_id
        return self.storages.setdefault((store_id, gid, replica), MemoryStorage())

    async def start(self, store_id: str) -> None:
        network = InMemoryNetwork(store_id, hub=self.hub, seed=self.rng.randrange(2**32))
        store = Store(
            store_id,
            network,
            groups=GROUPS,
            placement=PLACEMENT,
            storage=lambda gid: self._storage(store_id, gid),
            config=FAST,
            clock=time.time,
            rng=random.Random(self.rng.randrange(2**32)),
            ledger=self.ledgers[store_id],
        )
        await store.start()
        self.running[store_id] = store

    async def crash(self, store_id: str) -> None:
        self.hub.fail_node(store_id)
        await self.running.pop(store_id).stop()

    async def restart_crashed(self) -> None:
        for store_id in STORES:
            if store_id not in self.running:
                self.hub.recover_node(store_id)
                await self.start(store_id)

    def hosting(self, gid: str) -> list[GroupReplica]:
        return [s.replicas[gid] for s in self.running.values() if gid in s.replicas]

    def leader(self, gid: str) -> GroupReplica | None:
        leaders = [r for r in self.hosting(gid) if r.node.role is Role.LEADER]
        return max(leaders, key=lambda r: r.node.current_term) if leaders else None

    async def until_running(self, store_id: str) -> Store:
        while store_id not in self.running:
            await asyncio.sleep(0.05)
        return self.running[store_id]


async def with_leader(
    stores: Stores, gid: str, act: Callable[[GroupReplica], Awaitable[Any]]
) -> Any:
    """``act(leader)`` on the group's current leader, retried through elections and faults."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        leader = stores.leader(gid)
        if leader is not None:
            try:
                return await act(leader)
            except Exception:
                if loop.time() > deadline:
                    raise
        elif loop.time() > deadline:
            raise AssertionError(f"no leader of {gid}")
        await asyncio.sleep(0.1)


async def move(stores: Stores, gid: str, source: str, target: str, counts: Counter[str]) -> str:
    """Move ``gid``'s replica from ``source`` to ``target`` (docs/sharding.md, "Placement")."""
    voters = await with_leader(stores, gid, lambda r: _voters(r))
    replica = await (await stores.until_running(target)).add_replica(gid, voters)
    new_id = replica.node.node_id
    await with_leader(stores, gid, lambda r: r.node.add_member(new_id))
    counts["promoted"] += 1
    old_id = next(v for v in await with_leader(stores, gid, _voters) if v.split(".")[0] == source)

    async def remove(leader: GroupReplica) -> None:
        if leader.node.node_id == old_id:  # a leader hands over before it is removed
            await leader.node.transfer_leadership()
            raise RuntimeError("transferred: retry on the new leader")
        await leader.node.remove_member(old_id)
        core = leader.node.core
        assert core is not None
        if old_id in core.configuration.all_ids():
            raise RuntimeError("removal not applied yet")
        # Committed: the leader's commit index covers the configuration without it.
        if core.commit_index < core.config_index:
            raise RuntimeError("removal not committed yet")

    await with_leader(stores, gid, remove)
    removed = await (await stores.until_running(source)).remove_replica(gid)
    assert removed == old_id
    counts["moved"] += 1
    return new_id


async def _voters(replica: GroupReplica) -> list[str]:
    core = replica.node.core
    if core is None or replica.node.role is not Role.LEADER:
        raise RuntimeError("not the leader any more")
    return sorted(core.configuration.voters)


@dataclass
class Run:
    stores: Stores
    rec: HistoryRecorder = field(
        default_factory=lambda: HistoryRecorder(asyncio.get_running_loop().time)
    )
    counts: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, cid: int, rng: random.Random) -> None:
        gen, n = 0, 0
        while not self.stop.is_set():
            key = rng.choice(KEYS)
            gid = self.stores.running[next(iter(self.stores.running))].group_of(key)
            leader = self.stores.leader(gid)
            if leader is None:
                await asyncio.sleep(0.02)
                continue
            process = cid * 10_000 + gen
            if rng.random() < 0.5:
                n += 1
                ok = await self.write(process, leader, key, f"{cid}-{n}")
            else:
                ok = await self.read(process, leader, key)
            gen += 0 if ok else 1
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    async def write(self, process: int, leader: GroupReplica, key: str, value: str) -> bool:
        async def run() -> int:
            return await leader.service.set(key, value.encode())

        done = await recorded(self.rec, process, "write", key, value, run, WRITE_NOT_DONE)
        self.counts["write ok"] += done is True
        return done is not None

    async def read(self, process: int, leader: GroupReplica, key: str) -> bool:
        async def run() -> str | None:
            item = await leader.service.get(key)
            return None if item is None else item.value.decode()

        done = await recorded(self.rec, process, "read_index", key, None, run, READ_REFUSED)
        self.counts["read ok"] += done is True
        return done is not None


@pytest.mark.sweep
@pytest.mark.parametrize("seed", sweep_seeds(4))
async def test_a_replica_moves_away_and_back_under_store_faults(seed: int) -> None:
    stores = Stores(seed)
    for store_id in STORES:
        await stores.start(store_id)
    run = Run(stores)
    rng = random.Random(seed)
    try:
        clients = [
            asyncio.create_task(run.client(i, random.Random(rng.randrange(2**32))))
            for i in range(4)
        ]
        faults = asyncio.create_task(
            store_faults(
                random.Random(rng.randrange(2**32)), 8, STORES, stores.hub,
                crash=stores.crash, restart_crashed=stores.restart_crashed, counts=run.counts,
            )
        )  # fmt: skip
        first = await move(stores, "g0", "s1", "s4", run.counts)
        back = await move(stores, "g0", "s4", "s1", run.counts)
        await faults
        await stores.restart_crashed()
        run.stop.set()
        await asyncio.gather(*clients)

        # s4's replica was created as its first later incarnation, s1's return as its next.
        assert (first, back) == ("s4.1", "s1.1")
        assert stores.ledgers["s1"].tombstones("g0") == ["s1"]
        assert stores.ledgers["s4"].tombstones("g0") == ["s4.1"]
        record = stores.ledgers["s1"].record("g0")
        assert record is not None
        assert record.replica == "s1.1"
        leader = await with_leader(stores, "g0", lambda r: _settled(r))
        assert sorted(leader) == ["s1.1", "s2", "s3"]
        # Every hosting replica of each group holds the same data.
        await _converged(stores)
    finally:
        for store_id in list(stores.running):
            await stores.running.pop(store_id).stop()
    assert run.counts["moved"] == 2
    assert run.counts["write ok"] > 0, run.counts
    result = check_reads(run.rec.history())
    assert result.ok, f"seed {seed}: {result.explain()}\ncounts {dict(run.counts)}"


async def _settled(replica: GroupReplica) -> list[str]:
    await replica.node.read_index(1.0)
    return await _voters(replica)


async def _converged(stores: Stores) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        now = time.time()
        same = True
        for g in range(GROUPS):
            gid = group_id(g)
            contents = [
                {k: i.value for k in KEYS if (i := r.machine.get(k, now)) is not None}
                for r in stores.hosting(gid)
            ]
            same &= len(contents) == 3 and all(c == contents[0] for c in contents)
        if same:
            return
        if loop.time() > deadline:
            raise AssertionError("replicas differ")
        await asyncio.sleep(0.2)
