"""Quiet groups (``RaftCore`` quiescence, ``StoreLiveness``) attacked in virtual time.

Three ``Store``s of four groups over the in-memory network, as ``test_store_sim.py``. An idle
group must go quiet — no Raft message at all, only one liveness ping per pair of stores — and
wake for a request. Then the attacks on what quiet takes away, the heartbeats: a quiet leader's
store crashed or cut off at the moment its groups went quiet must be replaced, and must serve
no stale read — neither linearizable nor lease — once the other side has written; bursty
clients with idle gaps longer than an election timeout under store faults, over many seeds,
every key's history (lease reads included) checked linearizable.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass

import pytest

from raftcache.network.groups import store_of
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.core import Role
from raftcache.raft.errors import MembershipChangeError, NotLeaderError
from raftcache.server.handover import Handover, hand_over, pick_successor
from raftcache.slots import key_group
from raftcache.store import GroupReplica, Store, group_id
from tests.raft.read_sweep import check_reads
from tests.raft.store_faults import READ_REFUSED, recorded, store_faults, sweep_seeds
from tests.store.test_store_sim import GROUPS, KEYS, STORES, Run, Stores, _settle

pytestmark = pytest.mark.looptime


def count_messages(store: Store, counts: Counter[str]) -> None:
    """Count every AppendEntries ``store`` receives, by group (``_liveness``: the pings)."""
    router = store.router
    handle = router.handle_append_entries

    async def counting(req: AppendEntriesRequest) -> AppendEntriesResponse:
        counts[req.group] += 1
        return await handle(req)

    router.handle_append_entries = counting  # type: ignore[method-assign]


async def until(check: object, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def all_quiet(stores: Stores) -> bool:
    return all(r.node.quiesced for s in stores.running.values() for r in s.replicas.values())


def key_of(g: int) -> str:
    return next(k for k in (f"q{i}" for i in range(1000)) if key_group(k, GROUPS) == g)


async def started(seed: int) -> Stores:
    stores = Stores(seed)
    for store_id in STORES:
        await stores.start(store_id)
    await until(lambda: all(stores.leader(group_id(g)) for g in range(GROUPS)))
    return stores


async def stopped(stores: Stores) -> None:
    for store_id in list(stores.running):
        await stores.running.pop(store_id).stop()


async def test_idle_groups_go_quiet_and_only_store_pings_flow() -> None:
    stores = await started(1)
    try:
        await until(lambda: all_quiet(stores))
        counts: Counter[str] = Counter()
        for store in stores.running.values():
            count_messages(store, counts)
        await asyncio.sleep(3.0)  # 20 election timeouts of FAST
        groups = {g: n for g, n in counts.items() if g != "_liveness"}
        assert groups == {}, counts
        assert counts["_liveness"] >= 6  # every store pings both others, every interval
        assert all_quiet(stores)
        # A write wakes its group, commits and is read back through another replica's leader.
        leader = stores.leader(group_id(1))
        assert leader is not None
        await leader.service.set(key_of(1), b"woken")
        assert not leader.node.quiesced
        item = await leader.service.get(key_of(1))
        assert item is not None
        assert item.value == b"woken"
        # ...and the group goes quiet again once idle, with every replica holding the write.
        await until(lambda: all_quiet(stores))
        for store in stores.running.values():
            assert store.replicas[group_id(1)].node.last_applied >= leader.node.commit_index
    finally:
        await stopped(stores)


def leading_store(stores: Stores) -> str:
    """The store leading the most groups."""
    led = Counter(
        store_id
        for store_id, store in stores.running.items()
        for r in store.replicas.values()
        if r.node.role is Role.LEADER
    )
    return led.most_common(1)[0][0]


@pytest.mark.parametrize("seed", range(3))
async def test_a_quiet_leaders_store_crashed_is_replaced(seed: int) -> None:
    stores = await started(seed)
    try:
        for g in range(GROUPS):
            leader = stores.leader(group_id(g))
            assert leader is not None
            await leader.service.set(key_of(g), b"before")
        await until(lambda: all_quiet(stores))
        gone = leading_store(stores)
        await stores.crash(gone)
        # Nobody hears from the crashed store again: only the liveness pings can tell.
        await until(
            lambda: all(
                (leader := stores.leader(group_id(g))) is not None
                and leader.node.node_id != gone
                and leader.node.role is Role.LEADER
                for g in range(GROUPS)
            ),
            timeout_s=20,
        )
        for g in range(GROUPS):
            leader = stores.leader(group_id(g))
            assert leader is not None
            item = await leader.service.get(key_of(g))
            assert item is not None
            assert item.value == b"before"
            await leader.service.set(key_of(g), b"after")
        await stores.restart(gone)
        await _settle(stores)
    finally:
        await stopped(stores)


async def read_at(replica: GroupReplica, key: str, consistency: str) -> bytes | None:
    """A read on ``replica`` that must not return a stale value: None when refused."""
    try:
        async with asyncio.timeout(1.0):
            item = await replica.service.get(key, consistency)
    except (NotLeaderError, TimeoutError):
        return None
    assert item is not None
    return item.value


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("consistency", ["linearizable", "lease"])
@pytest.mark.parametrize("old_side_notices", [True, False], ids=["pinging", "deaf"])
async def test_a_quiet_leader_cut_off_serves_no_stale_read(
    seed: int, consistency: str, old_side_notices: bool
) -> None:
    """Cut the leader's store off the moment its group went quiet (its lease is the freshest
    it will be); the others elect, write v2; the old leader, asked at once and again, must
    not answer v1. "deaf": the old leader's store stops its liveness first (a process paused
    and resumed reads before its pinger runs), so the group is still quiet when asked and
    only the lease's own clock stands between it and a stale answer."""
    stores = await started(seed)
    try:
        gid = group_id(2)
        key = key_of(2)
        leader = stores.leader(gid)
        assert leader is not None
        await leader.service.set(key, b"v1")
        await until(lambda: leader.node.quiesced, timeout_s=5)
        old = leader.node.node_id
        old_liveness = stores.running[old].liveness
        assert old_liveness is not None
        if not old_side_notices:
            await old_liveness.stop()
        stores.hub.isolate(old)
        await until(
            lambda: (new := stores.leader(gid)) is not None and new.node.node_id != old,
            timeout_s=20,
        )
        new = stores.leader(gid)
        assert new is not None
        await new.service.set(key, b"v2")
        answers = []
        for _ in range(5):
            answers.append(await read_at(leader, key, consistency))
            await asyncio.sleep(0.05)
        assert b"v1" not in answers, answers
        if not old_side_notices:
            await old_liveness.start()
        stores.hub.heal_all()
        await _settle(stores)
        item = await leader.service.get(key, "stale")
        assert item is not None
        assert item.value == b"v2"
    finally:
        await stopped(stores)


