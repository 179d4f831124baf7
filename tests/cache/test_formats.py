"""Command formats: a node never applies what it does not understand, and a rolling upgrade.

The machine-level tests feed entries by hand; the cluster tests run three simulated nodes
(``tests.cache.cluster``) where one is capped at command format 1 — this build playing the
previous release — and is then "upgraded" by restarting it without the cap.
"""

from __future__ import annotations

import asyncio

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from raftcache.cache.commands import (
    encode_batch,
    encode_flush,
    encode_format,
    encode_set,
    encode_ttl,
)
from raftcache.cache.commands_v2 import IncrOp
from raftcache.cache.formats import COMMAND_FORMAT, FormatNotEnabled, UnsupportedCommandFormat
from raftcache.cache.hashes import HASH_VERSION, HashOp, decode_fields
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode, TtlResult
from tests.cache.cluster import CacheCluster
from tests.cache.helpers import Log, v2_log


def test_a_format_2_entry_before_the_cluster_enabled_it_is_refused_alike_everywhere() -> None:
    log = Log()
    log.apply(encode_set("k", b"v", now=0.0))
    for entry in [
        encode_ttl("k", now=1.0, ttl=5.0),
        encode_flush("", now=1.0),
        encode_batch([IncrOp("n", 1)], now=1.0),
        encode_set("k", b"w", now=1.0, keep_ttl=True),
    ]:
        result = log.apply(entry)
        assert isinstance(result, CommandError)
        assert result.code is ErrorCode.FORMAT_NOT_ENABLED
        assert "format 2" in str(result.to_exception())
    item = log.machine.get("k", 2.0)
    assert item is not None
    assert (item.value, item.expires_at) == (b"v", None)


def test_format_entry_raises_the_cluster_format_and_snapshots_keep_it() -> None:
    log = v2_log()
    assert log.machine.command_format == 2
    assert log.apply(encode_ttl("missing", now=1.0, ttl=5.0)) == TtlResult(False, 0)
    restored = CacheStateMachine()
    restored.restore(log.machine.snapshot())
    assert restored.command_format == 2
    # A machine at format 1 writes the snapshot it always wrote (no command_format counter).
    assert b"command_format" not in CacheStateMachine().snapshot()


def test_a_node_capped_below_an_entry_fails_stop_instead_of_skipping_it() -> None:
    capped = Log(CacheStateMachine(max_format=1))
    capped.apply(encode_set("k", b"v", now=0.0))
    with pytest.raises(UnsupportedCommandFormat, match="upgrade this node"):
        capped.apply(encode_format(2, now=1.0))
    with pytest.raises(UnsupportedCommandFormat):
        capped.apply(encode_ttl("k", now=1.0, ttl=5.0))


def test_an_unknown_op_fails_stop_but_a_malformed_known_one_is_an_error_result() -> None:
    log = Log()
    future = msgpack.packb({"o": "rename", "n": 1.0, "k": "a"}, use_bin_type=True)
    with pytest.raises(UnsupportedCommandFormat, match="'rename'"):
        log.apply(future)
    newer = msgpack.packb({"o": "set", "n": 1.0, "k": "a", "v": b"x", "f": COMMAND_FORMAT + 1})
    with pytest.raises(UnsupportedCommandFormat, match=f"format {COMMAND_FORMAT + 1}"):
        log.apply(newer)
    # Declaring a format the content does not need is malformed, not newer.
    wrong = msgpack.packb({"o": "set", "n": 1.0, "k": "a", "v": b"x", "f": 2}, use_bin_type=True)
    result = log.apply(wrong)
    assert isinstance(result, CommandError)
    assert result.code is ErrorCode.INVALID_COMMAND


def test_a_capped_node_refuses_a_snapshot_of_a_newer_cluster() -> None:
    snapshot = v2_log().machine.snapshot()
    with pytest.raises(UnsupportedCommandFormat, match="snapshot"):
        CacheStateMachine(max_format=1).restore(snapshot)


@pytest.mark.looptime
async def test_rolling_upgrade_in_process() -> None:
    """n3 runs "the old release" (capped at format 1): new commands are refused with an
    error naming it, old ones work; restarted without the cap, new commands are accepted and
    every replica applies them."""
    cluster = CacheCluster(3)
    cluster.caps["n3"] = 1
    async with cluster as c:
        leader = await c.leader()
        svc = c.services[leader]
        await svc.set("k", b"v", ttl=100.0)
        assert (await svc.incr("n", 2)).value == 2
        with pytest.raises(FormatNotEnabled) as refused:
            await svc.expire("k", 5.0)
        assert refused.value.nodes["n3"] == 1
        assert "n3" in str(refused.value)
        with pytest.raises(FormatNotEnabled):
            await svc.batch([IncrOp("n", 1)])
        await asyncio.sleep(30)  # the background check runs and must not raise it either
        assert all(m.command_format == 1 for m in c.machines.values())
        await c.settle()
        assert all(m.get("k", c.clock()) is not None for m in c.machines.values())

        # Upgrade n3: stop it, restart it without the cap (same storage).
        await c.stop_node("n3")
        del c.caps["n3"]
        await c.start_node("n3")
        leader = await c.leader()
        svc = c.services[leader]
        await asyncio.sleep(svc.formats.refusal_ttl_s)  # the last refusal is remembered 1 s
        changed = await svc.expire("k", 5.0)
        assert changed.changed
        assert changed.version > 0
        assert await svc.batch([IncrOp("n", 1)]) == [3]
        assert await svc.flush("n") == 1
        await c.settle()
        for machine in c.machines.values():
            assert machine.command_format >= 2  # the background gate may go on to 3
            item = machine.get("k", c.clock())
            assert item is not None
            assert item.value == b"v"
            assert item.expires_at is not None
            assert item.expires_at < c.clock() + 6
            assert machine.get("n", c.clock()) is None


