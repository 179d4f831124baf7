"""The leader's hand-over at shutdown (``server.handover``), on in-process nodes over real HTTP,
and the ``--no-transfer-on-shutdown`` option."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import pytest

from raftcache.network.errors import NetworkError
from raftcache.process.cli import build_serve_parser, options_from_args
from raftcache.process.config import ConfigError, ServeOptions
from raftcache.process.serve import NodeServer
from raftcache.protocol.messages import RequestVoteRequest, RequestVoteResponse
from raftcache.server.drain import DRAIN
from raftcache.server.handover import HANDOVER, hand_over, pick_successor

from .cluster import start_cluster

PEERS = "n1=http://127.0.0.1:8001,n2=http://127.0.0.1:8002"


def parse(argv: list[str], env: dict[str, str] | None = None) -> ServeOptions:
    parser = argparse.ArgumentParser()
    build_serve_parser(parser.add_subparsers(dest="command"))
    base = ["--id", "n1", "--listen", "127.0.0.1:8001", "--peers", PEERS, "--data-dir", "d"]
    return options_from_args(parser.parse_args(["serve", *base, *argv]), env or {})


def test_transfer_on_shutdown_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    assert parse([]).transfer_on_shutdown is True
    assert parse(["--no-transfer-on-shutdown"]).transfer_on_shutdown is False
    assert parse(["--transfer-on-shutdown", "false"]).transfer_on_shutdown is False
    env = {"RAFTCACHE_TRANSFER_ON_SHUTDOWN": "no"}
    assert parse([], env).transfer_on_shutdown is False
    config = tmp_path / "node.toml"
    config.write_text("transfer_on_shutdown = false\n")
    assert parse(["--config", str(config)]).transfer_on_shutdown is False
    with pytest.raises(ConfigError, match="--transfer-on-shutdown"):
        parse(["--transfer-on-shutdown", "maybe"])


async def test_a_write_caught_by_the_transfer_is_held_then_served_by_the_new_leader(
    tmp_path: Path,
) -> None:
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        handover = leader.app[HANDOVER]
        target = pick_successor(leader.node)
        assert target is not None
        # Make the write certainly meet the transfer: leadership is being transferred (the
        # leader refuses proposals) before it is sent, and we know when it is held.
        held = asyncio.Event()
        wait = handover.wait

        async def observed_wait() -> None:
            held.set()
            await wait()

        handover.wait = observed_wait  # type: ignore[method-assign]
        handover.begin()
        leader.node.core.lead_transferee = target
        put = asyncio.ensure_future(
            cluster.session.put(leader.url + "/v1/keys/held", data=b"through the hand-over")
        )
        await asyncio.wait_for(held.wait(), 10)
        assert not put.done()
        # Now let the transfer really happen, and end the hand-over.
        assert await leader.node.transfer_leadership(target) == target
        handover.end()
        async with await asyncio.wait_for(put, 10) as resp:
            assert resp.status == 200, await resp.text()
            version = (await resp.json())["version"]
        new_leader = await cluster.leader()
        assert new_leader.node.node_id == target
        async with cluster.session.get(new_leader.url + "/v1/keys/held") as resp:
            assert resp.status == 200
            assert await resp.read() == b"through the hand-over"
            assert resp.headers["ETag"] == f'"{version}"'
    finally:
        await cluster.stop()


async def test_stopping_the_leader_hands_over_to_a_live_follower(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        term = leader.node.current_term
        followers = [s for s in cluster.servers if s is not leader]
        # One follower is gone: it must not be chosen, however up to date it was.
        silent = followers[0]
        await silent.stop()

        async def only_the_live_one() -> str | None:
            while (choice := pick_successor(leader.node)) != followers[1].node.node_id:
                await asyncio.sleep(0.02)
            return choice

        await asyncio.wait_for(only_the_live_one(), 10)
        caplog.set_level(logging.INFO, "raftcache.server")
        await leader.stop()
        assert "leadership transferred" in caplog.text
        survivor = followers[1].node
        assert survivor.role.value == "leader"
        assert survivor.current_term == term + 1
    finally:
        await cluster.stop()


async def test_with_no_follower_to_take_over_the_node_stops_anyway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await start_cluster(tmp_path, size=1)
    try:
        leader: NodeServer = await cluster.leader()
        caplog.set_level(logging.INFO, "raftcache.server")
        assert await hand_over(leader.node, leader.app[HANDOVER], 5.0) is None
        assert "no live follower" in caplog.text
        assert leader.node.role.value == "leader"
        await asyncio.wait_for(leader.stop(), 10)
    finally:
        await cluster.stop()


async def test_without_transfer_the_leader_just_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await start_cluster(tmp_path, transfer_on_shutdown=False)
    try:
        leader = await cluster.leader()
        caplog.set_level(logging.INFO, "raftcache.server")
        await leader.stop()
        assert "handing leadership over" not in caplog.text
        assert "node stopped" in caplog.text
    finally:
        await cluster.stop()


async def test_followers_that_just_stopped_do_not_hold_the_leader_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        for server in cluster.servers:
            if server is not leader:
                await server.stop()
        caplog.set_level(logging.INFO, "raftcache.server")
        # A follower stopped a moment ago may still be chosen; the hand-over then gives up
        # as soon as it stays silent, well within the bound (which the wait_for would catch).
        await asyncio.wait_for(leader.stop(), 10)
        assert "stopping without" in caplog.text
        assert "leadership transferred" not in caplog.text
    finally:
        await cluster.stop()


async def test_a_follower_that_is_stopping_declines_and_the_leader_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The chosen successor has begun its own stop (``prepare_to_stop``, the first thing its
    ``stop`` does): it declines TimeoutNow, so it never leads; the leader gives the transfer up
    as soon as the answer comes, and accepts writes again at once."""
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        term = leader.node.current_term
        target, other = [s for s in cluster.servers if s is not leader]
        await other.stop()  # the stopping follower is the only one left to choose
        while pick_successor(leader.node) != target.node.node_id:
            await asyncio.sleep(0.02)
        target.prepare_to_stop()
        caplog.set_level(logging.INFO, "raftcache.server")
        assert await hand_over(leader.node, leader.app[HANDOVER], 5.0) is None
        assert target.node.current_term == term  # it never campaigned
        assert leader.node.role.value == "leader"
        assert leader.node.core.lead_transferee is None  # given up, not waiting
        reasons = [getattr(r, "reason", "") for r in caplog.records]
        assert any("declined" in r for r in reasons), reasons
        async with cluster.session.put(leader.url + "/v1/keys/after", data=b"x") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        await cluster.stop()


