"""Stores of a sharded cluster in process, each over real HTTP on loopback: the one harness.

Rule: a test that runs ``raftcache.store.Store`` objects over real ``HttpNetwork``s — each
mounted on ``create_store_app`` and served on its own loopback port by an aiohttp
``AppRunner`` (``TCPSite``, or the lean front's ``LeanSite``), as ``raftcache serve --groups``
runs a store — builds them here and keeps in its own file only what its case adds (RESP ports,
replica moves, metrics). ``loopback`` and ``bootstrap_placement`` give the addresses and the
placement, ``http_store`` one store over its network, ``serve_store`` that store on its port,
``start_stores`` all of them started, ``group_leader``/``settle`` the leaders every replica
knows, ``StoreServer.stop`` the way down, ``open_resp_ports`` a store's RESP ports. What the
copies differed in (store count, groups, placement, settings, Raft timings, front, machines,
``peer_addresses``) is a parameter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from raftcache.network.http import HttpNetwork
from raftcache.network.interface import NetworkInterface
from raftcache.network.listener import TCPSite
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.resp.server import RespServer
from raftcache.resp.topology import (
    Advertised,
    HttpStatusFetcher,
    StoreTopology,
    join_address,
    store_topology,
)
from raftcache.server.app import create_store_app
from raftcache.server.context import CONTEXT, ServerSettings
from raftcache.server.drain import DRAIN
from raftcache.server.groups import STORE_FRONT, StoreFront
from raftcache.server.lean.front import LeanSite
from raftcache.server.routes_watch import WatchSettings
from raftcache.sharding.clustermap import ClusterMap
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.slots import key_group
from raftcache.storage.memory import MemoryStorage
from raftcache.store import Store, group_id
from raftcache.store.agent import MetaAgent
from raftcache.store.ledger import ReplicaLedger
from raftcache.store.store import MachineFactory, StorageFactory
from tests.server.cluster import free_ports

#: Raft timings for loopback stores: elections settle in well under a second.
FAST_RAFT = RaftConfig(
    election_timeout_min=0.3,
    election_timeout_max=0.6,
    heartbeat_interval=0.05,
    tick_interval=0.01,
    rpc_timeout=0.5,
    propose_timeout=5.0,
)


def store_ids(count: int) -> list[str]:
    """``s1`` … ``s<count>``."""
    return [f"s{i + 1}" for i in range(count)]


def loopback(ids: Sequence[str]) -> tuple[dict[str, int], dict[str, str]]:
    """A free loopback port per store, and its URL."""
    ports = dict(zip(ids, free_ports(len(ids)), strict=True))
    return ports, {s: f"http://127.0.0.1:{p}" for s, p in ports.items()}


def bootstrap_placement(
    ids: Sequence[str], groups: int, replication: int = 3
) -> dict[str, list[str]]:
    """Group id → its stores, as a real bootstrap places them."""
    cmap = ClusterMap.bootstrap([StoreInfo(s, f"host-{s}") for s in ids], groups, replication)
    return {group_id(p.group): list(p.voters) for p in cmap.placements}


def store_settings(urls: Mapping[str, str], forward_timeout_s: float = 5.0) -> ServerSettings:
    return ServerSettings(
        peer_urls=dict(urls), leader_wait_s=3.0, forward_timeout_s=forward_timeout_s
    )


def http_store(
    sid: str,
    port: int,
    urls: Mapping[str, str],
    *,
    groups: int,
    placement: Mapping[str, Sequence[str]],
    config: RaftConfig = FAST_RAFT,
    machine: MachineFactory | None = None,
    peer_addresses: Mapping[str, str] | None = None,
    meta: Sequence[str] = (),
    storage: StorageFactory | None = None,
    ledger: ReplicaLedger | None = None,
    network: NetworkInterface | None = None,
) -> tuple[Store, NetworkInterface]:
    """Store ``sid`` over its own ``HttpNetwork`` (a new memory storage per group unless
    ``storage`` and ``ledger`` are given: a restart passes the ones it had), not started;
    ``meta``: the meta group's voters; ``network``: its Raft traffic over that instead (an
    ``InMemoryNetwork``, whose hub a test cuts and heals), the HTTP API still on ``port``."""
    if network is None:
        network = HttpNetwork(
            sid, port=port, node_addresses={k: v for k, v in urls.items() if k != sid}, timeout=1.0
        )
    store = Store(
        sid,
        network,
        groups=groups,
        placement=placement,
        storage=storage or (lambda gid: MemoryStorage()),
        machine=machine,
        config=config,
        clock=time.time,
        peer_addresses=peer_addresses,
        meta=meta,
        ledger=ledger,
    )
    return store, network


@dataclass
class StoreServer:
    """One store behind its application, listening."""

    store: Store
    app: web.Application
    runner: web.AppRunner
    site: TCPSite
    url: str
    up: bool = True
    agent: MetaAgent | None = None

    @property
    def front(self) -> StoreFront:
        return self.app[STORE_FRONT]

    @property
    def lean_served(self) -> int:
        """Requests the lean front answered (0 on the aiohttp front)."""
        site = self.site
        return site.front.served if isinstance(site, LeanSite) and site.front is not None else 0

    async def stop(self, drain_s: float | None = None) -> None:
        """Close the port, then stop the store; ``drain_s``: first wait for the requests in
        flight, as a stopping store does (it ends the watch streams)."""
        self.up = False
        if self.agent is not None:
            await self.agent.stop()
        # The listener first (``network.listener``): every connection it accepted is then on a
        # front, which closes it below.
        await self.site.stop()
        if drain_s is not None:
            await self.app[DRAIN].wait_idle(drain_s)
        if isinstance(self.site, LeanSite) and self.site.front is not None:
            self.site.front.close_connections()
        await self.runner.cleanup()
        await self.store.stop()


async def serve_store(
    sid: str,
    port: int,
    urls: Mapping[str, str],
    settings: ServerSettings,
    *,
    groups: int,
    placement: Mapping[str, Sequence[str]],
    config: RaftConfig = FAST_RAFT,
    lean: bool = False,
    machine: MachineFactory | None = None,
    peer_addresses: Mapping[str, str] | None = None,
    watch: WatchSettings | None = None,
    auto_decompress: bool = False,
    meta: Sequence[str] = (),
    agent: Callable[[Store], MetaAgent] | None = None,
    storage: StorageFactory | None = None,
    ledger: ReplicaLedger | None = None,
    network: NetworkInterface | None = None,
) -> StoreServer:
    """Store ``sid`` (not started) behind ``create_store_app``, its Raft traffic mounted on the
    same port (unless ``network`` carries it: ``http_store``), listening on ``port``;
    ``agent`` makes its meta agent (not started)."""
    store, network = http_store(
        sid, port, urls, groups=groups, placement=placement, config=config, machine=machine,
        peer_addresses=peer_addresses, meta=meta, storage=storage, ledger=ledger,
        network=network,
    )  # fmt: skip
    made = None if agent is None else agent(store)
    mount = network.mount if isinstance(network, HttpNetwork) else None
    app = create_store_app(store, settings, mount=mount, watch=watch, meta=made)
    runner = web.AppRunner(app, access_log=None, auto_decompress=auto_decompress)
    await runner.setup()
    site = (LeanSite if lean else TCPSite)(runner, "127.0.0.1", port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return StoreServer(store, app, runner, site, urls[sid], agent=made)


async def start_stores(
    ids: Sequence[str],
    *,
    groups: int,
    placement: Mapping[str, Sequence[str]] | None = None,
    forward_timeout_s: float = 5.0,
    config: RaftConfig = FAST_RAFT,
    lean: bool = False,
    machine: MachineFactory | None = None,
    peer_addresses: bool = False,
    watch: WatchSettings | None = None,
    auto_decompress: bool = False,
    each: Callable[[StoreServer], Awaitable[None]] | None = None,
) -> tuple[dict[str, str], dict[str, StoreServer]]:
    """Every store of ``ids`` served on a fresh loopback port (``each`` run once its port
    listens), then started together: their URLs and the servers. ``placement`` defaults to a
    bootstrap's (RF 3); ``peer_addresses``: each store is told the others' URLs."""
    ports, urls = loopback(ids)
    placed = bootstrap_placement(ids, groups) if placement is None else placement
    settings = store_settings(urls, forward_timeout_s)
    running: dict[str, StoreServer] = {}
    for sid, port in ports.items():
        running[sid] = await serve_store(
            sid, port, urls, settings, groups=groups, placement=placed, config=config,
            lean=lean, machine=machine, peer_addresses=urls if peer_addresses else None,
            watch=watch, auto_decompress=auto_decompress,
        )  # fmt: skip
        if each is not None:
            await each(running[sid])
    await asyncio.gather(*(r.store.start() for r in running.values()))
    return urls, running


@dataclass
class RespPorts:
    """A store's two RESP ports (plain, cluster mode) and the topology they share, which polls
    the stores' ``/v1/status``; not started (``topology.start()``)."""

    plain: RespServer
    cluster: RespServer
    topology: StoreTopology

    async def stop(self) -> None:
        await self.plain.stop()
        await self.cluster.stop()
        await self.topology.stop()


