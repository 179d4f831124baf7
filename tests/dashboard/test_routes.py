"""The dashboard's routes over fake peers (aiohttp test servers): the page and its files, and the
cluster view's polling — bounded in time and size, shared between concurrent callers, with the
caller's token — and the routes mounted on the real server app behind its middlewares."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.dashboard import add_dashboard_routes
from raftcache.dashboard.poll import MAX_BODY_BYTES, ClusterPoller
from raftcache.dashboard.routes import CONTENT_SECURITY_POLICY, POLLER
from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from tests.server.cluster import free_ports
from tests.server.fakes import FakeNode, FakeService


@dataclass
class FakePeer:
    """A peer whose ``/v1/status`` and ``/v1/stats`` answers the test scripts."""

    node_id: str
    role: str = "follower"
    delay_s: float = 0.0
    status_body: bytes | None = None  # raw body instead of the JSON status
    status_code: int = 200
    seen_auth: list[str | None] = field(default_factory=list)
    status_calls: int = 0
    stats_delay_s: float | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/stats", self.stats)
        return app

    async def status(self, request: web.Request) -> web.Response:
        self.status_calls += 1
        self.seen_auth.append(request.headers.get("Authorization"))
        await asyncio.sleep(self.delay_s)
        if self.status_body is not None:
            return web.Response(body=self.status_body, status=self.status_code)
        body = {
            "id": self.node_id,
            "role": self.role,
            "term": 5,
            "leader": "p1",
            "commit_index": 20,
            "last_applied": 18 if self.role == "follower" else 20,
            "members": ["p1", "p2"],
        }
        return web.json_response(body, status=self.status_code)

    async def stats(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.stats_delay_s if self.stats_delay_s is not None else self.delay_s)
        raft = {"replication_latency_ms": {"p2": 3.0}} if self.role == "leader" else {}
        return web.json_response({"cache": {"keys": 4}, "raft": raft})


@pytest.fixture
async def serve_peers() -> AsyncIterator[Callable[[list[FakePeer]], Any]]:
    servers: list[TestServer] = []

    async def start(peers: list[FakePeer]) -> dict[str, str]:
        urls = {}
        for peer in peers:
            server = TestServer(peer.app())
            await server.start_server()
            servers.append(server)
            urls[peer.node_id] = str(server.make_url("")).rstrip("/")
        return urls

    yield start
    for server in servers:
        await server.close()


async def dashboard_client(
    peer_urls: dict[str, str], **kwargs: Any
) -> TestClient[web.Request, web.Application]:
    app = web.Application()
    add_dashboard_routes(app, peer_urls=peer_urls, self_id="p1", **kwargs)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_page_and_static_files() -> None:
    client = await dashboard_client({})
    try:
        page = await client.get("/")
        assert page.status == 200
        assert page.content_type == "text/html"
        assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        html = await page.text()
        assert '<script src="/dashboard/dashboard.js" defer></script>' in html
        assert "://" not in html  # nothing from another origin
        etag = page.headers["ETag"]
        again = await client.get("/", headers={"If-None-Match": etag})
        assert again.status == 304
        script = await client.get("/dashboard/dashboard.js")
        assert script.content_type == "text/javascript"
        # Peer data reaches the page as text only: no HTML-parsing sink in the script.
        assert not re.search(
            r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|eval\(",
            await script.text(),
        )
        style = await client.get("/dashboard/dashboard.css")
        assert style.content_type == "text/css"
        assert (await client.head("/")).status == 200
    finally:
        await client.close()


async def test_cluster_view_of_fake_peers(serve_peers: Any) -> None:
    urls = await serve_peers([FakePeer("p1", role="leader"), FakePeer("p2")])
    (dead_port,) = free_ports(1)
    urls["p3"] = f"http://127.0.0.1:{dead_port}"
    client = await dashboard_client(urls)
    try:
        response = await client.get("/dashboard/cluster.json")
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        view = await response.json()
    finally:
        await client.close()
    assert (view["self"], view["leader"], view["up"], view["total"]) == ("p1", "p1", 2, 3)
    rows = {row["id"]: row for row in view["nodes"]}
    assert rows["p2"]["lag"] == 2
    assert rows["p2"]["replication_ms"] == 3.0
    assert rows["p2"]["keys"] == 4
    assert rows["p1"]["rtt_ms"] is not None
    assert rows["p3"]["reachable"] is False
    assert rows["p3"]["error"].startswith("unreachable")


@pytest.mark.parametrize(
    ("peer", "error"),
    [
        (
            FakePeer("p1", status_code=401, status_body=b'{"error": "x"}'),
            "HTTP 401 from /v1/status",
        ),
        (FakePeer("p1", status_body=b"<html>"), "invalid JSON from /v1/status"),
        (FakePeer("p1", status_body=b"[1, 2]"), "/v1/status did not answer a JSON object"),
        (
            FakePeer("p1", status_body=b'"' + b"x" * MAX_BODY_BYTES + b'"'),
            f"answer from /v1/status larger than {MAX_BODY_BYTES} bytes",
        ),
    ],
)
async def test_a_bad_answer_becomes_a_row_error(
    serve_peers: Any, peer: FakePeer, error: str
) -> None:
    poller = ClusterPoller(await serve_peers([peer]))
    try:
        (got,) = await poller.poll()
    finally:
        await poller.close()
    assert got.status is None
    assert got.error == error


async def test_a_slow_peer_costs_at_most_the_timeout(serve_peers: Any) -> None:
    urls = await serve_peers([FakePeer("p1", role="leader"), FakePeer("p2", delay_s=30.0)])
    poller = ClusterPoller(urls, timeout_s=0.3)
    try:
        async with asyncio.timeout(5.0):  # far below the slow peer's 30 s
            fast, slow = await poller.poll()
    finally:
        await poller.close()
    assert fast.error is None
    assert fast.status is not None
    assert slow.error == "no answer in 0.3 s"


async def test_a_failed_status_leaves_no_stats_request_behind(serve_peers: Any) -> None:
    peer = FakePeer("p1", status_code=503, status_body=b"{}", stats_delay_s=30.0)
    poller = ClusterPoller(await serve_peers([peer]), timeout_s=10.0)
    try:
        async with asyncio.timeout(5.0):
            (got,) = await poller.poll()
        await asyncio.sleep(0)
        leftovers = [
            t
            for t in asyncio.all_tasks()
            if not t.done() and "ClusterPoller" in t.get_coro().__qualname__  # type: ignore[union-attr]
        ]
    finally:
        await poller.close()
    assert got.error == "HTTP 503 from /v1/status"
    assert leftovers == []


async def test_callers_share_one_poll_and_peers_get_their_token(serve_peers: Any) -> None:
    peer = FakePeer("p1", role="leader", delay_s=0.2)
    poller = ClusterPoller(await serve_peers([peer]))
    try:
        results = await asyncio.gather(*(poller.poll("Bearer t0k") for _ in range(5)))
        assert peer.status_calls == 1
        assert all(r == results[0] for r in results)
        await poller.poll(None)
        assert peer.status_calls == 2
    finally:
        await poller.close()
    assert peer.seen_auth == ["Bearer t0k", None]


async def test_one_caller_leaving_does_not_cancel_the_shared_poll(serve_peers: Any) -> None:
    peer = FakePeer("p1", role="leader", delay_s=0.3)
    poller = ClusterPoller(await serve_peers([peer]))
    try:
        first = asyncio.ensure_future(poller.poll())
        second = asyncio.ensure_future(poller.poll())
        await asyncio.sleep(0.1)
        first.cancel()
        (got,) = await second
        assert got.error is None
    finally:
        await poller.close()


def test_poller_refuses_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        ClusterPoller({}, timeout_s=0)


async def test_mounted_on_the_server_app_behind_its_client_token(serve_peers: Any) -> None:
    peer = FakePeer("p1", role="leader")
    urls = await serve_peers([peer])
    node = FakeNode()
    # create_app mounts the dashboard itself, polling the peers of its settings.
    settings = ServerSettings(client_token="s3cret", peer_urls=urls)
    app = create_app(node, FakeService(node), settings)
    async with TestClient(TestServer(app)) as client:
        refused = await client.get("/dashboard/cluster.json")
        assert refused.status == 401
        assert "error" in await refused.json()
        assert peer.status_calls == 0
        allowed = await client.get(
            "/dashboard/cluster.json", headers={"Authorization": "Bearer s3cret"}
        )
        assert allowed.status == 200
        assert (await allowed.json())["leader"] == "p1"
        assert peer.seen_auth == ["Bearer s3cret"]
        poller = app[POLLER]
    # The app's cleanup closed the poller's session (an unclosed one would warn → error).
    assert poller._session is None
