"""Stores hosting many Raft groups over one real HTTP transport each (docs/sharding.md).

Four stores on loopback, four groups of three replicas placed by ``ClusterMap.bootstrap``: every
request between two stores travels on the one ``HttpNetwork`` they share, tagged with its group.
Writes go through each key's group leader; every group elects and commits on its own; a key is
held by its group's replicas only; a store that stops and restarts from its directories catches
up, and at the end every group's replicas hold the same data with no acknowledged write lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from raftcache.cache.errors import CacheError
from raftcache.network.http import HttpNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.errors import RaftError
from raftcache.sharding.clustermap import ClusterMap
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.slots import key_group
from raftcache.store import GroupNotHereError, GroupReplica, Store, group_id
from tests.server.cluster import free_ports

STORES = ("s1", "s2", "s3", "s4")
GROUPS = 4
CONFIG = RaftConfig(
    election_timeout_min=0.3,
    election_timeout_max=0.6,
    heartbeat_interval=0.05,
    tick_interval=0.01,
    rpc_timeout=0.5,
    propose_timeout=5.0,
)


class Stores:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = free_ports(len(STORES))
        self.urls = {s: f"http://127.0.0.1:{p}" for s, p in zip(STORES, ports, strict=True)}
        self.ports = dict(zip(STORES, ports, strict=True))
        cmap = ClusterMap.bootstrap([StoreInfo(s, f"host-{s}") for s in STORES], GROUPS, 3)
        self.placement = {group_id(p.group): list(p.voters) for p in cmap.placements}
        self.running: dict[str, Store] = {}

    def make(self, store_id: str) -> Store:
        network = HttpNetwork(
            store_id, port=self.ports[store_id], node_addresses=self.urls, timeout=1.0
        )
        return Store(
            store_id,
            network,
            groups=GROUPS,
            placement=self.placement,
            data_dir=self.root / store_id,
            config=CONFIG,
            clock=time.time,
        )

    async def start(self, store_id: str) -> None:
        store = self.make(store_id)
        await store.start()
        self.running[store_id] = store

    async def stop(self, store_id: str) -> None:
        await self.running.pop(store_id).stop()

    def leader(self, gid: str) -> GroupReplica | None:
        for store in self.running.values():
            replica = store.replicas.get(gid)
            if replica is not None and replica.node.role is Role.LEADER:
                return replica
        return None

    async def write(self, key: str, value: bytes, timeout_s: float = 30.0) -> int:
        gid = next(iter(self.running.values())).group_of(key)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            leader = self.leader(gid)
            if leader is not None:
                try:
                    return await leader.service.set(key, value)
                except (RaftError, CacheError, TimeoutError):
                    pass  # a leader change: ask the new one (sets are idempotent here)
            assert asyncio.get_running_loop().time() < deadline, f"no leader for {gid}"
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    cluster = Stores(tmp_path)
    try:
        await asyncio.gather(*(cluster.start(s) for s in STORES))
        yield cluster
    finally:
        for store in list(cluster.running):
            await cluster.stop(store)


async def _settle(stores: Stores, timeout_s: float = 30.0) -> None:
    """Every group led, and each running replica applied its leader's commit index."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        behind = []
        for g in range(GROUPS):
            gid = group_id(g)
            leader = stores.leader(gid)
            if leader is None:
                behind.append(f"{gid}: no leader")
                continue
            for store in stores.running.values():
                replica = store.replicas.get(gid)
                if replica is not None and replica.node.last_applied < leader.node.commit_index:
                    behind.append(f"{gid}@{store.store_id}")
        if not behind:
            return
        assert asyncio.get_running_loop().time() < deadline, behind
        await asyncio.sleep(0.05)


async def test_groups_share_one_transport_and_keep_their_keys(stores: Stores) -> None:
    acknowledged = {f"key{i}": f"v{i}".encode() for i in range(40)}
    for key, value in acknowledged.items():
        await stores.write(key, value)
    some = next(iter(stores.running.values()))
    hosted = {s: set(store.replicas) for s, store in stores.running.items()}
    assert all(len(groups) == 3 for groups in hosted.values())  # 4 groups × 3 over 4 stores
    for key in acknowledged:  # a store without the key's group says so; it never guesses
        gid = some.group_of(key)
        for store in stores.running.values():
            if gid not in store.replicas:
                with pytest.raises(GroupNotHereError, match=gid):
                    store.replica_for(key)
    # One store stops; every group keeps a majority and goes on taking writes.
    await stores.stop("s2")
    for i in range(40, 60):
        acknowledged[f"key{i}"] = f"v{i}".encode()
        await stores.write(f"key{i}", acknowledged[f"key{i}"])
    await stores.start("s2")  # the same directories: it catches up
    await _settle(stores)
    for g in range(GROUPS):
        gid = group_id(g)
        contents = []
        for store in stores.running.values():
            replica = store.replicas.get(gid)
            if replica is not None:
                items = {k: replica.machine.get(k, time.time()) for k in acknowledged}
                contents.append({k: i.value for k, i in items.items() if i is not None})
        assert len(contents) == 3
        assert contents[0] == contents[1] == contents[2], gid
        assert set(contents[0]) == {k for k in acknowledged if key_group(k, GROUPS) == g}
        for key in contents[0]:
            assert contents[0][key] == acknowledged[key]
    # Each group has its own log under its own directory.
    assert sorted(p.name for p in (stores.root / "s1" / "groups").iterdir()) == sorted(hosted["s1"])


def _persist_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("raft-persist-"))


async def test_a_store_writes_every_group_through_one_persist_thread(stores: Stores) -> None:
    # Four stores in this process, three groups each: four writer threads, not twelve.
    assert _persist_threads() == [f"raft-persist-{s}" for s in sorted(STORES)]
    for store in stores.running.values():
        threads = {r.node.persist_thread for r in store.all_replicas()}
        assert len(threads) == 1
        assert None not in threads
    acknowledged = {f"k{i}": f"v{i}".encode() for i in range(24)}  # every group written
    for key, value in acknowledged.items():
        await stores.write(key, value)
    # A stopped store's thread ends; started again, it writes through a new one and every
    # acknowledged key is still there.
    await stores.stop(STORES[0])
    assert f"raft-persist-{STORES[0]}" not in _persist_threads()
    await stores.start(STORES[0])
    assert f"raft-persist-{STORES[0]}" in _persist_threads()
    await _settle(stores)
    for key, value in acknowledged.items():
        gid = stores.running[STORES[0]].group_of(key)
        leader = stores.leader(gid)
        assert leader is not None
        item = await leader.service.get(key)
        assert item is not None
        assert item.value == value
    await stores.write("after-restart", b"x")
