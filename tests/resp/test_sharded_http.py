"""Both RESP ports of sharded stores, end to end over the stores' real HTTP fronts.

Four in-process stores of four groups (three replicas each), each with its HTTP application
(``create_store_app``: client API and Raft on one port), a plain RESP port and a cluster-mode
RESP port whose topology polls the stores' ``/v1/status`` (``store_topology``). Through store
s1's plain port, keys of a group it leads, of one it follows and of one it holds no replica of
are served (forwarded over HTTP with ``LeaderBackend``); redis-py's ``RedisCluster`` and plain
clients on the cluster-mode ports see four shards, one per group, each mastered by its leader
store, and are moved there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import LoadBalancingStrategy
from redis.exceptions import (
    ClusterCrossSlotError,
    MovedError,
    RedisClusterException,
    ResponseError,
)

from raftcache.resp.leader import EXPIRES_HEADER
from raftcache.resp.server import RespServer
from raftcache.resp.topology import (
    cluster_node_id,
)
from raftcache.slots import group_range, key_slot
from raftcache.store import Store, group_id
from tests.server.cluster import fast_raft
from tests.store.stores_http import (
    RespPorts,
    StoreServer,
    bootstrap_placement,
    group_leader,
    loopback,
    open_resp_ports,
    serve_store,
    settle,
    store_settings,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

STORES = ("s1", "s2", "s3", "s4")
GROUPS = 4


@dataclass
class Running:
    server: StoreServer
    resp: RespPorts

    @property
    def store(self) -> Store:
        return self.server.store

    @property
    def plain(self) -> RespServer:
        return self.resp.plain

    @property
    def cluster(self) -> RespServer:
        return self.resp.cluster


class HttpStores:
    def __init__(self) -> None:
        self.ports, self.urls = loopback(STORES)
        self.placement = bootstrap_placement(STORES, GROUPS)
        self.running: dict[str, Running] = {}

    async def start(self) -> None:
        settings = store_settings(self.urls)
        for sid, port in self.ports.items():
            server = await serve_store(
                sid, port, self.urls, settings, groups=GROUPS, placement=self.placement,
                config=fast_raft(), peer_addresses=self.urls, auto_decompress=True,
            )  # fmt: skip
            resp = await open_resp_ports(server.store, server.app, self.urls)
            self.running[sid] = Running(server, resp)
        await asyncio.gather(*(r.store.start() for r in self.running.values()))
        for r in self.running.values():
            r.resp.topology.start()

    async def stop(self) -> None:
        for r in self.running.values():
            await r.resp.stop()
            await r.server.stop()

    def stores(self) -> dict[str, Store]:
        return {sid: r.store for sid, r in self.running.items()}

    def leader(self, gid: str) -> str | None:
        found = group_leader(self.stores(), gid)
        return None if found is None else found[0]

    async def settle(self, timeout_s: float = 15.0) -> dict[str, str]:
        return await settle(self.stores, self.placement, timeout_s)

    async def lead(self, gid: str, store_id: str | None, away_from: str | None = None) -> None:
        leaders = await self.settle()
        current = leaders[gid]
        if current == store_id or (away_from is not None and current != away_from):
            return
        target = store_id or next(s for s in self.placement[gid] if s != away_from)
        await self.running[current].store.replicas[gid].node.transfer_leadership(target)
        async with asyncio.timeout(10):
            while self.leader(gid) != target:
                await asyncio.sleep(0.02)

    def keys_of(self, gid: str, count: int, prefix: str = "k") -> list[str]:
        s1 = self.running["s1"].store
        return [k for k in (f"{prefix}{i}" for i in range(3000)) if s1.group_of(k) == gid][:count]


@dataclass
class Roles:
    """s1's groups: one it leads, one it follows, one it holds no replica of."""

    led: str
    followed: str
    remote: str