async def test_a_target_that_campaigned_then_stopped_does_not_hold_the_old_leader_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of a whole-cluster stop: the target got TimeoutNow just before its own stop,
    campaigned (the old leader stepped down and voted for it), then stopped before it won.
    The old leader gives up once it has seen no leader for a few heartbeats, rather than
    waiting out the hand-over bound for a leader that will never be."""
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        term = leader.node.current_term
        target, other = [s for s in cluster.servers if s is not leader]
        await other.stop()
        while pick_successor(leader.node) != target.node.node_id:
            await asyncio.sleep(0.02)
        network = target.node.network
        send_vote = network.send_request_vote

        async def answer_lost(peer: str, req: RequestVoteRequest) -> RequestVoteResponse:
            await send_vote(peer, req)  # delivered: the old leader steps down and votes
            raise NetworkError("the candidate stopped before the answer came")

        monkeypatch.setattr(network, "send_request_vote", answer_lost)
        caplog.set_level(logging.INFO, "raftcache.server")
        assert await hand_over(leader.node, leader.app[HANDOVER], 30.0) is None
        reasons = [getattr(r, "reason", "") for r in caplog.records]
        assert any("did not win" in r for r in reasons), reasons
        assert target.node.current_term > term  # it did campaign...
        assert target.node.role.value != "leader"  # ...and never won
        assert leader.node.role.value != "leader"
        assert "leadership transferred" not in caplog.text
    finally:
        await cluster.stop()


async def test_a_whole_cluster_stopped_at_once_hands_nothing_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every node stops at once (``raftcache cluster`` on Ctrl-C, ``make run``) while the
    followers still finish a request each, so their Raft nodes still run when the leader's
    TimeoutNow arrives: they decline it, no node campaigns, and the leader's hand-over ends
    for a reason, not at its bound."""
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        term = leader.node.current_term
        followers = [s for s in cluster.servers if s is not leader]
        for follower in followers:
            follower.app[DRAIN].enter()  # a request in flight: its drain waits for it

        async def finish_requests() -> None:
            await asyncio.sleep(0.3)
            for follower in followers:
                follower.app[DRAIN].leave()

        caplog.set_level(logging.INFO, "raftcache.server")
        loop = asyncio.get_running_loop()
        started = loop.time()
        # The leader last: its followers' stops have begun (each declines at once) before
        # its hand-over picks one of them — as with signals delivered together.
        await asyncio.gather(finish_requests(), *(s.stop() for s in [*followers, leader]))
        print(f"whole-cluster stop: {(loop.time() - started) * 1000:.0f} ms")
        assert "leadership transferred" not in caplog.text
        assert [s.node.current_term for s in cluster.servers] == [term] * 3
        failed = [r for r in caplog.records if r.getMessage().startswith("leadership transfer")]
        # Each follower declines in turn (the leader tries the next one after a decline).
        assert [r.getMessage() for r in failed][
            -1
        ] == "leadership transfer failed; stopping without it"
        assert {r.getMessage() for r in failed[:-1]} <= {
            "leadership transfer failed; trying another follower"
        }
        assert len(failed) <= len(followers)
        assert all(getattr(r, "reason", "") != repr(TimeoutError()) for r in failed)
    finally:
        await cluster.stop()


