"""The Raft routes on the lean front (``server.lean.routes``): a peer's ``POST /raft/...`` is
answered by the httptools protocol, through the same middlewares and ``RaftRoutes`` handler as
aiohttp's, over real sockets.

Each test knows which side answered: the front counts the requests it served and the
connections it handed to aiohttp. "Identical" means byte for byte, status line, headers in
order and body, but for the ``Date`` line (the second may turn between the two servers).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.network import HttpNetwork, NetworkError, codec, compression, msgpack_codec
from raftcache.network.groups import GroupNetwork, GroupRouter
from raftcache.network.httpwire import JSON, MSGPACK, PATHS
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from raftcache.server.lean.front import LeanFront, LeanSite

from ..network.fakes import RecordingHandlers
from .cluster import start_cluster
from .conftest import SMALL_LIMITS
from .fakes import FakeNode, FakeService
from .wire import Conn, request

TOKEN = "cluster-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The Raft body limit of the nodes served here (a real node's is megabytes; the rule is the same).
LIMIT = 256 * 1024
VOTE_PATH = PATHS[RequestVoteRequest]
APPEND_PATH = PATHS[AppendEntriesRequest]
SNAPSHOT_PATH = PATHS[InstallSnapshotRequest]


@dataclass
class Node:
    port: int
    front: LeanFront | None
    net: HttpNetwork
    handlers: RecordingHandlers
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def _serve(
    *, lean: bool = True, token: str | None = TOKEN, auto_decompress: bool = False
) -> Node:
    """A node's application (client API over fakes, HttpNetwork mounted) as ``NodeServer``
    serves it: aiohttp's decompression off unless asked, on the lean front or aiohttp alone."""
    node = FakeNode()
    net = HttpNetwork("b", port=0, node_addresses={}, cluster_token=token, client_max_size=LIMIT)
    handlers = RecordingHandlers("b")
    net.register_handlers(handlers)
    settings = ServerSettings(limits=SMALL_LIMITS, leader_wait_s=0.3)
    app = create_app(node, FakeService(node), settings, mount=net.mount)
    runner = web.AppRunner(app, access_log=None, auto_decompress=auto_decompress)
    await runner.setup()
    site = LeanSite(runner, "127.0.0.1", 0) if lean else web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    front = site.front if isinstance(site, LeanSite) else None
    return Node(runner.addresses[0][1], front, net, handlers, runner)


async def _stop(node: Node) -> None:
    if node.front is not None:
        node.front.close_connections()
    await node.runner.cleanup()


@pytest.fixture
async def lean() -> AsyncIterator[Node]:
    node = await _serve()
    yield node
    await _stop(node)


def _front(node: Node) -> LeanFront:
    assert node.front is not None
    return node.front


def _entries(count: int, size: int = 80, after: int = 0) -> list[LogEntry]:
    return [
        LogEntry(3, after + i + 1, orjson.dumps({"op": "set", "key": f"k{i}", "value": "x" * size}))
        for i in range(count)
    ]


VOTE = RequestVoteRequest(3, "a", 10, 2)
APPEND = AppendEntriesRequest(3, "a", 0, 0, _entries(20), 0)
HEARTBEAT = AppendEntriesRequest(3, "a", 20, 3, [], 20)
CHUNKS = [
    InstallSnapshotRequest(3, "a", 50, 3, offset, bytes(range(256)) * 64, offset == 3 * 16384)
    for offset in (0, 16384, 2 * 16384, 3 * 16384)
]


def _post(path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    return request("POST", path, body, {**AUTH, "Content-Type": JSON, **(headers or {})})


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


async def _raw_answer(conn: Conn) -> bytes:
    """One answer as sent, less its ``Date`` line."""
    async with asyncio.timeout(30):
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            (
                int(line.split(b":", 1)[1])
                for line in lines
                if line.lower().startswith(b"content-length:")
            ),
            0,
        )
        body = await conn.reader.readexactly(length)
    return b"\r\n".join(line for line in lines if not line.startswith(b"Date: ")) + body


