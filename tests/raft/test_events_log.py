"""The INFO lines operators read (``raft/events.py``), on a simulated cluster, with caplog.

Each event is exactly one line with its facts: an election, a lost and a recovered peer, a
membership change, a snapshot sent and installed. A peer that stays down is logged once, not
once per heartbeat; a store's groups share one view of the peer stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from raftcache.network.errors import NetworkError
from raftcache.protocol.configuration import Configuration
from raftcache.raft.events import PeerHealth, RaftEvents, configuration_change
from tests.raft.sim import FAST, SimCluster

pytestmark = pytest.mark.looptime

EVENTS = "raftcache.raft.events"


def lines(caplog: pytest.LogCaptureFixture, event: str, **facts: Any) -> list[logging.LogRecord]:
    """The INFO records of ``event`` whose fields include ``facts``."""
    return [
        r
        for r in caplog.records
        if r.levelno == logging.INFO
        and r.getMessage() == event
        and all(getattr(r, k, object()) == v for k, v in facts.items())
    ]


async def test_an_election_is_one_leader_line_per_node(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftcache.raft")
    c = SimCluster(3, seed=5)
    await c.start()
    try:
        leader = await c.wait_leader()
        term = leader.current_term
        await c.propose(b"x")  # every follower has heard from the leader by now
        await c.wait_applied(leader.commit_index)
        for node_id in c.ids:
            got = lines(caplog, "leader changed", node=node_id, leader=leader.node_id)
            assert len(got) == 1, (node_id, [r.__dict__ for r in got])
            assert got[0].term == term  # type: ignore[attr-defined]
            # Its term moved from 0 to the leader's: said once per term it went through.
            terms = [r.term for r in lines(caplog, "term changed", node=node_id)]  # type: ignore[attr-defined]
            assert terms == sorted(set(terms))
            assert terms[-1] == term
    finally:
        await c.stop()


async def test_a_peer_down_is_lost_once_and_recovered_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="raftcache.raft")
    c = SimCluster(3, seed=6)
    await c.start()
    try:
        leader = await c.wait_leader()
        victim = next(i for i in c.ids if i != leader.node_id)
        c.hub.fail_node(victim)
        # Ten election timeouts of heartbeats failing: still one line.
        await asyncio.sleep(FAST.election_timeout_max * 10)
        assert leader.role.value == "leader"
        lost = lines(caplog, "peer lost", node=leader.node_id, peer=victim)
        assert len(lost) == 1
        assert lost[0].failing_s >= FAST.election_timeout_max  # type: ignore[attr-defined]
        assert not lines(caplog, "peer recovered")
        c.hub.recover_node(victim)
        await c.propose(b"back")
        await c.wait_applied(leader.commit_index)
        await asyncio.sleep(FAST.election_timeout_max * 3)
        recovered = lines(caplog, "peer recovered", node=leader.node_id, peer=victim)
        assert len(recovered) == 1
        assert recovered[0].lost_for_s >= FAST.election_timeout_max * 10  # type: ignore[attr-defined]
        assert len(lines(caplog, "peer lost", peer=victim)) == 1
    finally:
        await c.stop()


async def test_membership_and_snapshot_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftcache.raft")
    config = dataclasses.replace(FAST, snapshot_threshold=20, snapshot_chunk_size=256)
    c = SimCluster(3, seed=7, config=config)
    await c.start()
    try:
        for i in range(30):
            await c.propose(f"s{i}".encode())
        leader = await c.wait_leader()
        assert leader.core.log.snapshot_index > 0  # n4 can only catch up by snapshot
        await c.restart("n4", peers=c.ids)
        c.ids.append("n4")
        await leader.add_member("n4")
        await c.wait_applied(leader.commit_index)
        me = leader.node_id
        added = lines(caplog, "membership changed", node=me, added_learners="n4")
        promoted = lines(caplog, "membership changed", node=me, promoted="n4")
        assert len(added) == 1
        assert len(promoted) == 1
        assert promoted[0].voters == "n1,n2,n3,n4"  # type: ignore[attr-defined]
        sent = lines(caplog, "snapshot sent", node=me, to="n4")
        installed = lines(caplog, "snapshot installed", node="n4", leader=me)
        assert len(sent) >= 1
        assert len(installed) == len(sent)
        assert sent[-1].index == installed[-1].index  # type: ignore[attr-defined]
        assert sent[-1].bytes == installed[-1].bytes > 0  # type: ignore[attr-defined]
        await leader.remove_member("n4")
        removed = lines(caplog, "membership changed", node=me, removed="n4")
        assert len(removed) == 1
        assert removed[0].voters == "n1,n2,n3"  # type: ignore[attr-defined]
    finally:
        await c.stop()


def test_a_store_shares_one_view_of_each_peer_store(caplog: pytest.LogCaptureFixture) -> None:
    """Sixteen groups failing towards one peer store make one "peer lost" line."""
    caplog.set_level(logging.INFO, logger=EVENTS)
    health = PeerHealth("s1", lost_after=1.0)
    down = NetworkError("connection refused")
    for tick in range(40):
        for _group in range(16):
            health.failed("s2", tick * 0.1, down)
    assert health.lost() == ["s2"]
    assert len(lines(caplog, "peer lost", node="s1", peer="s2")) == 1
    for _group in range(16):
        health.answered("s2", 5.0)
    (back,) = lines(caplog, "peer recovered", node="s1", peer="s2")
    assert back.lost_for_s == 5.0  # type: ignore[attr-defined]
    assert health.lost() == []


def test_a_short_failure_is_not_news(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=EVENTS)
    health = PeerHealth("n1", lost_after=1.0)
    health.failed("n2", 0.0, TimeoutError())
    health.failed("n2", 0.9, TimeoutError())
    health.answered("n2", 0.95)
    health.failed("n2", 1.5, TimeoutError())  # a new run of failures starts at 1.5
    assert not caplog.records


def test_events_report_changes_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=EVENTS)
    events = RaftEvents("n1", group="g3")
    conf = Configuration.of(["n1", "n2", "n3"])
    events.observe(4, "n2", conf)  # the baseline
    events.observe(4, "n2", conf)
    assert not caplog.records
    events.observe(4, None, conf)  # a leader stepped down in its term
    events.observe(5, None, conf)
    events.observe(5, "n3", conf)
    assert [r.getMessage() for r in caplog.records] == [
        "leader unknown",
        "term changed",
        "leader changed",
    ]
    assert all(r.group == "g3" for r in caplog.records)  # type: ignore[attr-defined]


def test_configuration_change_names_every_kind_of_change() -> None:
    old = Configuration(voters={"a": None, "b": None, "c": None}, learners={"d": None})
    new = Configuration(voters={"a": None, "b": None, "d": None}, learners={"e": None})
    assert configuration_change(old, new) == {
        "added_learners": "e",
        "removed": "c",
        "promoted": "d",
        "voters": "a,b,d",
        "learners": "e",
    }


async def test_a_store_down_is_one_line_per_store_not_per_group(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three real ``Store`` objects, four groups each: when s3 goes down, s1 and s2 lead all
    four groups between them (one leads two or more), and each logs s3 lost at most once."""
    from tests.store.test_store_sim import GROUPS, Stores

    caplog.set_level(logging.INFO, logger=EVENTS)
    stores = Stores(seed=3)
    for store_id in ("s1", "s2", "s3"):
        await stores.start(store_id)
    try:
        stores.hub.fail_node("s3")
        await asyncio.sleep(FAST.election_timeout_max * 15)
        gids = [f"g{g}" for g in range(GROUPS)]
        leaders = [stores.leader(gid) for gid in gids]
        led = [r.node.node_id for r in leaders if r is not None]
        assert sorted(set(led)) <= ["s1", "s2"]
        assert len(led) == GROUPS  # so one of them leads two groups or more
        per_store = {s: len(lines(caplog, "peer lost", node=s, peer="s3")) for s in ("s1", "s2")}
        assert max(per_store.values()) == 1, per_store
        assert all(per_store[s] == 1 for s in set(led)), per_store
    finally:
        for store in list(stores.running.values()):
            await store.stop()
