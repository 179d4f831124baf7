"""The transport contract, run against every real transport over loopback sockets.

Rule: what network.md promises a caller — responses, the error family and its ``permanent`` flags,
timeouts, the cluster token, metrics — holds whichever transport carries the RPCs: HTTP with
JSON bodies, HTTP with msgpack bodies, and the stream (one multiplexed WebSocket per peer).
Transport-specific behaviour is tested next to each transport (``test_http*``, ``test_stream*``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from raftcache.network import HttpNetwork, NetworkError, NetworkTimeoutError
from raftcache.network.groups import GroupNetwork, GroupRouter
from raftcache.network.stream import StreamNetwork
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)

from .fakes import RecordingHandlers, sample_append

VOTE = RequestVoteRequest(4, "n1", 7, 3, pre_vote=True)

Factory = Callable[..., Awaitable[HttpNetwork]]

TRANSPORTS: dict[str, tuple[type[HttpNetwork], dict[str, Any]]] = {
    "http-json": (HttpNetwork, {"wire_format": "json", "client": "aiohttp"}),
    "http-msgpack": (HttpNetwork, {"wire_format": "msgpack", "client": "aiohttp"}),
    "http-lean": (HttpNetwork, {"wire_format": "json", "client": "lean"}),
    "http-lean-msgpack": (HttpNetwork, {"wire_format": "msgpack", "client": "lean"}),
    "stream": (StreamNetwork, {}),
}


@pytest.fixture(params=sorted(TRANSPORTS))
async def make_node(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Start networks of the transport under test on free ports; stop them all afterwards."""
    cls, defaults = TRANSPORTS[request.param]
    started: list[HttpNetwork] = []

    async def make(node_id: str, *, handlers: Any = "default", **opts: Any) -> HttpNetwork:
        opts = {"node_addresses": {}, **defaults, **opts}
        net = cls(node_id, port=0, **opts)
        if handlers == "default":
            handlers = RecordingHandlers(node_id)
        if handlers is not None:
            net.register_handlers(handlers)
        await net.start()
        started.append(net)
        return net

    yield make
    for net in started:
        await net.stop()


def connect(*nets: HttpNetwork) -> None:
    for a in nets:
        for b in nets:
            a.set_peer_address(b.node_id, f"http://127.0.0.1:{b.port}")


async def test_every_rpc_between_three_nodes(make_node: Factory) -> None:
    nets = [await make_node(f"n{i}") for i in (1, 2, 3)]
    connect(*nets)
    assert len({n.port for n in nets}) == 3
    assert all(n.port > 0 for n in nets)
    for sender in nets:
        for target in nets:
            if sender is target:
                continue
            assert await sender.send_request_vote(target.node_id, VOTE) == RequestVoteResponse(
                4, True
            )
            resp = await sender.send_append_entries(target.node_id, sample_append(3))
            assert resp == AppendEntriesResponse(3, True, match_index=3, last_log_index=3)
            snap = InstallSnapshotRequest(1, sender.node_id, 5, 1, 100, b"\x00\xff" * 10, True)
            assert (await sender.send_install_snapshot(target.node_id, snap)).next_offset == 120
    for target in nets:
        handlers = target._handlers
        assert isinstance(handlers, RecordingHandlers)
        assert len(handlers.calls) == 6
        got = next(r for m, r in handlers.calls if m == "append_entries")
        assert got == sample_append(3)  # non-UTF-8 commands survived the wire
        assert next(r for m, r in handlers.calls if m == "request_vote") == VOTE


