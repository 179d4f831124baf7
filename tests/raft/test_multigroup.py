"""Many Raft groups over one transport per store, under store-level faults (docs/sharding.md,
step 2).

Three stores each open one ``InMemoryNetwork`` and one ``GroupRouter``; every store hosts a
replica of each of four groups, each group a ``RaftNode`` over a ``GroupNetwork`` view of its
store's transport. Keys map to groups by their hash slot. The nemesis acts on stores, as real
faults do — a partition between two stores, an isolated store, a store that crashes and
restarts — so every group feels each fault at once, while the groups elect, commit and read on
their own. Clients write through the key's group leader and read with ``read_index``; every
key's history must be linearizable, and at the end every replica of a group holds the same data
and no request ever reached another group's replica.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftcache.network.errors import NetworkError
from raftcache.network.groups import GroupNetwork, GroupNotHostedError, GroupRouter
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.protocol.messages import AppendEntriesRequest, LogEntry, RequestVoteRequest
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.slots import key_group
from raftcache.storage.memory import MemoryStorage
from raftcache.testing.history import HistoryRecorder
from tests.raft.read_sweep import RegisterMachine, check_reads
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


def _group_id(g: int) -> str:
    return f"g{g}"


@dataclass
class Store:
    store_id: str
    net: InMemoryNetwork
    router: GroupRouter
    storages: dict[str, MemoryStorage] = field(default_factory=dict)
    nodes: dict[str, RaftNode] = field(default_factory=dict)
    machines: dict[str, RegisterMachine] = field(default_factory=dict)
    up: bool = True


class MultiGroupCluster:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.hub = InMemoryHub()
        self.stores: dict[str, Store] = {}
        for s in STORES:
            net = InMemoryNetwork(s, hub=self.hub, seed=self.rng.randrange(2**32))
            router = GroupRouter(s)
            net.register_handlers(router)
            self.stores[s] = Store(s, net, router)

    async def start(self) -> None:
        for store in self.stores.values():
            await store.net.start()
            for g in range(GROUPS):
                store.storages[_group_id(g)] = MemoryStorage()
            await self._start_replicas(store)

    async def _start_replicas(self, store: Store) -> None:
        for g in range(GROUPS):
            gid = _group_id(g)
            machine = RegisterMachine()
            node = RaftNode(
                store.store_id,
                list(STORES),
                GroupNetwork(store.net, store.router, gid),
                store.storages[gid],
                machine,
                FAST,
                rng=random.Random(self.rng.randrange(2**32)),
                group=gid,
            )
            store.nodes[gid], store.machines[gid] = node, machine
            await node.start()

    async def crash(self, store_id: str) -> None:
        store = self.stores[store_id]
        self.hub.fail_node(store_id)
        store.up = False
        for node in store.nodes.values():
            await node.stop()

    async def restart(self, store_id: str) -> None:
        store = self.stores[store_id]
        self.hub.recover_node(store_id)
        store.up = True
        await self._start_replicas(store)

    def leader(self, gid: str) -> RaftNode | None:
        leaders = [
            st.nodes[gid]
            for st in self.stores.values()
            if st.up and st.nodes[gid].role is Role.LEADER
        ]
        return max(leaders, key=lambda n: n.current_term) if leaders else None

    async def stop(self) -> None:
        for store in self.stores.values():
            for node in store.nodes.values():
                await node.stop()
            await store.net.stop()


@dataclass
class Run:
    cluster: MultiGroupCluster
    rec: HistoryRecorder = field(
        default_factory=lambda: HistoryRecorder(asyncio.get_running_loop().time)
    )
    counts: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, cid: int, rng: random.Random) -> None:
        gen, n = 0, 0
        while not self.stop.is_set():
            key = rng.choice(KEYS)
            gid = _group_id(key_group(key, GROUPS))
            ok = True
            if rng.random() < 0.5:
                n += 1
                ok = await self.write(cid * 10_000 + gen, gid, key, f"{cid}-{n}")
            else:
                ok = await self.read(cid * 10_000 + gen, gid, key)
            if not ok:
                gen += 1
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    async def write(self, process: int, gid: str, key: str, value: str) -> bool:
        leader = self.cluster.leader(gid)
        if leader is None:
            await asyncio.sleep(0.02)
            return True

        async def run() -> Any:
            return await leader.propose(f"set {key} {value}".encode(), timeout=1.0)

        done = await recorded(self.rec, process, "write", key, value, run, WRITE_NOT_DONE)
        self.counts[{True: f"write ok {gid}", False: "write fail", None: "write info"}[done]] += 1
        return done is not None

    async def read(self, process: int, gid: str, key: str) -> bool:
        leader = self.cluster.leader(gid)
        if leader is None:
            await asyncio.sleep(0.02)
            return True

        async def run() -> str | None:
            await leader.read_index(0.3)
            machine = leader.state_machine
            assert isinstance(machine, RegisterMachine)
            return machine.get(key)[0]

        done = await recorded(self.rec, process, "read_index", key, None, run, READ_REFUSED)
        self.counts["read ok"] += done is True
        return done is not None

    async def nemesis(self, rng: random.Random, steps: int) -> None:
        c = self.cluster

        async def restart_crashed() -> None:
            for store in c.stores.values():
                if not store.up:
                    await c.restart(store.store_id)

        await store_faults(
            rng, steps, STORES, c.hub, crash=c.crash, restart_crashed=restart_crashed,
            counts=self.counts,
        )  # fmt: skip


async def _settle(cluster: MultiGroupCluster, timeout: float = 10.0) -> None:
    """Every group led, and every replica applied what its leader committed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        done = True
        for g in range(GROUPS):
            gid = _group_id(g)
            leader = cluster.leader(gid)
            if leader is None:
                done = False
                break
            await leader.read_index(1.0)
            target = leader.commit_index
            if any(st.nodes[gid].last_applied < target for st in cluster.stores.values()):
                done = False
        if done:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the groups did not settle")


