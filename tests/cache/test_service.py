"""CacheService over real RaftNodes (InMemoryNetwork + MemoryStorage, virtual time)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftcache.cache.commands import DeleteOp, GetOp, Session, SetOp
from raftcache.cache.entries import Item
from raftcache.cache.errors import (
    CounterOverflow,
    InvalidCommand,
    NotACounter,
    PreconditionFailed,
    ValueTooLarge,
)
from raftcache.cache.results import IncrResult
from raftcache.raft.errors import NotLeaderError
from tests.cache.cluster import CacheCluster

pytestmark = pytest.mark.looptime


async def test_single_node_reads_and_writes() -> None:
    async with CacheCluster(1) as c:
        svc = c.services[await c.leader()]
        version = await svc.set("k", b"v", ttl=60.0)
        item = await svc.get("k")
        assert item is not None
        assert (item.value, item.version) == (b"v", version)
        assert item.expires_at == pytest.approx(c.clock() + 60.0, abs=1.0)
        for consistency in ("lease", "stale"):
            assert await svc.get("k", consistency) == item
        assert await svc.get("missing") is None
        assert await svc.incr("n", 2) == IncrResult(2, version + 1)
        assert await svc.decr("n") == IncrResult(1, version + 2)
        assert await svc.mget(["k", "missing", "n"]) == [item, None, Item(b"1", version + 2, None)]
        assert await svc.list_keys("", None, 1) == (["k"], "k")
        assert await svc.list_keys(None, "k", 10, "stale") == (["n"], None)
        assert await svc.delete("k") is True
        assert await svc.delete("k") is False
        stats = await svc.stats()
        assert (stats["keys"], stats["hits"], stats["misses"]) == (1, 5, 2)


async def test_batch_accepts_op_objects_mappings_and_attribute_objects() -> None:
    class HttpOp:  # the shape of the HTTP layer's parsed ops
        def __init__(self, op: str, key: str, value: bytes | None = None) -> None:
            self.op, self.key, self.value, self.ttl = op, key, value, None

    async with CacheCluster(1) as c:
        svc = c.services[await c.leader()]
        results = await svc.batch(
            [
                SetOp("a", b"1"),
                {"op": "set", "key": "b", "value": b"2", "ttl": 5.0},
                HttpOp("get", "a"),
                HttpOp("delete", "b"),
                GetOp("zz"),
            ]
        )
        version = results[0]
        assert results == [version, version, b"1", True, None]
        with pytest.raises(InvalidCommand):
            await svc.batch([{"op": "nope", "key": "a"}])


async def test_error_results_become_typed_exceptions() -> None:
    async with CacheCluster(1, machine={"max_bytes": 100}) as c:
        svc = c.services[await c.leader()]
        version = await svc.set("k", b"v")
        with pytest.raises(PreconditionFailed) as failed:
            await svc.set("k", b"w", if_version=version + 100)
        assert failed.value.current_version == version
        with pytest.raises(PreconditionFailed) as absent:
            await svc.set("k", b"w", if_absent=True)
        assert absent.value.current_version == version
        with pytest.raises(PreconditionFailed):
            await svc.delete("k", if_version=0)
        with pytest.raises(PreconditionFailed) as in_batch:
            await svc.batch([DeleteOp("k"), SetOp("x", b"1", if_version=3)])
        assert in_batch.value.op_index == 1
        with pytest.raises(NotACounter):
            await svc.incr("k")
        await svc.set("n", b"9223372036854775807")
        with pytest.raises(CounterOverflow):
            await svc.incr("n")
        with pytest.raises(ValueTooLarge):
            await svc.set("big", b"x" * 100)
        with pytest.raises(InvalidCommand):
            await svc.get("k", "eventual")
        with pytest.raises(InvalidCommand):
            await svc.list_keys("", None, 0)
        with pytest.raises(InvalidCommand):
            await svc.set("", b"v")
        assert (await svc.get("k")) is not None  # nothing above changed it


async def test_raft_errors_pass_through_and_followers_serve_stale_reads() -> None:
    async with CacheCluster(3, seed=2) as c:
        leader = await c.leader()
        follower_id = c.follower(leader)
        follower = c.services[follower_id]
        async with asyncio.timeout(5):  # it hears of the new leader at the next heartbeat
            while c.nodes[follower_id].leader_id != leader:
                await asyncio.sleep(0.01)
        with pytest.raises(NotLeaderError) as info:
            await follower.set("k", b"v")
        assert info.value.leader_id == leader
        for consistency in ("linearizable", "lease"):
            with pytest.raises(NotLeaderError):
                await follower.get("k", consistency)
        version = await c.services[leader].set("k", b"v")
        await c.settle()
        assert await follower.get("k", "stale") == Item(b"v", version, None)


async def test_a_retried_session_write_is_not_applied_twice() -> None:
    async with CacheCluster(3, seed=3) as c:
        svc = c.services[await c.leader()]
        session = Session("client-a", 1)
        first = await svc.incr("n", 10, session=session)
        assert await svc.incr("n", 10, session=session) == first  # its own log entry, not applied
        second = await svc.incr("n", 10, session=Session("client-a", 2))
        assert second == IncrResult(20, first.version + 2)
        await c.settle()
        items = {m.get("n", c.clock()) for m in c.machines.values()}
        assert items == {Item(b"20", second.version, None)}


async def test_mget_takes_one_read_barrier(monkeypatch: pytest.MonkeyPatch) -> None:
    async with CacheCluster(1) as c:
        leader = await c.leader()
        node, svc = c.nodes[leader], c.services[leader]
        calls: list[float | None] = []
        original = node.read_index

        async def counting(timeout: float | None = None) -> int:
            calls.append(timeout)
            return await original(timeout)

        monkeypatch.setattr(node, "read_index", counting)
        await svc.mget(["a", "b", "c", "d"])
        assert len(calls) == 1


async def test_leader_expires_keys_on_every_replica(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="raftcache.cache")
    service = {"expiry_interval_s": 0.2, "expiry_batch_size": 2}
    async with CacheCluster(3, seed=4, service=service) as c:
        leader = await c.leader()
        svc = c.services[leader]
        for i in range(5):
            await svc.set(f"t{i}", b"v", ttl=1.0)
        await svc.set("keep", b"v")
        await c.settle()
        c.clock.jump(2.0)
        follower = c.services[c.follower(leader)]
        assert await follower.get("t0", "stale") is None  # hidden at once by the reader's clock
        await asyncio.sleep(1.0)
        await c.settle()
        for machine in c.machines.values():
            stats = machine.stats()
            assert (stats["keys"], stats["expirations"]) == (1, 5)
        assert not caplog.records


async def test_leader_reads_become_touch_batches_that_drive_eviction() -> None:
    service = {"touch_interval_s": 0.2}
    async with CacheCluster(3, seed=5, machine={"max_keys": 2}, service=service) as c:
        leader = await c.leader()
        svc, follower = c.services[leader], c.services[c.follower(leader)]
        await svc.set("a", b"1")
        await svc.set("b", b"2")
        await c.settle()
        assert await follower.get("b", "stale") is not None  # a follower's read: no effect
        assert follower.housekeeping.pending_touches == 0
        assert await svc.get("a") is not None  # the leader's read: batched, then replicated
        assert svc.housekeeping.pending_touches == 1
        await asyncio.sleep(0.5)
        assert svc.housekeeping.pending_touches == 0
        await svc.set("c", b"3")
        await c.settle()
        now = c.clock()
        for machine in c.machines.values():
            assert machine.list_keys("", None, 10, now) == (["a", "c"], None)
            assert machine.stats()["evictions"] == 1


async def test_reads_with_touch_false_leave_recency_and_the_log_alone() -> None:
    service = {"touch_interval_s": 0.2}
    async with CacheCluster(3, seed=5, machine={"max_keys": 2}, service=service) as c:
        leader = await c.leader()
        svc = c.services[leader]
        await svc.set("a", b"1")
        await svc.set("b", b"2")
        await c.settle()
        applied = c.nodes[leader].last_applied
        # Counted as reads (hits and misses), but nothing recorded for the TOUCH batch.
        assert await svc.get("a", touch=False) is not None
        assert await svc.get("a", "lease", touch=False) is not None
        assert [i is not None for i in await svc.mget(["a", "z"], touch=False)] == [True, False]
        assert svc.housekeeping.pending_touches == 0
        stats = await svc.stats()
        assert (stats["hits"], stats["misses"]) == (3, 1)
        await asyncio.sleep(0.5)  # two touch intervals: nothing to propose
        assert c.nodes[leader].last_applied == applied
        assert await svc.get("b") is not None  # a normal read: one key for the next batch
        assert svc.housekeeping.pending_touches == 1
        await asyncio.sleep(0.5)
        assert svc.housekeeping.pending_touches == 0
        assert c.nodes[leader].last_applied > applied
        await svc.set("c", b"3")  # "a" was read but never touched: it is the oldest
        await c.settle()
        now = c.clock()
        for machine in c.machines.values():
            assert machine.list_keys("", None, 10, now) == (["b", "c"], None)


async def test_flush_and_expiry_rounds_on_demand() -> None:
    async with CacheCluster(1) as c:
        svc = c.services[await c.leader()]
        await svc.set("k", b"v", ttl=1.0)
        assert await svc.propose_expiry() == 0
        c.clock.jump(5.0)
        assert await svc.propose_expiry() == 1
        assert await svc.flush_touches() == 0


async def test_start_is_idempotent_and_stop_cancels_the_loops() -> None:
    async with CacheCluster(1) as c:
        svc = c.services[await c.leader()]
        await svc.start()
        tasks = list(svc.housekeeping._tasks)
        assert len(tasks) == 2
        await svc.stop()
        assert all(task.done() for task in tasks)
        await svc.stop()  # harmless twice
        await svc.start()
        assert len(svc.housekeeping._tasks) == 2


async def test_snapshots_in_a_thread_and_restart_from_snapshot_plus_tail() -> None:
    async with CacheCluster(3, seed=6, machine={"max_keys": 50}) as c:
        leader = await c.leader()
        svc = c.services[leader]
        for i in range(80):
            await svc.set(f"k{i:03d}", b"x" * (i % 9), ttl=100.0 if i % 4 else None)
        await svc.incr("n", session=Session("s", 1))
        await c.settle()
        for node in c.nodes.values():
            assert await node.take_snapshot() > 0
        # Snapshots run in a worker thread, during which virtual time moves on: look again.
        leader = await c.leader()
        svc = c.services[leader]
        for i in range(20):
            await svc.batch([GetOp(f"k{70 + i % 10:03d}"), SetOp(f"late{i}", b"y")])
        restarted = c.follower(leader)
        await c.stop_node(restarted)
        await svc.set("while-down", b"z")
        await c.start_node(restarted)
        await c.settle()
        snapshots = {node_id: m.snapshot() for node_id, m in c.machines.items()}
        assert len(set(snapshots.values())) == 1
        assert c.machines[restarted].stats()["evictions"] == c.machines[leader].stats()["evictions"]


async def test_housekeeping_logs_a_failed_round_and_keeps_going(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="raftcache.cache")
    async with CacheCluster(3, seed=7, service={"expiry_interval_s": 0.2}) as c:
        leader = await c.leader()
        node, svc = c.nodes[leader], c.services[leader]
        await svc.set("t", b"v", ttl=1.0)
        original = node.propose
        failed: list[bytes] = []

        async def flaky(command: bytes, timeout: float | None = None) -> object:
            if not failed:
                failed.append(command)
                raise RuntimeError("disk on fire")
            return await original(command, timeout)

        monkeypatch.setattr(node, "propose", flaky)
        c.clock.jump(2.0)
        await asyncio.sleep(1.0)
        await c.settle()
        assert len(failed) == 1
        assert [m.stats()["expirations"] for m in c.machines.values()] == [1, 1, 1]
        messages = [(r.levelno, r.getMessage()) for r in caplog.records]
        # One warning for the failed round; followers never tried (no NotLeaderError debug).
        assert messages == [
            (logging.WARNING, "cache expiry round failed: RuntimeError('disk on fire')")
        ]
