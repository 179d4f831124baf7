"""Redis Cluster clients against real ``raftcache serve`` processes (``--resp-cluster-port``):
redis-py's ``RedisCluster`` and ``redis-cli -c`` find the leader through CLUSTER SLOTS and
MOVED, follow it when it is killed, and lose no acknowledged write; keys in different slots get
CROSSSLOT on a cluster-mode port and still work on the plain one; READONLY reads a follower."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.cluster
from redis.exceptions import ClusterCrossSlotError, MovedError

from raftcache.testing.mesh import ProxyMesh
from tests.e2e.nodes import WAIT_S, ProcessCluster, wait_for, wait_for_leader
from tests.server.cluster import free_ports


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ProcessCluster, dict[str, int], dict[str, int]]]:
    nodes = ProcessCluster(tmp_path, 3)
    plain = dict(zip(nodes.nodes, free_ports(3), strict=True))
    cluster_ports = dict(zip(nodes.nodes, free_ports(3), strict=True))
    for node_id in nodes.nodes:
        nodes.node_args[node_id] = [
            "--resp-port", str(plain[node_id]),
            "--resp-cluster-port", str(cluster_ports[node_id]),
        ]  # fmt: skip
    with nodes:
        nodes.start_all()
        yield nodes, plain, cluster_ports


async def _leader(nodes: ProcessCluster) -> str:
    async with aiohttp.ClientSession() as http:
        return (await wait_for_leader(nodes, http)).node_id


async def _slots_master(port: int, expected: int) -> None:
    """CLUSTER SLOTS on ``port`` names the node on cluster port ``expected`` as master."""
    client = redis.Redis(port=port, socket_timeout=10)

    async def probe() -> bool:
        slots: Any = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        return bool(slots) and slots[0][2][1] == expected and len(slots[0]) == 5

    try:
        await wait_for(probe, f"CLUSTER SLOTS naming port {expected}", timeout_s=WAIT_S)
    finally:
        client.close()


def _eventually(fn: Any, timeout_s: float = WAIT_S) -> Any:
    """``fn()`` once it stops raising (an election, a map refresh), else its last error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (redis.RedisError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_redis_cluster_follows_the_leader_and_loses_nothing(
    cluster: tuple[ProcessCluster, dict[str, int], dict[str, int]],
) -> None:
    nodes, plain, cports = cluster
    leader = asyncio.run(_leader(nodes))
    follower = next(n for n in nodes.nodes if n != leader)
    # Any port, plain or cluster, advertises the cluster-mode ports with the leader as master.
    asyncio.run(_slots_master(plain[follower], cports[leader]))

    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=plain[follower], socket_timeout=10)
    try:
        assert rc.get_node_from_key("user:{1}").port == cports[leader]  # type: ignore[no-untyped-call]
        acknowledged = {}
        for i in range(50):
            key = f"key{i}"
            assert rc.set(key, f"v{i}")
            acknowledged[key] = f"v{i}".encode()
        assert rc.get("key7") == b"v7"
        assert rc.incr("counter") == 1
        # EVAL_RO is movablekeys: redis-py finds its key with COMMAND GETKEYS.
        assert rc.eval_ro("return redis.call('GET', KEYS[1])", 1, "key7") == b"v7"

        # A follower's cluster-mode port redirects a plain client; READONLY reads it locally.
        direct = redis.Redis(port=cports[follower], socket_timeout=10)
        info = direct.info()
        assert (info["redis_mode"], info["cluster_enabled"], info["role"]) == (
            "cluster",
            1,
            "slave",
        )
        on_the_leader = redis.Redis(port=cports[leader], socket_timeout=10)
        assert on_the_leader.info("replication")["role"] == "master"
        on_the_leader.close()
        plain_info = redis.Redis(port=plain[follower], socket_timeout=10)
        replication = plain_info.info("replication")  # the plain port: the Raft role too
        assert (replication["role"], replication["master_port"]) == ("slave", plain[leader])
        plain_info.close()
        # redis-py raises MovedError for "-MOVED <slot> <host:port>", keeping the rest as text.
        with pytest.raises(MovedError, match=rf"^\d+ 127\.0\.0\.1:{cports[leader]}$"):
            direct.get("key7")
        direct.execute_command("READONLY")  # type: ignore[no-untyped-call]
        assert _eventually(lambda: _equal(direct.get("key7"), b"v7")) == b"v7"
        with pytest.raises(MovedError):
            direct.set("key7", "x")  # a write still goes to the leader
        direct.close()

        # Keys of two slots: CROSSSLOT on a cluster port, as Redis Cluster; fine on a plain one.
        on_leader = redis.Redis(port=cports[leader], socket_timeout=10)
        with pytest.raises(ClusterCrossSlotError, match="don't hash to the same slot"):
            on_leader.mset({"a": "1", "b": "2"})
        assert on_leader.mset({"{t}a": "1", "{t}b": "2"})  # one hash tag, one slot
        # A transaction is one slot's: a second slot aborts it, one hash tag runs it.
        crossed: Any = on_leader.pipeline(transaction=True)
        crossed.set("{t}a", "3").set("b", "4")
        with pytest.raises(ClusterCrossSlotError, match="Command # 2"):  # queued, then EXECABORT
            crossed.execute()
        tagged: Any = on_leader.pipeline(transaction=True)
        assert tagged.set("{t}a", "5").get("{t}b").execute() == [True, b"2"]
        on_leader.close()
        plain_follower = redis.Redis(port=plain[follower], socket_timeout=10)
        assert plain_follower.mset({"a": "1", "b": "2"})
        plain_follower.close()

        # Kill the leader: the client finds the new one and every acknowledged write is there.
        nodes.kill(leader)
        assert _eventually(lambda: rc.set("after", "kill"))
        new_leader = asyncio.run(_leader(nodes))
        assert new_leader != leader
        assert _eventually(lambda: _equal(rc.get_node_from_key("after").port, cports[new_leader]))  # type: ignore[no-untyped-call]
        for key, value in acknowledged.items():
            assert rc.get(key) == value, key
        assert rc.get("after") == b"kill"
    finally:
        rc.close()


