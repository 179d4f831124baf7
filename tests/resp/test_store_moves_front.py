"""The RESP fronts of a store follow its replicas as they move (``RespServer`` on a store).

The four stores of ``tests/server/test_store_moves_front.py`` (two groups, three replicas
each, real HTTP between them), each with a plain RESP port and a cluster-mode one whose
topology polls the stores' ``/v1/status``. While a plain client on the store that leads the
moving group, and redis-py's ``RedisCluster`` on the cluster ports, keep writing and reading
keys of that group, its replica moves to the fourth store (``<store>.1``, which ends up
leading it). Neither client sees a failure but retriable ones it retried; every acknowledged
write reads back; the source now forwards the group's keys (``RemoteRouter``), the target
serves them with its own replica; CLUSTER SLOTS on every store names the new replicas, the
leader's cluster address first; and a MOVED goes to the leader's store, although Raft names
the leader ``<store>.1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, MovedError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError

from raftcache.resp.server import RespServer
from raftcache.resp.shards import RemoteRouter, ReplicaRouter, ShardedRouter
from raftcache.slots import group_range, key_slot
from raftcache.store import Store, group_id
from tests.server.test_store_moves_front import (
    GROUPS,
    STORES,
    Move,
    MovingStores,
    RetryError,
    Tally,
    keep_going,
    run_during,
)
from tests.store.stores_http import open_resp_ports

#: What a RESP client retries: nothing happened (TRYAGAIN, CLUSTERDOWN: a cluster client
#: refreshes its slots), or a SET of the same value may be repeated (INDETERMINATE).
RETRIED_ANSWERS = ("TRYAGAIN", "CLUSTERDOWN", "INDETERMINATE")


class RespStores(MovingStores):
    def __init__(self) -> None:
        super().__init__()
        self.plain: dict[str, RespServer] = {}
        self.cluster: dict[str, RespServer] = {}

    async def add_resp(self, sid: str, store: Store, app: web.Application) -> None:
        ports = await open_resp_ports(store, app, self.urls)
        self.cleanups.append(ports.stop)
        self.plain[sid], self.cluster[sid] = ports.plain, ports.cluster

    def start_topologies(self) -> None:
        for server in self.cluster.values():
            assert server.state.topology is not None
            server.state.topology.start()  # shared with the plain port


@pytest.fixture
async def stores() -> AsyncIterator[RespStores]:
    running = RespStores()
    try:
        await running.start(running.add_resp)
        running.start_topologies()
        yield running
    finally:
        await running.stop()


def _retriable(exc: RedisError) -> bool:
    if isinstance(exc, TryAgainError | ClusterDownError | RedisConnectionError):
        return True
    return str(exc).startswith(RETRIED_ANSWERS)


def resp_client(
    client: aioredis.Redis | RedisCluster,
) -> tuple[Callable[[str, bytes], Awaitable[None]], Callable[[str], Awaitable[bytes | None]]]:
    async def write(key: str, value: bytes) -> None:
        try:
            assert await client.set(key, value) is True
        except RedisError as exc:
            if _retriable(exc):
                raise RetryError(f"SET {type(exc).__name__}: {exc}") from exc
            raise

    async def read(key: str) -> bytes | None:
        try:
            value = await client.get(key)
        except RedisError as exc:
            if _retriable(exc):
                raise RetryError(f"GET {type(exc).__name__}: {exc}") from exc
            raise
        assert value is None or isinstance(value, bytes)
        return value

    return write, read


def _router(server: RespServer, gid: str) -> Any:
    router = server.state.router
    assert isinstance(router, ShardedRouter)
    return router.routers[gid]


async def _slots(port: int) -> list[Any]:
    client = aioredis.Redis(port=port, socket_timeout=10)
    try:
        found: list[Any] = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        return found
    finally:
        await client.aclose()


def _expected_slots(stores: RespStores, move: Move) -> list[tuple[int, int, int, set[int]]]:
    """Every group's row of CLUSTER SLOTS: slots, the leader's cluster port, the ports of its
    other stores (a store leading a later group is listed there as a master first)."""
    port = {sid: server.port for sid, server in stores.cluster.items()}
    placement = {**stores.placement, move.gid: move.stores}
    leaders = []
    for g in range(GROUPS):
        found = stores.leader(group_id(g))
        assert found is not None
        leaders.append(found[0])
    rows = []
    for g, leader in enumerate(leaders):
        slots = group_range(g, GROUPS)
        others = {
            port[s]
            for s in placement[group_id(g)]
            if s != leader and (s not in leaders or leaders.index(s) < g)
        }
        rows.append((slots.start, slots.stop - 1, port[leader], others))
    return rows


async def test_resp_fronts_follow_a_replica_move(stores: RespStores) -> None:
    move = stores.plan()
    gid, source, target = move.gid, move.source, move.target
    keys = stores.keys_of(gid, 4000, "mv")
    plain = aioredis.Redis(port=stores.plain[source].port, socket_timeout=10)
    other = next(s for s in STORES if s not in (source, target))
    cluster = RedisCluster(host="127.0.0.1", port=stores.cluster[other].port, socket_timeout=10)
    await cluster.initialize()
    tallies = [Tally(), Tally()]
    try:

        def run(
            tally: Tally, client: aioredis.Redis | RedisCluster, mine: list[str]
        ) -> tuple[Tally, Callable[[asyncio.Event], Awaitable[None]]]:
            write, read = resp_client(client)
            return tally, lambda stop: keep_going(tally, stop, mine, write, read)

        clients = [run(tallies[0], plain, keys[0::2]), run(tallies[1], cluster, keys[1::2])]
        await run_during(stores, move, clients)
        for name, tally in zip(("plain", "cluster"), tallies, strict=True):
            assert not tally.failed, (name, tally.failed, tally.retried)
            assert len(tally.acked) >= 20, name

        # Every acknowledged write reads back, through every store's plain port and the
        # cluster client.
        acked = {**tallies[0].acked, **tallies[1].acked}
        sample = list(acked.items())[:: max(1, len(acked) // 25)]
        for sid in STORES:
            each = aioredis.Redis(port=stores.plain[sid].port, socket_timeout=10)
            try:
                for key, value in sample:
                    assert await each.get(key) == value, (sid, key)
            finally:
                await each.aclose()
        for key, value in sample:
            assert await cluster.get(key) == value, key

        # The source forwards the group's keys; the target serves them with its replica.
        key, value = sample[0]
        router = _router(stores.plain[source], gid)
        assert isinstance(router, RemoteRouter)
        before = router.forwarded_total
        assert await plain.get(key) == value
        assert router.forwarded_total > before
        replica = stores.running[target].store.replicas[gid]
        router = _router(stores.plain[target], gid)
        assert isinstance(router, ReplicaRouter)
        assert router.node is replica.node
        before = router.forwarded_total
        at_target = aioredis.Redis(port=stores.plain[target].port, socket_timeout=10)
        try:
            assert await at_target.get(key) == value
            assert await at_target.set(key, b"again")
        finally:
            await at_target.aclose()
        assert router.forwarded_total == before  # it leads: served here
        # A cluster node's whole-keyspace commands follow the groups it hosts.
        assert gid in stores.cluster[target].state.shard_ids
        assert gid not in stores.cluster[source].state.shard_ids
    finally:
        await plain.aclose()
        await cluster.aclose()

    # CLUSTER SLOTS on every store: the new replicas, the leader's cluster address first.
    ports = {sid: server.port for sid, server in stores.cluster.items()}
    async with asyncio.timeout(5):  # each topology polls every 0.1 s
        while True:
            expected = _expected_slots(stores, move)
            seen = [
                [(e[0], e[1], e[2][1], {n[1] for n in e[3:]}) for e in await _slots(port)]
                for port in ports.values()
            ]
            if all(rows == expected for rows in seen):
                break
            await asyncio.sleep(0.05)
    row = expected[int(gid[1:])]
    assert row[2] == ports[target]
    assert ports[move.source] not in row[3]
    # MOVED to the leader's store, which Raft names ``<target>.1``: from the source (no
    # replica any more) and from a store following the group.
    leader = stores.leader(gid)
    assert leader is not None
    assert leader[1].node_id == move.replica
    for sid in [source, *(s for s in move.stores if s != target)]:
        client = aioredis.Redis(port=ports[sid], socket_timeout=10)
        try:
            with pytest.raises(MovedError) as moved:
                await client.get(key)
            assert (moved.value.slot_id, moved.value.port) == (key_slot(key), ports[target]), sid
        finally:
            await client.aclose()
