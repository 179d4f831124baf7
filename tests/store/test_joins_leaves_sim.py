"""A store joins and another leaves while the placement driver works under faults, in virtual
time, every key's history checked (issue 14: "a simulated multi-group cluster over many seeds
with partitions, crashes and store joins/leaves, per-key linearizability checked").

Four bootstrap stores (the real ``Store``, its real ``create_store_app`` on a loopback port,
its real ``MetaAgent``, whose meta leader runs the placement driver) of three data groups and
the meta group; each store's Raft traffic goes over an ``InMemoryNetwork`` whose hub the
nemesis cuts, and each agent's HTTP requests to another store (the driver's steps, the map
reads, registrations, drains sent on to the meta leader) go through a wrapper that honours the
same cuts and loses requests or their answers during a lossy window. Clients read, write and
compare-and-set through any store's HTTP API — the store routes the key to its group's leader
— with the register workload of the soak harness (``raftcache.testing``). Meanwhile a fifth
store joins (``serve --join``'s layout; the driver fills it) and a bootstrap store is drained
(the driver moves its replicas away, the meta group's too), while the nemesis — one fault at
a time — isolates the meta leader's store, isolates a moving group's leader's store and
crashes one, each the moment a move is in flight (a group with a learner or a fourth voter),
then partitions two stores, isolates one, crashes and restarts one, and drops messages. At
the end, healed: the driver is idle, replicas and leaders within one over the stores that
stay, every group — the meta group too — on RF distinct stores, nothing on the drained store
(its replicas tombstoned), which is then removed (the leave) and stopped, and the map records
as much; every key's history, final reads included, is linearizable.

Not cut: a client request one store forwards to another over HTTP (the forwarding session is
the store's own); the Raft traffic between them is, so a cut-off leader answers nothing.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from raftcache.network.groups import store_of
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.sharding.clustermap import StoreState
from raftcache.slots import key_group
from raftcache.store import group_id
from raftcache.store.driver import Request
from raftcache.store.layout import ShardLayout
from raftcache.store.store import META_GROUP
from raftcache.testing.history import OpStatus
from raftcache.testing.httpops import NodeApi
from raftcache.testing.models import RegisterModel
from raftcache.testing.register_workload import RegisterWorkload
from raftcache.testing.workloads import WorkloadEnv, check_keys
from tests.raft.store_faults import sweep_seeds
from tests.store.test_meta_group import MetaCluster, _meta_config, _start, _stop, _until, remove

pytestmark = pytest.mark.looptime

BOOTSTRAP = ("s1", "s2", "s3", "s4")
JOINER = "s5"
GROUPS = 3
RF = 3
#: The nemesis' faults timed to a move in flight (``Run.nemesis``), then those drawn at random;
#: the requests and answers lost are counted apart.
WORST = ("isolate-meta-leader", "isolate-group-leader", "crash-mid-move")
RANDOM = ("isolate", "partition", "crash", "loss")
STEPS = 7


class Faults:
    """The nemesis' state: the hub cutting the Raft traffic, and the agents' HTTP requests
    cut and lost the same way (``wrap``)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.hub = InMemoryHub()
        #: Probability that an agent's request, or its answer, is lost (the lossy window).
        self.loss = 0.0
        self.counts: Counter[str] = Counter()

    def network(self, sid: str) -> InMemoryNetwork:
        return InMemoryNetwork(sid, hub=self.hub, seed=self.rng.randrange(2**32))

    def wrap(self, sid: str, request: Request) -> Request:
        async def faulty(method: str, target: str, path: str, body: Any) -> tuple[int, Any]:
            hub = self.hub
            if hub.is_failed(sid) or hub.is_failed(target) or hub.is_partitioned(sid, target):
                raise OSError(f"{sid} cannot reach {target}")
            if self.loss and self.rng.random() < self.loss:
                self.counts["request lost"] += 1
                raise OSError(f"{method} {path} to {target} lost")
            answer = await request(method, target, path, body)
            if self.loss and self.rng.random() < self.loss:  # done there, the answer lost
                self.counts["answer lost"] += 1
                raise TimeoutError(f"{method} {path} to {target}: no answer")
            return answer

        return faulty

    def set_loss(self, cluster: MetaCluster, rate: float) -> None:
        self.loss = rate
        for server in cluster.running.values():
            if server.up:
                server.store.network.set_drop_rate(rate)  # type: ignore[attr-defined]