@dataclass
class BurstyRun(Run):
    """``Run``'s clients, in bursts with idle gaps longer than an election timeout (so the
    groups go quiet between them), reading through the lease as often as through ReadIndex."""

    async def client(self, cid: int, rng: random.Random) -> None:
        gen, n = 0, 0
        while not self.stop.is_set():
            burst_end = asyncio.get_running_loop().time() + rng.uniform(0.05, 0.2)
            while asyncio.get_running_loop().time() < burst_end and not self.stop.is_set():
                key = rng.choice(KEYS)
                gid = group_id(key_group(key, GROUPS))
                leader = self.stores.leader(gid)
                if leader is None:
                    await asyncio.sleep(0.02)
                    continue
                process = cid * 10_000 + gen
                roll = rng.random()
                if roll < 0.4:
                    n += 1
                    ok = await self.write(process, leader, key, f"{cid}-{n}")
                else:
                    replica = rng.choice(self.stores.leaders(gid))
                    kind = "lease_read" if roll < 0.7 else "read_index"
                    ok = await self.read_as(process, replica, key, kind)
                gen += 0 if ok else 1
                await asyncio.sleep(rng.uniform(0.005, 0.02))
            await asyncio.sleep(rng.uniform(0.2, 0.6))

    async def read_as(self, process: int, replica: GroupReplica, key: str, kind: str) -> bool:
        consistency = "lease" if kind == "lease_read" else "linearizable"

        async def run() -> str | None:
            item = await replica.service.get(key, consistency)
            return None if item is None else item.value.decode()

        done = await recorded(self.rec, process, kind, key, None, run, READ_REFUSED)
        self.counts[f"{kind} ok"] += done is True
        return done is not None

    async def sample_quiet(self) -> None:
        """Count, every 50 ms, the replicas quiet then: proof that the run went quiet."""
        while not self.stop.is_set():
            for store in list(self.stores.running.values()):
                self.counts["quiet samples"] += sum(
                    r.node.quiesced for r in store.replicas.values()
                )
            await asyncio.sleep(0.05)


