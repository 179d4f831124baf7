"""The meta group over real HTTP: the map replicated, a store joining and filled by the meta
leader's driver, a drain, a store down too long replaced, refusals, concurrent registrations,
and a meta group without a quorum costing the data groups nothing (docs/sharding.md) — and the
meta group's own replicas moving: the meta leader's store drained while clients write, a store
crashed and restarted mid-move (every key's history checked linearizable); a dead store's meta
replica replaced, and that replica, restarted, deleted and never voting; a meta group
bootstrapped short of its replication filled by a store that joins."""

from __future__ import annotations

import asyncio
import functools
import random
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from raftcache.cache.service import CacheService
from raftcache.network.groups import store_of
from raftcache.network.hub import InMemoryHub
from raftcache.network.interface import NetworkInterface
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.raft.errors import NotLeaderError, ProposalDroppedError
from raftcache.server.context import ServerSettings
from raftcache.sharding.clustermap import ClusterMap, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.storage.memory import MemoryStorage
from raftcache.store import Store, group_id
from raftcache.store.agent import MetaAgent
from raftcache.store.driver import LazyRequester, Request
from raftcache.store.layout import ShardLayout
from raftcache.store.ledger import ReplicaLedger
from raftcache.store.meta import first_map
from raftcache.store.store import META_GROUP
from raftcache.testing.history import HistoryRecorder
from tests.raft.read_sweep import check_reads
from tests.raft.store_faults import READ_REFUSED, WRITE_NOT_DONE, recorded, sweep_seeds
from tests.server.cluster import free_ports
from tests.store.stores_http import FAST_RAFT, StoreServer, bootstrap_placement, serve_store

GROUPS = 4


@dataclass
class Disk:
    """A store's storages and ledger, kept across its restarts (as its data directory is)."""

    ledger: ReplicaLedger
    storages: dict[tuple[str, str], MemoryStorage] = field(default_factory=dict)

    def storage(self, gid: str) -> MemoryStorage:
        """The storage of this store's current replica of ``gid`` (a new incarnation, a new
        empty one)."""
        record = self.ledger.record(gid)
        replica = record.replica if record is not None else self.ledger.store_id
        return self.storages.setdefault((gid, replica), MemoryStorage())