class Run:
    """The nemesis over one cluster: its faults, and the stores it crashed (restarted, from
    their storages and ledgers, when the fault heals)."""

    def __init__(self, seed: int, cluster: MetaCluster, faults: Faults) -> None:
        self.rng = random.Random(seed)
        self.cluster = cluster
        self.faults = faults
        self.crashed: set[str] = set()

    async def crash(self, sid: str) -> None:
        self.faults.hub.fail_node(sid)
        self.crashed.add(sid)
        await self.cluster.running[sid].stop()

    async def restart_crashed(self) -> None:
        for sid in sorted(self.crashed):
            self.faults.hub.recover_node(sid)
            await self.cluster.restart(sid)
        self.crashed.clear()

    def moving(self) -> str | None:
        """A group — the meta group too — in the middle of a move now (a learner, or a
        fourth voter not yet removed), else None."""
        for gid in [*(group_id(g) for g in range(GROUPS)), META_GROUP]:
            for store in self.cluster.live().values():
                replica = store.meta if gid == META_GROUP else store.replicas.get(gid)
                if replica is None or replica.node.role is not Role.LEADER:
                    continue
                node = replica.node
                if node.learners or len(node.members) != RF:
                    return gid
        return None

    async def worst_time(self, limit_s: float = 5.0) -> str | None:
        """Wait (at most ``limit_s``) for a move in flight; the group moving."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while loop.time() < deadline:
            found = self.moving()
            if found is not None:
                return found
            await asyncio.sleep(0.005)
        return None

    async def nemesis(self, steps: int) -> None:
        """``steps`` faults, one at a time, each held 0.3–1.2 s and healed; the first three
        (in the seed's order) cut off the meta leader's store, cut off a moving group's
        leader's store and crash a moving group's leader's store (the meta group's when it is
        the one moving), each the moment a move is in flight."""
        rng, hub, counts = self.rng, self.faults.hub, self.faults.counts
        # First, while the joiner is filled and the drained store emptied: the worst times.
        plan = rng.sample(WORST, len(WORST))
        plan += [rng.choice(RANDOM) for _ in range(steps - len(WORST))]
        for action in plan:
            if action not in WORST:  # those wait for a move instead
                await asyncio.sleep(rng.uniform(0.2, 0.6))
            live = sorted(self.cluster.live())
            if action == "crash-mid-move":
                gid = await self.worst_time()
                counts["mid-move"] += gid is not None
                if gid == META_GROUP:
                    leader = self.cluster.meta_leader()
                else:
                    leader = self.cluster.leader(gid or group_id(rng.randrange(GROUPS)))
                await self.crash(leader.store_id if leader else rng.choice(live))
            elif action == "isolate-meta-leader":
                counts["mid-move"] += await self.worst_time() is not None
                leader = self.cluster.meta_leader()
                hub.isolate(leader.store_id if leader else rng.choice(live))
            elif action == "isolate-group-leader":
                gid = await self.worst_time()
                counts["mid-move"] += gid is not None
                if gid is None or gid == META_GROUP:
                    gid = group_id(rng.randrange(GROUPS))
                leader = self.cluster.leader(gid)
                hub.isolate(leader.store_id if leader else rng.choice(live))
            elif action == "isolate":
                hub.isolate(rng.choice(live))
            elif action == "partition":
                a, b = rng.sample(live, 2)
                hub.partition(a, b)
            elif action == "crash":
                await self.crash(rng.choice(live))
            else:
                self.faults.set_loss(self.cluster, 0.2)
            counts[action] += 1
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            self.heal()
            await self.restart_crashed()

    def heal(self) -> None:
        self.faults.hub.heal_all()
        self.faults.set_loss(self.cluster, 0.0)


async def _drain(cluster: MetaCluster, via: list[str], store: str) -> None:
    """Mark ``store`` decommissioning through the first store of ``via`` (it sends the
    request on to the meta leader), the next one while none answers."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(60):
        while True:
            url = cluster.urls[via[0]]
            try:
                async with session.put(
                    f"{url}/raft/meta/stores/{store}", json={"state": "decommissioning"}
                ) as answer:
                    if answer.status == 200:
                        return
                    assert answer.status in (503, 504), await answer.text()
            except aiohttp.ClientError:  # that store is down just now
                pass
            via.append(via.pop(0))
            await asyncio.sleep(0.2)


