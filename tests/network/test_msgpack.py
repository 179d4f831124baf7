"""The msgpack body format: codec round trips and strictness, negotiation over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import orjson
import pytest

from raftcache.network import CodecError, codec, msgpack_codec
from raftcache.network.httpclient import PeerCapabilities
from raftcache.network.httpwire import format_of, parse_formats
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RequestVoteRequest,
    RequestVoteResponse,
)

from .fakes import RecordingHandlers, sample_append
from .httpkit import Factory, OldPeer, connect, raw_post, started_nodes, url_of

MESSAGES: list[Any] = [
    RequestVoteRequest(4, "n1", 7, 3, pre_vote=True, leader_transfer=True),
    RequestVoteResponse(4, False, pre_vote=True),
    sample_append(3),
    AppendEntriesRequest(9, "n2", 5, 8, [], 4, timeout_now=True),
    AppendEntriesResponse(3, False, 0, 5, 2, 9),
    InstallSnapshotRequest(2, "n1", 100, 2, 4096, bytes(range(256)) * 4, False, b"\x01cfg"),
    InstallSnapshotResponse(2, False, 4096),
]


@pytest.fixture
async def make_node() -> AsyncIterator[Factory]:
    async with started_nodes() as make:
        yield make


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_and_binary_bytes(msg: Any) -> None:
    data = msgpack_codec.encode(msg)
    assert msgpack_codec.decode(type(msg), data) == msg
    assert len(data) < len(codec.encode(msg))
    raw = msgpack.unpackb(data, raw=False)
    assert sorted(raw) == sorted(codec.to_dict(msg))  # the same keys as the JSON form


def test_decoding_is_as_strict_as_json() -> None:
    good = msgpack.unpackb(msgpack_codec.encode(sample_append(1)), raw=False)
    for field, value in (("term", True), ("entries", "x"), ("leader_id", 3)):
        with pytest.raises(CodecError) as info:
            msgpack_codec.decode(AppendEntriesRequest, msgpack.packb({**good, field: value}))
        assert info.value.field == field
    bad_entry = {**good, "entries": [{"term": 1, "index": 1, "command": 5}]}
    with pytest.raises(CodecError, match="command"):
        msgpack_codec.decode(AppendEntriesRequest, msgpack.packb(bad_entry))
    with pytest.raises(CodecError, match="not valid msgpack"):
        msgpack_codec.decode(AppendEntriesRequest, b"\xc1")
    with pytest.raises(CodecError, match="expected a JSON object"):
        msgpack_codec.decode(AppendEntriesRequest, msgpack.packb([1, 2]))
    unknown = msgpack.packb({**good, "future_field": 1})
    assert msgpack_codec.decode(AppendEntriesRequest, unknown) == sample_append(1)
    with pytest.raises(TypeError):
        msgpack_codec.encode(LogEntry)


def test_content_types() -> None:
    assert format_of("application/msgpack") == "msgpack"
    assert format_of("application/x-msgpack; charset=binary") == "msgpack"
    assert format_of("text/plain") == format_of(None) == "json"
    assert parse_formats("application/json, application/msgpack") == {"json", "msgpack"}
    assert parse_formats(None) == {"json"}


async def test_msgpack_between_nodes_that_both_read_it(make_node: Factory) -> None:
    a = await make_node("a", wire_format="msgpack")
    b = await make_node("b")
    connect(a, b)
    req = sample_append(50)
    await a.send_append_entries("b", req)  # JSON: b has not said it reads msgpack yet
    json_size = a.metrics.rpc("outbound", "AppendEntries", "b").body_bytes_sent
    assert a.peer_capabilities("b").formats == {"json", "msgpack"}
    resp = await a.send_append_entries("b", req)
    assert resp == AppendEntriesResponse(3, True, match_index=50, last_log_index=50)
    msgpack_size = a.metrics.rpc("outbound", "AppendEntries", "b").body_bytes_sent - json_size
    assert msgpack_size < json_size * 0.8
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert [r for _, r in handlers.calls] == [req, req]


async def test_json_stays_the_default(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    for _ in range(2):
        await a.send_append_entries("b", sample_append(50))
    stats = a.metrics.rpc("outbound", "AppendEntries", "b")
    assert stats.body_bytes_sent == 2 * len(codec.encode(sample_append(50)))


async def test_server_answers_in_the_request_format(make_node: Factory) -> None:
    b = await make_node("b")
    body = msgpack_codec.encode(RequestVoteRequest(4, "n1", 7, 3))
    answer = await raw_post(
        b.port, "/raft/request-vote", body, {"Content-Type": "application/msgpack"}
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/msgpack"
    assert msgpack_codec.decode(RequestVoteResponse, answer.body) == RequestVoteResponse(4, True)
    bad = await raw_post(
        b.port, "/raft/request-vote", b"\xc1", {"Content-Type": "application/msgpack"}
    )
    assert bad.status == 400
    assert orjson.loads(bad.body)["code"] == "bad_request"


async def test_an_old_peer_keeps_getting_json(make_node: Factory) -> None:
    a = await make_node("a", wire_format="msgpack")
    async with OldPeer().running() as old:
        a.set_peer_address("old", url_of(old.port))
        for _ in range(3):
            assert (await a.send_request_vote("old", RequestVoteRequest(1, "a", 0, 0))).vote_granted
        assert {h["Content-Type"] for h, _ in old.requests} == {"application/json"}
    assert a.peer_capabilities("old") == PeerCapabilities()
