"""The plain RESP port of a sharded store: every key runs against its own data group.

Four in-process stores (real ``HttpNetwork`` between them, memory storage) host four groups of
three replicas; one RESP server fronts store s1, which leads one of its groups, follows another
and holds no replica of a fourth. A group's leader store is reached through an in-process
stand-in for its HTTP API (``InProcessGroup``): it answers as a forwarded request is answered —
"not the leader" with a hint (``LeaderMovedError``) when the store asked does not lead the
group — so the routing, the remote group's guesses and the order of forwarded writes are real,
and only the HTTP hop is not (``test_sharded_http`` covers that). redis-py drives it all.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.exceptions import ClusterCrossSlotError, ResponseError

from raftcache.cache.commands import BatchOp
from raftcache.cache.entries import Item
from raftcache.cache.results import BatchItem
from raftcache.raft.core import Role
from raftcache.raft.errors import NotLeaderError
from raftcache.resp.backend import Backend, LocalBackend, Router
from raftcache.resp.leader import LeaderMovedError
from raftcache.resp.server import RespServer
from raftcache.resp.shards import RemoteRouter, ShardedRouter
from raftcache.slots import key_slot
from tests.resp.cluster import wait_for
from tests.server.cluster import fast_raft
from tests.store.stores_http import (
    bootstrap_placement,
    group_leader,
    http_store,
    loopback,
    settle,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

STORES = ("s1", "s2", "s3", "s4")
GROUPS = 4
T = TypeVar("T")


class ShardedStores:
    """Four stores of four groups (three replicas each, placed as a real bootstrap places
    them), in process, over real HTTP transports on loopback."""

    def __init__(self) -> None:
        ports, self.urls = loopback(STORES)
        self.placement = bootstrap_placement(STORES, GROUPS)
        self.stores = {
            s: http_store(
                s, port, self.urls, groups=GROUPS, placement=self.placement, config=fast_raft(),
                peer_addresses=self.urls,
            )[0]
            for s, port in ports.items()
        }  # fmt: skip
        self.calls: Counter[tuple[str, str]] = Counter()  # (store, group) → requests taken
        self.refused: Counter[tuple[str, str]] = Counter()  # … answered "not the leader"

    async def start(self) -> None:
        results = await asyncio.gather(
            *(store.start() for store in self.stores.values()), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await self.stop()
            raise failed[0]

    async def stop(self) -> None:
        for store in self.stores.values():
            await store.stop()

    def leader(self, gid: str) -> str | None:
        """The store leading ``gid``, once every replica of it agrees."""
        found = group_leader(self.stores, gid)
        return None if found is None else found[0]

    async def settle(self, timeout_s: float = 15.0) -> dict[str, str]:
        """Every group led (and known to be by its replicas); group → its leader store."""
        return await settle(lambda: self.stores, self.placement, timeout_s)

    async def lead(self, gid: str, store_id: str | None, away_from: str | None = None) -> None:
        """Make ``store_id`` lead ``gid`` (or anyone but ``away_from``)."""
        leaders = await self.settle()
        current = leaders[gid]
        if current == store_id or (away_from is not None and current != away_from):
            return
        node = self.stores[current].replicas[gid].node
        target = store_id or next(s for s in self.placement[gid] if s != away_from)
        await node.transfer_leadership(target)
        async with asyncio.timeout(10):
            while self.leader(gid) != target:
                await asyncio.sleep(0.02)

    def value(self, key: str) -> bytes | None:
        """``key``'s value on its group's leader replica (None: missing)."""
        some = next(iter(self.stores.values()))
        gid = some.group_of(key)
        leader = self.leader(gid)
        assert leader is not None
        item = self.stores[leader].replicas[gid].machine.get(key, time.time())
        return None if item is None else item.value

    def backend(self, gid: str, url: str) -> Backend:
        """The stand-in for ``url``'s HTTP API, for ``gid``'s requests."""
        store_id = next(s for s, u in self.urls.items() if u == url)
        return InProcessGroup(self, store_id, gid)


class InProcessGroup:
    """``Backend`` of one group on one store, in process, answering as the store's HTTP API
    answers a forwarded request: a store that does not lead the group (or does not host it)
    raises ``LeaderMovedError`` with its hint, and nothing was applied."""

    def __init__(self, stores: ShardedStores, store_id: str, gid: str) -> None:
        self._stores, self._store_id, self._gid = stores, store_id, gid

    async def _run(self, op: Callable[[Backend], Awaitable[T]]) -> T:
        replica = self._stores.stores[self._store_id].replicas.get(self._gid)
        if replica is None:
            raise LeaderMovedError(None, f"{self._store_id} does not host {self._gid}")
        try:
            result = await op(LocalBackend(replica.service))
        except NotLeaderError as exc:
            self._stores.refused[self._store_id, self._gid] += 1
            raise LeaderMovedError(exc.leader_id, "not the leader") from exc
        self._stores.calls[self._store_id, self._gid] += 1
        return result

    async def values(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[bytes | None]:
        return await self._run(lambda b: b.values(keys, consistency, touch=touch))

    async def items(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[Item | None]:
        return await self._run(lambda b: b.items(keys, consistency, touch=touch))

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        return await self._run(
            lambda b: b.set(key, value, ttl=ttl, if_version=if_version, if_absent=if_absent)
        )

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        return await self._run(lambda b: b.delete(key, if_version=if_version))

    async def incr(self, key: str, by: int) -> int:
        return await self._run(lambda b: b.incr(key, by))

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchItem]:
        return await self._run(lambda b: b.batch(ops))

    async def list_keys(
        self, prefix: str, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        return await self._run(lambda b: b.list_keys(prefix, after, limit, consistency))

    async def dbsize(self, consistency: str) -> int:
        return await self._run(lambda b: b.dbsize(consistency))

    async def flush(self, prefix: str) -> int:
        return await self._run(lambda b: b.flush(prefix))

    async def publish(self, channel: bytes, message: bytes) -> int:
        return await self._run(lambda b: b.publish(channel, message))

    async def random_key(self, consistency: str) -> str | None:
        return await self._run(lambda b: b.random_key(consistency))


class Fronted:
    """The stores, the RESP server of s1, and which of s1's groups is which."""

    def __init__(self, stores: ShardedStores, resp: RespServer) -> None:
        self.stores, self.resp = stores, resp
        s1 = stores.stores["s1"]
        hosted = sorted(s1.replicas)
        self.led, self.followed = hosted[0], hosted[1]
        self.remote = next(gid for gid in stores.placement if gid not in s1.replicas)

    def keys_of(self, gid: str, count: int, prefix: str = "k") -> list[str]:
        s1 = self.stores.stores["s1"]
        found = [f"{prefix}{i}" for i in range(2000) if s1.group_of(f"{prefix}{i}") == gid]
        return found[:count]