@dataclass
class MetaCluster:
    """Stores with meta agents, each with its own address book (as ``serve`` makes them)."""

    groups: int
    meta: tuple[str, ...]
    placement: dict[str, list[str]]
    urls: dict[str, str]
    down_after_s: float
    #: A store's Raft transport (None: an ``HttpNetwork`` on its port, as ``serve`` runs it).
    network: Callable[[str], NetworkInterface] | None = None
    #: Wraps a store's agent's requests to the other stores (a test's faults on them).
    wrap: Callable[[str, Request], Request] | None = None
    #: The agents' monotonic clock (their drivers' down timers).
    clock: Callable[[], float] = time.monotonic
    running: dict[str, StoreServer] = field(default_factory=dict)
    #: Each store's placement and address book when first added: what a restart starts from.
    shapes: dict[str, tuple[dict[str, list[str]], dict[str, str]]] = field(default_factory=dict)
    requesters: list[LazyRequester] = field(default_factory=list)
    disks: dict[str, Disk] = field(default_factory=dict)
    #: What each store's agent last reported learning (``on_learn``: URLs, meta stores).
    learnt: dict[str, tuple[dict[str, str], tuple[str, ...]]] = field(default_factory=dict)
    #: Stores whose agent called ``on_learn`` on the event loop's thread (it must not: in
    #: ``serve`` it writes and syncs KNOWN).
    learnt_on_loop: set[str] = field(default_factory=set)

    def _learn(self, sid: str, urls: Mapping[str, str], meta: tuple[str, ...]) -> None:
        if threading.current_thread() is threading.main_thread():
            self.learnt_on_loop.add(sid)
        self.learnt[sid] = (dict(urls), meta)

    def agent_for(self, sid: str) -> Callable[[Store], MetaAgent]:
        def make(store: Store) -> MetaAgent:
            requester = LazyRequester(
                store.addresses, client_token=None, cluster_token=None, timeout_s=3.0
            )
            self.requesters.append(requester)
            return MetaAgent(
                store,
                StoreInfo(sid, f"host-{sid}", self.urls[sid]),
                request=requester if self.wrap is None else self.wrap(sid, requester),
                first=lambda: first_map(self.groups, 3, self.placement, self.urls, self.meta),
                down_after_s=self.down_after_s,
                interval_s=0.2,
                clock=self.clock,
                on_learn=functools.partial(self._learn, sid),
            )

        return make

    async def add(
        self, sid: str, port: int, placement: Mapping[str, Sequence[str]], book: dict[str, str]
    ) -> StoreServer:
        disk = self.disks.setdefault(sid, Disk(ReplicaLedger(sid, None)))
        self.shapes.setdefault(sid, ({g: list(s) for g, s in placement.items()}, dict(book)))
        server = await serve_store(
            sid, port, book, ServerSettings(peer_urls=book, leader_wait_s=3.0),
            groups=self.groups, placement=placement, peer_addresses=book, meta=self.meta,
            agent=self.agent_for(sid), storage=disk.storage, ledger=disk.ledger,
            network=None if self.network is None else self.network(sid),
        )  # fmt: skip
        self.running[sid] = server
        return server

    async def restart(self, sid: str) -> StoreServer:
        """Start ``sid`` again from its disk, on its port, as it was first started (a
        bootstrap store with the bootstrap placement, one that joined with its layout's)."""
        port = int(self.urls[sid].rsplit(":", 1)[1])
        placement, book = self.shapes.get(sid, (self.placement, self.urls))
        server = await self.add(sid, port, placement, dict(book))
        await server.store.start()
        assert server.agent is not None
        server.agent.start()
        return server

    def meta_leader(self) -> Store | None:
        """The live store whose meta replica leads (the highest term's)."""
        leaders = [
            s
            for s in self.live().values()
            if s.meta is not None and s.meta.node.role is Role.LEADER
        ]
        return max(leaders, key=lambda s: s.meta.node.current_term if s.meta else 0, default=None)

    def live(self) -> dict[str, Store]:
        return {s: r.store for s, r in self.running.items() if r.up}

    def agent(self, sid: str) -> MetaAgent:
        agent = self.running[sid].agent
        assert agent is not None
        return agent

    async def map_of(self, sid: str) -> ClusterMap:
        """The map through ``sid`` (linearizable), once the first meta leader wrote it."""
        async with asyncio.timeout(30):
            while True:
                try:
                    cmap = await self.agent(sid).read("linearizable")
                except Exception:  # no meta leader yet
                    cmap = None
                if cmap is not None:
                    return cmap
                await asyncio.sleep(0.1)

    def leader(self, gid: str) -> Store | None:
        for store in self.live().values():
            replica = store.replicas.get(gid)
            if replica is not None and replica.node.role is Role.LEADER:
                return store
        return None


async def _start(
    ids: Sequence[str],
    *,
    meta: Sequence[str],
    down_after_s: float = 300.0,
    spare: int = 1,
    groups: int = GROUPS,
    **knobs: Any,
) -> tuple[MetaCluster, list[int]]:
    """``ids`` started with their agents; ``knobs``: ``MetaCluster``'s optional fields."""
    ports = free_ports(len(ids) + spare)
    urls = {s: f"http://127.0.0.1:{p}" for s, p in zip(ids, ports, strict=False)}
    placement = bootstrap_placement(ids, groups)
    cluster = MetaCluster(groups, tuple(meta), placement, urls, down_after_s, **knobs)
    for sid, port in zip(ids, ports, strict=False):
        await cluster.add(sid, port, cluster.placement, dict(urls))
    await asyncio.gather(*(r.store.start() for r in cluster.running.values()))
    for r in cluster.running.values():
        assert r.agent is not None
        r.agent.start()
    return cluster, ports[len(ids) :]


async def _stop(cluster: MetaCluster) -> None:
    for r in cluster.running.values():
        if r.up:
            await r.stop()
    for requester in cluster.requesters:
        await requester.close()