def _converged(cluster: MetaCluster, drained: str) -> bool:
    """Every group, the meta group too, led, with RF voters on distinct stores, no learner,
    nothing on ``drained``; replicas and leaders within one over the stores that stay; no
    replica left on a store outside its group's configuration."""
    staying = [s for s in cluster.live() if s != drained]
    replicas = Counter({s: 0 for s in staying})
    leaders = Counter({s: 0 for s in staying})
    for g in range(GROUPS):
        gid = group_id(g)
        leader = cluster.leader(gid)
        if leader is None:
            return False
        node = leader.replicas[gid].node
        stores = [store_of(v) for v in node.members]
        if node.learners or len(set(stores)) != RF or len(stores) != RF or drained in stores:
            return False
        if node.commit_index < (node.core.config_index if node.core else 0):
            return False
        replicas.update(stores)
        leaders[leader.store_id] += 1
        hosting = {s for s, st in cluster.live().items() if gid in st.replicas}
        if hosting != set(stores):
            return False
    meta = _meta_config(cluster)
    if meta is None or meta[1] or drained in meta[0] or len(meta[0]) != RF:
        return False
    if cluster.live()[drained].meta is not None or cluster.live()[drained].replicas:
        return False
    spread = max(replicas.values()) - min(replicas.values())
    led = max(leaders.values()) - min(leaders.values())
    return spread <= 1 and led <= 1


async def _map_balanced(cluster: MetaCluster, drained: str) -> bool:
    """The map (read through the store that joined) records every group — the meta group
    too — on RF distinct stores with a leader among them, none on ``drained``, and replicas
    and leaders within one over the stores not removed."""
    cmap = await cluster.map_of(JOINER)
    assert cmap.meta is not None
    for p in (*cmap.placements, cmap.meta):
        if p.learners or len(set(p.voters)) != RF or drained in p.voters:
            return False
        if p.leader not in p.voters:
            return False
    replicas, leaders = cmap.replica_counts(), cmap.leader_counts()
    assert drained not in replicas  # removed
    spread = max(replicas.values()) - min(replicas.values())
    return spread <= 1 and max(leaders.values()) - min(leaders.values()) <= 1


