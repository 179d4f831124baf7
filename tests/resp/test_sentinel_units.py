"""ROLE and SENTINEL on one node's view, against a topology that polled fake members: a
follower, the leader, a leader that stopped answering, no leader known, a cluster-mode port,
RESP3 maps, and the errors Redis Sentinel gives."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftcache.resp.protocol import RespError, Simple, encode
from raftcache.resp.topology import DOWN_AFTER, Advertised, Endpoint, Topology, cluster_node_id

from .test_cluster_commands import call


class Node:
    """The parts of a Raft node ROLE, SENTINEL and the topology read."""

    def __init__(self, me: str, leader: str | None) -> None:
        self.node_id, self.leader_id = me, leader
        self.members = ["n1", "n2", "n3"]
        self.current_term, self.last_applied, self.commit_index = 7, 40, 42
        self.lag: dict[str, int] = {"n1": 0, "n2": 0, "n3": 5}

    @property
    def role(self) -> str:
        return "leader" if self.leader_id == self.node_id else "follower"

    def peer_url(self, node_id: str) -> str | None:
        return f"http://{node_id}.test"

    def status(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "role": self.role,
            "term": self.current_term,
            "leader": self.leader_id,
            "commit_index": self.commit_index,
            "last_applied": self.last_applied,
            "members": self.members,
        }

    def raft_stats(self) -> dict[str, Any]:
        return {"follower_lag": {m: n for m, n in self.lag.items() if m != self.node_id}}


@dataclass
class Server:
    node: Node
    peers: Topology
    cluster_mode: bool = False
    store: Any = None
    sentinel_name: str = "raftcache"
    sentinel_master: Endpoint | None = None


@dataclass
class Client:
    server: Server
    proto: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


#: What n1..n3 advertise (n3 has no cluster-mode port).
ADVERTISED: Mapping[str, Advertised] = {
    "n1": Advertised("h1:6001", "h1:7001"),
    "n2": Advertised("h2:6002", "h2:7002"),
    "n3": Advertised("h3:6003", ""),
}


def _client(me: str = "n1", leader: str | None = "n2", **server: Any) -> Client:
    statuses = {f"http://{n}.test": {"resp": a.to_json()} for n, a in ADVERTISED.items()}

    async def fetch(url: str) -> Mapping[str, Any] | None:
        return statuses.get(url)

    node = Node(me, leader)
    topology = Topology(node, Advertised(), fetch)
    topology.set_own(ADVERTISED[me])
    asyncio.run(topology.refresh())
    client = Client(Server(node, topology, **server))
    client.extra["statuses"] = statuses
    return client


def _run(client: Client, *words: bytes) -> Any:
    return call(*words).run_server(client)


def _pairs(state: dict[str, str]) -> dict[str, str]:
    assert all(isinstance(v, str) for v in state.values())  # Sentinel sends every value as text
    return state


def test_a_follower_is_a_slave_of_the_leader_it_knows() -> None:
    client = _client("n1", "n2")
    assert _run(client, b"ROLE") == [b"slave", b"h2", 6002, b"connected", 40]
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") == [b"h2", b"6002"]
    (master,) = _run(client, b"SENTINEL", b"MASTERS")
    assert _pairs(master)["flags"] == "master"
    assert (master["name"], master["ip"], master["port"]) == ("raftcache", "h2", "6002")
    assert master["runid"] == cluster_node_id("n2")
    assert (master["num-slaves"], master["num-other-sentinels"], master["quorum"]) == (
        "2",
        "2",
        "2",
    )
    replicas = _run(client, b"SENTINEL", b"REPLICAS", b"raftcache")
    assert [(r["ip"], r["port"], r["flags"]) for r in replicas] == [
        ("h1", "6001", "slave"),
        ("h3", "6003", "slave"),
    ]
    assert _run(client, b"SENTINEL", b"SLAVES", b"raftcache") == replicas
    sentinels = _run(client, b"SENTINEL", b"SENTINELS", b"raftcache")
    assert [(s["ip"], s["port"], s["flags"]) for s in sentinels] == [
        ("h2", "6002", "sentinel"),
        ("h3", "6003", "sentinel"),
    ]
    assert _run(client, b"SENTINEL", b"MYID") == cluster_node_id("n1").encode()


def test_the_leader_is_the_master_with_its_followers_offsets() -> None:
    client = _client("n2", "n2")
    assert _run(client, b"ROLE") == [
        b"master",
        42,
        [[b"h1", b"6001", b"42"], [b"h3", b"6003", b"37"]],
    ]
    replicas = _run(client, b"SENTINEL", b"REPLICAS", b"raftcache")
    assert [r["slave-repl-offset"] for r in replicas] == ["42", "37"]
    assert all(r["master-host"] == "h2" and r["master-link-status"] == "ok" for r in replicas)


def test_a_leader_that_stops_answering_is_down_and_then_the_last_one_known() -> None:
    client = _client("n1", "n2")
    statuses = client.extra["statuses"]
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") == [b"h2", b"6002"]
    del statuses["http://n2.test"]
    for _ in range(DOWN_AFTER):
        asyncio.run(client.server.peers.refresh())
    assert _run(client, b"ROLE")[3] == b"connecting"
    (master,) = _run(client, b"SENTINEL", b"MASTERS")
    assert master["flags"] == "master,s_down,o_down"  # redis-py then asks the next sentinel
    client.server.node.leader_id = None  # an election under way
    assert _run(client, b"ROLE") == [b"slave", b"", 0, b"connecting", 40]
    (master,) = _run(client, b"SENTINEL", b"MASTERS")
    assert (master["ip"], master["port"], master["flags"]) == ("h2", "6002", "master,s_down,o_down")
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") == [b"h2", b"6002"]


def test_no_leader_ever_known_answers_nil_and_a_down_master() -> None:
    client = _client("n1", None)
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") is None
    (master,) = _run(client, b"SENTINEL", b"MASTERS")
    assert (master["ip"], master["port"], master["flags"]) == ("", "0", "master,s_down,o_down")
    assert _run(client, b"SENTINEL", b"CKQUORUM", b"raftcache") == Simple(
        "OK 3 usable Sentinels. Quorum and failover authorization can be reached"
    )


def test_a_cluster_mode_port_names_cluster_mode_addresses_in_role_not_in_sentinel() -> None:
    client = _client("n1", "n2", cluster_mode=True)
    assert _run(client, b"ROLE")[:3] == [b"slave", b"h2", 7002]
    # A Sentinel client follows no MOVED: its master is the leader's plain port.
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") == [b"h2", b"6002"]


def test_the_service_name_is_configurable_and_others_are_unknown() -> None:
    client = _client(sentinel_name="cache-a")
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") is None
    unknown = _run(client, b"SENTINEL", b"MASTER", b"raftcache")
    assert isinstance(unknown, RespError)
    assert unknown.line == "ERR No such master with that name"
    assert _run(client, b"SENTINEL", b"MASTER", b"cache-a")["name"] == "cache-a"


@pytest.mark.parametrize(
    ("words", "error"),
    [
        ((b"SENTINEL", b"FAILOVER", b"raftcache"), "ERR SENTINEL FAILOVER is not supported"),
        ((b"SENTINEL", b"MONITOR", b"x", b"h", b"1", b"2"), "ERR SENTINEL MONITOR is not"),
        ((b"SENTINEL", b"NOPE"), "ERR unknown subcommand 'NOPE'. Try SENTINEL HELP."),
        ((b"SENTINEL", b"MASTERS", b"x"), "ERR wrong number of arguments for 'sentinel|masters'"),
        ((b"SENTINEL", b"REPLICAS"), "ERR wrong number of arguments for 'sentinel|replicas'"),
    ],
)
def test_errors_are_sentinels(words: tuple[bytes, ...], error: str) -> None:
    answer = _run(_client(), *words)
    assert isinstance(answer, RespError)
    assert answer.line.startswith(error), answer


def test_resp2_sends_flat_pairs_and_resp3_maps() -> None:
    masters = _run(_client(), b"SENTINEL", b"MASTERS")
    assert encode(masters, 2).startswith(b"*1\r\n*40\r\n$4\r\nname\r\n$9\r\nraftcache\r\n")
    assert encode(masters, 3).startswith(b"*1\r\n%20\r\n$4\r\nname\r\n$9\r\nraftcache\r\n")


class _Replica:
    def __init__(self, node: Node) -> None:
        self.node = node


class _Store:
    """A sharded store as ROLE and SENTINEL read it: n1 leads group g0 and follows g1."""

    store_id = "n1"
    placement: Mapping[str, list[str]] = {"g0": ["n1", "n2", "n3"], "g1": ["n1", "n2", "n3"]}

    def __init__(self) -> None:
        self.replicas = {"g0": _Replica(Node("n1", "n1")), "g1": _Replica(Node("n1", "n2"))}


@pytest.mark.parametrize("cluster_mode", [False, True])
def test_a_sharded_store_is_a_master_and_its_own_sentinel_master(cluster_mode: bool) -> None:
    client = _client("n1", None, store=_Store(), cluster_mode=cluster_mode)
    # It leads nothing in particular: every store takes every key on its plain port.
    assert _run(client, b"ROLE") == [b"master", 0, []]
    assert _run(client, b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", b"raftcache") == [b"h1", b"6001"]
    replicas = _run(client, b"SENTINEL", b"REPLICAS", b"raftcache")
    assert [r["port"] for r in replicas] == ["6002", "6003"]
    sentinels = _run(client, b"SENTINEL", b"SENTINELS", b"raftcache")
    assert [s["port"] for s in sentinels] == ["6002", "6003"]
    client.server.store.replicas["g0"].node.leader_id = "n2"  # it now leads no group
    expected = [b"slave", b"", 0, b"connecting", 0] if cluster_mode else [b"master", 0, []]
    assert _run(client, b"ROLE") == expected