@pytest.fixture
async def three() -> AsyncIterator[tuple[MetaCluster, list[int]]]:
    cluster, spare = await _start(["s1", "s2", "s3"], meta=["s1", "s2", "s3"], spare=1)
    try:
        yield cluster, spare
    finally:
        await _stop(cluster)


async def _until(check: Callable[[], object], timeout_s: float = 60.0, what: str = "") -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if await check() if asyncio.iscoroutinefunction(check) else check():
                    return
            except (AssertionError, LookupError):
                pass
            await asyncio.sleep(0.1)


async def remove(session: aiohttp.ClientSession, url: str, store: str) -> None:
    """Mark ``store`` removed; while a group is between leaders (the driver balancing) the
    meta leader cannot confirm it holds nothing and refuses: ask again."""
    async with asyncio.timeout(30):
        while True:
            async with session.put(
                f"{url}/raft/meta/stores/{store}", json={"state": "removed"}
            ) as answer:
                text = await answer.text()
                if answer.status == 200:
                    return
                assert answer.status == 409, text
                assert "has no leader now" in text, text
            await asyncio.sleep(0.2)


async def _write(cluster: MetaCluster, keys: Sequence[str], prefix: str) -> dict[str, bytes]:
    written = {}
    for key in keys:
        some = next(iter(cluster.live().values()))
        gid = some.group_of(key)
        value = f"{prefix}-{key}".encode()
        async with asyncio.timeout(20):
            while True:  # the driver may be moving the group's leadership just now
                leader = cluster.leader(gid)
                try:
                    if leader is not None:
                        await leader.replicas[gid].service.set(key, value)
                        break
                except (NotLeaderError, ProposalDroppedError, KeyError):
                    pass
                await asyncio.sleep(0.05)
        written[key] = value
    return written


