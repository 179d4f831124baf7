"""The JSON wire codec: round trips, the exact wire shape, and strict but lenient decoding."""

from __future__ import annotations

import base64
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftcache.network import codec as codec_module
from raftcache.network import msgpack_codec
from raftcache.network.codec import (
    REQUEST_TYPES,
    RESPONSE_FOR,
    CodecError,
    clone,
    decode,
    encode,
    from_dict,
    to_dict,
)
from raftcache.protocol.messages import AppendEntriesBatchResponse, BatchAnswer
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RequestVoteRequest,
    RequestVoteResponse,
)

from .fakes import sample_append

ALL_MESSAGES = [*REQUEST_TYPES, *RESPONSE_FOR.values(), LogEntry]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def strategy_for(cls: type[Any]) -> st.SearchStrategy[Any]:
    """A strategy for every field of ``cls``, derived from its type hints (like the codec)."""
    hints = typing.get_type_hints(cls)

    def of(hint: Any) -> st.SearchStrategy[Any]:
        simple: dict[Any, st.SearchStrategy[Any]] = {
            int: INT64,
            bool: st.booleans(),
            str: st.text(),
            bytes: st.binary(max_size=64),
        }
        if hint in simple:
            return simple[hint]
        if dataclasses.is_dataclass(hint):
            return strategy_for(hint)  # type: ignore[arg-type]
        args = typing.get_args(hint)
        if typing.get_origin(hint) is list:
            return st.lists(of(args[0]), max_size=4)
        if type(None) in args:
            return st.none() | of(next(a for a in args if a is not type(None)))
        raise AssertionError(f"no strategy for {hint!r}")

    return st.builds(cls, **{f.name: of(hints[f.name]) for f in dataclasses.fields(cls)})


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_message_round_trips(cls: type[Any], data: st.DataObject) -> None:
    msg = data.draw(strategy_for(cls))
    wire = encode(msg)
    back = decode(cls, wire)
    assert back == msg
    assert type(back) is cls
    assert clone(msg) == msg


def test_wire_shape_is_field_names_base64_and_entry_objects() -> None:
    msg = AppendEntriesRequest(
        7, "n1", 4, 6, [LogEntry(6, 5, b"\xff\xfe\x00"), LogEntry(7, 6, b"")], 3
    )
    obj = orjson.loads(encode(msg))
    assert obj == {
        "term": 7,
        "leader_id": "n1",
        "prev_log_index": 4,
        "prev_log_term": 6,
        "entries": [
            {"term": 6, "index": 5, "command": "//4A", "kind": 0},
            {"term": 7, "index": 6, "command": "", "kind": 0},
        ],
        "leader_commit": 3,
        "timeout_now": False,
    }
    assert to_dict(msg) == obj


def test_an_append_answer_declining_nothing_leaves_the_flag_off_the_wire() -> None:
    """``transfer_declined`` (a node about to stop ignored TimeoutNow) travels only when set:
    the usual answer is the one every earlier release sent, in JSON and in msgpack."""
    usual = AppendEntriesResponse(3, True, match_index=9, last_log_index=9)
    declined = AppendEntriesResponse(3, True, match_index=9, last_log_index=9)
    declined.transfer_declined = True
    assert "transfer_declined" not in orjson.loads(encode(usual))
    assert "transfer_declined" not in msgpack.unpackb(msgpack_codec.encode(usual))
    assert orjson.loads(encode(declined))["transfer_declined"] is True
    for wire in (codec_module, msgpack_codec):
        assert wire.decode(AppendEntriesResponse, wire.encode(usual)) == usual
        assert wire.decode(AppendEntriesResponse, wire.encode(declined)) == declined


def test_bytes_are_padded_standard_base64() -> None:
    data = bytes(range(256)) + b"\xfb"  # 257 bytes: one "=" of padding
    msg = InstallSnapshotRequest(1, "n1", 9, 1, 0, data, False)
    obj = orjson.loads(encode(msg))
    assert obj["data"] == base64.standard_b64encode(data).decode()
    assert obj["data"].endswith("/s=")
    assert decode(InstallSnapshotRequest, encode(msg)).data == data