async def _on_both(
    raws: list[bytes], *, token: str | None = TOKEN, auto_decompress: bool = False
) -> tuple[list[bytes], list[bytes], Node]:
    """Each request on a connection of its own, to the lean front and to aiohttp alone; the
    answers of each, and the lean node (stopped; its counters kept)."""
    lean = await _serve(token=token, auto_decompress=auto_decompress)
    plain = await _serve(lean=False, token=token, auto_decompress=auto_decompress)
    try:
        answers: tuple[list[bytes], list[bytes]] = ([], [])
        for raw in raws:
            for node, out in zip((lean, plain), answers, strict=True):
                conn = await Conn.open(node.port)
                await conn.send(raw)
                out.append(await _raw_answer(conn))
                await conn.close()
        return answers[0], answers[1], lean
    finally:
        await _stop(lean)
        await _stop(plain)


async def test_rpcs_answer_byte_identically_on_both_fronts() -> None:
    chunk_bodies = [codec.encode(chunk) for chunk in CHUNKS]
    raws = [
        _post(VOTE_PATH, codec.encode(VOTE)),
        _post(APPEND_PATH, codec.encode(APPEND)),
        _post(APPEND_PATH, codec.encode(HEARTBEAT), {"Accept-Encoding": "gzip"}),
        _post(VOTE_PATH, msgpack_codec.encode(VOTE), {"Content-Type": MSGPACK}),
        _post(APPEND_PATH, msgpack_codec.encode(APPEND), {"Content-Type": MSGPACK}),
        # A snapshot in chunks, compressed as a peer that read our Accept-Encoding sends them.
        *(_post(SNAPSHOT_PATH, _gzip(b), {"Content-Encoding": "gzip"}) for b in chunk_bodies),
        *(
            _post(
                SNAPSHOT_PATH,
                compression.codec(name).compress(msgpack_codec.encode(chunk)),
                {"Content-Type": MSGPACK, "Content-Encoding": name},
            )
            for name in compression.available()
            for chunk in CHUNKS[:2]
        ),
        _post(
            APPEND_PATH, codec.encode(APPEND), {"Content-Type": "application/json; charset=utf-8"}
        ),
    ]
    lean_answers, plain_answers, lean = await _on_both(raws)
    assert lean_answers == plain_answers
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in lean_answers), lean_answers
    # Every one was answered by the lean front itself.
    front = _front(lean)
    assert (front.served, front.handed_off) == (len(raws), 0)
    snapshot = lean_answers[5 + len(CHUNKS) - 1]
    body = snapshot.split(b"\r\n\r\n", 1)[1]
    assert codec.decode(InstallSnapshotResponse, body) == InstallSnapshotResponse(
        3, True, next_offset=4 * 16384
    )


