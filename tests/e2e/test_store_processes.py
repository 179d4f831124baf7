"""Stores of many Raft groups as real ``raftcache serve --groups 4`` processes (docs/sharding.md).

Three stores, four groups of three replicas: any store answers any key (forwarding to the key's
group leader), a batch across groups is refused naming the groups, ``mget`` fans out; a store
killed with SIGKILL costs no acknowledged write, every group elects again among the two left,
and the killed store, restarted from its directories, catches up on every group. Redis clients
route by group on the plain and cluster-mode ports and follow a killed leader. A store
restarted with another ``--groups`` than its data records refuses to start, naming both.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.cluster
import redis.sentinel
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from raftcache.network.groups import store_of
from raftcache.slots import key_group
from tests.e2e.nodes import (
    ProcessCluster,
    eventually_equal,
    get_key,
    key_url,
    mget,
    node_status,
    wait_for,
)
from tests.server.cluster import free_ports

pytestmark = pytest.mark.e2e

GROUPS = 4
FAST = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]


async def group_leaders(cluster: ProcessCluster, http: aiohttp.ClientSession) -> dict[str, str]:
    """Group id → leader store, once every group has a leader its live replicas agree on."""

    async def probe() -> dict[str, str] | None:
        statuses = await asyncio.gather(*(node_status(http, n.url) for n in cluster.live()))
        if any(s is None for s in statuses):
            return None
        seen: dict[str, set[str | None]] = {}
        for status in statuses:
            assert status is not None
            assert status["sharding"]["groups"] == GROUPS
            for group in status["groups"]:
                if group["hosted"]:  # a leader's replica id names its store (store_of)
                    leader = group["leader"]
                    store = None if leader is None else store_of(leader)
                    seen.setdefault(group["group"], set()).add(store)
        live = {n.node_id for n in cluster.live()}
        if len(seen) != GROUPS or any(len(s) != 1 or not s <= live for s in seen.values()):
            return None
        return {g: str(next(iter(s))) for g, s in sorted(seen.items())}

    return await wait_for(probe, "a leader for every group", cluster=cluster)


async def put(http: aiohttp.ClientSession, base: str, key: str, value: bytes) -> int:
    async with http.put(key_url(base, key), data=value) as resp:
        return resp.status


async def _serve_any_key_survive_a_kill(cluster: ProcessCluster) -> None:
    async with aiohttp.ClientSession() as http:
        leaders = await group_leaders(cluster, http)
        urls = [n.url for n in cluster.nodes.values()]
        keys = [f"key:{i}" for i in range(60)]
        assert {key_group(k, GROUPS) for k in keys} == set(range(GROUPS))
        acknowledged: dict[str, bytes] = {}
        for i, key in enumerate(keys):  # through every store in turn: most are forwarded
            value = f"v{i}".encode()
            assert await put(http, urls[i % len(urls)], key, value) == 200
            acknowledged[key] = value
        for url in urls:  # every store answers every key, linearizably
            for key in keys[:12]:
                status, body, _ = await get_key(http, url, key)
                assert (status, body) == (200, acknowledged[key])
        # mget fans out across groups and keeps the request's order.
        got = await mget(http, urls[1], keys)
        assert [base64.b64decode(v) if v else None for v in got] == [acknowledged[k] for k in keys]
        # A batch is atomic within one group; across groups it is refused, naming them.
        ops: list[dict[str, Any]] = [
            {"op": "set", "key": k, "value": base64.b64encode(b"x").decode()} for k in keys[:4]
        ]
        async with http.post(urls[0] + "/v1/batch", json={"ops": ops}) as resp:
            assert resp.status == 400
            assert "CROSSSLOT" in (await resp.json())["error"]
        tagged = [{**op, "key": "{cart}" + op["key"]} for op in ops]
        async with http.post(urls[2] + "/v1/batch", json={"ops": tagged}) as resp:
            assert resp.status == 200, await resp.text()

        # Kill the store leading g0: every group keeps two of its three replicas.
        victim = leaders["g0"]
        cluster.kill(victim)
        after = await group_leaders(cluster, http)
        assert victim not in after.values()
        survivors = [n.url for n in cluster.live()]
        for i, key in enumerate(keys[:20]):
            value = f"w{i}".encode()
            assert await put(http, survivors[i % 2], key, value) == 200
            acknowledged[key] = value
        for key in keys:
            status, body, _ = await get_key(http, survivors[0], key)
            assert (status, body) == (200, acknowledged[key]), key

        # Restarted from its directories, it catches up on every group it hosts.
        cluster.start(victim)
        await group_leaders(cluster, http)
        back = cluster.nodes[victim].url
        for key in keys[:20]:
            expected: bytes | None = acknowledged[key]
            await eventually_equal(
                functools.partial(_stale, http, back, key), expected, f"{key} on {victim}"
            )


async def _stale(http: aiohttp.ClientSession, url: str, key: str) -> bytes | None:
    try:
        status, body, _ = await get_key(http, url, key, consistency="stale")
    except aiohttp.ClientError:
        return None
    return body if status == 200 else None


def test_stores_serve_any_key_and_survive_a_killed_store(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3, extra_args=["--groups", str(GROUPS), *FAST])
    with cluster:
        cluster.start_all()
        asyncio.run(_serve_any_key_survive_a_kill(cluster))
        assert cluster.crashed() == []


def test_redis_clients_on_stores_route_by_group_and_follow_a_killed_leader(
    tmp_path: Path,
) -> None:
    """redis-py on the plain port of one store reaches every group; ``RedisCluster`` given one
    store, right after the start, learns every store from it and goes to each group's leader
    store directly; when that store (leading g0) is killed, it reads back every write
    acknowledged before and routes every group to the store leading it now."""
    cluster = ProcessCluster(tmp_path, 3, extra_args=["--groups", str(GROUPS), *FAST])
    plain = dict(zip(cluster.nodes, free_ports(3), strict=True))
    cports = dict(zip(cluster.nodes, free_ports(3), strict=True))
    for node_id in cluster.nodes:
        cluster.node_args[node_id] = [
            "--resp-port", str(plain[node_id]), "--resp-cluster-port", str(cports[node_id]),
        ]  # fmt: skip
    with cluster:
        cluster.start_all()

        async def leaders() -> dict[str, str]:
            async with aiohttp.ClientSession() as http:
                return await group_leaders(cluster, http)

        led = asyncio.run(leaders())
        # One startup node, as soon as every group has a leader: its first CLUSTER SLOTS must
        # list every store (it waits for the store's first poll of the others), or a client
        # that then loses this store knows no other.
        start = led["g0"]

        def knowing_every_store() -> redis.cluster.RedisCluster:
            # A store still starting when the others were up may have failed the given
            # store's first polls (down until its next poll answers, a second later): then a
            # new client asks again, as an application retrying its start would.
            rc = redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", cports[start])],  # type: ignore[no-untyped-call]
                socket_timeout=10,
            )
            ports = sorted(n.port for n in rc.get_nodes())  # type: ignore[no-untyped-call]
            if ports != sorted(cports.values()):
                rc.close()
                raise AssertionError(f"the client knows {ports}, not every store")
            return rc

        rc = _eventually(knowing_every_store)
        try:
            keys = [f"user:{i}" for i in range(40)]
            one = redis.Redis(port=plain["n2"], socket_timeout=10)
            try:
                for key in keys:
                    assert one.set(key, key)
                assert one.mget(keys) == [k.encode() for k in keys]  # fans out over the groups
                assert one.mset({"{u}a": "1", "{u}b": "2"})  # one slot: atomic
                with pytest.raises(ClusterCrossSlotError, match="same slot"):
                    one.mset({"user:0": "x", "user:1": "y"})  # different groups
                assert one.dbsize() == len(keys) + 2
                # A store leads nothing in particular but takes every key: ROLE says master, and
                # as a Sentinel it names itself the master, the other stores its sentinels.
                assert one.execute_command("ROLE") == [b"master", 0, []]  # type: ignore[no-untyped-call]
                sentinel: Any = redis.sentinel.Sentinel([("127.0.0.1", plain["n2"])])  # type: ignore[no-untyped-call]
                assert sentinel.discover_master("raftcache") == ("127.0.0.1", plain["n2"])
                others = _polled(lambda: sentinel.sentinels[0].sentinel_sentinels("raftcache"), 2)
                assert sorted(s["port"] for s in others) == sorted([plain["n1"], plain["n3"]])
                sentinel.close()
            finally:
                one.close()

            for key in keys[:8]:
                group = f"g{key_group(key, GROUPS)}"

                def routed(key: str = key, group: str = group) -> bool:
                    # Leaders may move meanwhile (the placement driver and the preferred-leader
                    # balancer even them out): compare with the leader as it is now, and let
                    # the client refresh its slots when they disagree.
                    port = rc.get_node_from_key(key).port
                    now = asyncio.run(leaders())[group]
                    if port != cports[now]:
                        rc.nodes_manager.initialize()
                        raise AssertionError(f"{key} ({group}) routed to {port}, leader {now}")
                    return True

                assert _eventually(routed)
            acknowledged = {k: k.encode() for k in keys}
            victim = start
            cluster.kill(victim)  # the one node the client was given
            # Every write acknowledged before the kill reads back through the client, which
            # finds the new leaders by itself (its connections to the victim fail: it asks
            # the other startup nodes for the slots again).
            for key, value in acknowledged.items():
                assert _eventually(lambda key=key: rc.get(key)) == value, key
            # Each group — the victim's under new leaders — is now served by its leader's
            # store, straight: the client's node for the group's slots is that store. Leaders
            # may move meanwhile (the placement driver evens the counts out over the two
            # stores left): a read follows the MOVED such a move causes; the check counts only
            # with the same leaders before and after.
            for group in sorted({f"g{key_group(k, GROUPS)}" for k in keys}):
                key = next(k for k in keys if f"g{key_group(k, GROUPS)}" == group)

                def at_new_leader(key: str = key, group: str = group) -> bool:
                    before = asyncio.run(leaders())
                    assert victim not in before.values()
                    assert rc.get(key) == acknowledged[key]
                    port = rc.get_node_from_key(key).port
                    assert asyncio.run(leaders()) == before, "a leader moved: again"
                    assert port == cports[before[group]], (key, group, port, before)
                    return True

                assert _eventually(at_new_leader)
            for i, key in enumerate(keys):
                value = f"after-{i}".encode()
                assert _eventually(lambda key=key, value=value: rc.set(key, value))
                acknowledged[key] = value
            for key, value in acknowledged.items():
                assert _eventually(lambda key=key: rc.get(key)) == value, key
        finally:
            rc.close()


def _polled(fn: Any, count: int, timeout_s: float = 30.0) -> list[Any]:
    """``fn()`` once it lists ``count`` items (the other stores, once the topology polled
    them), else its last answer."""
    deadline = time.monotonic() + timeout_s
    while len(found := fn()) != count and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(found)


def _eventually(fn: Any, timeout_s: float = 30.0) -> Any:
    """``fn()`` once it stops raising (an election, a map refresh, a check made while a
    leader moved: ``AssertionError``), else its last error."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (redis.RedisError, RedisClusterException, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_a_store_restarted_with_other_groups_refuses_to_start(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3, extra_args=["--groups", str(GROUPS), *FAST])
    with cluster:
        cluster.start_all()

        async def led() -> None:
            async with aiohttp.ClientSession() as http:
                await group_leaders(cluster, http)

        asyncio.run(led())
        assert cluster.terminate("n1") == 0
        cluster.extra_args = ["--groups", "8", *FAST]
        cluster.start("n1")
        code = asyncio.run(cluster.wait_exit("n1"))
        assert code == 1
        log = cluster.nodes["n1"].log_path.read_text()
        assert "--groups: the data has 4, the flags ask for 8" in log