@pytest.mark.sweep
@pytest.mark.parametrize("seed", sweep_seeds(8))
async def test_bursty_clients_under_store_faults_stay_linearizable(seed: int) -> None:
    stores = await started(seed)
    run = BurstyRun(stores)
    rng = random.Random(seed)
    try:
        clients = [
            asyncio.create_task(run.client(i, random.Random(rng.randrange(2**32))))
            for i in range(3)
        ]
        clients.append(asyncio.create_task(run.sample_quiet()))
        await store_faults(
            random.Random(rng.randrange(2**32)), 5, STORES, stores.hub,
            crash=stores.crash, restart_crashed=lambda: restart_all(stores),
            counts=run.counts,
        )  # fmt: skip
        run.stop.set()
        await asyncio.gather(*clients)
        await _settle(stores)
    finally:
        await stopped(stores)
    assert run.counts["lease_read ok"] > 0, run.counts
    assert run.counts["read_index ok"] > 0, run.counts
    assert run.counts["quiet samples"] > 0, run.counts
    result = check_reads(run.rec.history())
    assert result.ok, f"seed {seed}: {result.explain()}\ncounts {dict(run.counts)}"


async def restart_all(stores: Stores) -> None:
    for store_id in STORES:
        if store_id not in stores.running:
            await stores.restart(store_id)


async def test_a_change_to_a_quiet_group_is_judged_on_fresh_answers() -> None:
    """A quiet leader's last answers are as old as its quiet (its ticks run slow, so they look
    recent in ticks). With its store's pinger stopped (nothing wakes it), a follower's store
    crashed: removing the other follower must be refused — the new voters {leader, dead} have
    no quorum that answers — and removing the dead one must go through."""
    stores = await started(3)
    try:
        gid = group_id(0)
        await until(lambda: all_quiet(stores))
        leader = stores.leader(gid)
        assert leader is not None
        home = store_of(leader.node.node_id)
        liveness = stores.running[home].liveness
        assert liveness is not None
        await liveness.stop()
        dead, alive = (s for s in STORES if s != home)
        await stores.crash(dead)
        await asyncio.sleep(0.5)  # well inside 5 election timeouts of quiet ticks
        assert leader.node.quiesced
        with pytest.raises(MembershipChangeError, match="without a quorum"):
            await leader.node.remove_member(alive)
        assert alive in leader.node.members
        await leader.node.remove_member(dead)
        assert leader.node.members == sorted([leader.node.node_id, alive])
        await leader.service.set(key_of(0), b"after the change")
    finally:
        await stopped(stores)


# -- the hostile review's findings, each a test ------------------------------------------------


@pytest.mark.parametrize("seed", range(2))
async def test_a_graceful_stop_hands_quiet_groups_over(seed: int) -> None:
    """A store stopping hands the groups it leads over (``hand_over``) even when they are
    quiet — their leader heard nobody lately, so it asks for a round first."""
    stores = await started(seed)
    try:
        await until(lambda: all_quiet(stores))
        await asyncio.sleep(3.0)  # quiet for 20 election timeouts
        gone = leading_store(stores)
        led = [r.node for r in stores.running[gone].replicas.values() if r.node.role is Role.LEADER]
        results = await asyncio.gather(*(hand_over(n, Handover(), 1.0) for n in led))
        assert None not in results, results
        assert all(store_of(r) != gone for r in results if r is not None)
        assert all(n.role is not Role.LEADER for n in led)
    finally:
        await stopped(stores)