def test_non_utf8_commands_round_trip() -> None:
    msg = sample_append(5)
    back = decode(AppendEntriesRequest, encode(msg))
    assert [e.command for e in back.entries] == [e.command for e in msg.entries]
    assert back.entries[0].command.startswith(b"\xff\x00")


def test_unknown_keys_are_ignored() -> None:
    body = b'{"term": 2, "vote_granted": true, "from_the_future": {"x": [1]}, "pre_vote": false}'
    assert decode(RequestVoteResponse, body) == RequestVoteResponse(2, True)


def test_missing_fields_with_defaults_take_them() -> None:
    body = b'{"term": 2, "leader_id": "a", "prev_log_index": 0, "prev_log_term": 0}'
    first = decode(AppendEntriesRequest, body)
    second = decode(AppendEntriesRequest, body)
    assert first == AppendEntriesRequest(2, "a", 0, 0, [], 0)
    assert first.timeout_now is False
    first.entries.append(LogEntry(1, 1, b"x"))
    assert second.entries == []  # a default factory, not a shared list
    entry = decode(
        AppendEntriesRequest,
        body[:-1] + b', "entries": [{"term": 1, "index": 2, "command": "eA=="}]}',
    )
    assert entry.entries == [LogEntry(1, 2, b"x")]
    assert decode(InstallSnapshotResponse, b'{"term": 4}') == InstallSnapshotResponse(4, True, 0)


VOTE = {"term": 1, "candidate_id": "c", "last_log_index": 0, "last_log_term": 0}


@pytest.mark.parametrize(
    ("patch", "field_name"),
    [
        ({"term": True}, "term"),  # bool is not an int
        ({"term": 1.0}, "term"),
        ({"term": "1"}, "term"),
        ({"term": None}, "term"),
        ({"pre_vote": 1}, "pre_vote"),  # an int is not a bool
        ({"pre_vote": "true"}, "pre_vote"),
        ({"candidate_id": 5}, "candidate_id"),
        ({"candidate_id": None}, "candidate_id"),
    ],
)
def test_wrong_types_name_the_field(patch: dict[str, Any], field_name: str) -> None:
    with pytest.raises(CodecError) as info:
        decode(RequestVoteRequest, orjson.dumps({**VOTE, **patch}))
    assert info.value.field == field_name
    assert repr(field_name) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("missing", sorted(VOTE))
def test_missing_required_field_names_it(missing: str) -> None:
    body = {k: v for k, v in VOTE.items() if k != missing}
    with pytest.raises(CodecError, match="missing") as info:
        decode(RequestVoteRequest, orjson.dumps(body))
    assert info.value.field == missing


@pytest.mark.parametrize(
    "command",
    ["eA", "e A==", "eA=!", "é", "eA===", 12, None, ["eA=="]],
)
def test_bad_base64_is_rejected(command: Any) -> None:
    body = {
        "term": 1,
        "leader_id": "a",
        "prev_log_index": 0,
        "prev_log_term": 0,
        "entries": [
            {"term": 1, "index": 1, "command": "eA=="},
            {"term": 1, "index": 2, "command": command},
        ],
    }
    with pytest.raises(CodecError) as info:
        decode(AppendEntriesRequest, orjson.dumps(body))
    assert info.value.field == "entries[1].command"


@pytest.mark.parametrize(
    ("entries", "path"),
    [
        ("nope", "entries"),
        ({"term": 1}, "entries"),
        ([5], "entries[0]"),
        ([{"term": 1, "index": 1}], "entries[0].command"),
        ([{"term": 1, "index": False, "command": ""}], "entries[0].index"),
    ],
)
def test_nested_errors_carry_the_path(entries: Any, path: str) -> None:
    body = {
        "term": 1,
        "leader_id": "a",
        "prev_log_index": 0,
        "prev_log_term": 0,
        "entries": entries,
    }
    with pytest.raises(CodecError) as info:
        decode(AppendEntriesRequest, orjson.dumps(body))
    assert info.value.field == path


@pytest.mark.parametrize("body", [b"", b"not json", b"\xff\xfe", b"[1, 2]", b'"x"', b"null", b"{"])
def test_bodies_that_are_not_objects(body: bytes) -> None:
    with pytest.raises(CodecError) as info:
        decode(RequestVoteRequest, body)
    assert info.value.field is None