async def _started() -> HttpStores:
    """The stores, listening: on fresh ports again if another process took one meanwhile
    (``free_ports`` only finds ports free at the time)."""
    for attempt in range(3):
        running = HttpStores()
        try:
            await running.start()
            return running
        except OSError:
            await running.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stores() -> AsyncIterator[HttpStores]:
    running = await _started()
    try:
        leaders = await running.settle()
        for gid, leader in leaders.items():
            service = running.running[leader].store.replicas[gid].service
            await service.ensure_command_version(3)
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def roles(stores: HttpStores) -> Roles:
    s1 = stores.running["s1"].store
    hosted = sorted(s1.replicas)
    roles = Roles(hosted[0], hosted[1], next(g for g in stores.placement if g not in hosted))
    await stores.lead(roles.led, "s1")
    await stores.lead(roles.followed, None, away_from="s1")
    return roles


@pytest_asyncio.fixture(loop_scope="module")
async def r(stores: HttpStores, roles: Roles) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=stores.running["s1"].plain.port, socket_timeout=10)
    await client.flushall()
    yield client
    await client.aclose()


async def test_every_group_through_one_stores_plain_port_over_http(
    stores: HttpStores, roles: Roles, r: aioredis.Redis
) -> None:
    keys = {gid: stores.keys_of(gid, 4) for gid in stores.placement}
    for group_keys in keys.values():
        for key in group_keys:
            assert await r.set(key, key.encode())
            assert await r.incr(f"{{{key}}}:n") == 1
            assert await r.incr(f"{{{key}}}:n", 2) == 3
    every = [k for group_keys in keys.values() for k in group_keys]
    assert await r.mget([*reversed(every), "nope"]) == [
        *(k.encode() for k in reversed(every)),
        None,
    ]
    for gid, group_keys in keys.items():  # each on its own group's leader
        leader = stores.leader(gid)
        assert leader is not None
        replica = stores.running[leader].store.replicas[gid]
        for key in group_keys:
            held = replica.machine.get(key, time.time())
            assert held is not None, (gid, key)
            assert held.value == key.encode()
    routers = stores.running["s1"].plain.state.router
    assert routers.forwarded_total > 0
    # Writes spanning groups are refused; a MULTI of one group is one batch on its leader.
    remote, followed = keys[roles.remote][0], keys[roles.followed][0]
    with pytest.raises(ClusterCrossSlotError):
        await r.mset({remote: b"x", followed: b"y"})
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(remote, b"m")
        pipe.incr(f"{{{keys[roles.remote][1]}}}:n")
        pipe.get(remote)
        assert await pipe.execute() == [True, 4, b"m"]
    counters = [f"{{{k}}}:n" for k in every]
    assert await r.delete(*every, *counters) == 2 * len(every)
    assert await r.exists(*every) == 0


async def test_expiry_of_every_group(stores: HttpStores, roles: Roles, r: aioredis.Redis) -> None:
    for gid in (roles.led, roles.followed):  # a replica here holds the expiry
        key = stores.keys_of(gid, 1, "t")[0]
        assert await r.set(key, b"v", ex=100)
        assert 99 <= await r.ttl(key) <= 100
        assert await r.set(key, b"w", xx=True, keepttl=True)  # a transaction
        assert 99_000 <= await r.pttl(key) <= 100_000
    key = stores.keys_of(roles.remote, 1, "t")[0]
    assert await r.set(key, b"v", ex=100)
    assert await r.expire(key, 50)  # a TTL-only change: forwarded as is
    async with aiohttp.ClientSession() as http:
        leader = stores.leader(roles.remote)
        assert leader is not None
        forwarded = {"X-Raftcache-Forwarded": "1"}
        async with http.get(f"{stores.urls[leader]}/v1/keys/{key}", headers=forwarded) as answer:
            expires = float(answer.headers[EXPIRES_HEADER])  # another store asks: it is told
        async with http.get(f"{stores.urls[leader]}/v1/keys/{key}") as answer:
            assert EXPIRES_HEADER not in answer.headers  # a client is not (hot path unchanged)
    assert 49 <= expires - time.time() <= 50
    assert 49 <= await r.ttl(key) <= 50  # TTL of a group held elsewhere, as anywhere else
    other = stores.keys_of(roles.remote, 2, "t")[1]
    await r.set(other, b"o")
    async with r.pipeline(transaction=True) as pipe:  # a MULTI that reads values only
        pipe.get(key)
        pipe.mget([other, key])
        pipe.exists(key, "nope")
        pipe.strlen(other)
        assert await pipe.execute() == [b"v", [b"o", b"v"], 1, 1]
    async with r.pipeline(transaction=True) as pipe:  # one of expiries: as TTL
        pipe.get(key)
        pipe.pttl(other)
        assert await pipe.execute() == [b"v", -1]
    await r.set(other, b"p", xx=True)  # SET XX on a group held elsewhere keeps working
    # Over HTTP too: GETEX's batch, EXPIRETIME's read of the expiry, MSETNX's conditions.
    c: Any = r  # redis-py's helpers are partly untyped
    at = int(time.time()) + 300
    assert await c.getex(key, exat=at) == b"v"
    assert await c.expiretime(key) == at
    fresh = stores.keys_of(roles.remote, 4, "t")[2:]
    assert await c.msetnx({fresh[0]: b"1", fresh[1]: b"2"}) is True
    assert await c.msetnx({fresh[1]: b"3", other: b"4"}) is False
    assert await c.mget([*fresh, other]) == [b"1", b"2", b"p"]


