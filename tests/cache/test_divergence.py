"""Divergence detection in the cache: the kept digest on every mutation path, snapshots that
carry and check it, the majority verdict, and the leader's check in a simulated cluster
(docs/divergence.md)."""

from __future__ import annotations

import asyncio
import io
import random

import pytest

from raftcache.cache.alarms import ReplicaDiverged
from raftcache.cache.commands import (
    BatchCommand,
    DeleteOp,
    GetOp,
    IncrOp,
    SetOp,
    TtlOp,
    encode,
    encode_alarm,
    encode_check,
    encode_delete,
    encode_expire,
    encode_flush,
    encode_format,
    encode_incr,
    encode_set,
    encode_touch,
    encode_ttl,
)
from raftcache.cache.digest import DigestMark, DigestRing, full_digest
from raftcache.cache.divergence import verdict
from raftcache.cache.entries import NEVER
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode
from raftcache.cache.snapshot import decode_snapshot
from raftcache.cache.watch import WatchHistory
from tests.cache.cluster import FAST, CacheCluster
from tests.cache.helpers import Log
from tests.cache.test_restore import restore, source


def v3_log(machine: CacheStateMachine | None = None) -> Log:
    log = Log(machine)
    assert log.apply(encode_format(3, now=0.0)) == 3
    return log


def kept_equals_full(machine: CacheStateMachine) -> None:
    assert machine.digest == machine.full_digest()
    machine.check_invariants()


# --- the kept digest --------------------------------------------------------------------------


@pytest.mark.parametrize("watch", [False, True], ids=["plain", "recording"])
def test_every_mutation_path_keeps_the_digest_equal_to_a_full_recount(watch: bool) -> None:
    history = WatchHistory(1000, 1 << 20) if watch else None
    log = v3_log(CacheStateMachine(max_keys=6, max_bytes=400, watch=history))
    machine = log.machine
    steps = [
        encode_set("a", b"1", now=1.0),
        encode_set("a", b"2", now=1.0),  # overwrite
        encode_set("t", b"x", now=1.0, ttl=5.0),  # with an expiry
        encode_set("t", b"y", now=2.0, keep_ttl=True),
        encode_incr("n", 5, now=2.0),  # counters
        encode_incr("n", -7, now=2.0),
        encode_ttl("a", now=2.0, ttl=100.0),  # TTL-only change
        encode_ttl("a", now=2.0),  # persist
        encode_touch(["a", "n"], now=2.0),  # LRU move: no change
        encode(
            BatchCommand(
                3.0,
                (
                    SetOp("b1", b"v"),
                    SetOp("b2", b"w", ttl=1.0),
                    IncrOp("n", 2),
                    TtlOp("b1", 50.0),
                    DeleteOp("a"),
                    GetOp("n"),
                ),
            )
        ),
        encode_delete("missing", now=3.0),
        encode_set("big", b"z" * 300, now=3.0),  # evicts by bytes
        *(encode_set(f"k{i}", b"v", now=3.0) for i in range(8)),  # evicts by count
        encode_set("late", b"v", now=3.0, ttl=0.5),
        encode_expire(["late", "b2"], now=10.0),  # expiry removal
        encode_set("late", b"again", now=10.0),  # overwrite of an expired entry
        encode_flush("k", now=10.0),  # a prefix
        encode_set("x", b"1", now=10.0, if_version=99),  # refused: nothing changes
        encode_flush(now=11.0),  # everything
        encode_set("after", b"1", now=12.0),
    ]
    for command in steps:
        before = machine.digest
        result = log.apply(command)
        kept_equals_full(machine)
        if isinstance(result, CommandError):
            assert machine.digest == before
    assert len(machine) == 1


def test_the_digest_depends_on_content_not_on_order_or_history() -> None:
    one, two = v3_log(), v3_log()
    for key in ("a", "b", "c"):
        one.apply(encode_set(key, key.encode(), now=1.0))
    for key in ("c", "b", "a"):
        two.apply(encode_set(key, key.encode(), now=1.0))
    # Same keys and values, different versions (indices): different digests.
    assert one.machine.digest != two.machine.digest
    records = one.machine._store.records()
    assert full_digest(dict(reversed(records.items()))) == one.machine.digest
    one.apply(encode_touch(["a"], now=1.0))
    assert full_digest(one.machine._store.records()) == one.machine.digest
    # One changed byte of a value, of a version or of an expiry changes the digest.
    for key, record in records.items():
        for position in (0, 8, len(record) - 1):
            altered = dict(records)
            altered[key] = (
                record[:position] + bytes([record[position] ^ 1]) + record[position + 1 :]
            )
            assert full_digest(altered) != one.machine.digest