async def test_refusals_answer_byte_identically_and_never_500() -> None:
    good = codec.encode(APPEND)
    big = codec.encode(AppendEntriesRequest(3, "a", 0, 0, _entries(1, LIMIT), 0))
    assert len(big) > LIMIT
    no_token = {"Authorization": ""}
    raws = [
        # Refused by the handler, served on the lean front:
        _post(APPEND_PATH, b"{not json"),  # malformed body: 400
        _post(APPEND_PATH, b'{"term": 1}'),  # a field missing: 400
        _post(APPEND_PATH, orjson.dumps({**orjson.loads(good), "term": -1})),  # invalid: 400
        _post(APPEND_PATH, good, {"Content-Type": "text/plain"}),  # read as JSON, as before
        _post(APPEND_PATH, good, {"Content-Type": MSGPACK}),  # JSON sent as msgpack: 400
        _post(APPEND_PATH, good, {"Content-Encoding": "br"}),  # a coding we lack: 415
        _post(APPEND_PATH, b"not gzip", {"Content-Encoding": "gzip"}),  # corrupt: 400
        _post(APPEND_PATH, _gzip(big), {"Content-Encoding": "gzip"}),  # inflates past: 413
        # Handed to aiohttp, which answers them as it always did:
        _post(APPEND_PATH, good, no_token),  # 401 before the body is read
        request("POST", APPEND_PATH, good, {"Content-Type": JSON}),  # no Authorization: 401
        _post(APPEND_PATH, good, {"Authorization": "Bearer wrong"}),  # 401
        _post(APPEND_PATH, big),  # declared over the limit: 413 before the body is read
        _post(APPEND_PATH + "?x=1", good),  # a query: aiohttp's, 400 (no route reads x)
        request("GET", APPEND_PATH, None, AUTH),  # 405
        _post("/raft/nope", good),  # 404
    ]
    lean_answers, plain_answers, lean = await _on_both(raws)
    assert lean_answers == plain_answers
    statuses = [int(a.split(b" ", 2)[1]) for a in lean_answers]
    assert statuses == [400, 400, 400, 200, 400, 415, 400, 413, 401, 401, 401, 413, 400, 405, 404]
    assert b"Accept-Post: " in lean_answers[5]
    assert b"Accept-Encoding: " in lean_answers[5]
    assert b"WWW-Authenticate: Bearer" in lean_answers[8]
    front = _front(lean)
    assert (front.served, front.handed_off) == (8, 7)


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_a_pooled_connection_stays_on_the_lean_front(lean: Node, client: str) -> None:
    sender = HttpNetwork(
        "a",
        port=0,
        node_addresses={"b": lean.url},
        cluster_token=TOKEN,
        client=client,
        max_connections=1,
        compression=["gzip"],
        compression_threshold=1024,
    )
    await sender.start()
    try:
        rounds = 30
        for i in range(rounds):
            vote = await sender.send_request_vote("b", VOTE)
            append = await sender.send_append_entries("b", APPEND if i % 3 else HEARTBEAT)
            chunk = CHUNKS[i % len(CHUNKS)]
            installed = await sender.send_install_snapshot("b", chunk)
            assert vote == RequestVoteResponse(3, True)
            assert append == AppendEntriesResponse(3, True, match_index=20, last_log_index=20)
            assert installed.next_offset == chunk.offset + len(chunk.data)
    finally:
        await sender.stop()
    front = _front(lean)
    assert (front.served, front.handed_off) == (3 * rounds, 0)
    assert len(lean.handlers.completed) == 3 * rounds
    # The sender compressed the large bodies once it read the node's Accept-Encoding.
    stats = sender.metrics.rpc("outbound", "AppendEntries", "b")
    assert stats.bytes_sent < stats.body_bytes_sent
    inbound = lean.net.metrics.rpc("inbound", "AppendEntries", "a")
    assert (inbound.ok, inbound.errors) == (rounds, {})