async def test_scan_dbsize_and_flushall_go_over_every_group(
    stores: HttpStores, r: aioredis.Redis
) -> None:
    keys = {f"all:{i}" for i in range(50)}
    async with r.pipeline(transaction=False) as pipe:
        for key in sorted(keys):
            pipe.set(key, b"1")
        await pipe.execute()
    s1 = stores.running["s1"].store
    assert {s1.group_of(k) for k in keys} == set(stores.placement)
    seen = [k async for k in r.scan_iter(match="all:*", count=6)]
    assert len(seen) == len(keys)
    assert {k.decode() for k in seen} == keys
    assert await r.keys("all:*") == sorted(k.encode() for k in keys)
    assert await r.dbsize() == len(keys)
    assert await r.flushall()
    assert await r.dbsize() == 0

    def left() -> dict[str, int]:
        return {
            f"{sid}/{gid}": n
            for sid, running in stores.running.items()
            for gid, replica in running.store.replicas.items()
            if (n := replica.machine.stats()["keys"])
        }

    # Every replica, followers too, once it applied the flush (a follower learns the commit
    # with the leader's next message: it may lag the answer by a heartbeat).
    for _ in range(500):
        if not left():
            break
        await asyncio.sleep(0.02)
    assert left() == {}


async def _slots(port: int) -> list[Any]:
    client = aioredis.Redis(port=port, socket_timeout=10)
    try:
        found: list[Any] = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        return found
    finally:
        await client.aclose()


