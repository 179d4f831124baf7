"""The ``group`` field on every wire: present when set, absent (the seed's wire) when empty,
and a malformed id refused before any handler sees it."""

from __future__ import annotations

import orjson
import pytest

from raftcache.network import codec, msgpack_codec
from raftcache.network.groups import GroupNetwork, GroupRouter, replica_id, store_of
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
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


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("wire", [codec, msgpack_codec], ids=["json", "msgpack"])
def test_the_destination_replica_travels_with_its_group(req: object, wire: object) -> None:
    encode, decode = wire.encode, wire.decode  # type: ignore[attr-defined]
    if wire is codec:
        assert "to" not in orjson.loads(encode(req))  # one group: the seed's wire
    req.group, req.to = "g3", "s4.2"  # type: ignore[attr-defined]
    try:
        tagged = decode(type(req), encode(req))
        assert (tagged.group, tagged.to) == ("g3", "s4.2")
    finally:
        req.group, req.to = "", ""  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["s 1", "x" * 129, "s/1", "é"])
def test_a_malformed_destination_is_refused(bad: str) -> None:
    with pytest.raises(InvalidMessageError, match="to must be"):
        validate_request(AppendEntriesRequest(1, "s1", 0, 0, to=bad, group="g0"))


def test_replica_ids_name_their_store() -> None:
    assert replica_id("s4", 0) == "s4"
    assert replica_id("s4", 2) == "s4.2"
    assert store_of("s4.2") == store_of("s4") == "s4"
    with pytest.raises(ValueError, match="holds no"):
        replica_id("s.4", 1)
    with pytest.raises(ValueError, match=">= 0"):
        replica_id("s4", -1)


async def test_a_view_sends_to_the_replicas_store_addressed_to_the_replica() -> None:
    """``GroupNetwork`` sends a request for replica ``s2.3`` to store ``s2``, stamped
    ``to="s2.3"``: the store's router hands it to its group, whose replica checks the id."""
    hub = InMemoryHub()
    nets = {s: InMemoryNetwork(s, hub=hub, seed=1) for s in ("s1", "s2")}
    routers = {s: GroupRouter(s) for s in nets}
    seen: list[tuple[str, str]] = []

    class Handlers:
        async def handle_append_entries(self, req: AppendEntriesRequest) -> object:
            seen.append((req.group, req.to))
            return AppendEntriesResponse(req.term, True)

    for s, net in nets.items():
        net.register_handlers(routers[s])
        await net.start()
    routers["s2"].attach("g5", Handlers())  # type: ignore[arg-type]
    try:
        view = GroupNetwork(nets["s1"], routers["s1"], "g5")
        answer = await view.send_append_entries("s2.3", AppendEntriesRequest(1, "s1.1", 0, 0))
        assert answer.success
        assert seen == [("g5", "s2.3")]
    finally:
        for net in nets.values():
            await net.stop()
