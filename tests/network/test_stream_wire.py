"""The stream transport's frames and its coalescing writer, without sockets."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from raftcache.network.codec import from_dict
from raftcache.network.stream_wire import (
    ERROR,
    HELLO,
    REQUEST,
    RESPONSE,
    FrameError,
    decode_message,
    encode_frame,
    frame_error,
    request_code,
)
from raftcache.network.stream_writer import BATCH_MAX, FrameWriter
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    RequestVoteRequest,
)

from .fakes import sample_append


def test_frames_round_trip_back_to_back() -> None:
    append = sample_append(3)
    snap = InstallSnapshotRequest(2, "a", 9, 1, 0, b"\x00\xff" * 100, True)
    first = encode_frame(REQUEST, 7, request_code(append), append)
    second = encode_frame(REQUEST, 8, request_code(snap), snap)
    answer = encode_frame(RESPONSE, 7, 2, AppendEntriesResponse(3, True, match_index=3))
    frames = decode_message(first + second + answer)
    assert [(f.kind, f.id, f.code) for f in frames] == [(REQUEST, 7, 2), (REQUEST, 8, 3), (2, 7, 2)]
    assert [f.size for f in frames] == [len(first), len(second), len(answer)]
    assert from_dict(AppendEntriesRequest, frames[0].body) == append  # bytes stay binary
    assert from_dict(InstallSnapshotRequest, frames[1].body) == snap
    assert from_dict(AppendEntriesResponse, frames[2].body).match_index == 3


def test_rpc_codes_are_fixed() -> None:
    # Part of the wire: a change would make nodes of two versions misread each other.
    assert request_code(RequestVoteRequest(1, "a", 0, 0)) == 1
    assert request_code(sample_append(1)) == 2
    assert request_code(InstallSnapshotRequest(1, "a", 1, 1, 0, b"", True)) == 3
    assert (HELLO, REQUEST, RESPONSE, ERROR) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]) + msgpack.packb({}), "header"),
        (msgpack.packb([9, 1, 1]) + msgpack.packb({}), "header"),  # unknown kind
        (msgpack.packb([1, "x", 1]) + msgpack.packb({}), "header"),
        (msgpack.packb([1, True, 1]) + msgpack.packb({}), "header"),  # bool is not an id
        (msgpack.packb([1, 1, 1]), "without its body"),
        (msgpack.packb([1, 1, 1]) + msgpack.packb({"a": 1})[:-1], "without its body"),
        (msgpack.packb("text"), "header"),
    ],
)
def test_malformed_messages_are_frame_errors(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_message(data)


def test_error_frames_map_like_http_statuses() -> None:
    no = frame_error("b", {"error": "x", "code": "no_handlers"})
    assert (str(no), no.permanent, no.kind) == (
        "Node b has no handlers registered",
        True,
        "no_handlers",
    )
    raised = frame_error("b", {"error": "Handler on node b raised: E()", "code": "handler_error"})
    assert (str(raised), raised.permanent) == ("Handler on node b raised: E()", True)
    bad = frame_error("b", {"error": "invalid X: term", "code": "bad_request"})
    assert bad.permanent
    assert "invalid X: term" in str(bad)
    assert "node b" in str(bad).lower()
    odd = frame_error("b", ["not", "a", "map"])
    assert odd.permanent
    relayed = frame_error("b", {"error": "no g7", "code": "group_not_hosted", "permanent": False})
    assert (str(relayed), relayed.permanent, relayed.kind) == ("no g7", False, "group_not_hosted")


class _Sink:
    """Records messages; a send can be held open or made to fail."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def send(self, data: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.messages.append(data)
        if self.gate is not None:
            await self.gate.wait()


async def test_frames_written_in_one_iteration_leave_as_one_message() -> None:
    sink = _Sink()
    writer = FrameWriter(sink.send, 1024, lambda exc: None)
    for i in range(5):
        writer.write(bytes([i]) * 10)
    await asyncio.sleep(0)  # the flush task runs
    assert sink.messages == [b"".join(bytes([i]) * 10 for i in range(5))]
    assert (writer.frames, writer.messages) == (5, 1)


async def test_batches_respect_the_readers_limit_and_keep_order() -> None:
    sink = _Sink()
    writer = FrameWriter(sink.send, 25, lambda exc: None)
    frames = [bytes([i]) * 10 for i in range(5)] + [b"B" * 40, b"z"]
    for frame in frames:
        writer.write(frame)
    for _ in range(10):
        await asyncio.sleep(0)
    assert b"".join(sink.messages) == b"".join(frames)
    # Two frames of 10 fit in 25; a frame over the limit goes alone (the client checked it).
    assert [len(m) for m in sink.messages] == [20, 20, 10, 40, 1]


async def test_frames_written_during_a_slow_send_form_the_next_batch() -> None:
    sink = _Sink()
    sink.gate = asyncio.Event()
    writer = FrameWriter(sink.send, 1024, lambda exc: None)
    writer.write(b"a")
    await asyncio.sleep(0)
    assert sink.messages == [b"a"]  # in flight, held
    writer.write(b"b")
    writer.write(b"c")
    sink.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert sink.messages == [b"a", b"bc"]


async def test_a_failed_send_closes_the_writer_and_reports_once() -> None:
    sink = _Sink()
    sink.fail = ConnectionResetError("gone")
    errors: list[BaseException] = []
    writer = FrameWriter(sink.send, 1024, errors.append)
    writer.write(b"a")
    writer.write(b"b")
    await asyncio.sleep(0)
    assert [type(e) for e in errors] == [ConnectionResetError]
    assert writer.closed
    writer.write(b"c")  # dropped: the connection's owner fails the callers
    await asyncio.sleep(0)
    assert sink.messages == []
    assert len(errors) == 1


async def test_large_frames_are_not_joined_whatever_the_readers_limit() -> None:
    sink = _Sink()
    writer = FrameWriter(sink.send, 64 * 1024 * 1024, lambda exc: None)
    chunk = b"c" * (BATCH_MAX // 2 + 1)
    for frame in (chunk, chunk, b"small", b"small"):
        writer.write(frame)
    for _ in range(10):
        await asyncio.sleep(0)
    # Two large frames exceed BATCH_MAX together: each leaves alone, not copied into one.
    assert [len(m) for m in sink.messages] == [len(chunk), len(chunk) + 10]
