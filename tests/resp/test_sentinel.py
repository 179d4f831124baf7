"""Leader discovery for plain Redis clients on real ``raftcache serve`` processes: ROLE and INFO
replication report the Raft role and the leader's RESP address, and redis-py's ``Sentinel``
finds the leader through any node's SENTINEL commands, learns the other nodes from one, and
finds the new leader after the old one is SIGKILLed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis
from redis import sentinel as redis_sentinel
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError

from tests.e2e.nodes import WAIT_S, ProcessCluster, wait_for_leader

T = TypeVar("T")
#: redis-py's Sentinel is untyped: its calls are checked by what the test asserts.
Sentinel: Any = redis_sentinel.Sentinel
HOST = "127.0.0.1"
FAST = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ProcessCluster, dict[str, int]]]:
    nodes = ProcessCluster(tmp_path, 3, FAST)
    plain = nodes.give_resp_ports()
    with nodes:
        nodes.start_all()
        yield nodes, plain


async def _leader(nodes: ProcessCluster) -> str:
    async with aiohttp.ClientSession() as http:
        return (await wait_for_leader(nodes, http)).node_id


def _eventually(fn: Callable[[], T], timeout_s: float = WAIT_S) -> T:
    """``fn()`` once it stops raising (an election, a topology poll), else its last error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (redis.RedisError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _command(client: redis.Redis, *argv: Any) -> Any:
    return client.execute_command(*argv)  # type: ignore[no-untyped-call]


def test_role_info_and_sentinel_follow_the_leader(
    cluster: tuple[ProcessCluster, dict[str, int]],
) -> None:
    nodes, plain = cluster
    leader = asyncio.run(_leader(nodes))
    followers = [n for n in nodes.nodes if n != leader]
    on_leader = redis.Redis(port=plain[leader], socket_timeout=10)
    on_follower = redis.Redis(port=plain[followers[0]], socket_timeout=10)

    # ROLE and INFO replication: the leader is the master, with the followers as replicas.
    def leader_role() -> list[Any]:
        role = _command(on_leader, "ROLE")
        assert role[0] == b"master"
        assert len(role[2]) == 2
        return list(role)

    role = _eventually(leader_role)
    assert isinstance(role[1], int)
    assert role[1] > 0
    assert sorted(int(r[1]) for r in role[2]) == sorted(plain[f] for f in followers)
    assert all(r[0] == HOST.encode() and int(r[2]) <= role[1] for r in role[2])

    def follower_role() -> list[Any]:
        found = _command(on_follower, "ROLE")
        assert found[3] == b"connected"
        return list(found)

    found = _eventually(follower_role)
    assert found[:3] == [b"slave", HOST.encode(), plain[leader]]
    info = on_follower.info("replication")
    assert (info["role"], info["master_host"], info["master_port"]) == (
        "slave",
        HOST,
        plain[leader],
    )
    assert info["master_link_status"] == "up"
    info = on_leader.info("replication")
    assert (info["role"], info["connected_slaves"]) == ("master", 2)
    assert {info["slave0"]["port"], info["slave1"]["port"]} == {plain[f] for f in followers}

    # A client told one node (the leader) learns the others from its SENTINEL SENTINELS.
    one = Sentinel([(HOST, plain[leader])], socket_timeout=10)
    assert one.discover_master("raftcache") == (HOST, plain[leader])
    others = one.sentinels[0].sentinel_sentinels("raftcache")
    assert sorted(s["port"] for s in others) == sorted(plain[f] for f in followers)
    assert all(s["is_sentinel"] and not s["is_sdown"] for s in others)
    replicas = one.sentinels[0].sentinel_slaves("raftcache")
    assert sorted(r["port"] for r in replicas) == sorted(plain[f] for f in followers)
    with pytest.raises(MasterNotFoundError):
        one.discover_master("another-service")
    with pytest.raises(redis.ResponseError, match="No such master with that name"):
        _command(on_follower, "SENTINEL", "MASTER", "another-service")
    with pytest.raises(redis.ResponseError, match="not supported"):
        _command(on_follower, "SENTINEL", "FAILOVER", "raftcache")
    # Every node polls the others' status each second: one slow poll (a busy machine) marks a
    # peer down until the next succeeds, so ask until the follower sees all three.
    deadline = time.monotonic() + 10
    while not (quorum := _command(on_follower, "SENTINEL", "CKQUORUM", "raftcache")).startswith(
        b"OK 3 usable"
    ):
        assert quorum.startswith(b"OK "), quorum  # a majority answers throughout
        assert time.monotonic() < deadline, quorum
        time.sleep(0.2)
    one.close()

    # Short client-side retries: redis-py's default backs off for seconds after a failure,
    # on every sentinel it asks too (a dead one then costs seconds before the next is asked).
    retry = Retry(ConstantBackoff(0.05), 3)
    sentinel = Sentinel(
        [(HOST, plain[leader])] + [(s["ip"], s["port"]) for s in others],
        sentinel_kwargs={"socket_timeout": 10, "retry": Retry(NoBackoff(), 0)},
    )
    # check_connection: redis-py PINGs every new connection to the master it was told of.
    master = sentinel.master_for("raftcache", socket_timeout=10, retry=retry, check_connection=True)
    assert master.set("k", "v1")
    reader = sentinel.slave_for("raftcache", socket_timeout=10)
    assert _eventually(lambda: _equal(reader.get("k"), b"v1")) == b"v1"
    connection = reader.connection_pool.get_connection()
    assert connection.port in {plain[f] for f in followers}  # a replica serves slave_for
    reader.connection_pool.release(connection)

    # The leader dies: the same client finds the new one (its first sentinel is dead too).
    nodes.kill(leader)
    assert _eventually(lambda: master.set("k", "v2"))
    new_leader = asyncio.run(_leader(nodes))
    assert new_leader != leader
    address = _eventually(
        lambda: _equal(sentinel.discover_master("raftcache"), (HOST, plain[new_leader]))
    )
    assert master.connection_pool.get_master_address() == address
    assert master.get("k") == b"v2"
    on_new = redis.Redis(port=plain[new_leader], socket_timeout=10)
    assert _command(on_new, "ROLE")[0] == b"master"
    for client in (master, reader, on_leader, on_follower, on_new):
        client.close()
    sentinel.close()


def _equal(value: T, expected: T) -> T:
    assert value == expected, (value, expected)
    return value