async def _read_all(url: str, written: Mapping[str, bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for key, value in written.items():
            async with session.get(f"{url}/v1/keys/{key}") as answer:
                assert answer.status == 200, (key, await answer.text())
                assert await answer.read() == value, key


async def test_a_store_joins_is_filled_then_one_drains(
    three: tuple[MetaCluster, list[int]],
) -> None:
    cluster, spare = three
    await _until(lambda: all(cluster.leader(group_id(g)) for g in range(GROUPS)))
    first = await cluster.map_of("s2")  # through the meta leader, from any store
    assert sorted(first.stores) == ["s1", "s2", "s3"]
    assert all(len(p.voters) == 3 for p in first.placements)
    written = await _write(cluster, [f"k{i}" for i in range(40)], "a")

    # s4 joins as `serve --join` makes it: the map's layout, no replica, then registered.
    url4 = f"http://127.0.0.1:{spare[0]}"
    cluster.urls["s4"] = url4
    layout = ShardLayout.joining(first, cluster.meta)
    book = {**layout.urls, "s4": url4}
    s4 = await cluster.add("s4", spare[0], layout.placement, book)
    assert s4.store.replicas == {}
    await s4.store.start()
    assert s4.agent is not None
    s4.agent.start()

    async def filled() -> bool:
        cmap = await cluster.map_of("s1")
        replicas, leaders = cmap.replica_counts(), cmap.leader_counts()
        return (
            cmap.stores["s4"].host == "host-s4"
            and replicas["s4"] == 3
            and max(replicas.values()) - min(replicas.values()) <= 1
            and max(leaders.values()) - min(leaders.values()) <= 1
            and len(s4.store.replicas) == 3
        )

    await _until(filled, 90, "s4 filled")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url4}/v1/status") as answer:
            meta = (await answer.json())["meta"]
        assert meta["voters"] == ["s1", "s2", "s3"]
        assert meta["hosted"] is False
        assert meta["map_version"] >= first.version
        async with session.get(f"{cluster.urls['s1']}/v1/status") as answer:
            meta = (await answer.json())["meta"]
        assert meta["hosted"] is True
        assert meta["role"] in ("leader", "follower")
        assert meta["error"] is None
    assert all(r.node.node_id.startswith("s4.") for r in s4.store.replicas.values())
    for store in cluster.live().values():  # every store learnt s4's address from the map
        assert store.addresses["s4"] == url4
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{cluster.urls['s1']}/dashboard/cluster.json") as answer,
    ):
        shown = {row["id"]: row["reachable"] for row in (await answer.json())["nodes"]}
    # One row per store (not per replica id), the store that joined polled like the others.
    assert shown == {"s1": True, "s2": True, "s3": True, "s4": True}
    await _read_all(url4, written)

    # Drained through s1 while it is written to, then removed for good.
    written.update(await _write(cluster, [f"k{i}" for i in range(40, 60)], "b"))
    url1 = cluster.urls["s1"]
    async with aiohttp.ClientSession() as session:
        # Removing a store a configuration still names is refused (the groups are asked,
        # not the map, which only says what the driver last saw).
        async with asyncio.timeout(30):
            while True:
                async with session.put(
                    f"{url1}/raft/meta/stores/s4", json={"state": "removed"}
                ) as a:
                    assert a.status == 409
                    error = (await a.json())["error"]
                if "drain it first" in error:
                    break
                assert "has no leader now" in error, error
                await asyncio.sleep(0.2)
        async with session.put(
            f"{url1}/raft/meta/stores/s4", json={"state": "decommissioning"}
        ) as answer:
            assert answer.status == 200, await answer.text()
        await _until(lambda: s4.store.replicas == {}, 90, "s4 drained")
        await remove(session, url1, "s4")
        cmap = await cluster.map_of("s3")
        assert cmap.stores["s4"].state is StoreState.REMOVED
        # s2 holds a meta replica and every store that is up holds one already: nothing can
        # take it, so draining s2 is refused naming why (and removing it, before a drain).
        for state, why in (("decommissioning", "no other store can take it"),
                           ("removed", "drain it first")):  # fmt: skip
            async with session.put(f"{url4}/raft/meta/stores/s2", json={"state": state}) as a:
                assert a.status == 409
                assert why in (await a.json())["error"]
        async with session.put(f"{url4}/raft/meta/stores/s3", json={"state": "gone"}) as a:
            assert a.status == 400
        for bad in (
            {"id": "s9.1", "host": "h", "http_url": "http://127.0.0.1:1"},
            {"id": "s9", "host": "h", "http_url": "ftp://127.0.0.1:1"},
            {"id": "s9", "host": "h", "http_url": "http://127.0.0.1:1", "extra": 1},
        ):
            async with session.post(f"{url4}/raft/meta/stores", json=bad) as a:
                assert a.status == 400, bad
    await _read_all(url4, written)  # a drained store serves by forwarding
    await _read_all(cluster.urls["s2"], written)