def random_command(rng: random.Random, machine: CacheStateMachine, key: str, now: float) -> bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return encode_set(key, rng.randbytes(rng.randrange(8)), now=now)
    if kind == 1:
        return encode_set(key, b"t", now=now, ttl=rng.random() * 3)
    if kind == 2:
        return encode_delete(key, now=now)
    if kind == 3:
        return encode_incr(key, rng.randrange(-3, 4), now=now)
    if kind == 4:
        return encode_ttl(key, now=now, ttl=rng.random() * 3)
    if kind == 5:
        return encode_expire(machine.expired_keys(now, 5), now=now)
    return encode_flush(key[:2], now=now)


def test_a_random_workload_keeps_the_digest_in_step_and_replicas_equal() -> None:
    for seed in range(3):
        rng = random.Random(seed)
        one = v3_log(CacheStateMachine(max_keys=20))
        two = v3_log(CacheStateMachine(max_keys=20, watch=WatchHistory(100, 1 << 16)))
        now = 1.0
        for _ in range(400):
            now += rng.random()
            key = f"k{rng.randrange(30)}"
            command = random_command(rng, one.machine, key, now)
            one.apply(command)
            two.apply(command)
            assert one.machine.digest == two.machine.digest == one.machine.full_digest()
        kept_equals_full(two.machine)


def test_a_replicated_restore_recounts_the_digest() -> None:
    log = v3_log()
    log.apply(encode_set("old", b"gone", now=1.0))
    restore(log, source(20).snapshot())
    kept_equals_full(log.machine)
    assert log.machine.get("old", 10.0) is None


def test_the_digest_ring_keeps_the_last_marks() -> None:
    ring = DigestRing(size=3)
    for index in range(1, 6):
        ring.record(index, index * 10)
    assert [m.index for m in ring.marks()] == [3, 4, 5]
    assert ring.at(2) is None
    assert ring.at(4) == 40
    assert ring.latest() == DigestMark(5, 50)


# --- CHECK and ALARM entries ------------------------------------------------------------------


def test_check_records_the_digest_at_its_index_and_alarms_are_replicated_state() -> None:
    log = v3_log()
    log.apply(encode_set("a", b"1", now=1.0))
    mark = log.apply(encode_check(now=1.0))
    assert mark == DigestMark(log.index, log.machine.digest)
    assert log.machine.digests.at(log.index) == log.machine.digest
    assert log.apply(encode_alarm("n2", "digest differs", now=2.0)) == 1
    assert log.apply(encode_alarm("n2", "again", now=3.0)) == 1  # the first reason stays
    alarm = log.machine.alarms["n2"]
    assert (alarm.reason, alarm.raised_at) == ("digest differs", 2.0)
    assert log.machine.distrust("n2") is not None
    assert log.machine.distrust("n1") is None
    assert log.machine.stats()["divergence_alarms"] == 1
    copy = CacheStateMachine()
    copy.restore(log.machine.snapshot())
    assert copy.alarms == log.machine.alarms
    assert log.apply(encode_alarm("*", now=4.0, clear=True)) == 0
    assert log.machine.alarms == {}


def test_check_and_alarm_need_format_3() -> None:
    log = Log()
    result = log.apply(encode_check(now=1.0))
    assert isinstance(result, CommandError)
    assert result.code is ErrorCode.FORMAT_NOT_ENABLED
    log.apply(encode_format(2, now=1.0))
    result = log.apply(encode_alarm("n1", "x", now=1.0))
    assert isinstance(result, CommandError)
    assert result.code is ErrorCode.FORMAT_NOT_ENABLED


