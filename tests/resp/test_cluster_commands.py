"""CLUSTER KEYSLOT and HELP: the slot a store reports is Redis Cluster's, checked against
redis-py's own CRC16 over a real node, and bad calls get Redis's error texts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.crc
from redis.exceptions import ResponseError

from raftcache.resp.args import Limits, arity_ok
from raftcache.resp.calls import Call
from raftcache.resp.cluster import CLUSTERDOWN, CROSSSLOT, redirect
from raftcache.resp.commands import lookup
from raftcache.resp.topology import DOWN_AFTER, Advertised, Topology, cluster_node_id

from .cluster import RespCluster


def run(*words: bytes) -> Any:
    spec = lookup(words[0])
    assert spec is not None
    if not arity_ok(spec, len(words)):
        return "arity"
    call = spec.parse(list(words[1:]), Limits())
    return call.run_server(None)  # type: ignore[arg-type,unused-ignore]  # CLUSTER reads no state


def test_keyslot_hashes_the_raw_bytes_and_the_hash_tag() -> None:
    assert run(b"CLUSTER", b"KEYSLOT", b"somekey") == 11058
    assert run(b"cluster", b"keyslot", b"{user1000}.following") == redis.crc.key_slot(b"user1000")
    assert run(b"CLUSTER", b"KEYSLOT", b"\xff\xfe") == redis.crc.key_slot(b"\xff\xfe")


def test_bad_cluster_calls_get_redis_errors() -> None:
    assert run(b"CLUSTER") == "arity"
    assert "wrong number of arguments for 'cluster|keyslot'" in str(
        run(b"CLUSTER", b"KEYSLOT", b"a", b"b")
    )
    assert "wrong number of arguments for 'cluster|keyslot'" in str(run(b"CLUSTER", b"KEYSLOT"))
    assert "unknown subcommand 'NOPE'. Try CLUSTER HELP." in str(run(b"CLUSTER", b"nope"))
    assert run(b"CLUSTER", b"HELP")[0].startswith(b"CLUSTER <subcommand>")


@pytest_asyncio.fixture(loop_scope="module")
async def follower(resp_cluster: RespCluster) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=await resp_cluster.follower_port(), socket_timeout=10)
    yield client
    await client.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_redis_py_reads_the_slot_from_any_node(follower: aioredis.Redis) -> None:
    for key in ["somekey", "foo{hash_tag}", "user:{42}:cart", "é"]:
        slot = await follower.execute_command("CLUSTER", "KEYSLOT", key)  # type: ignore[no-untyped-call]
        assert slot == redis.crc.key_slot(key.encode())
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        await follower.execute_command("CLUSTER", "KEYSLOT")  # type: ignore[no-untyped-call]
    assert await follower.ping()  # an error never closes the connection


class FakeNode:
    """The parts of a Raft node the topology reads."""

    def __init__(self, node_id: str, leader: str | None, members: list[str]) -> None:
        self.node_id, self.leader_id, self.members = node_id, leader, members
        self.learners: list[str] = []
        self.current_term, self.last_applied = 7, 42

    def peer_url(self, node_id: str) -> str | None:
        return f"http://{node_id}.test"


class FakeServer:
    def __init__(self, topology: Topology | None, cluster_mode: bool = False) -> None:
        self.topology, self.cluster_mode = topology, cluster_mode


class FakeClient:
    def __init__(self, server: FakeServer, consistency: str = "linearizable") -> None:
        self.server, self.consistency = server, consistency


#: What n2 and n3 advertise in their /v1/status (n3 has no cluster-mode port).
STATUSES: Mapping[str, Any] = {
    "http://n2.test": {"resp": {"address": "h2:6002", "cluster_address": "h2:7002"}},
    "http://n3.test": {"resp": {"address": "h3:6003", "cluster_address": ""}},
}


def polled(
    statuses: Mapping[str, Any] = STATUSES, *, me: str = "n1", leader: str | None = "n2"
) -> Topology:
    """A topology of n1..n3, seen from ``me``, that polled ``statuses`` (by URL) once."""

    async def fetch(url: str) -> Mapping[str, Any] | None:
        return statuses.get(url)

    topology = Topology(FakeNode(me, leader, ["n1", "n2", "n3"]), Advertised(), fetch)
    topology.set_own(Advertised("h1:6001", "h1:7001"))
    asyncio.run(topology.refresh())
    return topology


def _topology(me: str, leader: str | None) -> Topology:
    return polled(me=me, leader=leader)


def _view(topology: Topology | None, sub: bytes) -> Any:
    spec = lookup(b"CLUSTER")
    assert spec is not None
    return spec.parse([sub], Limits()).run_server(FakeClient(FakeServer(topology)))


def test_slots_name_the_leader_as_master_with_cluster_ports() -> None:
    topology = _topology("n1", "n2")
    n2, n1, n3 = (cluster_node_id(n).encode() for n in ("n2", "n1", "n3"))
    assert _view(topology, b"SLOTS") == [
        [0, 16383, [b"h2", 7002, n2], [b"h1", 7001, n1], [b"h3", 6003, n3]]
    ]
    nodes = str(_view(topology, b"NODES")).splitlines()
    assert nodes[0].startswith(f"{n1.decode()} h1:7001@17001 myself,slave {n2.decode()} ")
    assert nodes[1].endswith(" connected 0-16383")
    assert " master - " in nodes[1]
    assert "cluster_state:ok" in str(_view(topology, b"INFO"))
    shards = _view(topology, b"SHARDS")
    assert shards[0]["slots"] == [0, 16383]
    assert [n["role"] for n in shards[0]["nodes"]] == ["replica", "master", "replica"]
    assert _view(topology, b"MYID") == n1


def test_without_a_leader_no_slot_is_served() -> None:
    topology = _topology("n1", None)
    assert _view(topology, b"SLOTS") == []
    assert "cluster_state:fail" in str(_view(topology, b"INFO"))


def test_a_node_without_advertised_ports_has_cluster_support_disabled() -> None:
    assert "cluster support disabled" in str(_view(None, b"SLOTS"))
    assert "wrong number of arguments for 'cluster|slots'" in str(
        call(b"CLUSTER", b"SLOTS", b"x").run_server(FakeClient(FakeServer(None)))
    )


def call(*words: bytes) -> Call:
    spec = lookup(words[0])
    assert spec is not None
    return spec.parse(list(words[1:]), Limits())


def test_redirects_on_a_cluster_port() -> None:
    follower = FakeServer(_topology("n1", "n2"), cluster_mode=True)
    moved = redirect(FakeClient(follower), call(b"GET", b"somekey"))  # type: ignore[arg-type]
    assert moved is not None
    assert moved.line == "MOVED 11058 h2:7002"
    crossed = redirect(FakeClient(follower), call(b"MGET", b"a", b"b"))  # type: ignore[arg-type]
    assert crossed is CROSSSLOT
    tagged = call(b"MGET", b"{u}a", b"{u}b")
    assert redirect(FakeClient(follower), tagged).line.startswith("MOVED ")  # type: ignore[arg-type,union-attr]
    readonly = FakeClient(follower, consistency="stale")
    assert redirect(readonly, call(b"GET", b"k")) is None  # type: ignore[arg-type]
    assert redirect(readonly, call(b"SET", b"k", b"v")) is not None  # type: ignore[arg-type]
    assert redirect(FakeClient(follower), call(b"DBSIZE")) is None  # type: ignore[arg-type]
    leader = FakeServer(_topology("n2", "n2"), cluster_mode=True)
    assert redirect(FakeClient(leader), call(b"SET", b"k", b"v")) is None  # type: ignore[arg-type]
    to_n3 = FakeServer(_topology("n1", "n3"), cluster_mode=True)
    assert redirect(FakeClient(to_n3), call(b"GET", b"k")).line.endswith(" h3:6003")  # type: ignore[arg-type,union-attr]
    plain = FakeServer(_topology("n1", "n2"))
    assert redirect(FakeClient(plain), call(b"MGET", b"a", b"b")) is None  # type: ignore[arg-type]


def test_without_a_reachable_leader_a_cluster_port_answers_clusterdown() -> None:
    """Not TRYAGAIN (what forwarding answers): redis-py's RedisCluster retries TRYAGAIN on the
    same node without refreshing its slots, so a client pinned to a node cut off from the
    leader stayed stranded there; CLUSTERDOWN makes it refresh them from another node."""
    for leader in (None, "n9"):  # no leader known; a leader not heard from
        server = FakeServer(_topology("n1", leader), cluster_mode=True)
        for words in ((b"GET", b"k"), (b"SET", b"k", b"v"), (b"INCR", b"k")):
            answer = redirect(FakeClient(server), call(*words))  # type: ignore[arg-type]
            assert answer is CLUSTERDOWN, (leader, words, answer)
        assert CLUSTERDOWN.line == "CLUSTERDOWN The cluster is down"
        readonly = FakeClient(server, consistency="stale")
        assert redirect(readonly, call(b"GET", b"k")) is None  # type: ignore[arg-type]
        assert redirect(readonly, call(b"SET", b"k", b"v")) is CLUSTERDOWN  # type: ignore[arg-type]
        assert redirect(FakeClient(server), call(b"PING")) is None  # type: ignore[arg-type]
    statuses: dict[str, Any] = {
        "http://n2.test": {"resp": {"address": "h2:6002", "cluster_address": "h2:7002"}}
    }
    down = polled(statuses, leader="n2")
    del statuses["http://n2.test"]  # the leader stops answering polls
    for polls in range(1, DOWN_AFTER + 1):
        asyncio.run(down.refresh())
        moved = redirect(FakeClient(FakeServer(down, cluster_mode=True)), call(b"GET", b"k"))  # type: ignore[arg-type]
        assert (moved is CLUSTERDOWN) == (polls == DOWN_AFTER), (polls, moved)