async def test_registrations_racing_on_every_store_are_all_kept(
    three: tuple[MetaCluster, list[int]],
) -> None:
    """The map is one key written compare-and-set: 12 registrations sent at once through the
    three stores (two of them forwarding) must all land, none overwriting another."""
    cluster, _ = three
    await _until(lambda: cluster.agent("s1").map is not None)
    before = await cluster.map_of("s1")
    async with aiohttp.ClientSession() as session:

        async def register(i: int) -> int:
            url = cluster.urls[f"s{i % 3 + 1}"]
            body = {"id": f"x{i}", "host": f"hx{i}", "http_url": f"http://127.0.0.1:{1000 + i}"}
            async with session.post(f"{url}/raft/meta/stores", json=body) as answer:
                return answer.status

        statuses = await asyncio.gather(*(register(i) for i in range(12)))
    assert statuses == [200] * 12
    after = await cluster.map_of("s3")
    assert {f"x{i}" for i in range(12)} <= set(after.stores)
    assert after.version >= before.version + 12
    assert after.stores["x5"].http_url == "http://127.0.0.1:1005"

    # A store's nonce is its identity: another process with the same id is refused, the
    # same store at a new address is not.
    url = cluster.urls["s2"]
    first = {"id": "y1", "host": "hy", "http_url": "http://127.0.0.1:2001", "nonce": "aa"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/raft/meta/stores", json=first) as answer:
            assert answer.status == 200
        other = {**first, "http_url": "http://127.0.0.1:2002", "nonce": "bb"}
        async with session.post(f"{url}/raft/meta/stores", json=other) as answer:
            assert answer.status == 409
            assert "another process" in (await answer.json())["error"]
        moved = {**first, "http_url": "http://127.0.0.1:2003"}
        async with session.post(f"{url}/raft/meta/stores", json=moved) as answer:
            assert answer.status == 200
    cmap = await cluster.map_of("s1")
    assert cmap.stores["y1"].http_url == "http://127.0.0.1:2003"
    assert cmap.stores["y1"].nonce == "aa"


async def test_a_store_down_too_long_is_replaced() -> None:
    cluster, _ = await _start(
        ["s1", "s2", "s3", "s4"], meta=["s1", "s2", "s3"], down_after_s=1.5, spare=0
    )
    try:
        await _until(lambda: all(cluster.leader(group_id(g)) for g in range(GROUPS)))
        written = await _write(cluster, [f"k{i}" for i in range(30)], "a")
        held = list(cluster.running["s4"].store.replicas)
        assert held  # 12 replicas over 4 stores: s4 holds some
        await cluster.running["s4"].stop()  # down, and stays down

        def replaced() -> bool:
            for g in range(GROUPS):
                leader = cluster.leader(group_id(g))
                if leader is None:
                    return False
                node = leader.replicas[group_id(g)].node
                stores = {store_of(v) for v in node.members}
                if "s4" in stores or len(stores) != 3 or node.learners:
                    return False
            return True

        await _until(replaced, 90, "s4's replicas replaced")
        cmap = await cluster.map_of("s1")
        assert cmap.groups_of("s4") == []
        await _read_all(cluster.urls["s1"], written)
    finally:
        await _stop(cluster)


async def test_without_a_meta_quorum_data_groups_keep_serving() -> None:
    """Meta on s1, s2, s3; both data groups keep a majority on s3, s4 when s1 and s2 stop."""
    ids = ["s1", "s2", "s3", "s4"]
    cluster, _ = await _start(ids, meta=["s1", "s2", "s3"], spare=0)
    try:
        await _until(lambda: all(cluster.leader(group_id(g)) for g in range(GROUPS)))
        await _until(lambda: cluster.agent("s4").map is not None)
        survivors = [
            g for g in range(GROUPS) if len(set(cluster.placement[group_id(g)]) & {"s3", "s4"}) >= 2
        ]
        assert survivors  # the bootstrap placement puts some group on s3 and s4
        await cluster.running["s1"].stop()
        await cluster.running["s2"].stop()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{cluster.urls['s4']}/raft/meta/map") as answer:
                assert answer.status == 503, await answer.text()
            # The last map the agent read (it may have read a newer one while the meta
            # group still had its quorum: the driver records what it observes).
            kept = cluster.agent("s4").map
            for g in survivors:
                gid = group_id(g)
                await _until(lambda: cluster.leader(gid) is not None, 30)  # noqa: B023
                key = next(
                    k for k in (f"q{i}" for i in range(500))
                    if cluster.live()["s4"].group_of(k) == group_id(g)
                )  # fmt: skip
                async with session.put(f"{cluster.urls['s4']}/v1/keys/{key}", data=b"v") as a:
                    assert a.status == 200, await a.text()
                async with session.get(f"{cluster.urls['s3']}/v1/keys/{key}") as a:
                    assert a.status == 200
                    assert await a.read() == b"v"
        # The operator's command refuses rather than run a driver of its own beside it.
        drain = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "raftcache", "store", "drain", "s4",
            "--endpoints", cluster.urls["s4"], "--deadline", "5",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(drain.communicate(), timeout=60)
        assert drain.returncode == 3, err.decode()
        assert b"cannot be read now" in err
        assert cluster.agent("s4").map == kept  # routing keeps the last map
        assert cluster.agent("s4").last_error is not None
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{cluster.urls['s4']}/v1/status") as answer,
        ):
            assert (await answer.json())["meta"]["error"] is not None
    finally:
        await _stop(cluster)


# --- the meta group's own replicas move --------------------------------------------------------

MOVE_KEYS = tuple(f"m{i}" for i in range(8))