async def open_resp_ports(store: Store, app: web.Application, urls: Mapping[str, str]) -> RespPorts:
    """Listen on a plain and a cluster-mode RESP port for ``store`` (wall clock, as ``raftcache
    serve`` runs them), advertised in its application's ``/v1/status``."""
    fetcher = HttpStatusFetcher(token=None, ssl_context=None)
    topology = store_topology(
        store, Advertised(), fetcher, peer_urls=urls, refresh_s=0.1, on_stop=fetcher.close
    )
    common: dict[str, Any] = {
        "store": store,
        "clock": time.time,
        "peer_urls": urls,
        "leader_wait_s": 3.0,
        "topology": topology,
    }
    plain = RespServer(None, None, **common)
    cluster = RespServer(None, None, cluster_mode=True, **common)
    await plain.start()
    await cluster.start()
    own = Advertised(join_address("127.0.0.1", plain.port), join_address("127.0.0.1", cluster.port))
    app[CONTEXT].resp_endpoints = own.to_json()
    topology.set_own(own)
    return RespPorts(plain, cluster, topology)


@dataclass
class RunningStores:
    """Started stores (``start_stores``) and a client session: what a test of a sharded
    cluster's HTTP fronts drives. Stopped stores (``up`` false) are left out of the leaders."""

    groups: int
    running: dict[str, StoreServer]
    session: aiohttp.ClientSession
    placement: dict[str, list[str]]

    def url(self, store_id: str) -> str:
        return self.running[store_id].url

    def live(self) -> dict[str, Store]:
        return {sid: r.store for sid, r in self.running.items() if r.up}

    def leader_of(self, gid: str) -> str | None:
        return role_leader(self.live(), gid)

    async def settled(self, timeout_s: float = 15.0) -> dict[str, str]:
        """Group id → leader, once every group has a leader all its live replicas know."""
        return await settle(self.live, (group_id(g) for g in range(self.groups)), timeout_s)

    async def stop(self, drain_s: float | None = None) -> None:
        """Close the session, then stop every live store (``StoreServer.stop``)."""
        await self.session.close()
        for r in self.running.values():
            if r.up:
                await r.stop(drain_s)