@pytest.mark.parametrize("client", ["lean", "aiohttp"])
async def test_a_group_not_hosted_is_relayed_transient_by_the_lean_front(
    lean: Node, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    router = GroupRouter("b")
    router.attach("g0", lean.handlers)
    lean.net.register_handlers(router)
    sender = HttpNetwork(
        "a", port=0, node_addresses={"b": lean.url}, cluster_token=TOKEN, client=client
    )
    await sender.start()
    caplog.set_level(logging.DEBUG, logger="raftcache.network")
    try:
        view = GroupNetwork(sender, GroupRouter("a"), "g7")
        with pytest.raises(NetworkError) as info:
            await view.send_append_entries("b", HEARTBEAT)
        assert (info.value.kind, info.value.permanent) == ("group_not_hosted", False)
        assert str(info.value) == "node b hosts no replica of group 'g7'"
        hosted = GroupNetwork(sender, GroupRouter("a"), "g0")
        assert (await hosted.send_append_entries("b", HEARTBEAT)).success
    finally:
        await sender.stop()
    assert (_front(lean).served, _front(lean).handed_off) == (2, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in caplog.records if "hosts no replica" in r.getMessage()] == [
        logging.DEBUG
    ]


async def test_pipelined_large_rpcs_are_answered_in_order(lean: Node) -> None:
    # Past the bytes the protocol queues before it stops reading: it pauses and resumes.
    appends = [
        AppendEntriesRequest(3, "a", 400 * i, 3, _entries(400, 300, after=400 * i), 0)
        for i in range(12)
    ]
    bodies = [codec.encode(a) for a in appends]
    assert sum(len(b) for b in bodies) > 2 * 1024 * 1024
    conn = await Conn.open(lean.port)
    await conn.send(b"".join(_post(APPEND_PATH, b) for b in bodies))
    answers = [await _raw_answer(conn) for _ in appends]
    await conn.close()
    got = [codec.decode(AppendEntriesResponse, a.split(b"\r\n\r\n", 1)[1]) for a in answers]
    assert [r.match_index for r in got] == [400 * (i + 1) for i in range(12)]
    assert (_front(lean).served, _front(lean).handed_off) == (12, 0)


async def test_connection_close_is_honoured(lean: Node) -> None:
    conn = await Conn.open(lean.port)
    await conn.send(_post(VOTE_PATH, codec.encode(VOTE), {"Connection": "close"}))
    answer = await _raw_answer(conn)
    assert b"Connection: close" in answer
    async with asyncio.timeout(30):
        assert await conn.reader.read() == b""
    await conn.close()
    assert (_front(lean).served, _front(lean).handed_off) == (1, 0)


async def test_the_node_keeps_serving_after_refusals(lean: Node) -> None:
    conn = await Conn.open(lean.port)
    await conn.send(
        _post(APPEND_PATH, b"\xff garbage")
        + _post(APPEND_PATH, b"x", {"Content-Encoding": "zz"})
        + _post(VOTE_PATH, codec.encode(VOTE))
    )
    statuses = [int((await _raw_answer(conn)).split(b" ", 2)[1]) for _ in range(3)]
    assert statuses == [400, 415, 200]
    await conn.send(_post(APPEND_PATH, codec.encode(APPEND), {"Authorization": "Bearer no"}))
    assert b" 401 " in (await _raw_answer(conn))[:20]
    # The refused token moved this connection to aiohttp; a new one starts lean again.
    await conn.close()
    fresh = await Conn.open(lean.port)
    await fresh.send(_post(VOTE_PATH, codec.encode(VOTE)))
    assert (await _raw_answer(fresh)).startswith(b"HTTP/1.1 200 OK")
    await fresh.close()
    assert (_front(lean).served, _front(lean).handed_off) == (4, 1)


async def _route_counts(node: Node) -> list[str]:
    conn = await Conn.open(node.port)
    await conn.send(_post(VOTE_PATH, codec.encode(VOTE)) * 2 + _post(VOTE_PATH, b"{"))
    for _ in range(3):
        await _raw_answer(conn)
    await conn.send(request("GET", "/metrics"))
    text = (await _raw_answer(conn)).decode()
    await conn.close()
    route = f'route="{VOTE_PATH}"'
    return [
        line
        for line in text.splitlines()
        if line.startswith("raftcache_http_requests_total{") and route in line
    ]


async def test_metrics_label_lean_raft_requests_like_aiohttp(lean: Node) -> None:
    plain = await _serve(lean=False)
    try:
        plain_lines = await _route_counts(plain)
    finally:
        await _stop(plain)
    lean_lines = await _route_counts(lean)
    assert lean_lines == plain_lines
    route = f'route="{VOTE_PATH}"'
    assert lean_lines == [
        f'raftcache_http_requests_total{{code="200",method="POST",{route}}} 2.0',
        f'raftcache_http_requests_total{{code="400",method="POST",{route}}} 1.0',
    ]
    assert (_front(lean).served, _front(lean).handed_off) == (3, 1)


async def test_a_host_that_decompresses_itself_answers_codings_through_aiohttp() -> None:
    # An embedding program's runner with aiohttp's default decompression: aiohttp decodes gzip
    # bodies before the handler (and judges codings it lacks), so those stay aiohttp's.
    body = codec.encode(APPEND)
    raws = [
        _post(APPEND_PATH, body),
        _post(APPEND_PATH, _gzip(body), {"Content-Encoding": "gzip"}),
        _post(APPEND_PATH, body, {"Content-Encoding": "identity"}),
    ]
    lean_answers, plain_answers, lean = await _on_both(raws, auto_decompress=True)
    assert lean_answers == plain_answers
    assert all(a.startswith(b"HTTP/1.1 200 OK") for a in lean_answers)
    assert (_front(lean).served, _front(lean).handed_off) == (2, 1)


async def test_without_a_token_every_rpc_is_hot() -> None:
    lean_answers, plain_answers, lean = await _on_both(
        [request("POST", VOTE_PATH, codec.encode(VOTE), {"Content-Type": JSON})], token=None
    )
    assert lean_answers == plain_answers
    assert lean_answers[0].startswith(b"HTTP/1.1 200 OK")
    assert (_front(lean).served, _front(lean).handed_off) == (1, 0)


MESSAGES: dict[str, list[object]] = {
    VOTE_PATH: [VOTE],
    APPEND_PATH: [APPEND, HEARTBEAT],
    SNAPSHOT_PATH: list(CHUNKS),
}
RAFTISH: st.SearchStrategy[dict[str, object]] = st.dictionaries(
    st.sampled_from(
        ["term", "leader_id", "candidate_id", "prev_log_index", "entries", "offset", "data", "done"]
    ),
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=6), st.just([])
    ),
    max_size=6,
)
NOISE = st.one_of(st.binary(max_size=64), RAFTISH.map(orjson.dumps))
_ENCODE = {JSON: codec.encode, MSGPACK: msgpack_codec.encode}