def _meta_config(cluster: MetaCluster) -> tuple[set[str], set[str]] | None:
    """(voter stores, learner stores) of the meta group as its leader's configuration names
    them (None without a meta leader)."""
    leader = cluster.meta_leader()
    if leader is None or leader.meta is None:
        return None
    node = leader.meta.node
    return {store_of(v) for v in node.members}, {store_of(v) for v in node.learners}


def _settled_without(cluster: MetaCluster, gone: str) -> bool:
    """Every group, the meta group too, led and on three stores none of which is ``gone``."""
    config = _meta_config(cluster)
    if config is None or gone in config[0] or config[1] or len(config[0]) != 3:
        return False
    for g in range(cluster.groups):
        leader = cluster.leader(group_id(g))
        if leader is None:
            return False
        node = leader.replicas[group_id(g)].node
        stores = {store_of(v) for v in node.members}
        if gone in stores or len(stores) != 3 or node.learners:
            return False
    return True


def _recorded_meta(cluster: MetaCluster, sid: str) -> set[str] | None:
    """The meta group's voters as the last map ``sid``'s agent read records them."""
    cmap = cluster.agent(sid).map
    return None if cmap is None or cmap.meta is None else set(cmap.meta.voters)


@dataclass
class Clients:
    """Clients writing and reading (linearizably) through each key's group leader, every
    operation recorded for the checker."""

    cluster: MetaCluster
    rec: HistoryRecorder = field(
        default_factory=lambda: HistoryRecorder(asyncio.get_running_loop().time)
    )
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    ok: int = 0

    async def run(self, cid: int, rng: random.Random) -> None:
        gen, n = 0, 0
        while not self.stop.is_set():
            key = rng.choice(MOVE_KEYS)
            leader = self.cluster.leader(next(iter(self.cluster.live().values())).group_of(key))
            replica = None if leader is None else leader.replicas.get(leader.group_of(key))
            if replica is None:
                await asyncio.sleep(0.02)
                continue
            process = cid * 10_000 + gen
            if rng.random() < 0.5:
                n += 1
                value = f"{cid}-{n}"
                write = functools.partial(_write_one, replica.service, key, value)
                done = await recorded(self.rec, process, "write", key, value, write, WRITE_NOT_DONE)
            else:
                read = functools.partial(_read_one, replica.service, key)
                done = await recorded(
                    self.rec, process, "read_index", key, None, read, READ_REFUSED
                )
            self.ok += done is True
            gen += 0 if done is not None else 1
            await asyncio.sleep(rng.uniform(0.005, 0.02))


async def _write_one(service: CacheService, key: str, value: str) -> int:
    return await service.set(key, value.encode())


async def _read_one(service: CacheService, key: str) -> str | None:
    item = await service.get(key)
    return None if item is None else item.value.decode()


