"""The lean HTTP client (``HttpNetwork(client="lean")``) against real servers on loopback.

Rule: what the lean client adds over aiohttp's — its own keep-alive pool and answer parser — is
proven here against a scripted raw peer (``RawPeer``: every connection and request counted, each
answer chosen by the test, including broken ones) and against real HttpNetwork nodes; the
transport contract itself runs over it in ``test_contract`` (``http-lean``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from raftcache.network import HttpNetwork, NetworkError, NetworkTimeoutError, codec
from raftcache.network.httpclient import PeerCapabilities, lean_client_available
from raftcache.raft.messages import RequestVoteRequest, RequestVoteResponse

from .conftest import Pki
from .fakes import RecordingHandlers, sample_append
from .httpkit import Factory, connect, started_nodes, url_of

pytestmark = pytest.mark.skipif(
    not lean_client_available(), reason="httptools (the speed extra) is not installed"
)

VOTE = RequestVoteRequest(4, "n1", 7, 3, pre_vote=True)
GRANTED = codec.encode(RequestVoteResponse(4, True))
HANG = b"hang"  # a script answer: read the request, never answer
CLOSE = b""  # a script answer: close the connection without answering


def ok(body: bytes = GRANTED, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


Script = Callable[[int, int], bytes]  # (connection number, request number on it) -> answer


@dataclass
class RawPeer:
    """A peer on a raw socket that answers each request with what ``script`` says."""

    script: Script = lambda conn, req: ok()
    requests: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # conn, head, body
    connections: int = 0
    port: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)  # a client closed a connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = self.connections
        self.connections += 1
        self._writers.append(writer)
        try:
            for n in range(1000):
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.requests.append((conn, head, body))
                answer = self.script(conn, n)
                if answer == HANG:
                    await self._released.wait()
                    return
                if answer == CLOSE:
                    return
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer or answer[-5:] == b"\r\n\r\n{":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()
            return
        finally:
            writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[RawPeer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._released.set()
            for writer in self._writers:
                writer.close()
            server.close()
            await server.wait_closed()
            await asyncio.sleep(0)


@pytest.fixture
async def make_node() -> AsyncIterator[Factory]:
    async with started_nodes() as make:
        yield make


async def lean(make_node: Factory, peer: RawPeer, **opts: object) -> HttpNetwork:
    net = await make_node("a", client="lean", **opts)
    net.set_peer_address("p", url_of(peer.port))
    return net


async def test_auto_picks_lean_when_httptools_is_installed(make_node: Factory) -> None:
    assert (await make_node("a")).client == "lean"
    assert (await make_node("b", client="aiohttp")).client == "aiohttp"
    with pytest.raises(ValueError, match="client"):
        HttpNetwork("c", port=0, node_addresses={}, client="curl")


async def test_the_request_carries_the_http_wire(make_node: Factory) -> None:
    async with RawPeer().running() as peer:
        a = await lean(make_node, peer, cluster_token="s3cret")
        assert await a.send_request_vote("p", VOTE) == RequestVoteResponse(4, True)
        ((_, head, body),) = peer.requests
        lines = head.decode().split("\r\n")
        assert lines[0] == "POST /raft/request-vote HTTP/1.1"
        headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if x)}
        assert headers["host"] == f"127.0.0.1:{peer.port}"
        assert headers["authorization"] == "Bearer s3cret"
        assert headers["content-type"] == headers["accept"] == "application/json"
        assert int(headers["content-length"]) == len(body)
        assert codec.decode(RequestVoteRequest, body) == VOTE


async def test_sequential_rpcs_share_one_keep_alive_connection(make_node: Factory) -> None:
    async with RawPeer().running() as peer:
        a = await lean(make_node, peer)
        for _ in range(20):
            assert (await a.send_request_vote("p", VOTE)).vote_granted
        assert peer.connections == 1
        assert len(peer.requests) == 20


async def test_an_idle_connection_is_closed_after_keepalive_timeout(make_node: Factory) -> None:
    async with RawPeer().running() as peer:
        a = await lean(make_node, peer, keepalive_timeout=0.05)
        assert (await a.send_request_vote("p", VOTE)).vote_granted
        await asyncio.wait_for(peer.hung_up.wait(), 10)  # the client closed it, idle
        assert (await a.send_request_vote("p", VOTE)).vote_granted
        assert [c for c, _, _ in peer.requests] == [0, 1]


async def test_concurrency_is_bounded_by_max_connections(make_node: Factory) -> None:
    async with RawPeer().running() as peer:
        a = await lean(make_node, peer, max_connections=2)
        # Six RPCs start before any answer can come back: unbounded, each would open its own
        # connection; bounded, two do and the other four wait for them.
        results = await asyncio.gather(*(a.send_request_vote("p", VOTE) for _ in range(6)))
        assert all(r.vote_granted for r in results)
        assert peer.connections == 2
        assert len(peer.requests) == 6


async def test_a_connection_the_peer_closed_while_idle_is_retried_once(make_node: Factory) -> None:
    # The peer answers once per connection and drops the next request unanswered, as a server
    # whose keep-alive ran out just as the request went out.
    async with RawPeer(lambda conn, req: ok() if req == 0 else CLOSE).running() as peer:
        a = await lean(make_node, peer)
        for _ in range(3):
            assert (await a.send_request_vote("p", VOTE)).vote_granted
        # each pooled request after the first went out twice: dropped, then on a fresh connection
        assert [c for c, _, _ in peer.requests] == [0, 0, 1, 1, 2]
        assert peer.connections == 3


async def test_a_fresh_connection_closed_unanswered_is_an_error(make_node: Factory) -> None:
    async with RawPeer(lambda conn, req: CLOSE).running() as peer:
        a = await lean(make_node, peer)
        with pytest.raises(NetworkError) as info:
            await a.send_request_vote("p", VOTE)
        assert info.value.kind == "connection"
        assert not info.value.permanent
        assert len(peer.requests) == 1  # never retried: it was no stale pooled connection


async def test_a_peer_closing_mid_answer_is_not_retried(make_node: Factory) -> None:
    truncated = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{"
    async with RawPeer(lambda conn, req: ok() if req == 0 else truncated).running() as peer:
        a = await lean(make_node, peer)
        assert (await a.send_request_vote("p", VOTE)).vote_granted
        with pytest.raises(NetworkError) as info:
            await a.send_request_vote("p", VOTE)
        assert info.value.kind == "connection"
        assert len(peer.requests) == 2  # the answer had started: no second attempt
        assert (await a.send_request_vote("p", VOTE)).vote_granted  # a new connection works
        assert peer.connections == 2


async def test_a_timed_out_connection_is_closed_not_reused(make_node: Factory) -> None:
    async with RawPeer(lambda conn, req: HANG if (conn, req) == (0, 1) else ok()).running() as peer:
        a = await lean(make_node, peer, timeout=0.2)
        assert (await a.send_request_vote("p", VOTE)).vote_granted
        with pytest.raises(NetworkTimeoutError):
            await a.send_request_vote("p", VOTE)
        assert (await a.send_request_vote("p", VOTE)).vote_granted
        assert [c for c, _, _ in peer.requests] == [0, 0, 1]


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    ],
    ids=["not-http", "bad-length", "stray-second-answer", "upgrade"],
)
async def test_a_malformed_answer_is_a_network_error(make_node: Factory, answer: bytes) -> None:
    async with RawPeer(lambda conn, req: answer if conn == 0 else ok()).running() as peer:
        a = await lean(make_node, peer)
        with pytest.raises(NetworkError):
            await a.send_request_vote("p", VOTE)
        assert (await a.send_request_vote("p", VOTE)).vote_granted  # on a new connection
        assert peer.connections == 2


async def test_chunked_and_close_delimited_answers_are_read(make_node: Factory) -> None:
    half = len(GRANTED) // 2
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (half, GRANTED[:half], len(GRANTED) - half, GRANTED[half:])
    )
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n"
    answers = {0: chunked, 1: until_close + GRANTED}
    async with RawPeer(lambda conn, req: answers.get(req, ok())).running() as peer:
        a = await lean(make_node, peer)
        for _ in range(3):
            assert await a.send_request_vote("p", VOTE) == RequestVoteResponse(4, True)
        # the close-delimited answer ended its connection; the third request opened another
        assert [c for c, _, _ in peer.requests] == [0, 0, 1]


async def test_capabilities_come_from_the_answer_headers(make_node: Factory) -> None:
    extra = b"Accept-Encoding: gzip\r\nAccept-Post: application/json, application/msgpack\r\n"
    async with RawPeer(lambda conn, req: ok(extra=extra)).running() as peer:
        a = await lean(make_node, peer)
        await a.send_request_vote("p", VOTE)
        assert a.peer_capabilities("p") == PeerCapabilities(
            frozenset({"gzip"}), frozenset({"json", "msgpack"})
        )


async def test_between_real_nodes_with_msgpack(make_node: Factory) -> None:
    a = await make_node("a", client="lean", wire_format="msgpack")
    b = await make_node("b", client="lean", wire_format="msgpack")
    connect(a, b)
    for _ in range(3):
        assert (await a.send_append_entries("b", sample_append(3))).success
    assert "msgpack" in a.peer_capabilities("b").formats
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert len(handlers.calls) == 3


async def test_stop_fails_an_rpc_in_flight(make_node: Factory) -> None:
    async with RawPeer(lambda conn, req: HANG).running() as peer:
        a = await lean(make_node, peer)
        call = asyncio.ensure_future(a.send_request_vote("p", VOTE))
        while not peer.requests:
            await asyncio.sleep(0.01)
        await a.stop()
        with pytest.raises(NetworkError) as info:
            await call
        assert info.value.kind == "connection"


# -- TLS ----------------------------------------------------------------------------------------


def tls(pki: Pki, **extra: object) -> dict[str, object]:
    return {"ssl_certfile": pki.cert, "ssl_keyfile": pki.key, "ssl_cafile": pki.ca, **extra}


def point(sender: HttpNetwork, target: HttpNetwork) -> None:
    sender.set_peer_address(target.node_id, f"https://127.0.0.1:{target.port}")


async def test_tls_and_its_failures(make_node: Factory, pki: Pki) -> None:
    b = await make_node("b", **tls(pki))
    a = await make_node("a", client="lean", **tls(pki))
    point(a, b)
    for _ in range(3):
        assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert a._lean is not None
    assert len(a._lean._live) == 1  # one TLS connection, kept alive
    wrong = await make_node("w", client="lean", ssl_cafile=pki.other_ca)
    point(wrong, b)
    with pytest.raises(NetworkError, match="TLS") as info:
        await wrong.send_request_vote("b", VOTE)
    assert info.value.permanent
    plain = await make_node("p", client="lean")
    plain.set_peer_address("b", f"http://127.0.0.1:{b.port}")
    with pytest.raises(NetworkError):
        await plain.send_request_vote("b", VOTE)


async def test_mutual_tls(make_node: Factory, pki: Pki) -> None:
    b = await make_node("b", **tls(pki, require_client_cert=True))
    a = await make_node("a", client="lean", **tls(pki))
    point(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    no_cert = await make_node("c", client="lean", ssl_cafile=pki.ca)
    point(no_cert, b)
    with pytest.raises(NetworkError):
        await no_cert.send_request_vote("b", VOTE)
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert len(handlers.calls) == 1
