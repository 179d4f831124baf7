"""``AsyncClient.watch`` / ``Client.watch`` against real node apps on loopback (each with its own
state machine and watch history, fed the same log), and the SSE parser on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raftcache.cache.commands import encode_delete, encode_set
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.watch import WatchHistory
from raftcache.client import AsyncClient, BadRequestError, Client, WatchCompactedError, WatchEvent
from raftcache.client.watch_sse import SseMessage, SseParser
from raftcache.server.app import create_app
from raftcache.server.routes_watch import WatchSettings
from tests.server.fakes import FakeNode, FakeService

GUARD_S = 30.0  # hang guard only


@dataclass
class WatchedService(FakeService):
    machine: CacheStateMachine = field(default_factory=CacheStateMachine)


class Node:
    """One node's state machine and HTTP server (a real raftcache app over a fake Raft node)."""

    def __init__(self, max_changes: int = 1000) -> None:
        self.history = WatchHistory(max_changes=max_changes)
        self.machine = CacheStateMachine(watch=self.history)
        fake = FakeNode()
        app = create_app(
            fake,
            WatchedService(fake, machine=self.machine),
            watch=WatchSettings(heartbeat_s=0.2),
        )
        self.server = TestServer(app)

    async def start(self) -> None:
        # A short shutdown: closing the server cuts its open streams, like a crash would.
        await self.server.start_server(shutdown_timeout=0.1)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


