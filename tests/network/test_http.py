"""HttpNetwork over real loopback sockets: what only HTTP has — its pool, bad bodies, status
mapping, the token on raw requests, mounting. What every transport promises (RPCs, the error
family, timeouts) is run over HTTP too, by ``test_contract.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from raftcache.network import HttpNetwork, NetworkError
from raftcache.network.httpwire import status_error
from raftcache.raft.messages import (
    InstallSnapshotRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)

from .fakes import RecordingHandlers, sample_append
from .httpkit import Factory, connect, started_nodes

VOTE = RequestVoteRequest(4, "n1", 7, 3, pre_vote=True)
VOTE_JSON = {"term": 4, "candidate_id": "n1", "last_log_index": 7, "last_log_term": 3}


@pytest.fixture
async def make_node() -> AsyncIterator[Factory]:
    """Start HttpNetworks on free ports with RecordingHandlers; stop them all afterwards."""
    async with started_nodes() as make:
        yield make


def url_of(net: HttpNetwork) -> str:
    return f"http://127.0.0.1:{net.port}"


async def raw_post(
    net: HttpNetwork, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url_of(net) + path, data=body, headers=headers or {}) as resp,
    ):
        data = await resp.read()
        assert resp.content_type == "application/json"
        return resp.status, orjson.loads(data)


async def test_many_concurrent_rpcs_share_the_pool(make_node: Factory) -> None:
    a, b = await make_node("a", max_connections=4), await make_node("b")
    connect(a, b)
    results = await asyncio.gather(
        *(a.send_append_entries("b", sample_append(2, t)) for t in range(200))
    )
    assert [r.term for r in results] == list(range(200))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"not json at all", "application/json"),
        (b"\xff\xfe\x00garbage", "application/octet-stream"),
        (b"[1, 2, 3]", "text/plain"),
        (b"{", "application/json"),
        (orjson.dumps({**VOTE_JSON, "term": "4"}), "application/json"),
        (orjson.dumps({**VOTE_JSON, "term": True}), "text/plain"),
        (orjson.dumps({**VOTE_JSON, "pre_vote": 1}), "application/json"),
        (orjson.dumps({k: v for k, v in VOTE_JSON.items() if k != "term"}), "application/json"),
    ],
)
async def test_bad_bodies_get_400_and_the_server_keeps_serving(
    make_node: Factory, body: bytes, content_type: str
) -> None:
    b = await make_node("b")
    status, obj = await raw_post(b, "/raft/request-vote", body, {"Content-Type": content_type})
    assert status == 400
    assert isinstance(obj["error"], str)
    assert obj["error"]
    status, obj = await raw_post(b, "/raft/request-vote", orjson.dumps(VOTE_JSON))
    assert status == 200
    assert obj == {"term": 4, "vote_granted": True, "pre_vote": False}


async def test_wrongly_typed_entries_get_400_naming_the_field(make_node: Factory) -> None:
    b = await make_node("b")
    body = {
        "term": 1,
        "leader_id": "a",
        "prev_log_index": 0,
        "prev_log_term": 0,
        "entries": [{"term": 1, "index": 1, "command": "not base64!"}],
        "leader_commit": 0,
    }
    status, obj = await raw_post(b, "/raft/append-entries", orjson.dumps(body))
    assert status == 400
    assert obj["field"] == "entries[0].command"


async def test_unknown_keys_are_ignored_on_the_wire(make_node: Factory) -> None:
    b = await make_node("b")
    status, obj = await raw_post(b, "/raft/request-vote", orjson.dumps({**VOTE_JSON, "zzz": [1]}))
    assert status == 200
    assert obj["vote_granted"] is True


async def test_unknown_routes_answer_json(make_node: Factory) -> None:
    b = await make_node("b")
    status, obj = await raw_post(b, "/raft/nope", b"{}")
    assert status == 404
    assert "error" in obj
    async with aiohttp.ClientSession() as s, s.get(url_of(b) + "/raft/request-vote") as resp:
        assert resp.status == 405
        assert "error" in orjson.loads(await resp.read())


async def test_cluster_token(make_node: Factory) -> None:
    a = await make_node("a", cluster_token="s3cret")
    b = await make_node("b", cluster_token="s3cret")
    intruder = await make_node("x", cluster_token="guess")
    anonymous = await make_node("y")
    connect(a, b, intruder, anonymous)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    for sender in (intruder, anonymous):
        with pytest.raises(NetworkError, match="HTTP 401") as info:
            await sender.send_request_vote("b", VOTE)
        assert info.value.permanent
    body = orjson.dumps(VOTE_JSON)
    for headers in ({}, {"Authorization": "Bearer guess"}, {"Authorization": "s3cret"}):
        status, obj = await raw_post(b, "/raft/request-vote", body, headers)
        assert status == 401
        assert obj["error"]
    status, _ = await raw_post(b, "/raft/request-vote", body, {"Authorization": "Bearer s3cret"})
    assert status == 200
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert len(handlers.calls) == 2


async def test_token_is_checked_before_the_body_is_read(make_node: Factory) -> None:
    b = await make_node("b", cluster_token="t", client_max_size=1000)
    big = b'{"pad": "' + b"x" * 5000 + b'"}'
    status, obj = await raw_post(b, "/raft/request-vote", big)
    assert status == 401  # not 413: the body was never looked at
    status, obj = await raw_post(b, "/raft/request-vote", big, {"Authorization": "Bearer t"})
    assert status == 413
    assert obj["limit"] == 1000


async def test_too_large_is_permanent_for_the_sender(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b", client_max_size=2000)
    connect(a, b)
    chunk = InstallSnapshotRequest(1, "a", 1, 1, 0, b"x" * 4000, False)
    with pytest.raises(NetworkError, match="HTTP 413") as info:
        await a.send_install_snapshot("b", chunk)
    assert info.value.permanent
    assert (await a.send_request_vote("b", VOTE)).vote_granted


async def test_peer_addresses_can_change(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    a.set_peer_address("b", url_of(b) + "/")
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert a.node_addresses == {"b": url_of(b) + "/"}
    a.set_peer_address("b", None)
    with pytest.raises(NetworkError, match="No address configured for node b"):
        await a.send_request_vote("b", VOTE)
    with pytest.raises(ValueError, match="http"):
        a.set_peer_address("b", "ftp://127.0.0.1:1")
    with pytest.raises(ValueError, match="http"):
        HttpNetwork("c", port=0, node_addresses={"b": "127.0.0.1:80"})


async def test_start_and_stop_are_idempotent(make_node: Factory) -> None:
    a = await make_node("a")
    port = a.port
    await a.start()
    assert a.port == port
    await a.stop()
    await a.stop()
    assert not a.started


async def test_mounted_on_an_existing_application(make_node: Factory) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    app = web.Application()
    app.router.add_get("/v1/hello", hello)
    mounted = HttpNetwork("m", port=0, node_addresses={}, app=app)
    handlers = RecordingHandlers("m")
    mounted.register_handlers(handlers)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        await mounted.start()
        assert mounted._runner is None  # no listener of its own
        a = await make_node("a")
        a.set_peer_address("m", f"http://127.0.0.1:{port}")
        mounted.set_peer_address("a", url_of(a))
        assert (await a.send_request_vote("m", VOTE)).vote_granted
        assert (await mounted.send_request_vote("a", VOTE)).vote_granted
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/v1/hello") as r:
            assert await r.json() == {"hello": "world"}
        assert len(handlers.calls) == 1
    finally:
        await mounted.stop()
        await runner.cleanup()


async def test_mount_enforces_its_own_body_limit() -> None:
    app = web.Application(client_max_size=1024)  # the client API's small limit
    net = HttpNetwork("m", port=0, node_addresses={}, client_max_size=8 * 1024 * 1024)
    net.mount(app)
    net.register_handlers(RecordingHandlers("m"))
    assert {r.path for r in net.routes()} == {
        "/raft/request-vote",
        "/raft/append-entries",
        "/raft/install-snapshot",
        "/raft/append-batch",
    }
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    net.set_peer_address("m", f"http://127.0.0.1:{runner.addresses[0][1]}")
    await net.start()
    try:
        chunk = InstallSnapshotRequest(1, "m", 1, 1, 0, b"y" * 100_000, True)
        assert (await net.send_install_snapshot("m", chunk)).next_offset == 100_000
    finally:
        await net.stop()
        await runner.cleanup()


def test_rejects_silly_settings() -> None:
    with pytest.raises(ValueError, match="> 0"):
        HttpNetwork("a", port=0, node_addresses={}, timeout=0)


@pytest.mark.parametrize(
    ("status", "body", "permanent", "text"),
    [
        (502, b"<html>bad gateway</html>", False, "Node b unavailable (HTTP 502): <html>"),
        (503, b'{"error": "restarting"}', False, "Node b unavailable (HTTP 503): restarting"),
        (504, b"", False, "Node b unavailable (HTTP 504)"),
        (503, b'{"error": "x", "code": "no_handlers"}', True, "Node b has no handlers registered"),
        (
            500,
            b'{"error": "Handler on node b raised: E()", "code": "handler_error"}',
            True,
            "Handler on node b raised: E()",
        ),
        (500, b"oops", True, "Node b answered HTTP 500: oops"),
        (503, b'{"error": "no g7", "code": "group_not_hosted", "permanent": false}', False, "g7"),
        (500, b'{"error": "read-only", "code": "read_only", "permanent": true}', True, "read-only"),
        (404, b'{"error": "Not Found", "code": "http_error"}', True, "HTTP 404: Not Found"),
    ],
)
def test_status_mapping(status: int, body: bytes, permanent: bool, text: str) -> None:
    error = status_error("b", status, body)
    assert error.permanent is permanent
    assert text in str(error)


def test_a_relayed_handler_error_keeps_its_kind_unless_it_is_no_label() -> None:
    body = b'{"error": "no g7", "code": "group_not_hosted", "permanent": false}'
    assert status_error("b", 503, body).kind == "group_not_hosted"
    odd = b'{"error": "x", "code": "Not A Label!", "permanent": true}'
    assert status_error("b", 500, odd).kind == "permanent"


async def test_a_slow_peer_does_not_hold_the_connections_another_peer_needs(
    make_node: Factory,
) -> None:
    """The pool is bounded per peer: requests stuck at one follower (here: two, the bound)
    leave the way free to the others (their heartbeats used to queue behind them)."""
    a = await make_node("a", max_connections=2, timeout=60.0)
    slow = RecordingHandlers("slow", delay=60.0)
    b = await make_node("b", handlers=slow, shutdown_timeout=0.05)
    c = await make_node("c")
    connect(a, b, c)
    stuck = [asyncio.ensure_future(a.send_request_vote("b", VOTE)) for _ in range(2)]
    try:
        async with asyncio.timeout(10):
            while len(slow.calls) < 2:  # both reached b: they hold a's two connections to it
                await asyncio.sleep(0.01)
            assert await a.send_request_vote("c", VOTE) == RequestVoteResponse(4, True)
        assert not any(t.done() for t in stuck)
    finally:
        for t in stuck:
            t.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
