"""Forwarding from a follower to the leader, over real loopback sockets between two apps."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings

from .conftest import SMALL_LIMITS
from .fakes import Entry, FakeNode, FakeService

# On aiohttp alone and on the lean front (conftest).
pytestmark = pytest.mark.usefixtures("front")

Client = TestClient[web.Request, web.Application]


@dataclass
class Pair:
    """A follower (n2) in front of a leader (n1); the leader records the headers it saw."""

    follower: Client
    follower_node: FakeNode
    follower_service: FakeService
    leader_node: FakeNode
    leader_service: FakeService
    leader_url: str
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    leader_node = FakeNode(node_id="n1", leader_id="n1")
    leader_service = FakeService(leader_node)
    settings = ServerSettings(limits=SMALL_LIMITS, leader_wait_s=0.3, client_token="tok")
    leader_app = create_app(leader_node, leader_service, settings)
    seen: list[dict[str, str]] = []

    async def capture(request: web.Request, _: web.StreamResponse) -> None:
        seen.append(dict(request.headers))

    leader_app.on_response_prepare.append(capture)
    async with TestServer(leader_app) as leader_server:
        leader_url = str(leader_server.make_url("")).rstrip("/")
        follower_node = FakeNode(node_id="n2", leader_id="n1", addresses={"n1": leader_url})
        follower_service = FakeService(follower_node)
        app = create_app(follower_node, follower_service, settings)
        async with TestClient(TestServer(app), headers={"Authorization": "Bearer tok"}) as client:
            yield Pair(
                client,
                follower_node,
                follower_service,
                leader_node,
                leader_service,
                leader_url,
                seen,
            )


async def test_write_is_forwarded_with_its_headers(pair: Pair) -> None:
    headers = {
        "If-Match": '"0"',
        "X-Raftcache-Client-Id": "c1",
        "X-Raftcache-Seq": "9",
        "X-Custom": "kept",
    }
    resp = await pair.follower.put(
        URL("/v1/keys/a%2Fb?ttl=3", encoded=True), data=b"v", headers=headers
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"version": pair.leader_service.data["a/b"].version}
    name, args = pair.leader_service.calls[-1]
    assert name == "set"
    assert args[:5] == ("a/b", b"v", 3.0, 0, False)
    assert (args[5].client_id, args[5].seq) == ("c1", 9)
    got = pair.seen[-1]
    assert got["X-Raftcache-Forwarded"] == "1"
    assert got["Authorization"] == "Bearer tok"
    assert got["X-Custom"] == "kept"
    assert "a/b" not in pair.follower_service.data


async def test_read_is_forwarded_with_etag(pair: Pair) -> None:
    pair.leader_service.data["k"] = Entry(b"from-leader", 77)
    resp = await pair.follower.get("/v1/keys/k")
    assert resp.status == 200
    assert await resp.read() == b"from-leader"
    assert resp.headers["ETag"] == '"77"'


async def test_leader_errors_are_relayed(pair: Pair) -> None:
    resp = await pair.follower.get("/v1/keys/missing")
    assert resp.status == 404
    assert "error" in orjson.loads(await resp.read())


async def test_forwarded_request_is_never_forwarded_again(pair: Pair) -> None:
    resp = await pair.follower.put("/v1/keys/k", data=b"v", headers={"X-Raftcache-Forwarded": "1"})
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert pair.seen == []


async def test_no_leader_is_503_after_a_bounded_wait(pair: Pair) -> None:
    pair.follower_node.leader_id = None
    resp = await pair.follower.post("/v1/keys/c/incr")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "leader" in (await resp.json())["error"]


async def test_waits_for_a_leader_to_appear(pair: Pair) -> None:
    pair.follower_node.leader_id = None

    async def elect() -> None:
        await asyncio.sleep(0.1)
        pair.follower_node.leader_id = "n1"

    task = asyncio.create_task(elect())
    resp = await pair.follower.delete("/v1/keys/k")
    await task
    assert resp.status == 200
    assert pair.leader_service.calls[-1][0] == "delete"


async def test_serves_locally_when_it_becomes_the_leader(pair: Pair) -> None:
    pair.follower_node.leader_id = None

    async def win() -> None:
        await asyncio.sleep(0.1)
        pair.follower_node.leader_id = "n2"

    task = asyncio.create_task(win())
    resp = await pair.follower.put("/v1/keys/k", data=b"v")
    await task
    assert resp.status == 200
    assert "k" in pair.follower_service.data
    assert pair.seen == []


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_unreachable_leader_is_503(pair: Pair) -> None:
    pair.follower_node.addresses["n1"] = _closed_port_url()
    resp = await pair.follower.put("/v1/keys/k", data=b"v")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"


async def test_refused_connection_is_retried_with_the_new_leader(pair: Pair) -> None:
    """The old leader stopped listening (it handed over): the request never reached it, so the
    follower sends it to the new leader instead of answering 503."""
    pair.follower_node.addresses["n1"] = _closed_port_url()

    async def hand_over() -> None:
        await asyncio.sleep(0.1)
        pair.follower_node.addresses["n3"] = pair.leader_url
        pair.follower_node.leader_id = "n3"

    task = asyncio.create_task(hand_over())
    resp = await pair.follower.put("/v1/keys/k", data=b"v")
    await task
    assert resp.status == 200, await resp.text()
    assert pair.leader_service.calls[-1][0] == "set"


async def test_not_leader_answer_is_retried_not_relayed(pair: Pair) -> None:
    """The chosen leader lost leadership: its 503 says so (``X-Raftcache-Not-Leader``), nothing
    happened there, and the follower — elected meanwhile — serves the write itself."""
    pair.leader_node.leader_id = "n2"

    async def win() -> None:
        await asyncio.sleep(0.1)
        pair.follower_node.leader_id = "n2"

    task = asyncio.create_task(win())
    resp = await pair.follower.put("/v1/keys/k", data=b"v")
    await task
    assert resp.status == 200, await resp.text()
    assert "k" in pair.follower_service.data
    assert "k" not in pair.leader_service.data
    assert pair.seen, "the old leader was asked first"


async def test_not_leader_answer_becomes_503_at_the_deadline(pair: Pair) -> None:
    pair.leader_node.leader_id = None
    resp = await pair.follower.put("/v1/keys/k", data=b"v")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "X-Raftcache-Not-Leader" not in resp.headers
    assert "no longer the leader" in (await resp.json())["error"]


async def test_static_peer_urls_are_a_fallback(pair: Pair) -> None:
    settings = ServerSettings(
        leader_wait_s=0.3, peer_urls={"n1": pair.leader_url}, client_token="tok"
    )
    node = FakeNode(node_id="n3", leader_id="n1")  # no address in its configuration
    app = create_app(node, FakeService(node), settings)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(
            "/v1/mget", json={"keys": ["x"]}, headers={"Authorization": "Bearer tok"}
        )
        assert resp.status == 200
        assert await resp.json() == {"values": [None]}


async def test_membership_change_is_forwarded(pair: Pair) -> None:
    resp = await pair.follower.post("/v1/members", json={"id": "n4", "url": "http://h:1"})
    assert resp.status == 200, await resp.text()
    assert pair.leader_node.calls == [("add_member", ("n4", "http://h:1"))]
    assert pair.follower_node.calls == []
