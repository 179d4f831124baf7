"""The clients on a sharded cluster (docs/clients.md, "Sharded clusters"): real stores of four
groups in-process, each on its own port with its Raft traffic (``sharded_stores``).

Once it has read the map, a client sends each key's request to the key's group leader: no
store forwards anything and each store answers exactly the keys of the groups it leads;
``mget`` is one request per group, reassembled in order; a batch across groups is refused
before it is sent, with the stores' own CROSSSLOT answer; a leadership transfer and a stopped
store cost the caller no error, and a write retried across them is applied once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from raftcache.client import AsyncClient, BadRequestError
from raftcache.slots import key_group
from raftcache.store import group_id

from .sharded_stores import ShardedStores, keys_of, start_stores

GROUPS = 4
KEY_ROUTE = "/v1/keys/{key}"


@pytest.fixture
async def stores() -> AsyncIterator[ShardedStores]:
    running = await start_stores(3, GROUPS)
    try:
        yield running
    finally:
        await running.stop()


def spread_keys(per_group: int) -> list[str]:
    """``per_group`` keys of every group, interleaved."""
    columns = [keys_of(g, GROUPS, per_group, prefix=f"user:{g}:") for g in range(GROUPS)]
    return [key for row in zip(*columns, strict=True) for key in row]


async def test_requests_go_straight_to_each_groups_leader(stores: ShardedStores) -> None:
    leaders = await stores.settled()
    async with AsyncClient(stores.endpoints, timeout=5.0) as client:
        assert await client.get("warm-up") is None  # discovery: the status, then the map
        assert client.shards is not None
        assert client.shards["leaders"] == leaders
        assert client.routing.refreshes == 1
        forwarded = await stores.forwarded()
        before = {sid: await stores.served(sid, KEY_ROUTE) for sid in stores.running}
        keys = spread_keys(6)
        for i, key in enumerate(keys):
            await client.set(key, f"v{i}".encode())
        for i, key in enumerate(keys):
            assert await client.get(key) == f"v{i}".encode()
        assert await client.incr("counter:{a}", 2) == 2
        assert await client.expire(keys[0], 60) is True
        assert await client.delete(keys[1]) is True
        # No store forwarded, nor turned one away: each answered its own groups' keys.
        assert await stores.forwarded() == forwarded
        assert client.routing.redirected == client.routing.fallbacks == 0
        expected = {sid: 0 for sid in stores.running}
        for key in keys:
            expected[leaders[group_id(key_group(key, GROUPS))]] += 2  # set, get
        expected[leaders[group_id(key_group(keys[1], GROUPS))]] += 1  # delete
        for sid in stores.running:
            after = await stores.served(sid, KEY_ROUTE)
            assert after.get("200", 0) - before[sid].get("200", 0) == expected[sid], sid
            assert after.get("503", 0) == before[sid].get("503", 0)
        assert client.routing.refreshes == 1  # nothing told it the map moved


async def test_mget_is_one_request_per_group_in_the_order_asked(stores: ShardedStores) -> None:
    leaders = await stores.settled()
    async with AsyncClient(stores.endpoints) as client:
        keys = spread_keys(5)
        for key in keys[::2]:
            await client.set(key, key)
        asked = [*reversed(keys), "missing:1", keys[3], keys[2]]  # repeats and misses too
        before = {sid: await stores.served(sid, "/v1/mget") for sid in stores.running}
        values = await client.mget(asked)
        present = set(keys[::2])
        assert values == [k.encode() if k in present else None for k in asked]
        groups_asked = {group_id(key_group(k, GROUPS)) for k in asked}
        expected = {sid: 0 for sid in stores.running}
        for gid in groups_asked:
            expected[leaders[gid]] += 1
        for sid in stores.running:
            after = await stores.served(sid, "/v1/mget")
            assert after.get("200", 0) - before[sid].get("200", 0) == expected[sid], sid
        assert await client.mget([]) == []
        assert await client.mget(["missing:2"]) == [None]
        assert client.routing.redirected == 0


async def test_a_batch_across_groups_is_refused_before_it_is_sent(stores: ShardedStores) -> None:
    await stores.settled()
    async with AsyncClient(stores.endpoints) as client:
        a, b = keys_of(0, GROUPS, 1)[0], keys_of(3, GROUPS, 1)[0]
        ops = [("set", a, b"1"), ("set", b, b"2")]
        await client.get(a)  # discovery
        before = [await stores.served(sid, "/v1/batch") for sid in stores.running]
        with pytest.raises(BadRequestError) as refused:
            await client.batch(ops)
        assert [await stores.served(sid, "/v1/batch") for sid in stores.running] == before
        # The stores' own answer to that batch, word for word.
        async with stores.session.post(
            stores.endpoints[0] + "/v1/batch",
            json={"ops": [{"op": "set", "key": k, "value": "MQ=="} for k in (a, b)]},
        ) as resp:
            assert resp.status == 400
            assert refused.value.body == await resp.json()
        assert str(refused.value) == f"POST /v1/batch: {refused.value.body['error']}"
        # One hash tag, one group: atomic, and sent to that group's leader.
        tagged = [("set", "{cart:7}a", b"1"), ("incr", "{cart:7}n", 3), ("get", "{cart:7}a")]
        assert (await client.batch(tagged))[1:] == [3, b"1"]
        assert client.routing.redirected == 0


async def test_the_client_follows_a_leadership_transfer(stores: ShardedStores) -> None:
    leaders = await stores.settled()
    async with AsyncClient(stores.endpoints, timeout=10.0) as client:
        gid = "g1"
        keys = keys_of(1, GROUPS, 8, prefix="moving:")
        for key in keys:
            await client.set(key, b"before")
        old = leaders[gid]
        new = next(sid for sid in stores.running if sid != old)
        counter = keys_of(1, GROUPS, 1, prefix="count:")[0]
        counted = 0
        stop = asyncio.Event()

        async def writer() -> None:
            # incr through the transfer: each one applied exactly once, none failing.
            nonlocal counted
            while not stop.is_set():
                await client.incr(counter)
                counted += 1

        task = asyncio.create_task(writer())
        await asyncio.sleep(0.1)
        assert (await client.transfer_leadership(new, group=gid))["leader"] in (new, None)
        async with asyncio.timeout(10):
            while stores.leader_of(gid) != new:
                await asyncio.sleep(0.02)
        for key in keys:  # the old leader turns the client away; it follows
            await client.set(key, b"after")
        stop.set()
        await task
        assert counted > 0
        assert await client.get(counter) == str(counted).encode()
        assert client.routing.redirected >= 1
        # The map now names the new leader: requests go there again, without a detour.
        async with asyncio.timeout(5):
            while (client.shards or {})["leaders"][gid] != new:
                await client.get(keys[0])
                await asyncio.sleep(0.05)
        redirected, forwarded = client.routing.redirected, await stores.forwarded()
        for key in keys:
            assert await client.get(key) == b"after"
        assert client.routing.redirected == redirected
        assert await stores.forwarded() == forwarded


async def test_a_stopped_store_costs_the_caller_no_error(stores: ShardedStores) -> None:
    leaders = await stores.settled()
    async with AsyncClient(stores.endpoints, timeout=10.0) as client:
        keys = spread_keys(4)
        for key in keys:
            await client.set(key, b"1")
        victim = leaders["g0"]
        await stores.stop_store(victim)
        # Every key still reads and writes at once: the two stores left elect new leaders.
        for key in keys:
            assert await client.incr(key + ":n") == 1
            assert await client.get(key) == b"1"
        assert client.routing.unreachable >= 1
        after = await stores.settled()
        assert victim not in after.values()
        async with asyncio.timeout(5):  # and the map catches up with the new leaders
            while client.shards is None or client.shards["leaders"] != after:
                await client.get(keys[0])
                await asyncio.sleep(0.05)
        assert await client.mget(keys) == [b"1"] * len(keys)
        assert sorted([k async for k in client.iter_keys("user:")]) == sorted(
            [*keys, *(k + ":n" for k in keys)]
        )
