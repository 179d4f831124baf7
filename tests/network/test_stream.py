"""StreamNetwork over real loopback sockets: multiplexing, ordering, broken connections, timeouts,
limits, the token at upgrade, negotiation with HTTP-only peers, back-off, protocol errors.

The transport contract shared with HttpNetwork is in ``test_contract.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from raftcache.network import HttpNetwork, NetworkError, NetworkTimeoutError
from raftcache.network.stream import StreamNetwork
from raftcache.network.stream_wire import (
    ERROR,
    HELLO,
    REQUEST,
    RESPONSE,
    STREAM_PATH,
    SUBPROTOCOL,
    Frame,
    decode_message,
    encode_frame,
)
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)

from .fakes import RecordingHandlers, sample_append

VOTE = RequestVoteRequest(4, "a", 7, 3)

Factory = Callable[..., Awaitable[HttpNetwork]]


@pytest.fixture
async def make_node() -> AsyncIterator[Factory]:
    """``make("b")`` starts a StreamNetwork (``http=True``: an HttpNetwork) on a free port."""
    started: list[HttpNetwork] = []

    async def make(
        node_id: str, *, handlers: Any = "default", http: bool = False, **opts: Any
    ) -> HttpNetwork:
        cls = HttpNetwork if http else StreamNetwork
        net = cls(node_id, port=opts.pop("port", 0), node_addresses={}, **opts)
        if handlers is not None:
            net.register_handlers(RecordingHandlers(node_id) if handlers == "default" else handlers)
        await net.start()
        started.append(net)
        return net

    yield make
    for net in started:
        await net.stop()


def point(sender: HttpNetwork, *targets: HttpNetwork) -> None:
    for target in targets:
        sender.set_peer_address(target.node_id, f"http://127.0.0.1:{target.port}")


def stream(net: HttpNetwork) -> StreamNetwork:
    assert isinstance(net, StreamNetwork)
    return net


class Held(RecordingHandlers):
    """Votes of term 1 wait for ``release``; everything else is answered at once."""

    def __init__(self, node_id: str = "b") -> None:
        super().__init__(node_id)
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        if req.term == 1:
            self.waiting.set()
            await self.release.wait()
        return await super().handle_request_vote(req)


async def dropped_then_reconnects(a: HttpNetwork, held: Held) -> None:
    """``a``'s stream to b is counted lost; once b answers again, a second connection serves."""
    async with asyncio.timeout(10):
        while stream(a).stream_stats()["b"]["losses"] < 1:
            await asyncio.sleep(0.01)
    held.release.set()
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert stream(a).stream_stats()["b"]["connects"] == 2


async def test_answers_come_back_out_of_order_matched_by_id(make_node: Factory) -> None:
    held = Held()
    a, b = await make_node("a"), await make_node("b", handlers=held)
    point(a, b)
    finished: list[int] = []

    async def vote(term: int) -> RequestVoteResponse:
        resp = await a.send_request_vote("b", RequestVoteRequest(term, "a", 0, 0))
        finished.append(term)
        return resp

    slow = asyncio.ensure_future(vote(1))
    await held.waiting.wait()  # the first request is in the handler, unanswered
    fast = [await vote(t) for t in (2, 3)]
    assert [r.term for r in fast] == [2, 3]
    held.release.set()
    assert (await slow).term == 1
    assert finished == [2, 3, 1]
    assert stream(a).stream_stats()["b"]["connects"] == 1  # one connection carried all three


