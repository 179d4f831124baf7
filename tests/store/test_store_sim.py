"""Stores under store-level faults in virtual time, every key's history checked.

Three ``Store`` objects (the real class: one transport and router each, four groups, a
``CacheStateMachine`` and ``CacheService`` per group) over the in-memory network. A store
crashes as a process does — every group it hosts at once, its storages kept — and restarts as a
new ``Store`` over the same storages; partitions and isolations cut all of a store's groups
together. Clients write and read (linearizable) through ``CacheService`` on each key's group
leader. Every key's history must be linearizable, and every group's replicas end equal.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.slots import key_group
from raftcache.storage.memory import MemoryStorage
from raftcache.store import GroupReplica, Store, group_id
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

STORES = ("s1", "s2", "s3")
GROUPS = 4
KEYS = tuple(f"k{i}" for i in range(12))
PLACEMENT = {group_id(g): list(STORES) for g in range(GROUPS)}


class Stores:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.hub = InMemoryHub()
        self.storages = {(s, group_id(g)): MemoryStorage() for s in STORES for g in range(GROUPS)}
        self.running: dict[str, Store] = {}

    async def start(self, store_id: str) -> None:
        network = InMemoryNetwork(store_id, hub=self.hub, seed=self.rng.randrange(2**32))
        store = Store(
            store_id,
            network,
            groups=GROUPS,
            placement=PLACEMENT,
            storage=lambda gid: self.storages[(store_id, gid)],
            config=FAST,
            clock=time.time,
            rng=random.Random(self.rng.randrange(2**32)),
        )
        await store.start()
        self.running[store_id] = store

    async def crash(self, store_id: str) -> None:
        self.hub.fail_node(store_id)
        await self.running.pop(store_id).stop()

    async def restart(self, store_id: str) -> None:
        self.hub.recover_node(store_id)
        await self.start(store_id)

    def leaders(self, gid: str) -> list[GroupReplica]:
        """Every running replica of ``gid`` that believes it leads."""
        return [
            s.replicas[gid]
            for s in self.running.values()
            if s.replicas[gid].node.role is Role.LEADER
        ]

    def leader(self, gid: str) -> GroupReplica | None:
        leaders = self.leaders(gid)
        return max(leaders, key=lambda r: r.node.current_term) if leaders else None


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
            gid = group_id(key_group(key, GROUPS))
            leader = self.stores.leader(gid)
            if leader is None:
                await asyncio.sleep(0.02)
                continue
            process = cid * 10_000 + gen
            if rng.random() < 0.5:
                n += 1
                ok = await self.write(process, leader, key, f"{cid}-{n}")
            else:  # any replica that believes it leads — a deposed one too: that is the attack
                ok = await self.read(process, rng.choice(self.stores.leaders(gid)), key)
            gen += 0 if ok else 1
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    async def write(self, process: int, leader: GroupReplica, key: str, value: str) -> bool:
        async def run() -> int:
            return await leader.service.set(key, value.encode())

        done = await recorded(self.rec, process, "write", key, value, run, WRITE_NOT_DONE)
        self.counts[f"write ok {leader.group}"] += done is True
        return done is not None

    async def read(self, process: int, leader: GroupReplica, key: str) -> bool:
        async def run() -> str | None:
            item = await leader.service.get(key)
            return None if item is None else item.value.decode()

        done = await recorded(self.rec, process, "read_index", key, None, run, READ_REFUSED)
        self.counts["read ok"] += done is True
        return done is not None

    async def nemesis(self, rng: random.Random, steps: int) -> None:
        stores = self.stores

        async def restart_crashed() -> None:
            for store_id in STORES:
                if store_id not in stores.running:
                    await stores.restart(store_id)

        await store_faults(
            rng, steps, STORES, stores.hub, crash=stores.crash, restart_crashed=restart_crashed,
            counts=self.counts,
        )  # fmt: skip


async def _settle(stores: Stores, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        behind = 0
        for g in range(GROUPS):
            gid = group_id(g)
            leader = stores.leader(gid)
            if leader is None:
                behind += 1
                continue
            await leader.node.read_index(1.0)
            target = leader.node.commit_index
            behind += sum(
                s.replicas[gid].node.last_applied < target for s in stores.running.values()
            )
        if not behind:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the groups did not settle")


@pytest.mark.sweep
@pytest.mark.parametrize("seed", sweep_seeds(6))
async def test_stores_keep_every_key_linearizable_under_store_faults(seed: int) -> None:
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
        await run.nemesis(random.Random(rng.randrange(2**32)), steps=5)
        run.stop.set()
        await asyncio.gather(*clients)
        await _settle(stores)
        now = time.time()
        for g in range(GROUPS):
            gid = group_id(g)
            contents = []
            for store in stores.running.values():
                machine = store.replicas[gid].machine
                items = {k: machine.get(k, now) for k in KEYS}
                contents.append({k: i.value for k, i in items.items() if i is not None})
            assert contents[0] == contents[1] == contents[2], f"group {gid} replicas differ"
            assert all(key_group(k, GROUPS) == g for k in contents[0])
    finally:
        for store_id in list(stores.running):
            await stores.running.pop(store_id).stop()
    assert run.counts["crash"] + run.counts["partition"] + run.counts["isolate"] == 5
    for g in range(GROUPS):
        assert run.counts[f"write ok {group_id(g)}"] > 0, run.counts
    result = check_reads(run.rec.history())
    assert result.ok, f"seed {seed}: {result.explain()}\ncounts {dict(run.counts)}"