@pytest.mark.sweep
@pytest.mark.parametrize("seed", sweep_seeds(3))
async def test_draining_the_meta_leaders_store_while_writing_with_a_crash(seed: int) -> None:
    """The store leading the meta group is drained — its meta replica moves (learner on s4,
    promoted, meta leadership transferred away, then removed by the next leader's driver) with
    its data replicas — while clients write, and one store (any, the drained one included) is
    crashed mid-move and restarted from its disk. Every key's history stays linearizable; the
    drained store's meta replica is tombstoned and, restarted, not started again; the stores
    find the meta group where it moved."""
    rng = random.Random(seed)
    ids = ["s1", "s2", "s3", "s4"]
    cluster, _ = await _start(ids, meta=["s1", "s2", "s3"], spare=0, groups=2)
    clients = Clients(cluster)
    tasks: list[asyncio.Task[None]] = []
    try:
        await _until(lambda: cluster.meta_leader() is not None and all(
            cluster.agent(s).map is not None for s in ids), 20)  # fmt: skip
        leader = cluster.meta_leader()
        assert leader is not None
        drained = leader.store_id
        tasks = [asyncio.create_task(clients.run(i, random.Random(rng.random()))) for i in range(3)]
        other = next(s for s in ids if s != drained)
        async with (  # through a store that forwards
            aiohttp.ClientSession() as session,
            session.put(
                f"{cluster.urls[other]}/raft/meta/stores/{drained}",
                json={"state": "decommissioning"},
            ) as answer,
        ):
            assert answer.status == 200, await answer.text()

        async def crash() -> str:
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            victim = rng.choice(ids)
            await cluster.running[victim].stop()
            await asyncio.sleep(rng.uniform(0.3, 0.8))
            await cluster.restart(victim)
            return victim

        victim = await crash()
        await _until(lambda: _settled_without(cluster, drained), 30, "drained")
        gone = cluster.running[drained].store
        # A replica leaves the store before it is stopped and tombstoned (``remove_replica``):
        # wait for the meta replica's tombstone too, checked below.
        ledger = cluster.disks[drained].ledger
        await _until(
            lambda: gone.meta is None and not gone.replicas and ledger.tombstones(META_GROUP), 10
        )
        clients.stop.set()
        await asyncio.gather(*tasks)
        config = _meta_config(cluster)
        assert config is not None
        assert config[0] == {s for s in ids if s != drained}, victim
        # The drained store's bootstrap meta replica is tombstoned: restarted, it hosts none.
        assert cluster.disks[drained].ledger.tombstones(META_GROUP) == [drained]
        await cluster.running[drained].stop()
        again = await cluster.restart(drained)
        assert again.store.meta is None
        # The map records where the meta replicas are now; the drained store's agent learns
        # it (from the stores it knows), and looks there for the meta leader.
        await _until(lambda: _recorded_meta(cluster, drained) == config[0], 10)
        assert set(again.store.meta_voters) == config[0]
        assert set(cluster.learnt[drained][1]) == config[0]  # what `serve` keeps (KNOWN)
        assert _meta_config(cluster) == config  # the restarted store did not come back
        await _finds_the_meta_leader(cluster, again.store)
    finally:
        clients.stop.set()
        for task in tasks:
            task.cancel()
        await _stop(cluster)
    assert clients.ok > 0
    result = check_reads(clients.rec.history())
    assert result.ok, f"seed {seed}: {result.explain()}"


async def _finds_the_meta_leader(cluster: MetaCluster, store: Store) -> None:
    """``store`` (holding no meta replica, its agent stopped) reaches the meta leader when told
    only of a meta follower — through the follower's hint, asking no one else — and when told
    only of itself (it asks every store it knows)."""
    await cluster.agent(store.store_id).stop()
    leader = cluster.meta_leader()
    assert leader is not None
    config = _meta_config(cluster)
    assert config is not None
    follower = next(s for s in sorted(config[0]) if s != leader.store_id)
    asked: list[str] = []
    requester = LazyRequester(store.addresses, client_token=None, cluster_token=None)
    cluster.requesters.append(requester)

    async def recording(method: str, target: str, path: str, body: Any) -> tuple[int, Any]:
        asked.append(target)
        return await requester(method, target, path, body)

    lookup = MetaAgent(
        store, StoreInfo(store.store_id, "h", cluster.urls[store.store_id]),
        request=recording,
        first=lambda: first_map(cluster.groups, 3, cluster.placement, cluster.urls, cluster.meta),
    )  # fmt: skip
    store.meta_voters = (follower,)
    assert await lookup.read("linearizable") is not None
    assert asked == [follower, leader.store_id]
    store.meta_voters = (store.store_id,)
    assert await lookup.read("linearizable") is not None


async def test_a_dead_stores_meta_replica_is_replaced_and_never_votes_again() -> None:
    """A meta follower's store stays down past --store-down-after: its meta replica is
    removed (the meta group keeps its quorum) and replaced on s4. Restarted, the store still
    holds its old meta replica — removed while it was down, so no tombstone — which must never
    lead nor be counted a voter again; the driver deletes it (tombstoned)."""
    ids = ["s1", "s2", "s3", "s4"]
    cluster, _ = await _start(ids, meta=["s1", "s2", "s3"], spare=0, groups=2, down_after_s=1.0)
    try:
        await _until(lambda: cluster.meta_leader() is not None, 20)
        leader = cluster.meta_leader()
        assert leader is not None
        dead = next(s for s in ("s1", "s2", "s3") if s != leader.store_id)
        await cluster.running[dead].stop()
        await _until(lambda: _settled_without(cluster, dead), 30, "replaced")
        assert cluster.running["s4"].store.meta is not None
        await _until(lambda: _recorded_meta(cluster, "s4") == set(ids) - {dead}, 10)
        back = await cluster.restart(dead)
        assert back.store.meta is not None  # not tombstoned: it never heard of its removal
        old = back.store.meta

        def deleted() -> bool:
            assert old.node.role is not Role.LEADER  # it never leads again
            config = _meta_config(cluster)
            assert config is None or dead not in config[0] | config[1]
            return back.store.meta is None

        await _until(deleted, 20, "orphan deleted")
        assert cluster.disks[dead].ledger.tombstones(META_GROUP) == [dead]
        await cluster.running[dead].stop()
        again = await cluster.restart(dead)
        assert again.store.meta is None
    finally:
        await _stop(cluster)