def test_decode_accepts_str_and_memoryview() -> None:
    wire = encode(RequestVoteResponse(3, False))
    assert decode(RequestVoteResponse, wire.decode()) == RequestVoteResponse(3, False)
    assert decode(RequestVoteResponse, memoryview(wire)) == RequestVoteResponse(3, False)


def test_clone_shares_nothing_mutable() -> None:
    msg = sample_append(3)
    copy = clone(msg)
    assert copy == msg
    assert copy is not msg
    assert copy.entries is not msg.entries
    assert all(a is not b for a, b in zip(copy.entries, msg.entries, strict=True))
    copy.entries[0].term = 99
    copy.entries.pop()
    assert msg.entries[0].term == 3
    assert len(msg.entries) == 3


def test_from_dict_and_to_dict_are_inverse() -> None:
    msg = InstallSnapshotRequest(2, "n1", 10, 2, 4096, b"\x00\x01", True, b"{}")
    assert from_dict(InstallSnapshotRequest, to_dict(msg)) == msg


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode({"term": 1})
    with pytest.raises(TypeError):
        encode(RequestVoteRequest)
    with pytest.raises(TypeError):
        decode(dict, b"{}")


# -- genericity: a message type the codec has never seen -------------------------------------


@dataclass(slots=True)
class Inner:
    blob: bytes
    note: str | None = None


@dataclass(slots=True)
class FutureMessage:
    term: int
    ratio: float
    inners: list[Inner]
    tags: list[str] = field(default_factory=list)
    maybe: Inner | None = None
    flag: bool = False


def test_new_fields_and_types_need_no_codec_change() -> None:
    msg = FutureMessage(1, 0.5, [Inner(b"\x80", None), Inner(b"", "n")], ["a"], Inner(b"z"), True)
    assert decode(FutureMessage, encode(msg)) == msg
    copy = clone(msg)
    assert copy == msg
    assert copy.tags is not msg.tags
    assert copy.maybe is not msg.maybe
    assert decode(FutureMessage, b'{"term": 1, "ratio": 2, "inners": []}').ratio == 2.0
    with pytest.raises(CodecError) as info:
        decode(FutureMessage, b'{"term": 1, "ratio": 1, "inners": [], "maybe": {"blob": 1}}')
    assert info.value.field == "maybe.blob"


def test_unsupported_field_types_fail_loudly() -> None:
    @dataclass
    class Odd:
        values: dict[str, int]

    with pytest.raises(TypeError, match="does not support"):
        decode(Odd, b"{}")


def test_every_request_has_a_response_type() -> None:
    expected = {
        RequestVoteRequest: RequestVoteResponse,
        AppendEntriesRequest: AppendEntriesResponse,
        InstallSnapshotRequest: InstallSnapshotResponse,
    }
    assert expected == RESPONSE_FOR


def test_a_batch_of_append_answers_leaves_the_flag_off_each_item_too() -> None:
    """The batch route's answers carry one ``AppendEntriesResponse`` per item: a decline
    travels there as on the single route, and the usual answer leaves the flag off (as
    network.md says of JSON and msgpack alike)."""
    usual = AppendEntriesResponse(3, True, match_index=9, last_log_index=9)
    declined = AppendEntriesResponse(3, True, match_index=9, last_log_index=9)
    declined.transfer_declined = True
    batch = AppendEntriesBatchResponse([BatchAnswer(usual), BatchAnswer(declined), BatchAnswer()])
    wire = orjson.loads(encode(batch))
    assert "transfer_declined" not in wire["items"][0]["response"]
    assert wire["items"][1]["response"]["transfer_declined"] is True
    packed = msgpack.unpackb(msgpack_codec.encode(batch))
    assert "transfer_declined" not in packed["items"][0]["response"]
    for back in (
        decode(type(batch), encode(batch)),
        msgpack_codec.decode(type(batch), msgpack_codec.encode(batch)),
    ):
        assert [i.response.transfer_declined if i.response else None for i in back.items] == [
            False,
            True,
            None,
        ]