def test_clearing_an_alarm_clears_that_replicas_local_faults() -> None:
    log = v3_log()
    log.machine.node_id = "n1"
    log.machine.add_local_fault("corrupted snapshot")
    assert log.machine.distrust("n1") == "corrupted snapshot"
    log.apply(encode_alarm("n2", now=1.0, clear=True))
    assert log.machine.local_faults
    log.apply(encode_alarm("n1", now=1.0, clear=True))
    assert log.machine.distrust("n1") is None


# --- snapshots --------------------------------------------------------------------------------


def populated() -> Log:
    log = v3_log()
    for i in range(50):
        log.apply(encode_set(f"key-{i:03}", f"value-{i:03}".encode(), now=1.0))
    return log


def test_a_snapshot_carries_the_digest_and_a_clean_restore_has_no_fault() -> None:
    log = populated()
    data = log.machine.snapshot()
    assert decode_snapshot(data).counters["digest"] == log.machine.digest
    copy = CacheStateMachine()
    copy.restore(data)
    assert copy.digest == log.machine.digest
    assert copy.local_faults == []
    assert copy.snapshot_restores == 1


def test_a_corrupted_snapshot_payload_is_caught_on_install() -> None:
    data = populated().machine.snapshot()
    corrupted = data.replace(b"value-017", b"valuE-017")
    assert corrupted != data
    assert len(corrupted) == len(data)
    copy = CacheStateMachine()
    copy.node_id = "n3"
    copy.restore_stream(io.BytesIO(corrupted))  # installs, but is no longer trusted
    assert copy.local_faults
    assert "corrupted snapshot" in copy.local_faults[0]
    reason = copy.distrust("n3")
    assert reason is not None
    assert "digest" in reason


def test_a_snapshot_checks_the_kept_digest_against_the_entries() -> None:
    log = populated()
    machine = log.machine
    # Behind the store's back: the record changes, the kept digest does not.
    record = machine._store._records["key-007"]
    machine._store._records["key-007"] = record[:-1] + b"X"
    data = machine.snapshot()
    assert machine.local_faults
    assert "behind the store" in machine.local_faults[0]
    # The snapshot carries the digest of what it holds: it installs cleanly elsewhere.
    assert decode_snapshot(data).counters["digest"] == full_digest(machine._store.records())
    copy = CacheStateMachine()
    copy.restore(data)
    assert copy.local_faults == []


# --- the verdict ------------------------------------------------------------------------------


def test_verdict_names_the_minority_or_everyone_without_a_majority() -> None:
    assert verdict(9, {"n1": 5, "n2": 5, "n3": 5}, 3) == {}
    assert list(verdict(9, {"n1": 5, "n2": 5, "n3": 6}, 3)) == ["n3"]
    assert list(verdict(9, {"n1": 6, "n2": 5}, 3)) == ["n1", "n2"]  # 1 of 3 each: no majority
    assert list(verdict(9, {"n1": 5, "n2": 5, "n3": 6}, 5)) == ["n1", "n2", "n3"]
    assert list(verdict(9, {"n1": 5, "n2": 5, "n3": 5, "n4": 6, "n5": 7}, 5)) == ["n4", "n5"]


# --- the leader's check in a cluster ----------------------------------------------------------


async def v3_cluster(c: CacheCluster) -> str:
    leader = await c.leader()
    await c.services[leader].ensure_format(3)
    return leader


