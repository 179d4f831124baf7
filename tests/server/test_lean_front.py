"""The lean front (``server.lean.front``): hot key routes answered by the httptools protocol,
everything else handed — with the connection — to aiohttp, on one port, over real sockets.

Each test knows for certain which side answered: the front counts the requests it served and the
connections it handed over, and the bytes it read (a split test waits for the first segment to be
read before it sends the second, so the split is certain, not hoped for).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from raftcache.process.serve import loop_factory
from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from raftcache.server.lean.front import (
    LEAN_BODY_MAX,
    LeanFront,
    LeanSite,
    LeanSockSite,
    lean_available,
)
from raftcache.server.lean.request import LeanRequest
from raftcache.server.validation import Limits

from .cluster import start_cluster
from .conftest import SMALL_LIMITS
from .fakes import FakeNode, FakeService
from .wire import Answer, Conn, request


@dataclass
class Served:
    port: int
    front: LeanFront
    service: FakeService
    runner: web.AppRunner


async def _serve(
    *,
    lean: bool = True,
    ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
    limits: Limits = SMALL_LIMITS,
) -> Served:
    node = FakeNode()
    service = FakeService(node)
    settings = ServerSettings(limits=limits, leader_wait_s=0.3, client_token=token)
    runner = web.AppRunner(create_app(node, service, settings), access_log=None)
    await runner.setup()
    site: web.TCPSite
    if lean:
        site = LeanSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    else:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    front = site.front if isinstance(site, LeanSite) else None
    return Served(site.port, front, service, runner)  # type: ignore[arg-type]


async def _stop(served: Served) -> None:
    if served.front is not None:
        served.front.close_connections()
    await served.runner.cleanup()


@pytest.fixture
async def lean() -> AsyncIterator[Served]:
    served = await _serve()
    yield served
    await _stop(served)


async def _until(condition: object, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)


async def test_keep_alive_hot_then_other_then_hot(lean: Served) -> None:
    conn = await Conn.open(lean.port)
    await conn.send(request("PUT", "/v1/keys/a", b"one"))
    (put,) = await conn.answers(1)
    assert put.status == 200
    version = put.json()["version"]  # type: ignore[index]
    assert (lean.front.served, lean.front.handed_off) == (1, 0)
    await conn.send(request("GET", "/v1/health"))
    (health,) = await conn.answers(1)
    assert health.status == 200
    await conn.send(request("GET", "/v1/keys/a"))
    (get,) = await conn.answers(1)
    assert (get.status, get.body, get.headers["etag"]) == (200, b"one", f'"{version}"')
    # The second request moved the connection to aiohttp for good, on the same socket.
    assert (lean.front.served, lean.front.handed_off) == (1, 1)
    await conn.close()


async def test_pipelined_requests_are_answered_in_order_across_the_hand_off(
    lean: Served,
) -> None:
    conn = await Conn.open(lean.port)
    await conn.send(
        request("PUT", "/v1/keys/a", b"1")
        + request("PUT", "/v1/keys/b", b"22")
        + request("GET", "/v1/keys/a")
        + request("GET", "/v1/status")
        + request("GET", "/v1/keys/b")
        + request("DELETE", "/v1/keys/a")
        + request("GET", "/v1/keys/a")
    )
    answers = await conn.answers(7)
    assert [a.status for a in answers] == [200, 200, 200, 200, 200, 200, 404]
    assert answers[2].body == b"1"
    assert "role" in answers[3].json()  # type: ignore[operator]
    assert answers[4].body == b"22"
    assert answers[5].json() == {"deleted": True}
    assert (lean.front.served, lean.front.handed_off) == (3, 1)
    await conn.close()


async def test_many_pipelined_hot_requests_stay_in_order(lean: Served) -> None:
    for i in range(50):
        await lean.service.set(f"k{i}", f"value-{i}".encode())
    conn = await Conn.open(lean.port)
    await conn.send(b"".join(request("GET", f"/v1/keys/k{i}") for i in range(50)))
    answers = await conn.answers(50)
    assert [a.body for a in answers] == [f"value-{i}".encode() for i in range(50)]
    assert (lean.front.served, lean.front.handed_off) == (50, 0)
    await conn.close()


async def test_a_stream_split_at_every_byte_boundary(lean: Served) -> None:
    stream = (
        request("PUT", "/v1/keys/s", b"hello", {"If-None-Match": "*"})
        + request("GET", "/v1/keys/s?consistency=stale")
        + request("GET", "/v1/health")
        + request("GET", "/v1/keys/s")
    )
    for cut in range(1, len(stream)):
        await lean.service.delete("s")
        before = lean.front.received
        conn = await Conn.open(lean.port)
        await conn.send(stream[:cut])
        target = before + cut
        await _until(lambda: lean.front.received >= target, "first segment read")  # noqa: B023
        await conn.send(stream[cut:])
        answers = await conn.answers(4)
        assert [a.status for a in answers] == [200, 200, 200, 200], cut
        assert answers[1].body == answers[3].body == b"hello", cut
        await conn.close()
    # Every connection was handed over exactly once, wherever the cut fell.
    assert lean.front.handed_off == len(stream) - 1


async def test_a_long_pipelined_stream_still_hands_off_at_the_right_byte(lean: Served) -> None:
    # Far past the 256 KiB the protocol keeps before it cuts its buffer back.
    puts = [request("PUT", f"/v1/keys/p{i}", bytes([65 + i % 26]) * 1000) for i in range(400)]
    conn = await Conn.open(lean.port)
    await conn.send(b"".join(puts) + request("GET", "/v1/health") + request("GET", "/v1/keys/p399"))
    answers = await conn.answers(402)
    assert {a.status for a in answers} == {200}
    assert answers[-1].body == bytes([65 + 399 % 26]) * 1000
    assert (lean.front.served, lean.front.handed_off) == (400, 1)
    await conn.close()


async def test_idle_connections_are_closed_busy_ones_are_not(lean: Served) -> None:
    idle, busy = await Conn.open(lean.port), await Conn.open(lean.port)
    await idle.send(request("GET", "/v1/keys/none"))
    await idle.answers(1)
    partial = b"GET /v1/keys/x HTTP/1.1\r\n"  # a request begun, not finished
    target = lean.front.received + len(partial)
    await busy.send(partial)
    await _until(lambda: lean.front.received >= target, "the partial request read")
    assert lean.front.close_idle(lean.front.now()) == 1
    assert await idle.read_to_end() == b""
    await busy.send(b"Host: t\r\n\r\n")
    assert (await busy.answers(1))[0].status == 404
    await idle.close()
    await busy.close()


async def test_a_large_value_is_streamed_by_aiohttp() -> None:
    # Over LEAN_BODY_MAX: aiohttp reads it, charging the node's byte budget as it goes.
    served = await _serve(limits=Limits(max_value_bytes=LEAN_BODY_MAX * 4))
    try:
        value = bytes(range(256)) * (LEAN_BODY_MAX // 128)
        conn = await Conn.open(served.port)
        await conn.send(request("PUT", "/v1/keys/big", value) + request("GET", "/v1/keys/big"))
        put, get = await conn.answers(2)
        assert (put.status, get.status, get.body) == (200, 200, value)
        assert (served.front.served, served.front.handed_off) == (0, 1)
        await conn.close()
    finally:
        await _stop(served)


async def test_chunked_body_goes_to_aiohttp(lean: Served) -> None:
    conn = await Conn.open(lean.port)
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    await conn.send(
        request("PUT", "/v1/keys/c", chunked, {"Transfer-Encoding": "chunked"})
        + request("GET", "/v1/keys/c")
    )
    put, get = await conn.answers(2)
    assert (put.status, get.status, get.body) == (200, 200, b"hello world")
    assert lean.front.handed_off == 1
    await conn.close()


async def test_expect_100_continue(lean: Served) -> None:
    conn = await Conn.open(lean.port)
    head = request("PUT", "/v1/keys/e", None, {"Expect": "100-continue", "Content-Length": "3"})
    await conn.send(head)
    async with asyncio.timeout(10):
        interim = await conn.reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100")
    await conn.send(b"abc")
    (put,) = await conn.answers(1)
    assert put.status == 200
    assert (await lean.service.get("e")).value == b"abc"  # type: ignore[union-attr]
    await conn.close()


async def test_head_answers_like_get_without_a_body(lean: Served) -> None:
    await lean.service.set("h", b"12345")
    conn = await Conn.open(lean.port)
    await conn.send(request("HEAD", "/v1/keys/h") + request("GET", "/v1/keys/h"))
    head, get = await conn.answers(2, head_at=(0,))
    assert head.status == get.status == 200
    assert head.headers["etag"] == get.headers["etag"]
    assert head.headers["content-length"] == "5"
    assert get.body == b"12345"
    await conn.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /v1/keys/k HTTP/1.1\r\nBroken header line\r\n\r\n",
        b"GET /v1/keys/k HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
        b"PUT /v1/keys/k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
)
async def test_malformed_requests_get_a_json_400_and_the_node_keeps_serving(
    lean: Served, garbage: bytes
) -> None:
    await lean.service.set("k", b"v")
    conn = await Conn.open(lean.port)
    # A good request first: it is answered, then the bad bytes end the connection.
    await conn.send(request("GET", "/v1/keys/k") + garbage)
    (good,) = await conn.answers(1)
    assert (good.status, good.body) == (200, b"v")
    rest = await conn.read_to_end()
    status_line, _, body = rest.partition(b"\r\n\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), rest
    assert b"application/json" in status_line
    assert b'"error"' in body
    await conn.close()
    again = await Conn.open(lean.port)
    await again.send(request("GET", "/v1/keys/k"))
    assert (await again.answers(1))[0].body == b"v"
    await again.close()


async def test_http_1_0_closes_unless_kept_alive(lean: Served) -> None:
    await lean.service.set("k", b"v")
    conn = await Conn.open(lean.port)
    await conn.send(request("GET", "/v1/keys/k", version="1.0"))
    (answer,) = await conn.answers(1)
    assert (answer.status, answer.body, answer.headers["connection"]) == (200, b"v", "close")
    assert await conn.read_to_end() == b""
    await conn.close()
    kept = await Conn.open(lean.port)
    headers = {"Connection": "keep-alive"}
    await kept.send(request("GET", "/v1/keys/k", None, headers, version="1.0") * 2)
    answers = await kept.answers(2)
    assert [a.headers["connection"] for a in answers] == ["keep-alive", "keep-alive"]
    await kept.close()


async def _both(requests: list[bytes], token: str | None = None) -> list[tuple[Answer, Answer]]:
    lean, plain = await _serve(token=token), await _serve(lean=False, token=token)
    try:
        pairs = []
        for raw in requests:
            answers = []
            for served in (lean, plain):
                conn = await Conn.open(served.port)
                await conn.send(raw)
                answers.append((await conn.answers(1))[0])
                await conn.close()
            pairs.append((answers[0], answers[1]))
        assert lean.front.served > 0
        return pairs
    finally:
        await _stop(lean)
        await _stop(plain)


async def test_answers_match_aiohttps_but_for_the_date() -> None:
    auth = {"Authorization": "Bearer tok"}
    pairs = await _both(
        [
            request("PUT", "/v1/keys/a?ttl=30", b"value", auth),
            request("PUT", "/v1/keys/a", b"value", {**auth, "If-Match": '"7"'}),
            request("PUT", "/v1/keys/a", b"x" * 2000, auth),  # over the 1 KiB limit: 413
            request("PUT", "/v1/keys/a?ttl=-1", b"v", auth),
            request("PUT", "/v1/keys/a?ttl=1&ttl=2", b"v", auth),
            request("GET", "/v1/keys/a", None, auth),
            request("GET", "/v1/keys/missing", None, auth),
            request("GET", "/v1/keys/a?consistency=bogus", None, auth),
            request("GET", "/v1/keys/%FF", None, auth),
            request("GET", "/v1/keys/a"),  # no token: 401
            request("DELETE", "/v1/keys/a", None, {**auth, "If-None-Match": "*"}),
            request("DELETE", "/v1/keys/a", None, auth),
            request("PUT", "/v1/keys/z", b"v", {**auth, "X-Raftcache-Client-Id": "c1"}),
            request("PUT", "/v1/keys/..", b"dots", auth),
            *(
                request("GET", target, None, auth)
                for target in ("/v1/keys/..", "/v1/keys/%2E%2E", "/v1/keys/.", "/v1/keys/a%2Fb")
            ),
            *(
                request("GET", target, None, auth)
                for target in ("/v1/keys/a;b", "/v1/keys/z?x=1#f", "/v1/keys/%00", "/v1/keys/+")
            ),
        ],
        token="tok",
    )
    for lean_answer, plain_answer in pairs:
        for answer in (lean_answer, plain_answer):
            answer.headers.pop("date")  # the second may have turned between the two
        assert lean_answer == plain_answer


async def test_metrics_count_lean_requests(lean: Served) -> None:
    await lean.service.set("m", b"v")
    conn = await Conn.open(lean.port)
    await conn.send(request("GET", "/v1/keys/m") * 3 + request("GET", "/v1/keys/nope"))
    await conn.answers(4)
    await conn.send(request("GET", "/metrics"))
    (metrics,) = await conn.answers(1)
    text = metrics.body.decode()
    route = 'route="/v1/keys/{key}"'
    assert f'raftcache_http_requests_total{{code="200",method="GET",{route}}} 3.0' in text
    assert f'raftcache_http_requests_total{{code="404",method="GET",{route}}} 1.0' in text
    assert (lean.front.served, lean.front.handed_off) == (4, 1)
    await conn.close()


async def test_tls_on_the_lean_front(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    served = await _serve(ssl_context=server_ctx)
    try:
        connector = aiohttp.TCPConnector(ssl=client_ctx, limit=1)  # one connection for all
        async with aiohttp.ClientSession(connector=connector) as session:
            base = f"https://127.0.0.1:{served.port}"
            async with session.put(f"{base}/v1/keys/t", data=b"secret") as put:
                assert put.status == 200
            async with session.get(f"{base}/v1/keys/t") as get:
                assert (get.status, await get.read()) == (200, b"secret")
            async with session.get(f"{base}/v1/health") as health:
                assert health.status == 200
            async with session.get(f"{base}/v1/keys/t") as again:
                assert (again.status, await again.read()) == (200, b"secret")
        assert (served.front.served, served.front.handed_off) == (2, 1)
    finally:
        await _stop(served)


async def test_without_httptools_and_uvloop_the_node_serves_on_aiohttp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "httptools", None)  # import fails, as when not installed
    monkeypatch.setitem(sys.modules, "uvloop", None)
    assert not lean_available()
    assert loop_factory("auto") is None
    with pytest.raises(RuntimeError, match="pip install uvloop"):
        loop_factory("uvloop")
    cluster = await start_cluster(tmp_path, size=1)
    try:
        server = await cluster.leader()
        assert server.http_front == "aiohttp"
        async with cluster.session.put(f"{server.url}/v1/keys/f", data=b"fallback") as put:
            assert put.status == 200
        async with cluster.session.get(f"{server.url}/v1/keys/f") as get:
            assert (get.status, await get.read()) == (200, b"fallback")
    finally:
        await cluster.stop()


@pytest.mark.parametrize("raft_transport", ["http", "stream"])
async def test_a_real_cluster_serves_key_routes_on_the_lean_front(
    tmp_path: Path, raft_transport: str
) -> None:
    # With "stream", Raft runs over WebSocket upgrades that the lean front hands to aiohttp.
    cluster = await start_cluster(tmp_path, size=3, raft_transport=raft_transport)
    try:
        leader = await cluster.leader()
        follower = (await cluster.followers())[0]
        assert leader.http_front == follower.http_front == "lean"
        # Written through a follower: the lean front forwards it to the leader.
        async with cluster.session.put(f"{follower.url}/v1/keys/r", data=b"fwd") as put:
            assert put.status == 200
        async with cluster.session.get(f"{leader.url}/v1/keys/r") as get:
            assert (get.status, await get.read()) == (200, b"fwd")
        fronts = [s.lean_front for s in (leader, follower)]
        assert all(front is not None and front.served >= 1 for front in fronts)
    finally:
        await cluster.stop()


@pytest.mark.parametrize(
    "raw",
    [
        "/v1/keys/a",
        "/v1/keys/a?consistency=stale",
        "/v1/keys/..",
        "/v1/keys/.",
        "/v1/keys/%2E%2E",
        "/v1/keys/a%2Fb?x=%20",
        "/v1/keys/a+b",
        "/v1/keys/a;b",
        "/v1/keys/%FF",
    ],
)
def test_lean_request_path_and_query_are_aiohttps(raw: str) -> None:
    app = web.Application()
    lean = LeanRequest(app, "GET", raw, CIMultiDictProxy(CIMultiDict()), b"", (1, 1))
    url = URL(raw, encoded=True)  # what web.Request.path and .query are made of
    assert (lean.path, lean.query) == (url.path, url.query)


async def test_a_write_whose_client_went_away_still_runs_to_its_end(lean: Served) -> None:
    # As on aiohttp (handler_cancellation off): the request is not cancelled half-way.
    gate, started, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
    real_set = lean.service.set

    async def held_set(*args: object, **kwargs: object) -> int:
        started.set()
        await gate.wait()
        version = await real_set(*args, **kwargs)  # type: ignore[arg-type]
        finished.set()
        return version

    lean.service.set = held_set  # type: ignore[method-assign]
    conn = await Conn.open(lean.port)
    await conn.send(request("PUT", "/v1/keys/gone", b"kept"))
    async with asyncio.timeout(10):
        await started.wait()
    await conn.close()
    await _until(lambda: not lean.front.connections, "the server saw the connection end")
    gate.set()
    async with asyncio.timeout(10):
        await finished.wait()
    assert (await real_set.__self__.get("gone")).value == b"kept"  # type: ignore[attr-defined]


async def test_the_route_tests_client_really_runs_on_the_front_it_names(
    client: TestClient[web.Request, web.Application], front: str
) -> None:
    # conftest's "lean" variant swaps aiohttp's test site: make sure the swap takes effect.
    async with client.put("/v1/keys/x", data=b"v") as put:
        assert put.status == 200
    assert client.server.runner is not None
    fronts = [s.front for s in client.server.runner.sites if isinstance(s, LeanSockSite)]
    served = sum(f.served for f in fronts if f is not None)
    assert served == (1 if front == "lean" else 0)
