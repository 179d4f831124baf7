"""``GET /v1/watch`` over aiohttp's test server: a real state machine feeding a real watch
history, a fake Raft node (watches never need one: they serve what was applied)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse, ClientSession, web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.cache.commands import (
    DeleteOp,
    SetOp,
    encode_batch,
    encode_delete,
    encode_expire,
    encode_incr,
    encode_set,
    encode_touch,
)
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.watch import WatchHistory
from raftcache.client.watch_sse import SseMessage, SseParser
from raftcache.server.app import create_app
from raftcache.server.context import CONTEXT, ServerSettings
from raftcache.server.drain import DRAIN
from raftcache.server.routes_watch import WATCH, WatchSettings

from .conftest import SMALL_LIMITS
from .fakes import FakeNode, FakeService

GUARD_S = 30.0  # a hang guard only: nothing below asserts on time


@dataclass
class WatchedService(FakeService):
    machine: CacheStateMachine = field(default_factory=CacheStateMachine)


class Cluster:
    """The machine of the node under test, applying entries as the Raft log would."""

    def __init__(self, history: WatchHistory, **machine_args: Any) -> None:
        self.history = history
        self.machine = CacheStateMachine(watch=history, **machine_args)
        self.index = 0

    def apply(self, command: bytes) -> int:
        self.index += 1
        self.machine.apply_entry(self.index, command)
        return self.index

    def set(self, key: str, value: bytes, **kw: Any) -> int:
        return self.apply(encode_set(key, value, now=kw.pop("now", 100.0), **kw))


Factory = Callable[..., Any]


@pytest.fixture
async def make() -> AsyncIterator[Factory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def factory(
        history: WatchHistory | None = None,
        settings: ServerSettings | None = None,
        watch: WatchSettings | None = None,
        **machine_args: Any,
    ) -> tuple[Cluster, TestClient[web.Request, web.Application]]:
        cluster = Cluster(history if history is not None else WatchHistory(), **machine_args)
        node = FakeNode()
        service = WatchedService(node, machine=cluster.machine)
        app = create_app(
            node,
            service,
            settings or ServerSettings(limits=SMALL_LIMITS),
            watch=watch or WatchSettings(heartbeat_s=0.2, write_timeout_s=2.0),
        )
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return cluster, client

    yield factory
    for client in clients:
        await client.close()


async def messages(
    resp: ClientResponse, count: int, parser: SseParser | None = None
) -> list[SseMessage]:
    """The next ``count`` SSE messages of ``resp``."""
    parser = parser or SseParser()
    found: list[SseMessage] = []
    async with asyncio.timeout(GUARD_S):
        while len(found) < count:
            chunk = await resp.content.readany()
            assert chunk, f"stream ended after {found}"
            found.extend(parser.feed(chunk))
    return found


async def until_end(resp: ClientResponse) -> list[SseMessage]:
    """Every message until the server ends the stream."""
    parser, found = SseParser(), []
    async with asyncio.timeout(GUARD_S):
        while chunk := await resp.content.readany():
            found.extend(parser.feed(chunk))
    return found


def data(message: SseMessage) -> Any:
    return orjson.loads(message.data)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def test_changes_under_the_prefix_in_log_order_one_event_per_entry(make: Factory) -> None:
    cluster, client = await make(max_keys=3)
    cluster.set("a:1", b"x")  # 1
    cluster.set("b:1", b"y")  # 2: another prefix
    cluster.set("a:2", b"z", ttl=50)  # 3
    cluster.apply(encode_incr("a:n", 5, now=100.0))  # 4: evicts a:1 (the least recently used)
    cluster.apply(encode_delete("a:2", now=100.0))  # 5
    cluster.apply(encode_touch(["b:1"], now=100.0))  # 6: no change
    cluster.apply(encode_batch([SetOp("a:3", b"q"), DeleteOp("a:n")], now=100.0))  # 7
    resp = await client.get("/v1/watch", params={"prefix": "a:", "from_version": "0"})
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    hello, *events = await messages(resp, 6)
    assert (hello.event, hello.id, data(hello)["version"]) == ("progress", "0", 0)
    assert [(m.event, m.id) for m in events] == [("change", str(v)) for v in (1, 3, 4, 5, 7)]
    assert [data(m)["changes"] for m in events] == [
        [{"type": "set", "key": "a:1", "value": b64(b"x"), "expires_at": None}],
        [{"type": "set", "key": "a:2", "value": b64(b"z"), "expires_at": 150.0}],
        [
            {"type": "set", "key": "a:n", "value": b64(b"5"), "expires_at": None},
            {"type": "evict", "key": "a:1"},
        ],
        [{"type": "delete", "key": "a:2"}],
        [
            {"type": "set", "key": "a:3", "value": b64(b"q"), "expires_at": None},
            {"type": "delete", "key": "a:n"},
        ],
    ]
    assert all(data(m)["version"] == int(m.id or 0) for m in events)


async def test_expiry_is_an_event_and_live_changes_follow_the_start(make: Factory) -> None:
    cluster, client = await make()
    cluster.set("k", b"old", ttl=1, now=100.0)  # 1
    resp = await client.get("/v1/watch")  # no from_version: from this node's last version
    [hello] = await messages(resp, 1)
    assert data(hello)["version"] == 1
    cluster.apply(encode_expire(["k"], now=200.0))  # 2
    cluster.set("k", b"new")  # 3
    events = await messages(resp, 2)
    assert [data(m)["changes"][0]["type"] for m in events] == ["expire", "set"]
    assert [m.id for m in events] == ["2", "3"]


async def test_from_version_and_last_event_id_resume_without_gap_or_duplicate(
    make: Factory,
) -> None:
    cluster, client = await make()
    for i in range(1, 7):
        cluster.set(f"k{i}", b"v")
    resp = await client.get("/v1/watch?from_version=4")
    assert [m.id for m in (await messages(resp, 3))[1:]] == ["5", "6"]
    resp.close()
    # The SSE way: the browser sends the original URL again plus Last-Event-ID, which wins.
    resp = await client.get("/v1/watch?from_version=1", headers={"Last-Event-ID": "5"})
    assert [m.id for m in (await messages(resp, 2))[1:]] == ["6"]
    resp.close()
    # A version this node has not applied yet: the stream waits for it.
    resp = await client.get("/v1/watch?from_version=8")
    await messages(resp, 1)
    cluster.set("k7", b"v")  # 7: not after 8
    cluster.set("k8", b"v")  # 8
    cluster.set("k9", b"v")  # 9
    [event] = await messages(resp, 1)
    assert event.id == "9"


async def test_a_start_before_the_history_answers_410_with_the_current_version(
    make: Factory,
) -> None:
    cluster, client = await make(WatchHistory(max_changes=2))
    for i in range(5):
        cluster.set(f"k{i}", b"v")
    assert cluster.history.floor == 3
    resp = await client.get("/v1/watch?from_version=2")
    assert resp.status == 410
    body = await resp.json()
    assert (body["version"], body["oldest_version"]) == (5, 3)
    assert "re-read" in body["error"]
    ok = await client.get("/v1/watch?from_version=3")
    assert [m.id for m in (await messages(ok, 3))[1:]] == ["4", "5"]


@pytest.mark.parametrize(
    ("query", "headers", "named"),
    [
        ("from_version=-1", {}, "from_version"),
        ("from_version=abc", {}, "from_version"),
        ("from_version=1.5", {}, "from_version"),
        (f"from_version={2**63}", {}, "from_version"),
        ("from_version=1&from_version=2", {}, "from_version"),
        ("", {"Last-Event-ID": "x1"}, "Last-Event-ID"),
        ("prefix=" + "p" * 2000, {}, "prefix"),
        ("prefix=a&prefix=b", {}, "prefix"),
    ],
)
async def test_bad_input_is_a_400_naming_the_problem(
    make: Factory, query: str, headers: dict[str, str], named: str
) -> None:
    _, client = await make()
    resp = await client.get("/v1/watch?" + query, headers=headers)
    assert resp.status == 400
    assert named in (await resp.json())["error"]


async def test_other_methods_are_405(make: Factory) -> None:
    _, client = await make()
    for method in ("HEAD", "POST", "PUT", "DELETE"):
        resp = await client.request(method, "/v1/watch")
        assert resp.status == 405, method
        assert resp.headers["Allow"] == "GET"


async def test_watches_need_a_read_token_like_other_reads(make: Factory) -> None:
    settings = ServerSettings(limits=SMALL_LIMITS, client_token="rw", client_token_ro="ro")
    _, client = await make(settings=settings)
    assert (await client.get("/v1/watch")).status == 401
    resp = await client.get("/v1/watch", headers={"Authorization": "Bearer ro"})
    assert resp.status == 200


async def test_a_watcher_that_falls_out_of_the_history_has_its_stream_ended(
    make: Factory,
) -> None:
    cluster, client = await make(WatchHistory(max_changes=3))
    resp = await client.get("/v1/watch?from_version=0")
    await messages(resp, 1)
    for i in range(10):  # no await: the stream cannot read any of it before it is dropped
        cluster.set(f"k{i}", b"v")
    rest = await until_end(resp)
    assert all(m.event != "change" for m in rest)
    again = await client.get("/v1/watch?from_version=0")
    assert again.status == 410
    assert (await again.json())["version"] == 10


async def test_a_snapshot_restore_ends_streams_and_restarts_the_history(make: Factory) -> None:
    cluster, client = await make()
    other = CacheStateMachine()
    for i in range(1, 21):
        other.apply_entry(i, encode_set(f"k{i}", b"v", now=1.0))
    cluster.set("k0", b"v")
    resp = await client.get("/v1/watch?from_version=0")
    await messages(resp, 2)
    cluster.machine.restore(other.snapshot())  # a follower that was behind installs a snapshot
    await until_end(resp)
    assert (await client.get("/v1/watch?from_version=1")).status == 410
    assert (await client.get("/v1/watch?from_version=20")).status == 200


async def test_a_quiet_prefix_gets_heartbeats_and_its_resume_point_moves(make: Factory) -> None:
    cluster, client = await make()
    resp = await client.get("/v1/watch?prefix=quiet:")
    parser = SseParser()
    await messages(resp, 1, parser)
    cluster.set("busy:1", b"v")
    cluster.set("busy:2", b"v")
    [progress] = await messages(resp, 1, parser)
    assert (progress.event, progress.id, data(progress)) == ("progress", "2", {"version": 2})
    assert parser.comments >= 1  # the keep-alive comment that came with it


async def test_the_drain_of_a_graceful_stop_ends_every_stream(make: Factory) -> None:
    cluster, client = await make()
    streams = [await client.get("/v1/watch") for _ in range(3)]
    for resp in streams:
        await messages(resp, 1)
    hub = client.app[WATCH]
    assert hub.active == 3
    assert await client.app[DRAIN].wait_idle(GUARD_S)
    for resp in streams:
        await until_end(resp)
    assert hub.active == 0
    cluster.set("k", b"v")  # nothing is woken any more
    # A fresh session: the drain closed the pooled connections.
    async with ClientSession() as fresh, fresh.get(client.make_url("/v1/watch")) as late:
        assert late.status == 503


async def test_more_watchers_than_allowed_get_503_and_streams_free_their_request_slot(
    make: Factory,
) -> None:
    _, client = await make(watch=WatchSettings(heartbeat_s=0.2, max_watchers=2))
    first = [await client.get("/v1/watch") for _ in range(2)]
    for resp in first:
        await messages(resp, 1)
    refused = await client.get("/v1/watch")
    assert refused.status == 503
    assert "Retry-After" in refused.headers
    admission = client.app[CONTEXT].admission
    assert admission.inflight == 0
    first[0].close()
    async with asyncio.timeout(GUARD_S):
        while client.app[WATCH].active != 1:
            await asyncio.sleep(0.01)
    again = await client.get("/v1/watch")
    assert again.status == 200


async def test_a_client_that_stops_reading_is_dropped(
    make: Factory,
) -> None:
    history = WatchHistory(max_changes=1000, max_bytes=1 << 30)
    cluster, client = await make(history, watch=WatchSettings(heartbeat_s=5, write_timeout_s=0.5))
    big = b"x" * (256 * 1024)
    for i in range(200):  # ~65 MB of events: far beyond what socket buffers hold
        cluster.set(f"k{i}", big)
    host, port = client.server.host, client.server.port
    _, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /v1/watch?from_version=0 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    hub = client.app[WATCH]
    async with asyncio.timeout(GUARD_S):
        while hub.active == 0:
            await asyncio.sleep(0.01)
        while hub.active != 0:  # never read: its writes block, the stream is dropped
            await asyncio.sleep(0.05)
    writer.close()


async def test_many_watchers_each_see_exactly_their_prefix_through_bursts(make: Factory) -> None:
    cluster, client = await make(watch=WatchSettings(heartbeat_s=0.2, batch_entries=16))
    prefixes = [f"p{i}:" for i in range(10)] + [""]
    streams = {p: await client.get("/v1/watch", params={"prefix": p}) for p in prefixes}
    parsers = {p: SseParser() for p in prefixes}
    for p, resp in streams.items():
        await messages(resp, 1, parsers[p])
    expected: dict[str, list[tuple[int, str]]] = {p: [] for p in prefixes}
    for burst in range(20):
        for i in range(25):  # no await within a burst: streams catch up in between
            key = f"p{(burst * 25 + i) % 12}:{i}"  # p10:, p11: match no watched prefix but ""
            version = cluster.set(key, b"v")
            for p in prefixes:
                if key.startswith(p):
                    expected[p].append((version, key))
        await asyncio.sleep(0)
    for p, resp in streams.items():
        got: list[tuple[int, str]] = []
        while len(got) < len(expected[p]):
            for m in await messages(resp, 1, parsers[p]):
                if m.event == "change":
                    got.extend((data(m)["version"], c["key"]) for c in data(m)["changes"])
        assert got == expected[p], p