async def test_cluster_slots_name_each_groups_leader_and_moved_goes_there(
    stores: HttpStores, roles: Roles
) -> None:
    cluster_port = {sid: r.cluster.port for sid, r in stores.running.items()}

    def expected() -> list[tuple[int, int, int, set[int]]]:
        """Each group's slots, its leader, then its other stores — but a store leading a
        later group is listed as a master first (it is a replica only after that)."""
        leaders = [stores.leader(group_id(g)) for g in range(GROUPS)]
        rows = []
        for g, leader in enumerate(leaders):
            assert leader is not None
            slots = group_range(g, GROUPS)
            others = {
                cluster_port[s]
                for s in stores.placement[group_id(g)]
                if s != leader and (s not in leaders or leaders.index(s) < g)
            }
            rows.append((slots.start, slots.stop - 1, cluster_port[leader], others))
        return rows

    async with asyncio.timeout(10):  # every store's topology has polled every other
        while True:
            answers = [await _slots(port) for port in cluster_port.values()]
            seen = [
                [(e[0], e[1], e[2][1], {n[1] for n in e[3:]}) for e in answer] for answer in answers
            ]
            if all(rows == expected() for rows in seen):
                break
            await asyncio.sleep(0.05)
    # MOVED: every key led elsewhere goes to its group leader's cluster port.
    client = aioredis.Redis(port=cluster_port["s1"], socket_timeout=10)
    try:
        for g in range(GROUPS):
            gid = group_id(g)
            key = stores.keys_of(gid, 1, "mv")[0]
            leader = stores.leader(gid)
            assert leader is not None
            if leader == "s1":
                assert await client.set(key, b"here")
                continue
            with pytest.raises(MovedError) as moved:
                await client.get(key)
            assert (moved.value.slot_id, moved.value.port) == (key_slot(key), cluster_port[leader])
        await client.execute_command("READONLY")  # type: ignore[no-untyped-call]
        assert await client.get(stores.keys_of(roles.followed, 1, "ro")[0]) is None  # served here
        with pytest.raises(MovedError):  # no replica here: to the leader, even for a read
            await client.get(stores.keys_of(roles.remote, 1, "ro")[0])
        # A replica still being filled (created for a move, not yet a voter) may be far
        # behind: READONLY reads go to the leader rather than to it.
        s1 = stores.running["s1"].store
        others = [s for s in stores.placement[roles.remote] if s != "s1"]
        await s1.add_replica(roles.remote, others)
        try:
            with pytest.raises(MovedError):
                await client.get(stores.keys_of(roles.remote, 1, "ro")[0])
        finally:
            await s1.remove_replica(roles.remote)
        with pytest.raises(ClusterCrossSlotError):
            await client.mget(stores.keys_of(roles.led, 2, "x"))
        nodes = await client.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
        text = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        assert len(text.splitlines()) == len(STORES)
        assert cluster_node_id("s1") in text
    finally:
        await client.aclose()


async def test_redis_cluster_client_reaches_every_group(stores: HttpStores) -> None:
    port = stores.running["s2"].cluster.port
    client = RedisCluster(host="127.0.0.1", port=port, socket_timeout=10)
    try:
        await client.initialize()
        leaders = {stores.leader(gid) for gid in stores.placement}
        primaries = {n.port for n in client.get_primaries()}
        assert primaries == {stores.running[s].cluster.port for s in leaders if s is not None}
        keys = [f"rc:{i}" for i in range(40)]
        for key in keys:
            assert await client.set(key, key.encode())
        for key in keys:
            assert await client.get(key) == key.encode()
        assert await client.incr("rc:counter") == 1
        # SCAN goes to every master, each answering for the groups it hosts: every key.
        assert {k async for k in client.scan_iter(match="rc:*")} == {
            k.encode() for k in [*keys, "rc:counter"]
        }
    finally:
        await client.aclose()


async def test_redis_cluster_reads_from_each_groups_replicas_with_readonly(
    stores: HttpStores,
) -> None:
    """With a load-balancing strategy redis-py sends READONLY on its replica connections: a
    read sent to a follower store of a key's group is served there (no MOVED). CLUSTER SLOTS
    lists a group's followers as its replicas — all but a store that masters a later group
    (redis-py keeps one role per node: the later listing would turn that master into a
    replica), so the last group always has its two."""
    client = RedisCluster(
        host="127.0.0.1",
        port=stores.running["s3"].cluster.port,
        socket_timeout=10,
        load_balancing_strategy=LoadBalancingStrategy.ROUND_ROBIN_REPLICAS,
    )
    try:
        await client.initialize()
        served = []
        for g in range(GROUPS):
            gid = group_id(g)
            key = stores.keys_of(gid, 1, "rr")[0]
            leader = stores.leader(gid)
            assert leader is not None
            assert await client.set(key, f"v{g}".encode())
            primary = client.get_node_from_key(key)
            assert primary is not None
            assert primary.port == stores.running[leader].cluster.port
            slot_nodes = client.nodes_manager.slots_cache[client.keyslot(key)]
            followers = {
                stores.running[s].cluster.port for s in stores.placement[gid] if s != leader
            }
            assert {n.port for n in slot_nodes[1:]} <= followers
            if g == GROUPS - 1:
                assert {n.port for n in slot_nodes[1:]} == followers
            for replica in slot_nodes[1:]:
                async with asyncio.timeout(10):  # a follower serves what it has applied: wait
                    while (
                        await client.execute_command("GET", key, target_nodes=replica)
                        != f"v{g}".encode()
                    ):
                        await asyncio.sleep(0.02)
                served.append((g, replica.port))
        assert len(served) >= 2  # at least the last group's two followers
        assert client.reinitialize_counter == 0  # no MOVED: each replica served its reads
    finally:
        await client.aclose()