async def test_pipelined_requests_reach_the_peer_in_the_order_sent(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    point(a, b)
    requests = [AppendEntriesRequest(1, "a", i, 1, [], i) for i in range(500)]
    # All sent at once, before the connection exists: the first call connects, the rest wait.
    answers = await asyncio.gather(*(a.send_append_entries("b", r) for r in requests))
    assert all(ans.success for ans in answers)
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert [r.prev_log_index for _, r in handlers.calls] == list(range(500))
    more = [AppendEntriesRequest(1, "a", i, 1, [], i) for i in range(500, 1000)]
    await asyncio.gather(*(a.send_append_entries("b", r) for r in more))
    assert [r.prev_log_index for _, r in handlers.calls] == list(range(1000))


async def test_a_cut_connection_fails_calls_in_flight_and_the_next_call_reconnects(
    make_node: Factory,
) -> None:
    held = Held()
    a, b = await make_node("a"), await make_node("b", handlers=held)
    point(a, b)
    in_flight = asyncio.ensure_future(a.send_request_vote("b", RequestVoteRequest(1, "a", 0, 0)))
    await held.waiting.wait()
    stream(a).drop_connections("b")
    with pytest.raises(NetworkError) as info:
        await in_flight
    assert not info.value.permanent
    assert info.value.kind == "connection"
    assert str(info.value).startswith("Connection to node b lost")
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    stats = stream(a).stream_stats()["b"]
    assert (stats["connects"], stats["losses"], stats["mode"]) == (2, 1, "stream")
    errors = a.metrics.snapshot()["outbound"]["RequestVote"]["b"]["errors"]
    assert errors == {"connection": 1}


async def test_a_peer_that_stops_fails_calls_in_flight_as_transient(make_node: Factory) -> None:
    held = Held()
    a, b = await make_node("a"), await make_node("b", handlers=held)
    point(a, b)
    in_flight = asyncio.ensure_future(a.send_request_vote("b", RequestVoteRequest(1, "a", 0, 0)))
    await held.waiting.wait()
    await b.stop()
    with pytest.raises(NetworkError) as info:
        await in_flight
    assert not info.value.permanent
    assert info.value.kind == "connection"


async def test_a_timeout_with_nothing_heard_drops_the_connection(make_node: Factory) -> None:
    held = Held()
    a = await make_node("a", timeout=1.0)  # generous: the first call connects within it
    b = await make_node("b", handlers=held)
    point(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    with pytest.raises(NetworkTimeoutError):
        await a.send_request_vote("b", RequestVoteRequest(1, "a", 0, 0))
    # Nothing came back on the connection since the request left: presumed dead, dropped.
    await dropped_then_reconnects(a, held)


async def test_a_timeout_keeps_a_connection_that_answers_others(make_node: Factory) -> None:
    held = Held()
    # The held call's deadline must pass after the second answer arrives: a loopback round
    # trip, even on a loaded machine, is far below it.
    a = await make_node("a", timeout=2.0)
    b = await make_node("b", handlers=held)
    point(a, b)
    slow = asyncio.ensure_future(a.send_request_vote("b", RequestVoteRequest(1, "a", 0, 0)))
    await held.waiting.wait()
    assert (await a.send_request_vote("b", VOTE)).vote_granted  # heard after the slow one left
    with pytest.raises(NetworkTimeoutError):
        await slow
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    stats = stream(a).stream_stats()["b"]
    assert (stats["connects"], stats["losses"]) == (1, 0)
    held.release.set()


async def test_an_idle_connection_outlives_the_rpc_timeout(make_node: Factory) -> None:
    a, b = await make_node("a", timeout=0.5), await make_node("b")
    point(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    await asyncio.sleep(0.8)  # longer than the session's total timeout: must not close it
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert stream(a).stream_stats()["b"]["connects"] == 1


async def test_a_request_over_the_peers_limit_is_refused_before_sending(
    make_node: Factory,
) -> None:
    a, b = await make_node("a"), await make_node("b", client_max_size=64 * 1024)
    point(a, b)
    big = InstallSnapshotRequest(1, "a", 9, 1, 0, b"x" * (64 * 1024), False)
    with pytest.raises(NetworkError) as info:
        await a.send_install_snapshot("b", big)
    assert info.value.permanent
    assert info.value.kind == "too_large"
    assert "larger than node b accepts (65536 bytes)" in str(info.value)
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert handlers.calls == []
    assert (await a.send_request_vote("b", VOTE)).vote_granted  # the connection is fine
    assert stream(a).stream_stats()["b"]["connects"] == 1


async def raw(port: int, session: aiohttp.ClientSession, **opts: Any) -> Any:
    """A bare WebSocket to the stream route, past the server's greeting."""
    ws = await session.ws_connect(
        f"http://127.0.0.1:{port}{STREAM_PATH}", protocols=(SUBPROTOCOL,), **opts
    )
    hello = decode_message(await ws.receive_bytes())[0]
    assert (hello.kind, hello.body["node"]) == (HELLO, "b")
    return ws


async def test_an_oversized_message_closes_that_connection_only(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b", client_max_size=1024)
    point(a, b)
    async with aiohttp.ClientSession() as session:
        ws = await raw(b.port, session)
        await ws.send_bytes(b"\x00" * 2048)
        msg = await ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert (await a.send_request_vote("b", VOTE)).vote_granted


async def test_frames_that_break_the_protocol_close_the_connection(make_node: Factory) -> None:
    b = await make_node("b")
    async with aiohttp.ClientSession() as session:
        ws = await raw(b.port, session)
        await ws.send_bytes(b"\xc1 not msgpack")
        assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.PROTOCOL_ERROR
        ws = await raw(b.port, session)
        await ws.send_str("text")
        assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == aiohttp.WSCloseCode.UNSUPPORTED_DATA


async def test_a_bad_request_gets_an_error_frame_and_the_connection_goes_on(
    make_node: Factory,
) -> None:
    b = await make_node("b")
    async with aiohttp.ClientSession() as session:
        ws = await raw(b.port, session)
        wrong = {"term": "seven", "candidate_id": "a", "last_log_index": 0, "last_log_term": 0}
        good = encode_frame(REQUEST, 2, 1, VOTE)
        await ws.send_bytes(encode_frame(REQUEST, 1, 1, wrong) + encode_frame(REQUEST, 3, 99, {}))
        await ws.send_bytes(good)
        frames: list[Frame] = []
        while len(frames) < 3:
            frames += decode_message(await ws.receive_bytes())
        by_id = {f.id: f for f in frames}
        assert (by_id[1].kind, by_id[1].body["code"]) == (ERROR, "bad_request")
        assert "term" in by_id[1].body["error"]
        assert (by_id[3].kind, by_id[3].body["code"]) == (ERROR, "bad_request")
        assert (by_id[2].kind, by_id[2].body["vote_granted"]) == (RESPONSE, True)
        await ws.close()
    rejected = b.metrics.snapshot()["inbound"]["RequestVote"]["?"]["errors"]
    assert rejected == {"bad_request": 1}


async def test_the_token_is_checked_at_upgrade(make_node: Factory) -> None:
    b = await make_node("b", cluster_token="s3cret")
    wrong = await make_node("wrong", cluster_token="guess")
    point(wrong, b)
    with pytest.raises(NetworkError) as info:
        await wrong.send_request_vote("b", VOTE)
    assert info.value.permanent
    assert str(info.value) == "Node b answered HTTP 401: missing or wrong cluster token"
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{b.port}{STREAM_PATH}"
        async with session.get(url, headers={"Upgrade": "websocket", "Connection": "Upgrade"}) as r:
            assert r.status == 401
            assert (await r.json())["code"] == "unauthorized"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, headers={"Authorization": "Bearer guess"})
        assert refused.value.status == 401
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert handlers.calls == []


async def test_a_plain_get_is_told_to_upgrade(make_node: Factory) -> None:
    b = await make_node("b")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{b.port}{STREAM_PATH}") as resp,
    ):
        assert resp.status == 426
        assert resp.headers["Upgrade"] == "websocket"
        assert (await resp.json())["code"] == "upgrade_required"


async def test_a_peer_without_the_stream_is_talked_to_over_http(make_node: Factory) -> None:
    a = await make_node("a", renegotiate_after=3600.0)
    old = await make_node("old", http=True)
    point(a, old)
    for _ in range(3):
        assert (await a.send_request_vote("old", VOTE)).vote_granted
        assert (await a.send_append_entries("old", sample_append(2))) == AppendEntriesResponse(
            3, True, match_index=2, last_log_index=2
        )
    assert stream(a).stream_stats()["old"] == {
        "mode": "http",
        "connects": 0,
        "losses": 0,
        "in_flight": 0,
    }
    handlers = old._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert len(handlers.calls) == 6
    assert a.metrics.snapshot()["outbound"]["RequestVote"]["old"]["ok"] == 3


async def test_an_upgraded_peer_is_found_again(make_node: Factory) -> None:
    a = await make_node("a", renegotiate_after=3600.0, reconnect_min=0.01)
    old = await make_node("b", http=True)
    point(a, old)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert stream(a).stream_stats()["b"]["mode"] == "http"
    port = old.port
    await old.stop()  # the rolling upgrade: the node restarts, now serving the stream
    with pytest.raises(NetworkError) as info:
        await a.send_request_vote("b", VOTE)  # refused over HTTP: forget "it has no stream"
    assert info.value.kind == "connection"
    await make_node("b", port=port)
    errors: list[NetworkError] = []
    async with asyncio.timeout(10):
        while True:
            try:
                assert (await a.send_request_vote("b", VOTE)).vote_granted
                break
            except NetworkError as exc:  # the stream's back-off after the refused attempt
                errors.append(exc)
                await asyncio.sleep(0.01)
    assert not any(e.permanent for e in errors)
    assert stream(a).stream_stats()["b"]["mode"] == "stream"


async def test_a_refused_peer_is_retried_only_after_the_back_off(make_node: Factory) -> None:
    b = await make_node("b")
    port = b.port
    await b.stop()
    a = await make_node("a", reconnect_min=3600.0, reconnect_max=3600.0)
    quick = await make_node("quick", reconnect_min=0.01, reconnect_max=0.01)
    for net in (a, quick):
        net.set_peer_address("b", f"http://127.0.0.1:{port}")
        with pytest.raises(NetworkError) as info:
            await net.send_request_vote("b", VOTE)
        assert info.value.kind == "connection"
        assert not info.value.permanent
    await b.start()
    assert b.port == port
    with pytest.raises(NetworkError) as info:
        await a.send_request_vote("b", VOTE)  # still backing off: no attempt, same error
    assert info.value.kind == "connection"
    assert str(info.value).startswith(f"Cannot reach node b at http://127.0.0.1:{port}")
    async with asyncio.timeout(10):
        while True:
            try:
                answer = await quick.send_request_vote("b", VOTE)
                break
            except NetworkError:
                await asyncio.sleep(0.01)
    assert answer.vote_granted


async def test_the_back_off_is_measured_on_the_networks_clock(make_node: Factory) -> None:
    now = [0.0]
    b = await make_node("b")
    port = b.port
    await b.stop()
    a = await make_node("a", reconnect_min=3600.0, reconnect_max=3600.0, clock=lambda: now[0])
    a.set_peer_address("b", f"http://127.0.0.1:{port}")
    with pytest.raises(NetworkError):
        await a.send_request_vote("b", VOTE)
    await b.start()
    with pytest.raises(NetworkError):
        await a.send_request_vote("b", VOTE)  # an hour of the network's clock to go
    now[0] += 3600.0  # the loop's clock has not moved: only the injected one says it is over
    assert (await a.send_request_vote("b", VOTE)).vote_granted


async def test_handlers_per_connection_are_bounded(make_node: Factory) -> None:
    running = 0
    most = 0

    class Counting(RecordingHandlers):
        async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.005)
            running -= 1
            return await super().handle_append_entries(req)

    a, b = await make_node("a"), await make_node("b", handlers=Counting("b"), max_in_flight=2)
    point(a, b)
    answers = await asyncio.gather(
        *(a.send_append_entries("b", sample_append(1)) for _ in range(20))
    )
    assert len(answers) == 20
    assert most == 2  # the server stopped reading until a handler finished


async def test_draining_closes_inbound_streams_and_refuses_new_ones(make_node: Factory) -> None:
    a, b = await make_node("a", reconnect_min=0.01), await make_node("b")
    point(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    stream(b).close_inbound_streams()
    errors: list[NetworkError] = []
    for _ in range(2):  # the closed stream, then a refused upgrade (503)
        with pytest.raises(NetworkError) as info:
            await a.send_request_vote("b", VOTE)
        errors.append(info.value)
        await asyncio.sleep(0.02)  # past the back-off: the second call tries to upgrade
    assert not any(e.permanent for e in errors)
    assert "HTTP 503" in str(errors[-1])
    await b.start()  # accepts upgrades again
    assert (await a.send_request_vote("b", VOTE)).vote_granted


async def test_a_caller_giving_up_on_a_silent_connection_drops_it(make_node: Factory) -> None:
    # Raft's own RPC deadline equals the transport's in `raftcache serve`, and fires first.
    held = Held()
    a, b = await make_node("a", timeout=1.0), await make_node("b", handlers=held)
    point(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await a.send_request_vote("b", RequestVoteRequest(1, "a", 0, 0))
    await dropped_then_reconnects(a, held)


async def test_a_changed_address_closes_the_old_stream(make_node: Factory) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    a.set_peer_address("x", f"http://127.0.0.1:{b.port}")
    assert (await a.send_request_vote("x", VOTE)).vote_granted
    assert len(stream(b)._streams.connections) == 1
    a.set_peer_address("x", f"http://127.0.0.1:{c.port}")
    assert (await a.send_request_vote("x", VOTE)).vote_granted
    async with asyncio.timeout(10):  # the old stream is closed, not left behind
        while stream(b)._streams.connections:
            await asyncio.sleep(0.01)
    assert stream(a).stream_stats()["x"]["connects"] == 1  # a new link, to c
