"""Compression of large bodies in HttpNetwork, negotiated per peer (real loopback sockets)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from raftcache.network import HttpNetwork, NetworkError, codec, compression
from raftcache.network.httpclient import PeerCapabilities, lean_client_available
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    LogEntry,
    RequestVoteRequest,
)

from .fakes import RecordingHandlers
from .httpkit import Factory, OldPeer, connect, raw_post, started_nodes, url_of

THRESHOLD = 16 * 1024
HAS_ZSTD = "zstd" in compression.available()


_CLIENTS = [
    "aiohttp",
    pytest.param(
        "lean",
        marks=pytest.mark.skipif(
            not lean_client_available(), reason="httptools (the speed extra) is not installed"
        ),
    ),
]


@pytest.fixture(params=_CLIENTS)
async def make_node(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Nodes sending with either HTTP client: both speak the same negotiation."""
    async with started_nodes() as make:

        async def with_client(node_id: str, **opts: Any) -> HttpNetwork:
            opts.setdefault("client", request.param)
            return await make(node_id, **opts)

        yield with_client


def big_append(n: int = 400) -> AppendEntriesRequest:
    """An AppendEntries of cache-like commands, about 60 KiB of JSON: compressible."""
    entries = [
        LogEntry(2, i + 1, orjson.dumps({"op": "set", "key": f"user:{i}", "value": "x" * 80}))
        for i in range(n)
    ]
    return AppendEntriesRequest(2, "a", 0, 0, entries, 0)


def sent(net: HttpNetwork, rpc: str, peer: str) -> tuple[int, int]:
    stats = net.metrics.rpc("outbound", rpc, peer)
    return stats.bytes_sent, stats.body_bytes_sent


async def test_large_bodies_are_compressed_once_the_peer_said_it_reads_gzip(
    make_node: Factory,
) -> None:
    a = await make_node("a", compression=["gzip"], compression_threshold=THRESHOLD)
    b = await make_node("b")
    connect(a, b)
    req = big_append()
    assert a.peer_capabilities("b") == PeerCapabilities()
    assert await a.send_append_entries("b", req) == AppendEntriesResponse(2, True, 400, 0, 0, 400)
    wire1, body1 = sent(a, "AppendEntries", "b")
    assert wire1 == body1 > THRESHOLD  # the first request: the peer had not answered yet
    assert "gzip" in a.peer_capabilities("b").encodings
    await a.send_append_entries("b", req)
    wire2, body2 = sent(a, "AppendEntries", "b")
    assert body2 - body1 == body1
    assert wire2 - wire1 < body1 / 4  # repetitive cache commands compress well
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert [r for _, r in handlers.calls] == [req, req]  # decoded exactly
    inbound = b.metrics.rpc("inbound", "AppendEntries", "a")
    assert inbound.bytes_received == wire2
    assert inbound.body_bytes_received == body2


async def test_small_bodies_are_never_compressed(make_node: Factory) -> None:
    a = await make_node("a", compression=["gzip"], compression_threshold=THRESHOLD)
    b = await make_node("b")
    connect(a, b)
    small = big_append(10)
    for _ in range(3):
        await a.send_append_entries("b", small)
    wire, body = sent(a, "AppendEntries", "b")
    assert wire == body
    assert "gzip" in a.peer_capabilities("b").encodings