async def test_many_concurrent_rpcs(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    results = await asyncio.gather(
        *(a.send_append_entries("b", sample_append(2, t)) for t in range(200))
    )
    assert [r.term for r in results] == list(range(200))


async def test_a_snapshot_chunk_of_one_mib(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    chunk = bytes(range(256)) * 4096
    resp = await a.send_install_snapshot("b", InstallSnapshotRequest(1, "a", 9, 1, 0, chunk, False))
    assert resp.next_offset == len(chunk) == 1024 * 1024
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert handlers.calls[-1][1].data == chunk


async def test_unknown_target_is_permanent(make_node: Factory) -> None:
    a = await make_node("a")
    with pytest.raises(NetworkError) as info:
        await a.send_request_vote("ghost", VOTE)
    assert str(info.value) == "No address configured for node ghost"
    assert info.value.permanent


async def test_a_stopped_peer_is_transient_and_comes_back_on_its_port(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    port = b.port
    await b.stop()
    for _ in range(2):  # the open connection first, then a refused one
        with pytest.raises(NetworkError) as info:
            await a.send_request_vote("b", VOTE)
        assert not info.value.permanent
        assert "node b" in str(info.value)
    await b.start()
    assert b.port == port
    errors: list[NetworkError] = []
    async with asyncio.timeout(10):  # a stream reconnects once its back-off has passed
        while True:
            try:
                answer = await a.send_request_vote("b", VOTE)
                break
            except NetworkError as exc:
                errors.append(exc)
                await asyncio.sleep(0.01)
    assert answer.vote_granted
    assert not any(e.permanent for e in errors)
    if not isinstance(a, StreamNetwork):
        assert errors == []  # HTTP keeps no back-off: the first call after the restart connects


async def test_a_handler_exception_is_permanent_and_the_server_survives(
    make_node: Factory,
) -> None:
    a = await make_node("a")
    b = await make_node("b", handlers=RecordingHandlers("b", error=ValueError("bad state")))
    connect(a, b)
    with pytest.raises(NetworkError) as info:
        await a.send_request_vote("b", VOTE)
    assert info.value.permanent
    assert str(info.value) == "Handler on node b raised: ValueError('bad state')"
    b.register_handlers(RecordingHandlers("b"))
    assert (await a.send_request_vote("b", VOTE)).vote_granted


async def test_a_group_not_hosted_is_transient_and_only_a_debug_line(
    make_node: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """Heartbeats of a group the peer does not host (yet): each fails as a transient
    ``group_not_hosted``, the sender's Raft retries, and the receiver logs no warning."""
    router = GroupRouter("b")
    router.attach("g0", RecordingHandlers("b"))
    a, b = await make_node("a"), await make_node("b", handlers=router)
    connect(a, b)
    caplog.set_level(logging.DEBUG, logger="raftcache.network")
    view = GroupNetwork(a, GroupRouter("a"), "g7")
    for _ in range(3):
        with pytest.raises(NetworkError) as info:
            await view.send_append_entries("b", AppendEntriesRequest(1, "a", 0, 0))
        assert (info.value.kind, info.value.permanent) == ("group_not_hosted", False)
        assert str(info.value) == "node b hosts no replica of group 'g7'"
    refusals = [r for r in caplog.records if "hosts no replica" in r.getMessage()]
    assert len(refusals) == 3
    assert {r.levelno for r in refusals} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert b.metrics.rpc("inbound", "AppendEntries", "a").errors == {"group_not_hosted": 3}
    hosted = GroupNetwork(a, GroupRouter("a"), "g0")
    assert (await hosted.send_append_entries("b", AppendEntriesRequest(1, "a", 0, 0))).success


async def test_a_network_error_a_handler_raises_keeps_kind_and_permanence(
    make_node: Factory,
) -> None:
    refusal = NetworkError("node b is read-only", permanent=True, kind="read_only")
    a = await make_node("a")
    b = await make_node("b", handlers=RecordingHandlers("b", error=refusal))
    connect(a, b)
    with pytest.raises(NetworkError) as info:
        await a.send_request_vote("b", VOTE)
    assert (str(info.value), info.value.kind, info.value.permanent) == (
        "node b is read-only",
        "read_only",
        True,
    )


async def test_no_handlers_is_permanent(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b", handlers=None)
    connect(a, b)
    with pytest.raises(NetworkError) as info:
        await a.send_request_vote("b", VOTE)
    assert str(info.value) == "Node b has no handlers registered"
    assert info.value.permanent


async def test_a_timeout_is_network_timeout_error(make_node: Factory) -> None:
    a = await make_node("a", timeout=0.2)
    b = await make_node("b", handlers=RecordingHandlers("b", delay=5.0), shutdown_timeout=0.05)
    connect(a, b)
    with pytest.raises(NetworkTimeoutError) as info:
        await a.send_request_vote("b", VOTE)
    assert not info.value.permanent
    assert str(info.value) == "RPC to node b timed out after 0.2s"


async def test_the_cluster_token(make_node: Factory) -> None:
    a = await make_node("a", cluster_token="s3cret")
    b = await make_node("b", cluster_token="s3cret")
    wrong = await make_node("wrong", cluster_token="guess")
    connect(a, b, wrong)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    with pytest.raises(NetworkError) as info:
        await wrong.send_request_vote("b", VOTE)
    assert info.value.permanent
    assert "401" in str(info.value)
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert len(handlers.calls) == 1  # the refused request never reached the node


async def test_calls_are_metered_both_ways(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    for _ in range(3):
        await a.send_append_entries("b", sample_append(2))
    out = a.metrics.snapshot()["outbound"]["AppendEntries"]["b"]
    assert (out["calls"], out["ok"]) == (3, 3)
    assert out["bytes_sent"] > 0
    assert out["bytes_received"] > 0
    assert out["latency_s"]["count"] == 3
    inbound = b.metrics.snapshot()["inbound"]["AppendEntries"]["leader"]  # the sender it names
    assert (inbound["calls"], inbound["ok"]) == (3, 3)
    assert inbound["bytes_received"] > 0
    assert inbound["bytes_sent"] > 0


async def test_sending_before_start_is_refused() -> None:
    for cls, opts in TRANSPORTS.values():
        net = cls("a", port=0, node_addresses={"b": "http://127.0.0.1:1"}, **opts)
        with pytest.raises(NetworkError, match="not started") as info:
            await net.send_request_vote("b", VOTE)
        assert info.value.permanent


async def test_a_peer_address_can_change(make_node: Factory) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    a.set_peer_address("x", f"http://127.0.0.1:{b.port}")
    assert (await a.send_request_vote("x", VOTE)).vote_granted
    a.set_peer_address("x", f"http://127.0.0.1:{c.port}")
    assert (await a.send_request_vote("x", VOTE)).vote_granted
    for net, count in ((b, 1), (c, 1)):
        handlers = net._handlers
        assert isinstance(handlers, RecordingHandlers)
        assert len(handlers.calls) == count
    a.set_peer_address("x", None)
    with pytest.raises(NetworkError, match="No address configured for node x"):
        await a.send_request_vote("x", VOTE)
