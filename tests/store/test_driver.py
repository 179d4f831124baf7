"""The placement driver over real stores: a new store is filled, a store is drained.

Four in-process stores, each a ``Store`` of two groups over one real ``HttpNetwork`` mounted on
its ``create_store_app`` (the routes the driver uses: ``/raft/store/*``, ``/v1/members``,
``/v1/leader/transfer``). The groups start on s1–s3; s4 starts empty, as a store that just
joined. The driver observes, plans and steps until placement has nothing to do: the replicas
spread within one over the four stores, with no two replicas of a group on one store. Then s1
is drained: it ends holding nothing, its replicas tombstoned. Writes go on throughout, and
every acknowledged write is read back at the end from each group's leader.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from raftcache.network.groups import store_of
from raftcache.raft.core import Role
from raftcache.store import GroupReplica, Store
from raftcache.store.driver import PlacementDriver, http_requester
from tests.store.stores_http import start_stores

IDS = ("s1", "s2", "s3", "s4")
PLACEMENT = {"g0": ["s1", "s2", "s3"], "g1": ["s2", "s3", "s1"]}


@dataclass
class Cluster:
    stores: dict[str, Store]
    runners: list[web.AppRunner]
    urls: dict[str, str]

    def leader(self, gid: str) -> GroupReplica | None:
        leaders = [
            s.replicas[gid]
            for s in self.stores.values()
            if gid in s.replicas and s.replicas[gid].node.role is Role.LEADER
        ]
        return max(leaders, key=lambda r: r.node.current_term) if leaders else None

    def counts(self) -> Counter[str]:
        return Counter(s for s, st in self.stores.items() for _ in st.replicas)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    urls, running = await start_stores(
        IDS, groups=2, placement=PLACEMENT, forward_timeout_s=10.0, peer_addresses=True,
        auto_decompress=True,
    )  # fmt: skip
    try:
        yield Cluster(
            {sid: r.store for sid, r in running.items()}, [r.runner for r in running.values()], urls
        )
    finally:
        for r in running.values():
            await r.runner.cleanup()
        for r in running.values():
            await r.store.stop()


async def _writer(cluster: Cluster, stop: asyncio.Event, acked: dict[str, bytes]) -> None:
    i = 0
    while not stop.is_set():
        key = f"k{i % 40}"
        gid = cluster.stores["s2"].group_of(key)
        leader = cluster.leader(gid)
        if leader is not None:
            value = f"v{i}".encode()
            try:
                await leader.service.set(key, value)
            except Exception:  # not the leader any more, stopped, timed out: try the next
                acked.pop(key, None)  # an unknown outcome: no claim about this key
            else:
                acked[key] = value
        i += 1
        await asyncio.sleep(0.01)


async def test_the_driver_fills_a_new_store_and_drains_an_old_one(cluster: Cluster) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    acked: dict[str, bytes] = {}
    writer = asyncio.create_task(_writer(cluster, stop, acked))
    async with aiohttp.ClientSession() as session:
        driver = PlacementDriver(
            cluster.urls,
            groups=2,
            replication=3,
            request=http_requester(session, cluster.urls, client_token=None, cluster_token=None),
            clock=loop.time,
        )
        try:
            assert await driver.run(timeout_s=60)
            counts = cluster.counts()
            assert sum(counts.values()) == 6
            assert max(counts.values()) - min(counts.values()) <= 1, counts
            assert counts["s4"] >= 1  # the new store took replicas
            for gid in PLACEMENT:
                leader = cluster.leader(gid)
                assert leader is not None
                voters = leader.node.members
                assert len({store_of(v) for v in voters}) == 3, voters
            moved_in = [r.node.node_id for r in cluster.stores["s4"].replicas.values()]
            assert all(r.startswith("s4.") for r in moved_in)  # new incarnations

            driver.drain = {"s1"}
            assert await driver.run(timeout_s=60)
            assert cluster.stores["s1"].replicas == {}
            assert sorted(cluster.stores["s1"].ledger.tombstones("g0")) != []
            counts = cluster.counts()
            assert sum(counts.values()) == 6
            assert counts["s1"] == 0
        finally:
            stop.set()
            await writer
    assert len(acked) > 10
    for key, value in acked.items():
        gid = cluster.stores["s2"].group_of(key)
        leader = cluster.leader(gid)
        assert leader is not None
        item = await leader.service.get(key)
        assert item is not None
        assert item.value == value, key


async def test_a_change_planned_from_an_old_configuration_is_refused(cluster: Cluster) -> None:
    """Review finding (invariant 3): two drivers, or one acting on an old observation, could
    each commit a removal planned from the same configuration. A leader now refuses a change
    whose ``config_index`` is not its own."""
    async with aiohttp.ClientSession() as session:
        while cluster.leader("g0") is None:
            await asyncio.sleep(0.05)
        leader = cluster.leader("g0")
        assert leader is not None
        core = leader.node.core
        assert core is not None
        stale = core.config_index - 1 if core.config_index else 7
        url = cluster.urls[store_of(leader.node.node_id)]
        follower = next(v for v in leader.node.members if v != leader.node.node_id)
        async with session.delete(
            f"{url}/v1/members/{follower}?group=g0&config_index={stale}"
        ) as answer:
            assert answer.status == 409
            assert "configuration changed" in (await answer.json())["error"]
        assert follower in leader.node.members  # nothing proposed
        async with session.post(
            f"{url}/v1/members?group=g0",
            json={"id": "s4.9", "url": cluster.urls["s4"], "config_index": stale},
        ) as answer:
            assert answer.status == 409
        assert "s4.9" not in leader.node.learners


async def test_an_orphan_replica_is_deleted_once_its_removal_is_committed(
    cluster: Cluster,
) -> None:
    """Review finding: a replica removed while its store was down (or created for an add that
    never happened) was never deleted, and its store kept routing the group to it."""
    loop = asyncio.get_running_loop()
    while cluster.leader("g0") is None:
        await asyncio.sleep(0.05)
    leader = cluster.leader("g0")
    assert leader is not None
    orphan = await cluster.stores["s4"].add_replica("g0", leader.node.members)
    assert orphan.node.node_id == "s4.1"
    async with aiohttp.ClientSession() as session:
        driver = PlacementDriver(
            cluster.urls,
            groups=2,
            replication=3,
            request=http_requester(session, cluster.urls, client_token=None, cluster_token=None),
            clock=loop.time,
        )
        for _ in range(100):  # a round acts once every group's leader has answered
            await driver.round()
            if cluster.stores["s4"].ledger.removed("g0", "s4.1"):
                break
            await asyncio.sleep(0.1)
    assert "g0" not in cluster.stores["s4"].replicas or (
        cluster.stores["s4"].replicas["g0"].node.node_id != "s4.1"
    )
    assert cluster.stores["s4"].ledger.removed("g0", "s4.1")