def keys_of(group: int, groups: int, count: int, prefix: str = "k") -> list[str]:
    """``count`` keys of ``group`` (among ``groups``): ``<prefix>0``, ``<prefix>1``, …"""
    found: list[str] = []
    i = 0
    while len(found) < count:
        key = f"{prefix}{i}"
        if key_group(key, groups) == group:
            found.append(key)
        i += 1
    return found


def role_leader(stores: Mapping[str, Store], gid: str) -> str | None:
    """The first of ``stores`` whose replica of ``gid`` is in the leader role (known to the
    others or not)."""
    for sid, store in stores.items():
        replica = store.replicas.get(gid)
        if replica is not None and replica.node.role is Role.LEADER:
            return sid
    return None


def group_leader(stores: Mapping[str, Store], gid: str) -> tuple[str, RaftNode] | None:
    """The store leading ``gid`` and its replica's node, once every replica of ``gid`` among
    ``stores`` names that node its leader."""
    nodes = [s.replicas[gid].node for s in stores.values() if gid in s.replicas]
    for sid, store in stores.items():
        replica = store.replicas.get(gid)
        if replica is not None and replica.node.role is Role.LEADER:
            node = replica.node
            if all(n.leader_id == node.node_id for n in nodes):
                return sid, node
    return None


async def settle(
    stores: Callable[[], Mapping[str, Store]], gids: Iterable[str], timeout_s: float = 15.0
) -> dict[str, str]:
    """Group id → its leader store, once every group of ``gids`` has a leader its replicas
    know (``stores()``: the stores to look at, asked afresh each time)."""
    wanted = list(gids)
    async with asyncio.timeout(timeout_s):
        while True:
            live = stores()
            found = {gid: group_leader(live, gid) for gid in wanted}
            if all(found.values()):
                return {gid: f[0] for gid, f in found.items() if f is not None}
            await asyncio.sleep(0.02)
