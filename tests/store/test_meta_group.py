"""The meta group over real HTTP: the map replicated, a store joining and filled by the meta
leader's driver, a drain, a store down too long replaced, refusals, concurrent registrations,
and a meta group without a quorum costing the data groups nothing (docs/sharding.md)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import pytest

from raftcache.network.groups import store_of
from raftcache.raft.core import Role
from raftcache.raft.errors import NotLeaderError, ProposalDroppedError
from raftcache.server.context import ServerSettings
from raftcache.sharding.clustermap import ClusterMap, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.store import Store, group_id
from raftcache.store.agent import MetaAgent
from raftcache.store.driver import LazyRequester
from raftcache.store.layout import ShardLayout
from raftcache.store.meta import first_map
from tests.server.cluster import free_ports
from tests.store.stores_http import StoreServer, bootstrap_placement, serve_store

GROUPS = 4


@dataclass
class MetaCluster:
    """Stores with meta agents, each with its own address book (as ``serve`` makes them)."""

    groups: int
    meta: tuple[str, ...]
    placement: dict[str, list[str]]
    urls: dict[str, str]
    down_after_s: float
    running: dict[str, StoreServer] = field(default_factory=dict)
    requesters: list[LazyRequester] = field(default_factory=list)

    def agent_for(self, sid: str) -> Callable[[Store], MetaAgent]:
        def make(store: Store) -> MetaAgent:
            requester = LazyRequester(
                store.addresses, client_token=None, cluster_token=None, timeout_s=3.0
            )
            self.requesters.append(requester)
            return MetaAgent(
                store,
                StoreInfo(sid, f"host-{sid}", self.urls[sid]),
                request=requester,
                first=lambda: first_map(self.groups, 3, self.placement, self.urls),
                down_after_s=self.down_after_s,
                interval_s=0.2,
            )

        return make

    async def add(
        self, sid: str, port: int, placement: Mapping[str, Sequence[str]], book: dict[str, str]
    ) -> StoreServer:
        server = await serve_store(
            sid, port, book, ServerSettings(peer_urls=book, leader_wait_s=3.0),
            groups=self.groups, placement=placement, peer_addresses=book, meta=self.meta,
            agent=self.agent_for(sid),
        )  # fmt: skip
        self.running[sid] = server
        return server

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
    ids: Sequence[str], *, meta: Sequence[str], down_after_s: float = 300.0, spare: int = 1
) -> tuple[MetaCluster, list[int]]:
    ports = free_ports(len(ids) + spare)
    urls = {s: f"http://127.0.0.1:{p}" for s, p in zip(ids, ports, strict=False)}
    cluster = MetaCluster(GROUPS, tuple(meta), bootstrap_placement(ids, GROUPS), urls, down_after_s)
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
        # Meta voters neither drain nor leave (the meta group's replicas do not move yet).
        for state in ("decommissioning", "removed"):
            async with session.put(f"{url4}/raft/meta/stores/s2", json={"state": state}) as a:
                assert a.status == 409
                assert "meta group" in (await a.json())["error"]
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