@pytest.mark.sweep
@pytest.mark.parametrize("seed", sweep_seeds(8))
async def test_groups_stay_linearizable_under_store_faults(seed: int) -> None:
    cluster = MultiGroupCluster(seed)
    await cluster.start()
    run = Run(cluster)
    rng = random.Random(seed)
    try:
        clients = [
            asyncio.create_task(run.client(i, random.Random(rng.randrange(2**32))))
            for i in range(4)
        ]
        await run.nemesis(random.Random(rng.randrange(2**32)), steps=6)
        run.stop.set()
        await asyncio.gather(*clients)
        await _settle(cluster)
        for g in range(GROUPS):
            gid = _group_id(g)
            values = [st.machines[gid].values for st in cluster.stores.values()]
            assert values[0] == values[1] == values[2], f"group {gid} replicas differ"
            for key in values[0]:  # a group holds only its own keys: no request crossed groups
                assert key_group(key, GROUPS) == g, (key, gid)
    finally:
        await cluster.stop()
    for g in range(GROUPS):  # every group served writes: the run exercised them all
        assert run.counts[f"write ok {_group_id(g)}"] > 0, run.counts
    result = check_reads(run.rec.history())
    assert result.ok, f"seed {seed}: {result.explain()}\ncounts {dict(run.counts)}"


async def test_a_request_for_a_group_not_hosted_is_refused() -> None:
    hub = InMemoryHub()
    a, b = InMemoryNetwork("a", hub=hub), InMemoryNetwork("b", hub=hub)
    router_b = GroupRouter("b")
    for net, router in ((a, GroupRouter("a")), (b, router_b)):
        net.register_handlers(router)
        await net.start()
    try:
        view = GroupNetwork(a, GroupRouter("a"), "g7")
        req = AppendEntriesRequest(1, "a", 0, 0)
        with pytest.raises(NetworkError, match="hosts no replica of group 'g7'") as info:
            await view.send_append_entries("b", req)
        assert req.group == "g7"  # the view stamped its group on the request
        assert isinstance(info.value.__cause__, GroupNotHostedError)
        assert (info.value.kind, info.value.permanent) == ("group_not_hosted", False)
        assert router_b.groups == []
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize(("own", "foreign"), [("", "meta"), ("g1", ""), ("g1", "g2")])
async def test_a_node_refuses_another_groups_requests(own: str, foreign: str) -> None:
    """Review finding: a node registered straight on its transport (one group per process)
    took a ``meta`` AppendEntries as its own group's — its term jumped and a foreign entry
    landed after a committed one. Every node now refuses a request of another group before
    the core sees it, whatever transport or router sits in front."""
    hub = InMemoryHub()
    ids = ["s1", "s2", "s3"]
    nets = {i: InMemoryNetwork(i, hub=hub, seed=1) for i in ids}
    routers = {i: GroupRouter(i) for i in ids}
    for i in ids:
        nets[i].register_handlers(routers[i])
    nodes = {
        i: RaftNode(
            i, ids, GroupNetwork(nets[i], routers[i], own), MemoryStorage(), RegisterMachine(),
            FAST, rng=random.Random(n), group=own,
        )
        for n, i in enumerate(ids)
    }  # fmt: skip
    for i in ids:
        await nets[i].start()
        await nodes[i].start()
    try:
        async with asyncio.timeout(5):
            while not any(n.role is Role.LEADER for n in nodes.values()):
                await asyncio.sleep(0.01)
        leader = next(n for n in nodes.values() if n.role is Role.LEADER)
        await leader.propose(b"set k v")
        victim = next(n for n in nodes.values() if n is not leader)
        async with asyncio.timeout(5):
            while victim.last_applied < leader.commit_index:
                await asyncio.sleep(0.01)
        committed, term = victim.commit_index, victim.current_term
        other = next(i for i in ids if i != victim.node_id)
        request = AppendEntriesRequest(
            term + 5, other, committed, term,
            [LogEntry(term + 5, committed + 1, b"set k hijacked")], committed, group=foreign,
        )  # fmt: skip
        with pytest.raises(GroupNotHostedError):
            await victim.handle_append_entries(request)
        assert victim.current_term == term
        assert victim.leader_id == leader.node_id  # still its own group's leader
        # Its own group, but addressed to another incarnation of its replica: refused too
        # (an answer meant for a removed incarnation must never be taken by its successor).
        request.group, request.to = own, victim.node_id + ".7"
        with pytest.raises(GroupNotHostedError, match="replica"):
            await victim.handle_append_entries(request)
        vote = RequestVoteRequest(term + 5, other, committed + 9, term, to=victim.node_id + ".7")
        vote.group = own
        with pytest.raises(GroupNotHostedError, match="replica"):
            await victim.handle_request_vote(vote)
        assert victim.current_term == term
    finally:
        for i in ids:
            await nodes[i].stop()
            await nets[i].stop()