@st.composite
def raft_requests(draw: st.DrawFn) -> bytes:
    """A POST to a Raft path with a body, format, coding and token drawn from what peers and
    strangers send (mostly well-formed, so that answers other than refusals are compared too)."""
    path = draw(st.sampled_from([VOTE_PATH, APPEND_PATH, SNAPSHOT_PATH]))
    fmt = draw(st.sampled_from([JSON, MSGPACK]))
    body = draw(st.one_of(st.sampled_from(MESSAGES[path]).map(_ENCODE[fmt]), NOISE))
    headers: dict[str, str] = {}
    kind = draw(st.sampled_from([fmt, fmt, fmt, "text/plain", None, f"{fmt}; x=1"]))
    if kind is not None:
        headers["Content-Type"] = kind
    coding = draw(st.sampled_from([None, None, "identity", "gzip", "zstd", "br", "gzip, gzip"]))
    if coding is not None:
        headers["Content-Encoding"] = coding
        if coding in compression.available() and draw(st.sampled_from([True, True, False])):
            body = compression.codec(coding).compress(body)
    good = AUTH["Authorization"]
    auth = draw(st.sampled_from([good] * 6 + ["Bearer nope", "", None]))
    if auth is not None:
        headers["Authorization"] = auth
    return request("POST", path, body, headers)


def test_any_raft_request_answers_as_on_aiohttp() -> None:
    # One pair of servers for all examples: starting them per example would dominate the run.
    loop = asyncio.new_event_loop()
    lean, plain = loop.run_until_complete(_serve()), loop.run_until_complete(_serve(lean=False))

    async def both(raw: bytes) -> list[bytes]:
        answers = []
        for node in (lean, plain):
            conn = await Conn.open(node.port)  # a fresh one: a hand-off is for good
            await conn.send(raw)
            answers.append(await _raw_answer(conn))
            await conn.close()
        return answers

    @settings(max_examples=150, deadline=None)
    @given(raft_requests())
    def check(raw: bytes) -> None:
        lean_answer, plain_answer = loop.run_until_complete(both(raw))
        assert lean_answer == plain_answer
        assert int(lean_answer.split(b" ", 2)[1]) < 500, lean_answer

    try:
        check()
        assert _front(lean).served > 0  # the comparison was not aiohttp against aiohttp only
    finally:
        loop.run_until_complete(_stop(lean))
        loop.run_until_complete(_stop(plain))
        loop.close()


@pytest.mark.parametrize(("front", "raft_on_lean"), [("lean", True), ("lean-keys", False)])
async def test_a_cluster_replicates_through_the_lean_front(
    tmp_path: Path, front: str, raft_on_lean: bool
) -> None:
    cluster = await start_cluster(tmp_path, http_front=front, cluster_token=TOKEN)
    try:
        leader = await cluster.leader()
        async with cluster.session.put(f"{leader.url}/v1/keys/k", data=b"v") as resp:
            assert resp.status == 200
        for follower in await cluster.followers():
            lean_front = follower.lean_front
            assert lean_front is not None
            # No client spoke to the followers: what their lean front served is Raft traffic.
            assert (lean_front.served > 0) is raft_on_lean
            assert bool(lean_front.routes.posts) is raft_on_lean
    finally:
        await cluster.stop()