async def test_a_meta_group_short_of_its_replication_is_filled_by_a_joining_store() -> None:
    """Bootstrapped on two stores (meta on both, replication 3): s3 joins, and the meta leader's
    driver adds a meta replica there, as it fills the data groups."""
    cluster, spare = await _start(["s1", "s2"], meta=["s1", "s2"], spare=1, groups=2)
    try:
        first = await cluster.map_of("s1")
        assert first.meta is not None
        assert first.meta.voters == ("s1", "s2")
        url3 = f"http://127.0.0.1:{spare[0]}"
        cluster.urls["s3"] = url3
        layout = ShardLayout.joining(first, cluster.meta)
        s3 = await cluster.add("s3", spare[0], layout.placement, {**layout.urls, "s3": url3})
        assert s3.store.meta is None
        await s3.store.start()
        assert s3.agent is not None
        s3.agent.start()
        await _until(lambda: _meta_config(cluster) == ({"s1", "s2", "s3"}, set()), 30)
        assert s3.store.meta is not None
        assert s3.store.meta.node.node_id == "s3.1"  # a new incarnation, never the store id

        async def recorded_meta() -> bool:
            meta = (await cluster.map_of("s2")).meta
            return meta is not None and meta.voters == ("s1", "s2", "s3")

        await _until(recorded_meta, 10)

        # The meta leader's own replica is never removed by a membership request (it hands
        # leadership over first); a store that does not lead answers 503 naming the leader.
        leader = cluster.meta_leader()
        assert leader is not None
        assert leader.meta is not None
        node = leader.meta.node
        assert node.core is not None
        follower = next(s for s in ("s1", "s2", "s3") if s != leader.store_id)
        async with aiohttp.ClientSession() as session:
            path = f"/raft/meta/members/{node.node_id}?config_index={node.core.config_index}"
            async with session.delete(cluster.urls[leader.store_id] + path) as answer:
                assert answer.status == 409
                assert "transfer meta leadership away" in (await answer.json())["error"]
            async with session.delete(cluster.urls[follower] + path) as answer:
                assert answer.status == 503
                assert (await answer.json())["leader"] == leader.store_id
        assert node.node_id in node.members
    finally:
        await _stop(cluster)


def test_a_tombstoned_meta_replica_is_not_started_again() -> None:
    """The hosting rule on its own: a bootstrap meta voter whose replica was removed (its
    tombstone in the ledger) builds no meta replica; one the ledger records a later incarnation
    of hosts that one."""
    hub = InMemoryHub()
    ledger = ReplicaLedger("s1", None)
    ledger.tombstone(META_GROUP, "s1")

    def store(ledger: ReplicaLedger) -> Store:
        return Store(
            "s1", InMemoryNetwork("s1", hub=hub), groups=2,
            placement={"g0": ["s1"], "g1": ["s1"]}, storage=lambda gid: MemoryStorage(),
            config=FAST_RAFT, clock=lambda: 0.0, meta=("s1", "s2", "s3"), ledger=ledger,
        )  # fmt: skip

    assert store(ledger).meta is None
    ledger.created(META_GROUP, "s1.1", ["s2", "s3.1"])
    again = store(ledger).meta
    assert again is not None
    assert again.node.node_id == "s1.1"
    assert store(ReplicaLedger("s1", None)).meta is not None  # never removed: the bootstrap one
