"""Stores of a sharded cluster in-process for client tests: real ``Store``s of G groups, each
behind ``create_store_app`` on its own loopback port, with its Raft traffic on that same port
(``HttpNetwork``), as ``raftcache serve --groups`` runs them — minus the preferred-leader
balancer, so that leaders move only when a test moves them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from raftcache.cache.machine import CacheStateMachine
from raftcache.network.http import HttpNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.server.app import create_store_app
from raftcache.server.context import ServerSettings
from raftcache.sharding.clustermap import ClusterMap
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.slots import key_group
from raftcache.storage.memory import MemoryStorage
from raftcache.store import Store, group_id
from tests.server.cluster import free_ports

CONFIG = RaftConfig(
    election_timeout_min=0.3,
    election_timeout_max=0.6,
    heartbeat_interval=0.05,
    tick_interval=0.01,
    rpc_timeout=0.5,
    propose_timeout=5.0,
)


@dataclass
class Running:
    store: Store
    runner: web.AppRunner
    url: str
    up: bool = True


@dataclass
class ShardedStores:
    groups: int
    running: dict[str, Running]
    session: aiohttp.ClientSession

    @property
    def endpoints(self) -> list[str]:
        return [r.url for r in self.running.values()]

    def url(self, store_id: str) -> str:
        return self.running[store_id].url

    def leader_of(self, gid: str) -> str | None:
        for sid, r in self.running.items():
            replica = r.store.replicas.get(gid)
            if r.up and replica is not None and replica.node.role is Role.LEADER:
                return sid
        return None

    def leaders(self) -> dict[str, str | None]:
        return {group_id(g): self.leader_of(group_id(g)) for g in range(self.groups)}

    async def settled(self, timeout_s: float = 15.0) -> dict[str, str]:
        """Group id → leader, once every group has a leader all its live replicas know."""
        async with asyncio.timeout(timeout_s):
            while True:
                leaders = self.leaders()
                if all(
                    leader is not None
                    and all(
                        r.store.replicas[gid].node.leader_id == leader
                        for r in self.running.values()
                        if r.up and gid in r.store.replicas
                    )
                    for gid, leader in leaders.items()
                ):
                    return {gid: str(leader) for gid, leader in leaders.items()}
                await asyncio.sleep(0.02)

    async def metrics(self, store_id: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a store's ``/metrics``: (name, sorted labels) → value."""
        async with self.session.get(self.url(store_id) + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def forwarded(self) -> float:
        """Requests the live stores forwarded to a group leader, all groups together."""
        total = 0.0
        for sid, r in self.running.items():
            if r.up:
                samples = await self.metrics(sid)
                total += sum(
                    v
                    for (name, _), v in samples.items()
                    if name == "raftcache_http_forwarded_total"
                )
        return total

    async def served(self, store_id: str, route: str) -> dict[str, float]:
        """``route``'s requests a store answered, by status code."""
        counts: dict[str, float] = {}
        for (name, labels), value in (await self.metrics(store_id)).items():
            found = dict(labels)
            if name == "raftcache_http_requests_total" and found.get("route") == route:
                counts[found["code"]] = counts.get(found["code"], 0.0) + value
        return counts

    async def stop_store(self, store_id: str) -> None:
        """Stop a store as a crash would look to a client: its port closes, its groups go."""
        r = self.running[store_id]
        r.up = False
        await r.runner.cleanup()
        await r.store.stop()

    async def stop(self) -> None:
        await self.session.close()
        for sid, r in self.running.items():
            if r.up:
                await self.stop_store(sid)


async def start_stores(count: int = 3, groups: int = 4) -> ShardedStores:
    """``count`` stores of ``groups`` groups (RF 3), every group with a leader."""
    ids = [f"s{i + 1}" for i in range(count)]
    ports = free_ports(count)
    urls = {s: f"http://127.0.0.1:{p}" for s, p in zip(ids, ports, strict=True)}
    cmap = ClusterMap.bootstrap([StoreInfo(s, f"host-{s}") for s in ids], groups, 3)
    placement = {group_id(p.group): list(p.voters) for p in cmap.placements}
    settings = ServerSettings(peer_urls=urls, leader_wait_s=3.0, forward_timeout_s=5.0)
    running: dict[str, Running] = {}
    for sid, port in zip(ids, ports, strict=True):
        network = HttpNetwork(sid, port=port, node_addresses=urls, timeout=1.0)
        store = Store(
            sid,
            network,
            groups=groups,
            placement=placement,
            storage=lambda gid: MemoryStorage(),
            machine=lambda gid: CacheStateMachine(),
            config=CONFIG,
            clock=time.time,
        )
        app = create_store_app(store, settings, mount=network.mount)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        running[sid] = Running(store, runner, urls[sid])
    await asyncio.gather(*(r.store.start() for r in running.values()))
    stores = ShardedStores(groups, running, aiohttp.ClientSession())
    await stores.settled()
    return stores


def keys_of(group: int, groups: int, count: int, prefix: str = "k") -> list[str]:
    """``count`` keys of ``group`` (among ``groups``)."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"{prefix}{i}"
        if key_group(key, groups) == group:
            found.append(key)
        i += 1
    return found