@pytest.mark.sweep
@pytest.mark.parametrize("seed", sweep_seeds(2))
async def test_a_store_joins_and_one_leaves_under_faults(seed: int) -> None:
    rng = random.Random(seed)
    faults = Faults(random.Random(rng.randrange(2**32)))
    loop = asyncio.get_running_loop()
    cluster, spare = await _start(
        BOOTSTRAP, meta=BOOTSTRAP[:3], spare=1, groups=GROUPS, down_after_s=120.0,
        network=faults.network, wrap=faults.wrap, clock=loop.time,
    )  # fmt: skip
    run = Run(rng.randrange(2**32), cluster, faults)
    api = NodeApi(timeout_s=3.0)
    urls = [cluster.urls[s] for s in BOOTSTRAP]
    env = WorkloadEnv(api, urls, loop.time, random.Random(rng.randrange(2**32)), f"j{seed}")
    workload = RegisterWorkload(
        env, active_keys=6, ops_per_key=40, lease_ratio=0.0, workers=4, max_undecided_per_key=4
    )
    stop = asyncio.Event()
    workers: list[asyncio.Task[None]] = []
    nemesis: asyncio.Task[None] | None = None
    drained = rng.choice(BOOTSTRAP)
    try:
        await _until(lambda: cluster.meta_leader() is not None and all(
            cluster.agent(s).map is not None for s in BOOTSTRAP), 30)  # fmt: skip
        first = await cluster.map_of(BOOTSTRAP[0])
        workers = [asyncio.create_task(workload.worker(i, stop)) for i in range(4)]
        nemesis = asyncio.create_task(run.nemesis(STEPS))

        # s5 joins as `serve --join` makes it: the map's layout, no replica, then registered.
        url5 = f"http://127.0.0.1:{spare[0]}"
        cluster.urls[JOINER] = url5
        layout = ShardLayout.joining(first, cluster.meta)
        joiner = await cluster.add(
            JOINER, spare[0], layout.placement, {**layout.urls, JOINER: url5}
        )
        assert joiner.store.replicas == {}
        await joiner.store.start()
        assert joiner.agent is not None
        joiner.agent.start()
        urls.append(url5)
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        await _drain(cluster, [s for s in (*BOOTSTRAP, JOINER) if s != drained], drained)

        await nemesis
        run.heal()
        await run.restart_crashed()
        await _until(lambda: _converged(cluster, drained), 90, "balanced")
        map_after = await cluster.map_of(JOINER)
        assert JOINER in map_after.stores
        joined = cluster.live()[JOINER]
        assert joined.replicas, "the store that joined was never filled"
        assert all(r.node.node_id.startswith(f"{JOINER}.") for r in joined.replicas.values())
        # Every replica the drained store held at first was tombstoned as it left.
        ledger = cluster.disks[drained].ledger
        held = [group_id(g) for g in first.groups_of(drained)]
        held += [META_GROUP] if drained in cluster.meta else []
        assert all(ledger.tombstones(gid) for gid in held), (held, ledger)
        async with aiohttp.ClientSession() as session:
            await remove(session, cluster.urls[JOINER], drained)  # the leave
        removed = await cluster.map_of(JOINER)
        assert removed.stores[drained].state is StoreState.REMOVED
        # The map the driver records agrees: balanced, RF distinct stores, the drained none.
        await _until(functools.partial(_map_balanced, cluster, drained), 20, "map")
        await cluster.running[drained].stop()
        urls.remove(cluster.urls[drained])
        await asyncio.sleep(1.0)  # clients go on without it
        stop.set()
        await asyncio.gather(*workers)
        await workload.finish(deadline_s=20.0)
    finally:
        stop.set()
        for task in [*workers, *([nemesis] if nemesis else [])]:
            task.cancel()
        await api.close()
        await _stop(cluster)
    history = workload.recorder.history()
    finals = [op for op in history if op.process == "final"]
    assert finals
    assert all(op.status is OpStatus.OK for op in finals), finals
    groups_written = {
        key_group(str(op.key), GROUPS) for op in history
        if op.kind in ("write", "cas") and op.status is OpStatus.OK
    }  # fmt: skip
    assert len(groups_written) >= 2, groups_written
    assert sum(faults.counts[a] for a in (*WORST, *RANDOM)) == STEPS, faults.counts
    assert faults.counts["mid-move"] >= 1, faults.counts  # a leader cut off mid-move
    result = check_keys(history, RegisterModel(), 60.0, time.monotonic)
    assert result.ok, f"seed {seed}: {result.explain()}\nfaults {dict(faults.counts)}"