async def _started() -> ShardedStores:
    """The stores, listening: on fresh ports again if another process took one meanwhile
    (``free_ports`` only finds ports free at the time)."""
    for attempt in range(3):
        stores = ShardedStores()
        try:
            await stores.start()
            return stores
        except OSError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def fronted() -> AsyncIterator[Fronted]:
    stores = await _started()
    resp: RespServer | None = None
    try:
        leaders = await stores.settle()
        for gid, leader in leaders.items():  # format 3 everywhere: the routes of today
            await stores.stores[leader].replicas[gid].service.ensure_command_version(3)
        resp = RespServer(
            None,
            None,
            store=stores.stores["s1"],
            clock=time.time,
            group_backend=stores.backend,
            peer_urls=stores.urls,
            leader_wait_s=5.0,
        )
        await resp.start()
        front = Fronted(stores, resp)
        await stores.lead(front.led, "s1")
        await stores.lead(front.followed, None, away_from="s1")
        yield front
    finally:
        if resp is not None:
            await resp.stop()
        await stores.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def r(fronted: Fronted) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=fronted.resp.port, socket_timeout=10)
    await client.flushall()
    yield client
    await client.aclose()


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _routers(fronted: Fronted) -> dict[str, Any]:
    router = fronted.resp.state.router
    assert isinstance(router, ShardedRouter)
    return router.routers