async def test_a_transfer_the_target_declines_ends_with_the_decline_not_at_its_deadline(
    tmp_path: Path,
) -> None:
    """``RaftNode.transfer_leadership`` (the admin route, the preferred-leader balancer, whose
    held writes wait for it) to a node about to stop: the target declines, the core gives the
    transfer up at once — and so does the caller, saying so, rather than waiting for a leader
    change that cannot come until its own deadline (three election timeouts)."""
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        term = leader.node.current_term
        target = next(s for s in cluster.servers if s is not leader)
        target.prepare_to_stop()
        with pytest.raises(TimeoutError, match="given up"):
            await leader.node.transfer_leadership(target.node.node_id)
        assert leader.node.role.value == "leader"
        assert target.node.current_term == term
    finally:
        await cluster.stop()


async def test_a_hand_over_a_follower_declines_goes_to_another_live_follower(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two nodes of three stop at once, the leader among them (a rolling restart that
    overlaps): the follower it picks first is stopping too and declines; the other one is
    live, so the leader hands over to it instead of stopping without a transfer (which would
    leave the group without a leader for an election timeout)."""
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        followers = [s for s in cluster.servers if s is not leader]
        while any(not _heard(leader, f) for f in followers):
            await asyncio.sleep(0.02)
        first = pick_successor(leader.node)
        stopping = next(s for s in followers if s.node.node_id == first)
        live = next(s for s in followers if s is not stopping)
        stopping.prepare_to_stop()
        caplog.set_level(logging.INFO, "raftcache.server")
        assert await hand_over(leader.node, leader.app[HANDOVER], 5.0) == live.node.node_id
        assert live.node.role.value == "leader"
        assert stopping.node.role.value != "leader"
    finally:
        await cluster.stop()


def _heard(leader: NodeServer, follower: NodeServer) -> bool:
    pr = leader.node.core.progress.get(follower.node.node_id)
    return pr is not None and pr.last_heard is not None