def _equal(got: Any, expected: Any) -> Any:
    assert got == expected, f"{got!r} != {expected!r}"
    return got


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_redis_cli_follows_moved(
    cluster: tuple[ProcessCluster, dict[str, int], dict[str, int]],
) -> None:
    nodes, _, cports = cluster
    leader = asyncio.run(_leader(nodes))
    follower = next(n for n in nodes.nodes if n != leader)
    asyncio.run(_slots_master(cports[follower], cports[leader]))

    def cli(*words: str, cluster_mode: bool = True) -> str:
        flags = ["-c"] if cluster_mode else []
        argv = ["redis-cli", *flags, "-p", str(cports[follower]), *words]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip()

    assert cli("SET", "greeting", "hello") == "OK"
    assert cli("GET", "greeting") == "hello"
    assert "MOVED" in cli("GET", "greeting", cluster_mode=False)  # what -c followed
    # redis-cli's cluster manager accepts the nodes (it needs INFO's cluster_enabled:1).
    for action, expected in (("check", "All 16384 slots covered"), ("info", "16384 slots")):
        argv = ["redis-cli", "--cluster", action, f"127.0.0.1:{cports[follower]}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert expected in done.stdout, done.stdout


async def test_a_client_pinned_to_an_isolated_leader_finds_the_new_one(tmp_path: Path) -> None:
    """The leader is cut off from the others (Raft and the status polls both go through a
    proxy mesh), with a ``RedisCluster`` client's slots pointing at it. Once it steps down it
    answers CLUSTERDOWN, so the client refreshes its slots from the other nodes and writes
    through the new leader within seconds — the first write, left pending on the old leader,
    takes its proposal timeout (``--propose-timeout``, 3 s here). (It answered TRYAGAIN,
    which redis-py retries on the same node without refreshing: the client stayed stranded
    there ~33 s per call.)"""
    nodes = ProcessCluster(tmp_path, 3)
    cports = dict(zip(nodes.nodes, free_ports(3), strict=True))
    async with ProxyMesh({n: node.port for n, node in nodes.nodes.items()}) as mesh:
        for n in nodes.nodes:
            over = ",".join(f"{m}={mesh.url(n, m)}" for m in nodes.nodes if m != n)
            nodes.node_args[n] = ["--peer-address-override", over]
            nodes.node_args[n] += ["--resp-cluster-port", str(cports[n])]
            nodes.node_args[n] += ["--propose-timeout", "3"]  # the stranded write's wait
        with nodes:
            nodes.start_all()
            leader = await _leader(nodes)
            await _slots_master(cports[leader], cports[leader])
            # A socket timeout longer than the test's patience: no escape through a timeout.
            # Built in a thread: the sync client must not block this loop, which runs the
            # proxies every Raft message and status poll goes through.
            rc = await asyncio.to_thread(
                redis.cluster.RedisCluster, host="127.0.0.1", port=cports[leader], socket_timeout=40
            )
            try:
                assert await asyncio.to_thread(rc.set, "k", "before")
                mesh.isolate(leader)
                started = time.monotonic()
                deadline = started + 25
                while True:
                    try:
                        if await asyncio.to_thread(rc.set, "k", "after"):
                            break
                    # The old leader's last: INDETERMINATE...; or, refreshing its slots while
                    # no node advertises a leader yet (an election), "not all slots covered".
                    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
                        print(f"{time.monotonic() - started:.1f} s: {exc!r}")
                    assert time.monotonic() < deadline, "still stranded on the old leader"
                    await asyncio.sleep(0.2)
                node = await asyncio.to_thread(rc.get_node_from_key, "k")
                assert node.port != cports[leader]
                assert await asyncio.to_thread(rc.get, "k") == b"after"
            finally:
                rc.close()
                mesh.heal()