async def test_redis_cluster_routes_read_only_scripts_by_command_getkeys(
    stores: HttpStores, roles: Roles
) -> None:
    """EVAL_RO and EVALSHA_RO are ``movablekeys``: redis-py's RedisCluster asks COMMAND
    GETKEYS for their keys, then sends each to its key's group leader, and gets its value."""
    client = RedisCluster(host="127.0.0.1", port=stores.running["s2"].cluster.port)
    body = "return redis.call('GET', KEYS[1])"
    try:
        async with asyncio.timeout(10):  # s2's topology has heard of every group's leader
            while True:
                try:
                    await client.initialize()
                    break
                except RedisClusterException:
                    await asyncio.sleep(0.05)
        sha = await client.script_load(body)  # every group's script table
        for gid in (roles.led, roles.followed, roles.remote):
            (key,) = stores.keys_of(gid, 1, prefix="ro")
            assert await client.set(key, gid)
            keys = await client.commands_parser.get_keys("EVAL_RO", body, 1, key, "x")
            assert keys is not None
            assert list(keys) == [key]  # COMMAND GETKEYS, asked by redis-py (decoded)
            assert await client.eval_ro(body, 1, key, "x") == gid.encode()
            assert await client.evalsha_ro(sha, 1, key) == gid.encode()
        one, other = stores.keys_of(roles.led, 1, "a")[0], stores.keys_of(roles.remote, 1, "b")[0]
        with pytest.raises(RedisClusterException, match="same key slot"):  # found by redis-py
            await client.eval_ro(body, 2, one, other)
    finally:
        await client.aclose()


async def test_scripts_run_in_their_keys_group_and_span_no_slots(
    stores: HttpStores, roles: Roles, r: aioredis.Redis
) -> None:
    """A script runs in its keys' group — led by s1, followed (forwarded), or held elsewhere
    (``POST /v1/scripts?group=``) — bound to their one slot; two slots are CROSSSLOT."""
    body = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('INCR', KEYS[2])"
    sha = await r.script_load(body)
    for gid in (roles.led, roles.followed, roles.remote):
        (key,) = stores.keys_of(gid, 1, prefix="lua")
        counter = f"{{{key}}}:n"
        assert await r.eval(body, 2, key, counter, "v") == 1
        assert await r.evalsha(sha, 2, key, counter, "w") == 2  # loaded in every group
        leader = stores.leader(gid)
        assert leader is not None
        held = stores.running[leader].store.replicas[gid].machine.get(key, time.time())
        assert held is not None
        assert held.value == b"w"
        with pytest.raises(ResponseError, match=r"^Script attempted to access a non local key"):
            await r.eval("return redis.call('GET', 'elsewhere')", 1, key)
    one, other = stores.keys_of(roles.led, 1, "a")[0], stores.keys_of(roles.remote, 1, "b")[0]
    with pytest.raises(ResponseError, match=r"^Keys in request don't hash to the same slot"):
        await r.eval("return 1", 2, one, other)  # CROSSSLOT (redis-py strips the code)
    assert await r.eval("return ARGV[1]", 0, "keyless") == b"keyless"  # in the first group
    with pytest.raises(ResponseError, match=r"^Script attempted to access a non local key"):
        await r.eval("return redis.call('GET', 'any')", 0)
    assert await r.script_exists(sha) == [True]
    assert await r.script_flush()
    assert await r.script_exists(sha) == [False]
