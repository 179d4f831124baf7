"""Preferred leaders: each group ends up led by the store its placement names first — when that
store is live and caught up — and a preferred store that cannot lead is not pestered.

Three ``Store``s over the in-memory network in virtual time, three groups whose preferred
leaders are s1, s2 and s3; each store runs ``PreferredLeaders``. Whatever the elections chose,
every group is led by its preferred store a few seconds later. A preferred store partitioned
from its group's leader never receives leadership (it is not live), and once healed it does.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.storage.memory import MemoryStorage
from raftcache.store import Store, group_id
from raftcache.store.balance import PreferredLeaders
from tests.raft.sim import FAST

pytestmark = pytest.mark.looptime

STORES = ("s1", "s2", "s3")
#: g0 prefers s1, g1 s2, g2 s3 (the preferred leader is listed first).
PLACEMENT = {group_id(g): [STORES[g], *(s for s in STORES if s != STORES[g])] for g in range(3)}


class Cluster:
    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.hub = InMemoryHub()
        self.stores: dict[str, Store] = {}
        self.balancers: dict[str, PreferredLeaders] = {}
        for s in STORES:
            network = InMemoryNetwork(s, hub=self.hub, seed=rng.randrange(2**32))
            self.stores[s] = Store(
                s,
                network,
                groups=3,
                placement=PLACEMENT,
                storage=lambda gid: MemoryStorage(),
                config=FAST,
                clock=time.time,
                rng=random.Random(rng.randrange(2**32)),
            )
            loop = asyncio.get_running_loop()
            self.balancers[s] = PreferredLeaders(
                self.stores[s], clock=loop.time, interval_s=0.2, settle_s=1.0, backoff_s=2.0
            )

    async def start(self) -> None:
        for s in STORES:
            await self.stores[s].start()
            self.balancers[s].start()

    async def stop(self) -> None:
        for s in STORES:
            await self.balancers[s].stop()
            await self.stores[s].stop()

    def leader(self, gid: str) -> str | None:
        leaders = [
            (st.replicas[gid].node.current_term, s)
            for s, st in self.stores.items()
            if st.replicas[gid].node.role is Role.LEADER
        ]
        return max(leaders)[1] if leaders else None

    async def until(self, predicate: object, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if predicate():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.1)
        return False


@pytest.mark.parametrize("seed", range(4))
async def test_every_group_ends_led_by_its_preferred_store(seed: int) -> None:
    cluster = Cluster(seed)
    await cluster.start()
    try:
        wanted = {group_id(g): STORES[g] for g in range(3)}
        settled = await cluster.until(
            lambda: {g: cluster.leader(g) for g in wanted} == wanted, timeout_s=30
        )
        assert settled, {g: cluster.leader(g) for g in wanted}
        # Balanced, the balancers are idle: nothing more is handed over.
        before = sum(b.transfers_total for b in cluster.balancers.values())
        await asyncio.sleep(10)
        assert sum(b.transfers_total for b in cluster.balancers.values()) == before
        assert {g: cluster.leader(g) for g in wanted} == wanted
    finally:
        await cluster.stop()


async def test_a_preferred_store_cut_off_from_the_leader_is_not_given_leadership() -> None:
    cluster = Cluster(7)
    await cluster.start()
    try:
        assert await cluster.until(lambda: cluster.leader("g0") == "s1", timeout_s=30)
        # s1 loses g0's leadership while cut off from s2 (s3 still reaches both).
        cluster.hub.partition("s1", "s2")
        await cluster.stores["s1"].replicas["g0"].node.transfer_leadership("s3")
        assert cluster.leader("g0") == "s3"
        await asyncio.sleep(8)
        # s1 is live and caught up as s3 sees it: it gets g0 back, through s3.
        assert cluster.leader("g0") == "s1"
        # Now cut s1 off from everyone: g0 moves away and is not handed back while cut off.
        cluster.hub.isolate("s1")
        assert await cluster.until(
            lambda: (
                cluster.leader("g0") not in (None, "s1")
                or any(
                    cluster.stores[s].replicas["g0"].node.role is Role.LEADER for s in ("s2", "s3")
                )
            ),
            timeout_s=10,
        )
        handed = sum(cluster.balancers[s].transfers_total for s in ("s2", "s3"))
        await asyncio.sleep(8)
        assert sum(cluster.balancers[s].transfers_total for s in ("s2", "s3")) == handed
        cluster.hub.heal_all()
        assert await cluster.until(lambda: cluster.leader("g0") == "s1", timeout_s=30)
    finally:
        await cluster.stop()