async def test_keys_of_every_group_are_written_and_read_through_one_store(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    stores = fronted.stores
    routers = _routers(fronted)
    assert isinstance(routers[fronted.remote], RemoteRouter)
    assert isinstance(routers[fronted.led], Router)
    stores.calls.clear()
    keys = {gid: fronted.keys_of(gid, 5) for gid in stores.placement}
    for group_keys in keys.values():
        for key in group_keys:
            assert await r.set(key, f"v-{key}".encode())
    for group_keys in keys.values():
        for key in group_keys:
            assert await r.get(key) == f"v-{key}".encode()
            assert stores.value(key) == f"v-{key}".encode()  # on its own group's leader
            assert await r.incr(f"{key}:n") == 1
            assert await r.expire(key, 100)
            assert 95 <= await r.ttl(key) <= 100
    # The group s1 leads ran here; the others went to their leader stores, and only there.
    s1 = stores.stores["s1"]
    assert all(store == stores.leader(gid) for store, gid in stores.calls)
    led_elsewhere = {gid for gid in stores.placement if stores.leader(gid) != "s1"}
    assert {fronted.remote, fronted.followed} <= led_elsewhere
    assert {gid for _, gid in stores.calls} == led_elsewhere
    assert not any(store == "s1" for store, _ in stores.calls)
    assert s1.replicas[fronted.led].node.role is Role.LEADER


async def test_mget_reads_across_groups_in_the_order_asked(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    keys = [k for gid in fronted.stores.placement for k in fronted.keys_of(gid, 3, "m")]
    for key in keys[::2]:
        await r.set(key, key.encode())
    wanted = [*reversed(keys), "missing", keys[0]]
    expected = [k.encode() if keys.index(k) % 2 == 0 else None for k in reversed(keys)]
    assert await r.mget(wanted) == [*expected, None, keys[0].encode()]
    assert await r.exists(*keys, "missing") == len(keys[::2])
    async with r.pipeline(transaction=False) as pipe:  # reads of many clients' groups at once
        for key in keys:
            pipe.get(key)
        assert await pipe.execute() == [
            k.encode() if i % 2 == 0 else None for i, k in enumerate(keys)
        ]


async def test_writes_spanning_groups_are_refused_and_within_one_group_are_atomic(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    one, other = fronted.keys_of(fronted.remote, 1)[0], fronted.keys_of(fronted.followed, 1)[0]
    with pytest.raises(
        ClusterCrossSlotError, match=r"^Keys in request don't hash to the same slot$"
    ):
        await r.mset({one: b"1", other: b"2"})
    assert await r.mget([one, other]) == [None, None]  # nothing was applied
    # Two keys of one group in different slots: MSET is one batch there, atomic.
    same = fronted.keys_of(fronted.remote, 10, "q")
    pair = next((a, b) for a in same for b in same if key_slot(a) != key_slot(b))
    assert await r.mset({pair[0]: b"a", pair[1]: b"b"})
    assert await r.mget(list(pair)) == [b"a", b"b"]
    # MULTI: a command taking the transaction to a second group is refused as it is queued.
    async with r.pipeline(transaction=True) as pipe:
        pipe.set(one, b"x")
        pipe.set(other, b"y")
        with pytest.raises(ResponseError, match=r"Command # 2 .*same slot"):
            await pipe.execute()
    assert await r.mget([one, other]) == [None, None]
    async with r.pipeline(transaction=True) as pipe:  # one group, two slots: fine
        pipe.set(pair[0], b"x")
        pipe.get(pair[1])
        pipe.delete(pair[1])
        assert await pipe.execute() == [True, b"b", 1]
    # DEL and UNLINK fan out: each group deletes its own.
    await r.set(one, b"1")
    await r.set(other, b"2")
    assert await r.delete(pair[0], other, one, "missing") == 3
    assert await r.mget([pair[0], other, one]) == [None, None, None]
    await r.set(one, b"1")
    assert await r.unlink(one, other) == 1


async def test_scan_visits_every_key_of_every_group_once(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    keys = {f"scan:{i}" for i in range(60)}
    for key in keys:
        await r.set(key, b"x")
    groups = {fronted.stores.stores["s1"].group_of(k) for k in keys}
    assert groups == set(fronted.stores.placement)  # every group holds some
    seen: list[str] = []
    cursor = 0
    pages = 0
    while True:
        cursor, page = await r.scan(cursor, match="scan:*", count=7)
        seen += [_text(k) for k in page]
        pages += 1
        if cursor == 0:
            break
    assert sorted(seen) == sorted(keys)  # each exactly once
    assert pages > 4
    assert sorted(_text(k) for k in await r.keys("scan:*")) == sorted(keys)
    assert await r.keys("scan:*") == sorted(await r.keys("scan:*"))  # merged in key order
    tagged = {f"{{t}}:{i}" for i in range(5)}  # one hash tag: one group
    for key in tagged:
        await r.set(key, b"x")
    assert {_text(k) async for k in r.scan_iter(match="{t}:*", count=2)} == tagged


async def test_dbsize_sums_every_group_and_flushall_empties_them(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    keys = [k for gid in fronted.stores.placement for k in fronted.keys_of(gid, 4, "d")]
    for key in keys:
        await r.set(key, b"x")
    assert await r.dbsize() == len(keys)
    info = await r.info("keyspace")
    s1 = fronted.stores.stores["s1"]
    held = sum(1 for k in keys if s1.group_of(k) in s1.replicas)
    assert info["db0"]["keys"] == held  # the keys this store holds, as a cluster node says
    raft = await r.info("raft")
    assert raft["raft_groups"] == GROUPS
    roles = raft["raft_groups_hosted"]  # "g0=leader,g2=follower,…", which redis-py splits
    assert roles[fronted.led] == "leader"
    assert roles[fronted.followed] == "follower"
    assert fronted.remote not in roles
    assert await r.flushall()
    assert await r.dbsize() == 0
    assert all(fronted.stores.value(k) is None for k in keys)


async def test_pipelined_forwarded_writes_keep_their_order_in_every_group(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    keys = [fronted.keys_of(gid, 1, "p")[0] for gid in (fronted.remote, fronted.followed)]
    async with r.pipeline(transaction=False) as pipe:
        for i in range(30):
            for key in keys:
                pipe.set(key, b"0") if i == 0 else pipe.incr(key)
                pipe.setnx(f"{key}:nx", str(i).encode())
        replies = await pipe.execute()
    counters = replies[0::2]
    assert counters[:2] == [True, True]
    assert counters[2:] == [n for n in range(1, 30) for _ in keys]
    assert [await r.get(k) for k in keys] == [b"29", b"29"]
    assert [await r.get(f"{k}:nx") for k in keys] == [b"0", b"0"]


async def test_cache_commands_route_by_key_and_msetnx_stays_in_one_group(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    c: Any = r  # redis-py's command helpers are partly untyped
    led, followed, remote = (
        fronted.keys_of(gid, 2, "c") for gid in (fronted.led, fronted.followed, fronted.remote)
    )
    at = int(time.time()) + 900
    for keys in (led, followed, remote):  # a group led here, followed here, held elsewhere
        a, b = keys
        assert await c.execute_command("SETEX", a, 100, "v") is True
        assert await c.execute_command("PSETEX", b, 100_000, "w") is True
        assert 99 <= await c.ttl(a) <= 100
        assert await c.get(b) == b"w"
        assert await c.getex(a, exat=at) == b"v"
        assert await c.expiretime(a) == at
        assert await c.pexpiretime(a) == at * 1000
        assert await c.getex(a, persist=True) == b"v"
        assert await c.expiretime(a) == -1
        assert await c.expiretime(f"{a}x") == -2
        assert await c.delete(a, b) == 2
        assert await c.msetnx({a: "1", b: "2"}) is True  # one group's keys: atomic there
        assert await c.msetnx({b: "3"}) is False
        assert await c.mget(a, b) == [b"1", b"2"]
    # TOUCH counts across groups, as EXISTS does; MSETNX across groups is CROSSSLOT, as MSET.
    assert await c.touch(*led, *followed, *remote, "c-missing") == 6
    with pytest.raises(
        ClusterCrossSlotError, match=r"^Keys in request don't hash to the same slot$"
    ):
        await c.msetnx({f"{led[0]}n": "1", f"{remote[0]}n": "2"})
    assert await c.exists(f"{led[0]}n", f"{remote[0]}n") == 0
    with pytest.raises(ResponseError, match=r"^invalid expire time in 'getex' command$"):
        await c.getex(remote[0], ex=0)
    # Every group has 3 voters: a committed write is on one follower at least.
    assert await c.wait(1, 0) == 1
    assert await c.wait(2, 50) == 1
    seconds, _ = await c.time()
    assert abs(seconds - time.time()) < 5


async def test_rename_and_copy_stay_in_one_group_and_randomkey_draws_from_all(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    c: Any = r  # redis-py's command helpers are partly untyped
    led, followed, remote = (
        fronted.keys_of(gid, 3, "rn") for gid in (fronted.led, fronted.followed, fronted.remote)
    )
    for a, b, d in (led, followed, remote):  # a group led here, followed here, held elsewhere
        await c.set(a, "1.5", ex=100)
        assert await c.incrbyfloat(a, 1) == 2.5
        assert await c.append(a, "0") == 4
        assert await c.rename(a, b) is True
        assert await c.copy(b, d) is True
        assert await c.mget(a, b, d) == [None, b"2.50", b"2.50"]
        assert 99 <= await c.ttl(d) <= 100
    with pytest.raises(ClusterCrossSlotError):
        await c.rename(led[1], remote[0])
    with pytest.raises(ClusterCrossSlotError):
        await c.copy(led[1], followed[0])
    assert await c.exists(remote[0]) == 0
    drawn = {_text(await c.randomkey()) for _ in range(60)}
    assert drawn <= {*led[1:], *followed[1:], *remote[1:]}
    assert len(drawn) > 2


async def test_a_hash_key_is_served_by_its_group(fronted: Fronted, r: aioredis.Redis) -> None:
    c: Any = r  # redis-py's command helpers are partly untyped
    for gid in (fronted.led, fronted.followed, fronted.remote):
        key, other = fronted.keys_of(gid, 2, "hk")
        assert await c.hset(key, mapping={"a": "1", "b": "2"}) == 2
        assert await c.hincrby(key, "a", 41) == 42
        assert await c.expire(key, 100) is True
        assert await c.hgetall(key) == {b"a": b"42", b"b": b"2"}
        assert 99 <= await c.ttl(key) <= 100
        assert await c.type(key) == b"hash"
        assert await c.rename(key, other) is True
        assert await c.hget(other, "a") == b"42"
        stores = fronted.stores.stores
        holders = [s for s in stores.values() if gid in s.replicas]
        assert holders
        for store in holders:  # the group's replicas hold it, as a hash
            machine = store.replicas[gid].service.machine

            async def holds(m: Any = machine, k: str = other) -> bool:
                return m.get(k, time.time()) is not None

            await wait_for(holds)
            item = machine.get(other, time.time())
            assert item is not None
            assert item.kind == "hash"
        for store in stores.values():  # and no other group does
            for held, replica in store.replicas.items():
                if held != gid:
                    assert replica.service.machine.get(other, time.time()) is None
        with pytest.raises(ResponseError, match=r"^WRONGTYPE"):
            await c.get(other)


async def test_a_remote_groups_guess_follows_the_hint_when_its_leader_moves(
    fronted: Fronted, r: aioredis.Redis
) -> None:
    stores = fronted.stores
    gid = fronted.remote
    key = fronted.keys_of(gid, 1, "h")[0]
    await r.set(key, b"1")
    before = stores.leader(gid)
    assert stores.stores["s1"].remote[gid].leader_id == before  # learnt from the hint
    await stores.lead(gid, None, away_from=before)
    stores.calls.clear()
    assert await r.incr(key) == 2  # the old leader said where the new one is
    after = stores.leader(gid)
    assert stores.stores["s1"].remote[gid].leader_id == after != before
    assert stores.calls[after, gid] == 1


async def test_pubsub_runs_through_the_first_group_and_needs_a_replica_of_it(
    fronted: Fronted,
) -> None:
    """Any store publishes (through group g0's leader); a store holding a replica of
    g0 delivers, one holding none refuses SUBSCRIBE naming the stores that hold it."""
    stores = fronted.stores
    holders = list(stores.placement["g0"])
    other = next(s for s in STORES if s not in holders)
    fronts = {}
    try:
        for store_id in (holders[0], other):
            fronts[store_id] = RespServer(
                None,
                None,
                store=stores.stores[store_id],
                clock=time.time,
                group_backend=stores.backend,
                peer_urls=stores.urls,
                leader_wait_s=5.0,
            )
            await fronts[store_id].start()
        listener = aioredis.Redis(port=fronts[holders[0]].port, socket_timeout=10)
        pubsub = listener.pubsub()
        await pubsub.subscribe("news")
        assert (await pubsub.get_message(timeout=10) or {}).get("type") == "subscribe"
        publisher = aioredis.Redis(port=fronts[other].port, socket_timeout=10)
        assert await publisher.publish("news", "hello") == 0  # no subscriber on that store
        message = None
        while message is None:
            message = await pubsub.get_message(timeout=10)
        assert (message["channel"], message["data"]) == (b"news", b"hello")
        with pytest.raises(ResponseError, match=f"group g0.*{', '.join(holders)}"):
            await publisher.execute_command("SUBSCRIBE", "news")  # type: ignore[no-untyped-call]
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await publisher.aclose()
    finally:
        for front in fronts.values():
            await front.stop()
