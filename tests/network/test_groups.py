"""The ``group`` field on every wire: present when set, absent (the seed's wire) when empty,
and a malformed id refused before any handler sees it."""

from __future__ import annotations

import orjson
import pytest

from raftcache.network import codec, msgpack_codec
from raftcache.network.groups import GroupNetwork, GroupRouter
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    InstallSnapshotRequest,
    LogEntry,
    RequestVoteRequest,
)
from raftcache.protocol.validation import InvalidMessageError, validate_request

REQUESTS = [
    RequestVoteRequest(3, "s1", 10, 2, True),
    AppendEntriesRequest(3, "s1", 9, 2, [LogEntry(3, 10, b"x")], 9),
    InstallSnapshotRequest(3, "s1", 10, 2, 0, b"data", True),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("wire", [codec, msgpack_codec], ids=["json", "msgpack"])
def test_the_group_travels_and_an_empty_one_is_left_off(req: object, wire: object) -> None:
    encode, decode = wire.encode, wire.decode  # type: ignore[attr-defined]
    plain = encode(req)
    if wire is codec:
        assert "group" not in orjson.loads(plain)  # byte for byte what one-group nodes sent
    assert decode(type(req), plain).group == ""
    req.group = "g12"  # type: ignore[attr-defined]
    try:
        tagged = decode(type(req), encode(req))
        assert tagged == req
        assert tagged.group == "g12"
    finally:
        req.group = ""  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["g 1", "x" * 65, "g\n", "é", "../g"])
def test_a_malformed_group_id_is_refused(bad: str) -> None:
    req = AppendEntriesRequest(1, "s1", 0, 0, group=bad)
    with pytest.raises(InvalidMessageError, match="group must be"):
        validate_request(req)


def test_good_group_ids_pass() -> None:
    for good in ("", "meta", "g0", "g16383", "a.b-c_d"):
        validate_request(AppendEntriesRequest(1, "s1", 0, 0, group=good))


class _AddressBook(InMemoryNetwork):
    """A transport that records the peer addresses it is given."""

    def __init__(self) -> None:
        super().__init__("s1", hub=InMemoryHub())
        self.addresses: dict[str, str | None] = {}

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        self.addresses[node_id] = address


def test_a_group_never_changes_the_stores_address_of_a_peer() -> None:
    """Group g1's configuration still lists s2 at an old address: pushing it (as RaftNode does
    on every configuration change) must not point every group's traffic to s2 there."""
    base, router = _AddressBook(), GroupRouter("s1")
    base.set_peer_address("s2", "http://10.0.0.9:8001")  # the store's, from the cluster map
    g0 = GroupNetwork(base, router, "g0")
    g1 = GroupNetwork(base, router, "g1")
    g0.set_peer_address("s2", "http://10.0.0.9:8001")
    g1.set_peer_address("s2", "http://10.0.0.2:8001")
    g1.set_peer_address("s3", None)
    assert base.addresses == {"s2": "http://10.0.0.9:8001"}