class Log:
    """The replicated log: every entry goes to every node (as Raft would deliver it)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.index = 0

    def set(self, key: str, value: bytes) -> int:
        return self.apply(encode_set(key, value, now=1.0))

    def delete(self, key: str) -> int:
        return self.apply(encode_delete(key, now=1.0))

    def apply(self, command: bytes) -> int:
        self.index += 1
        for node in self.nodes:
            node.machine.apply_entry(self.index, command)
        return self.index


@pytest.fixture
async def nodes() -> AsyncIterator[list[Node]]:
    made = [Node(), Node()]
    for node in made:
        await node.start()
    yield made
    for node in made:
        await node.server.close()


async def take(watch: AsyncIterator[WatchEvent], count: int) -> list[WatchEvent]:
    found: list[WatchEvent] = []
    async with asyncio.timeout(GUARD_S):
        while len(found) < count:
            found.append(await anext(watch))
    return found


async def test_events_carry_type_key_version_value(nodes: list[Node]) -> None:
    log = Log(nodes)
    log.set("a:1", b"one")
    log.set("b:1", b"other")
    log.delete("a:1")
    async with AsyncClient([nodes[0].url]) as client:
        watch = client.watch("a:", from_version=0)
        events = await take(watch, 2)
        assert events == [
            WatchEvent("set", "a:1", 1, b"one", None, value_type="string"),
            WatchEvent("delete", "a:1", 3),
        ]
        assert watch.version == 3
        await watch.aclose()


async def test_without_from_version_it_starts_now_and_learns_its_version(
    nodes: list[Node],
) -> None:
    log = Log(nodes)
    log.set("k", b"before")
    async with AsyncClient([nodes[0].url]) as client, client.watch() as watch:
        first = asyncio.ensure_future(anext(watch))
        async with asyncio.timeout(GUARD_S):
            while watch.version is None:  # the stream's first event names its start
                await asyncio.sleep(0.01)
        assert watch.version == 1
        log.set("k", b"after")
        event = await asyncio.wait_for(first, GUARD_S)
        assert (event.key, event.value, event.version) == ("k", b"after", 2)


async def test_a_dropped_node_is_replaced_with_no_gap_and_no_duplicate(nodes: list[Node]) -> None:
    log = Log(nodes)
    async with AsyncClient([n.url for n in nodes]) as client:
        watch = client.watch("k", from_version=0)
        for i in range(5):
            log.set(f"k{i}", b"v")
        seen = await take(watch, 5)
        assert watch.endpoint == nodes[0].url
        await nodes[0].server.close()  # the node it watches goes away, connection and all
        for i in range(5, 10):
            log.set(f"k{i}", b"v")
        seen += await take(watch, 5)
        assert [e.version for e in seen] == list(range(1, 11))
        assert [e.key for e in seen] == [f"k{i}" for i in range(10)]
        assert watch.endpoint == nodes[1].url
        assert watch.connections == 2
        await watch.aclose()


async def test_410_everywhere_raises_with_the_current_version(nodes: list[Node]) -> None:
    small = Node(max_changes=2)
    await small.start()
    try:
        log = Log([small])
        for i in range(6):
            log.set(f"k{i}", b"v")
        async with AsyncClient([small.url]) as client:
            with pytest.raises(WatchCompactedError) as caught:
                await anext(client.watch(from_version=1))
        assert caught.value.current_version == 6
        assert caught.value.oldest_version == 4
        assert caught.value.status == 410
    finally:
        await small.server.close()


async def test_410_on_one_node_tries_one_that_still_has_the_history(nodes: list[Node]) -> None:
    small = Node(max_changes=2)
    await small.start()
    try:
        log = Log([small, nodes[1]])
        for i in range(6):
            log.set(f"k{i}", b"v")
        async with AsyncClient([small.url, nodes[1].url]) as client:
            watch = client.watch(from_version=1)
            events = await take(watch, 5)
            assert [e.version for e in events] == [2, 3, 4, 5, 6]
            assert watch.endpoint == nodes[1].url
            await watch.aclose()
    finally:
        await small.server.close()


async def test_a_refused_request_is_raised_at_once(nodes: list[Node]) -> None:
    async with AsyncClient([nodes[0].url]) as client:
        with pytest.raises(BadRequestError, match="prefix"):
            await anext(client.watch("p" * 5000))


async def test_a_silent_stream_is_abandoned_for_another_node(nodes: list[Node]) -> None:
    async def silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.Event().wait()  # a partitioned node: connected, never a byte
        return response

    app = web.Application()
    app.router.add_get("/v1/watch", silent)
    hung = TestServer(app)
    await hung.start_server()
    try:
        log = Log(nodes)
        log.set("k", b"v")
        url = str(hung.make_url("")).rstrip("/")
        async with AsyncClient([url, nodes[0].url]) as client:
            watch = client.watch(from_version=0, idle_timeout=0.3)
            [event] = await take(watch, 1)
            assert (event.version, watch.endpoint) == (1, nodes[0].url)
            await watch.aclose()
    finally:
        await hung.close()


async def test_no_reachable_node_gives_up_with_the_last_error() -> None:
    async with AsyncClient(["http://127.0.0.1:9"], timeout=1.0) as client:
        watch = client.watch(give_up_after=0.5)
        with pytest.raises(Exception, match=r"127\.0\.0\.1:9"):
            await anext(watch)


async def test_the_blocking_client_iterates_the_same_events(nodes: list[Node]) -> None:
    log = Log(nodes)
    log.set("x", b"1")
    log.set("y", b"2")

    def blocking() -> tuple[list[WatchEvent], int | None]:
        with Client([nodes[1].url]) as client, client.watch(from_version=0) as watch:
            return [next(watch), next(watch)], watch.version

    # In a thread: the nodes serve from this test's event loop, which must keep running.
    events, version = await asyncio.wait_for(asyncio.to_thread(blocking), GUARD_S)
    assert [(e.key, e.value, e.version) for e in events] == [("x", b"1", 1), ("y", b"2", 2)]
    assert version == 2


# --- the SSE parser ---------------------------------------------------------------------------


def feed_bytewise(data: bytes) -> list[SseMessage]:
    parser = SseParser()
    found: list[SseMessage] = []
    for i in range(len(data)):
        found.extend(parser.feed(data[i : i + 1]))
    return found


def test_the_parser_follows_the_event_stream_rules() -> None:
    stream = (
        b": comment\n"
        b"retry: 700\n"
        b"id: 1\nevent: change\ndata: a\ndata:b\n\n"
        b"data: no event name\r\n\r\n"
        b"id: 2\rdata: caf\xc3\xa9\r\r"
        b"id: 3\nevent: ignored without data\n\n"
        b"data\n\n"
    )
    expected = [
        SseMessage("change", "a\nb", "1"),
        SseMessage("message", "no event name", None),
        SseMessage("message", "café", "2"),
        SseMessage("message", "", None),
    ]
    assert feed_bytewise(stream) == expected  # any split: a CRLF or a UTF-8 character
    parser = SseParser()
    assert parser.feed(stream) == expected
    assert (parser.retry_ms, parser.comments) == (700, 1)