@pytest.mark.looptime
async def test_the_leader_raises_the_format_by_itself_once_every_node_supports_it() -> None:
    async with CacheCluster(3) as c:
        await c.leader()
        await asyncio.sleep(12)  # two rounds of the background check (every 5 s)
        await c.settle()
        assert [m.command_format for m in c.machines.values()] == [COMMAND_FORMAT] * 3


@pytest.mark.looptime
async def test_a_capped_node_that_meets_a_newer_entry_stops() -> None:
    """A probe that lies (or a node downgraded after the check) must not make a replica skip
    an entry: the capped node fails stop with the reason, the others go on."""
    cluster = CacheCluster(3)
    cluster.caps["n3"] = 1

    async def lying_probe(node_id: str) -> int | None:
        return 2

    cluster.service_kwargs["format_probe"] = lying_probe
    async with cluster as c:
        leader = await c.leader()
        if leader == "n3":  # the capped node refuses by itself; the lie must reach another
            leader = await c.nodes["n3"].transfer_leadership("n1")
        svc = c.services[leader]
        await svc.ensure_format(2)
        await svc.expire("missing", 5.0)
        failure = await asyncio.wait_for(c.nodes["n3"].wait_failed(), 10)
        assert isinstance(failure, UnsupportedCommandFormat)
        assert c.nodes["n3"].failure is failure
        await svc.set("after", b"x")  # the other two still commit


@pytest.mark.looptime
async def test_a_refusal_is_remembered_briefly_so_a_burst_costs_one_probe_round() -> None:
    cluster = CacheCluster(3)
    asked: list[str] = []

    async def old_n3(node_id: str) -> int | None:
        asked.append(node_id)
        return 1 if node_id == "n3" else 2

    cluster.service_kwargs["format_probe"] = old_n3
    async with cluster as c:
        leader = await c.leader()
        if leader == "n3":  # the probe's "old" node must be a follower: it never asks itself
            leader = await c.nodes["n3"].transfer_leadership("n1")
        svc = c.services[leader]
        svc.formats.interval_s = 3600.0  # keep the background check out of the count
        asked.clear()
        for _ in range(5):
            with pytest.raises(FormatNotEnabled):
                await svc.flush("")
        assert len(asked) == 2  # one round: the two other nodes
        await asyncio.sleep(1.5)
        with pytest.raises(FormatNotEnabled):
            await svc.flush("")
        assert len(asked) == 4


@pytest.mark.looptime
async def test_hashes_wait_for_every_node_to_apply_format_5() -> None:
    """n3 runs a release that applies formats up to 3: a hash write is refused naming it and
    nothing is proposed, string writes go on; upgraded, the hash write reaches every replica,
    and a snapshot of the cluster (now at format 5) is one n3's old release cannot restore."""
    cluster = CacheCluster(3)
    cluster.caps["n3"] = 3
    async with cluster as c:
        leader = await c.leader()
        svc = c.services[leader]
        await svc.set("s", b"v")
        op = HashOp("h", "set", (b"f",), (b"1",))
        with pytest.raises(FormatNotEnabled) as refused:
            await svc.batch([op])
        assert refused.value.needed == HASH_VERSION
        assert refused.value.nodes["n3"] == 3
        await c.settle()
        assert all(m.get("h", c.clock()) is None for m in c.machines.values())
        assert all(m.command_format <= 3 for m in c.machines.values())

        await c.stop_node("n3")
        del c.caps["n3"]
        await c.start_node("n3")
        leader = await c.leader()
        svc = c.services[leader]
        await asyncio.sleep(svc.formats.refusal_ttl_s)
        assert await svc.batch([op, HashOp("h", "incr", (b"f",), by=2)]) == [1, 3]
        await c.settle()
        for machine in c.machines.values():
            assert machine.command_format == HASH_VERSION
            item = machine.get("h", c.clock())
            assert item is not None
            assert item.kind == "hash"
            assert decode_fields(item.value) == {b"f": b"3"}
        snapshot = c.machines[leader].snapshot()
        with pytest.raises(UnsupportedCommandFormat, match="snapshot"):
            CacheStateMachine(max_format=3).restore(snapshot)


def test_an_unknown_batch_op_fails_stop_too() -> None:
    """A batch op this build does not know (a newer release's, even under a format this node
    claims) must stop the node, never become an error result the others do not share."""
    log = Log()
    newer = msgpack.packb(
        {"o": "batch", "n": 1.0, "ops": [{"o": "zadd", "k": "z"}]}, use_bin_type=True
    )
    with pytest.raises(UnsupportedCommandFormat, match="'zadd'"):
        log.apply(newer)
    malformed = msgpack.packb({"o": "batch", "n": 1.0, "ops": [{"o": 7, "k": "z"}]})
    result = log.apply(malformed)
    assert isinstance(result, CommandError)
    assert result.code is ErrorCode.INVALID_COMMAND