async def test_compression_is_off_by_default(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    assert a.compression == ()
    for _ in range(2):
        await a.send_append_entries("b", big_append(1000))
    wire, body = sent(a, "AppendEntries", "b")
    assert wire == body


async def test_an_old_identity_only_peer_still_interoperates(make_node: Factory) -> None:
    a = await make_node("a", compression=["zstd", "gzip"], compression_threshold=1)
    async with OldPeer().running() as old:
        a.set_peer_address("old", url_of(old.port))
        for _ in range(3):
            resp = await a.send_append_entries("old", big_append())
            assert resp.success
        assert [h.get("Content-Encoding") for h, _ in old.requests] == [None] * 3
        assert a.peer_capabilities("old") == PeerCapabilities()


async def test_an_old_client_gets_plain_answers(make_node: Factory) -> None:
    b = await make_node("b")
    body = codec.encode(big_append())
    answer = await raw_post(b.port, "/raft/append-entries", body, {})
    assert answer.status == 200
    assert "Content-Encoding" not in answer.headers
    assert codec.decode(AppendEntriesResponse, answer.body).success
    assert "gzip" in compression.parse_accept_encoding(answer.headers["Accept-Encoding"])


async def test_a_peer_that_stops_reading_gzip_gets_the_body_again_plainly(
    make_node: Factory,
) -> None:
    a = await make_node("a", compression=["gzip"], compression_threshold=1)
    async with OldPeer(advertise={"Accept-Encoding": "gzip"}).running() as peer:
        a.set_peer_address("p", url_of(peer.port))
        await a.send_append_entries("p", big_append(5))  # learns "gzip"
        peer.refuse_encoded = True
        peer.advertise = {}
        assert (await a.send_append_entries("p", big_append(5))).success
        encodings = [h.get("Content-Encoding") for h, _ in peer.requests]
        assert encodings == [None, "gzip", None]
        await a.send_append_entries("p", big_append(5))
        assert peer.requests[-1][0].get("Content-Encoding") is None
    assert a.peer_capabilities("p") == PeerCapabilities()


@pytest.mark.parametrize("mounted", [False, True])
async def test_server_decodes_gzip_bodies(make_node: Factory, mounted: bool) -> None:
    body = codec.encode(big_append())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    if not mounted:
        b = await make_node("b")
        answer = await raw_post(b.port, "/raft/append-entries", gzip.compress(body), headers)
    else:  # the host app's aiohttp decodes it before our route sees it
        async with MountedNode() as (b, port):
            answer = await raw_post(port, "/raft/append-entries", gzip.compress(body), headers)
    assert answer.status == 200, answer.body
    inbound = b.metrics.rpc("inbound", "AppendEntries", "a")
    assert inbound.body_bytes_received == len(body)
    assert inbound.bytes_received < len(body) / 4


async def test_server_refuses_what_it_cannot_decode(make_node: Factory) -> None:
    b = await make_node("b", client_max_size=1024 * 1024)
    path, body = "/raft/append-entries", codec.encode(big_append())

    async def post(data: bytes, encoding: str) -> tuple[int, dict[str, object]]:
        answer = await raw_post(b.port, path, data, {"Content-Encoding": encoding})
        return answer.status, orjson.loads(answer.body)

    status, obj = await post(body, "br")
    assert (status, obj["code"]) == (415, "unsupported_encoding")
    status, obj = await post(b"not gzip at all", "gzip")
    assert (status, obj["code"]) == (400, "bad_request")
    bomb = zlib.compress(b"\0" * (8 * 1024 * 1024), 9, wbits=31)  # 8 MiB from ~8 KiB
    status, obj = await post(bomb, "gzip")
    assert (status, obj["code"]) == (413, "too_large")
    status, _ = await post(gzip.compress(body), "gzip")
    assert status == 200  # still serving


async def test_unknown_and_unavailable_codings_in_the_configuration() -> None:
    with pytest.raises(ValueError, match="compression must name"):
        HttpNetwork("a", port=0, node_addresses={}, compression=["lz4"])
    with pytest.raises(ValueError, match="wire_format"):
        HttpNetwork("a", port=0, node_addresses={}, wire_format="xml")
    net = HttpNetwork("a", port=0, node_addresses={}, compression=["zstd", "gzip"])
    assert net.compression == (("zstd", "gzip") if HAS_ZSTD else ("gzip",))


async def test_a_node_without_zstd_drops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compression, "available", lambda: ("gzip",))
    net = HttpNetwork("a", port=0, node_addresses={}, compression=["zstd", "gzip"])
    assert net.compression == ("gzip",)


@pytest.mark.skipif(not HAS_ZSTD, reason="no zstd library installed (optional extra)")
async def test_zstd_is_preferred_between_nodes_that_have_it(make_node: Factory) -> None:
    a = await make_node("a", compression=["zstd", "gzip"], compression_threshold=THRESHOLD)
    b = await make_node("b")
    connect(a, b)
    for _ in range(2):
        await a.send_append_entries("b", big_append())
    assert a.peer_capabilities("b").encodings >= {"zstd", "gzip"}
    snap = InstallSnapshotRequest(1, "a", 9, 1, 0, b"cache data " * 20_000, True)
    for _ in range(2):
        assert (await a.send_install_snapshot("b", snap)).next_offset == len(snap.data)
    wire, body = sent(a, "InstallSnapshot", "b")
    assert wire < body / 4


async def test_a_dead_peer_is_still_a_transient_error(make_node: Factory) -> None:
    a = await make_node("a", compression=["gzip"], compression_threshold=1)
    b = await make_node("b")
    connect(a, b)
    await a.send_append_entries("b", big_append(5))
    await b.stop()
    with pytest.raises(NetworkError) as info:
        await a.send_append_entries("b", big_append(5))
    assert (info.value.permanent, info.value.kind) == (False, "connection")


class MountedNode:
    """An HttpNetwork mounted on a host application with aiohttp's default decompression."""

    async def __aenter__(self) -> tuple[HttpNetwork, int]:
        app = web.Application()
        self.net = HttpNetwork("b", port=0, node_addresses={}, app=app)
        self.net.register_handlers(RecordingHandlers("b"))
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        await self.net.start()
        return self.net, self.runner.addresses[0][1]

    async def __aexit__(self, *exc: object) -> None:
        await self.net.stop()
        await self.runner.cleanup()


async def test_a_mounted_node_advertises_only_what_its_host_decodes() -> None:
    from raftcache.network.httpserver import aiohttp_decodes_zstd

    async with MountedNode() as (_, port):
        answer = await raw_post(port, "/raft/request-vote", codec.encode(VOTE), {})
    advertised = compression.parse_accept_encoding(answer.headers["Accept-Encoding"])
    assert "gzip" in advertised
    assert ("zstd" in advertised) == (HAS_ZSTD and aiohttp_decodes_zstd())


VOTE = RequestVoteRequest(3, "a", 0, 0)


async def test_capabilities_are_forgotten_when_the_address_changes(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    await a.send_request_vote("b", VOTE)
    learned = a.peer_capabilities("b")
    assert "gzip" in learned.encodings
    a.set_peer_address("b", url_of(b.port))  # the same address again: nothing to forget
    assert a.peer_capabilities("b") == learned
    a.set_peer_address("b", f"http://localhost:{b.port}")
    assert a.peer_capabilities("b") == PeerCapabilities()