@pytest.mark.looptime
async def test_a_replica_altered_behind_raft_is_caught_within_one_interval() -> None:
    service_kwargs = {"digest_check_interval_s": 5.0}
    async with CacheCluster(3, service=service_kwargs) as c:
        leader = await v3_cluster(c)
        svc = c.services[leader]
        for i in range(20):
            await svc.set(f"k{i}", b"v")
        await c.settle()
        diverged = c.follower(leader)
        healthy = next(i for i in c.ids if i not in (leader, diverged))
        # Behind Raft's back: a write straight into one follower's store.
        c.machines[diverged]._store.put("k3", b"tampered", 999, NEVER, c.clock())
        await asyncio.sleep(6.0)  # one interval (and a little)
        await c.settle()
        for machine in c.machines.values():
            assert list(machine.alarms) == [diverged]
            assert machine.stats()["divergence_alarms"] == 1
        last = svc.divergence.last_check
        assert last is not None
        assert list(last.diverged) == [diverged]
        for consistency in ("linearizable", "lease", "stale"):
            with pytest.raises(ReplicaDiverged, match=diverged):
                await c.services[diverged].get("k1", consistency)
            with pytest.raises(ReplicaDiverged):
                await c.services[diverged].mget(["k1"], consistency)
            with pytest.raises(ReplicaDiverged):
                await c.services[diverged].list_keys("", None, 10, consistency)
        item = await c.services[healthy].get("k3", "stale")
        assert item is not None
        assert item.value == b"v"
        assert (await svc.get("k3")) is not None
        # Writes still go through (the diverged follower's are the leader's business).
        await svc.set("after", b"1")
        # The operator rebuilt it (here: put the entry back) and clears the alarm.
        good = c.machines[leader].get("k3", 0)
        assert good is not None
        c.machines[diverged]._store.put("k3", b"v", good.version, NEVER, 0)
        assert await svc.clear_alarm(diverged) == 0
        await c.settle()
        assert all(m.alarms == {} for m in c.machines.values())
        outcome = await svc.divergence.check_now()
        assert outcome is not None
        assert outcome.diverged == {}
        assert await c.services[diverged].get("k1", "stale") is not None


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_a_clean_cluster_under_writes_never_raises_a_false_alarm(seed: int) -> None:
    # Real time (not looptime): concurrent writers, checks every 0.3 s in between.
    async with CacheCluster(3, seed=seed, service={"digest_check_interval_s": 0.3}) as c:
        leader = await v3_cluster(c)
        svc = c.services[leader]
        rng = random.Random(seed)

        async def writer(w: int) -> None:
            for _ in range(40):
                key = f"k{rng.randrange(40)}"
                op = rng.randrange(4)
                if op == 0:
                    await svc.set(key, rng.randbytes(8), ttl=rng.choice([None, 0.5, 3.0]))
                elif op == 1:
                    await svc.delete(key)
                elif op == 2:
                    await svc.batch([SetOp(f"b{w}", b"x"), DeleteOp(key)])
                else:
                    await svc.flush(key[:2])
                await asyncio.sleep(rng.random() * 0.02)

        await asyncio.gather(*(writer(w) for w in range(3)))
        await asyncio.sleep(0.7)
        await c.settle()
        assert svc.divergence.checks >= 2
        for machine in c.machines.values():
            assert machine.alarms == {}
            assert machine.local_faults == []
        # The digests recorded at every CHECK index are the same on every replica.
        marks = [{m.index: m.digest for m in c.machines[i].digests.marks()} for i in c.ids]
        common = set(marks[0]) & set(marks[1]) & set(marks[2])
        assert common
        for index in common:
            assert marks[0][index] == marks[1][index] == marks[2][index]


#: The cache cluster's timings, with the persist thread (snapshots are written in it).
SNAPSHOTTING = FAST


@pytest.mark.looptime
async def test_a_corrupted_snapshot_install_is_caught_and_alarmed() -> None:
    async with CacheCluster(3, service={"digest_check_interval_s": 0.0}) as c:
        leader = await v3_cluster(c)
        svc = c.services[leader]
        lagging = c.follower(leader)
        await c.stop_node(lagging)
        for i in range(40):
            await svc.set(f"key-{i:03}", f"value-{i:03}".encode())
        await c.nodes[leader].take_snapshot()  # the log before it is gone: a snapshot it is
        for node_id in c.ids:
            if node_id not in (leader, lagging):
                await c.nodes[node_id].take_snapshot()
        await c.start_node(lagging)
        machine = c.machines[lagging]
        original = machine.restore_stream

        def corrupting(stream: io.BufferedIOBase) -> None:  # corrupted in transfer or on disk
            data = stream.read()
            original(io.BytesIO(data.replace(b"value-017", b"valuE-017")))

        machine.restore_stream = corrupting  # type: ignore[method-assign, assignment]
        async with asyncio.timeout(10):
            while lagging not in c.machines[leader].alarms:
                await asyncio.sleep(0.1)
        assert machine.snapshot_restores >= 1
        assert "corrupted snapshot" in c.machines[leader].alarms[lagging].reason
        with pytest.raises(ReplicaDiverged):
            await c.services[lagging].get("key-001", "stale")