async def test_a_leader_woken_by_a_dead_followers_store_does_not_pick_it_as_successor() -> None:
    stores = await started(1)
    try:
        gid = group_id(1)
        leader = stores.leader(gid)
        assert leader is not None
        await until(lambda: leader.node.quiesced)
        await asyncio.sleep(1.0)
        core = leader.node.core
        assert core is not None
        here = store_of(leader.node.node_id)
        for dead_id in sorted(v for v in core.configuration.voters if v != core.id)[-1:]:
            dead = store_of(dead_id)
            await stores.crash(dead)
            liveness = stores.running[here].liveness
            assert liveness is not None
            await until(lambda: dead in liveness.down(), timeout_s=5)  # noqa: B023
            assert not leader.node.quiesced  # woken: every peer's last_active is "now"
            assert pick_successor(leader.node) != dead_id
    finally:
        await stopped(stores)


async def test_a_partition_between_two_followers_does_not_churn_a_quiet_group() -> None:
    """Only the leader's store speaks for a group: followers whose leader is fine stay quiet
    when a fellow follower's store goes silent, so no vote request reaches the leader."""
    stores = await started(1)
    try:
        await until(lambda: all_quiet(stores))
        gid = group_id(1)
        leader = stores.leader(gid)
        assert leader is not None
        here = store_of(leader.node.node_id)
        y, z = (s for s in stores.running if s != here)
        votes: Counter[str] = Counter()
        router = stores.running[here].router
        handle = router.handle_request_vote

        async def counting(req: RequestVoteRequest) -> RequestVoteResponse:
            votes[req.group] += 1
            return await handle(req)

        router.handle_request_vote = counting  # type: ignore[method-assign]
        stores.hub.partition(y, z)  # the leader's store still reaches both
        await asyncio.sleep(3.0)
        led_here = {
            group_id(g)
            for g in range(GROUPS)
            if (r := stores.leader(group_id(g))) is not None and store_of(r.node.node_id) == here
        }
        assert gid in led_here
        assert sum(votes[g] for g in led_here) == 0, votes
    finally:
        stores.hub.heal_all()
        await stopped(stores)


async def test_a_quiet_leader_reports_every_voter_reachable() -> None:
    stores = await started(1)
    try:
        await until(lambda: all_quiet(stores))
        await asyncio.sleep(3.0)
        leader = stores.leader(group_id(1))
        assert leader is not None
        assert leader.node.quiesced
        assert leader.node.raft_stats()["voters_reachable"] == 3
    finally:
        await stopped(stores)


@pytest.mark.parametrize("seed", range(2))
async def test_a_quiet_leader_whose_ready_loop_hangs_is_replaced(seed: int) -> None:
    """The hostile review's stuck replica: a live store whose leader replica stops taking its
    work (an await that never ends) sends nothing, so its quiet followers would wait forever.
    Its store reports the stall in its ping answers; the followers elect another leader."""
    stores = await started(seed)
    try:
        gid = group_id(2)
        await until(lambda: all_quiet(stores))
        leader = stores.leader(gid)
        assert leader is not None
        stuck = leader.node
        never: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        async def hang(core: object) -> bool:
            return await never  # the ready loop never comes back

        stuck._hand_off = hang  # type: ignore[method-assign]
        write = asyncio.create_task(leader.service.set(key_of(2), b"lost in the hang"))
        await until(
            lambda: (
                (new := stores.leader(gid)) is not None
                and new.node is not stuck
                and new.node.role is Role.LEADER
            ),
            timeout_s=20,
        )
        new = stores.leader(gid)
        assert new is not None
        await new.service.set(key_of(2), b"after")
        item = await new.service.get(key_of(2))
        assert item is not None
        assert item.value == b"after"
        write.cancel()
        never.cancel()
    finally:
        await stopped(stores)
