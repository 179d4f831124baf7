"""End to end on three real ``raftcache serve`` processes: a write through a follower is read
back on every node at every consistency level, TTL expiry looks the same on every node and its
removal is replicated, and concurrent INCR and CAS clients never lose an update.

One cluster serves the whole module (the tests use disjoint keys); what each test asserts about
replicated counters is relative, so the order of the tests does not matter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftcache import AsyncClient
from tests.e2e.nodes import (
    ProcessCluster,
    eventually_equal,
    get_key,
    key_url,
    mget,
    node_stats,
    node_status,
    wait_applied,
    wait_for,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(Path(tmp_path_factory.mktemp("e2e-ops"))) as running:
        running.start_all()

        async def elected() -> None:
            async with aiohttp.ClientSession() as http:
                await wait_for_leader(running, http)

        asyncio.run(elected())
        yield running


async def test_write_through_a_follower_is_read_on_every_node(cluster: ProcessCluster) -> None:
    key, value = "e2e/through a follower", b"\x00value\xff"
    async with aiohttp.ClientSession() as http:
        leader = await wait_for_leader(cluster, http)
        follower = next(n for n in cluster.live() if n is not leader)
        async with http.put(key_url(follower.url, key), data=value) as resp:
            assert resp.status == 200, await resp.text()
            version = (await resp.json())["version"]
        want: tuple[int, bytes, str | None] = (200, value, f'"{version}"')

        # Linearizable (the default) and lease reads on any node go through the leader.
        for node in cluster.live():
            for consistency in (None, "linearizable", "lease"):
                got = await get_key(http, node.url, key, consistency)
                assert got == want, (node.node_id, consistency)

        # A stale read is served by the node asked, from its own state: every node comes to
        # see the write, with the same version. (That it sees it as soon as /v1/status says the
        # index is applied is test_applied_index's claim.)
        for node in cluster.live():
            await wait_applied(cluster, http, node, version)
            await eventually_equal(
                partial(get_key, http, node.url, key, "stale"),
                want,
                f"{node.node_id}'s stale read of the write",
                cluster=cluster,
            )


async def test_ttl_expiry_is_the_same_on_every_node(cluster: ProcessCluster) -> None:
    keys = [f"ttl/{i}" for i in range(5)]
    ttl_s = 5.0
    async with aiohttp.ClientSession() as http, AsyncClient(cluster.endpoints, timeout=30) as c:
        await c.set("ttl/keeper", b"stays")  # no TTL: must survive the expiry
        versions = [await c.set(k, b"short-lived", ttl=ttl_s) for k in keys]
        # The leader stamped expires_at = (its clock at proposal) + ttl, before we got the ack.
        expired_after = time.time() + ttl_s

        async def stale_codes(url: str) -> list[int]:
            return [(await get_key(http, url, key, "stale"))[0] for key in keys]

        for node in cluster.live():
            await wait_applied(cluster, http, node, max(versions))
            await eventually_equal(
                partial(stale_codes, node.url),
                [200] * len(keys),
                f"the keys visible on {node.node_id} before expiry",
                timeout_s=max(0.1, expired_after - time.time() - 1.0),
                cluster=cluster,
            )

        await asyncio.sleep(max(0.0, expired_after - time.time()) + 0.2)
        # Hidden at once on every node, judged by each node's clock, before any removal.
        for node in cluster.live():
            for consistency in ("stale", None):
                for key in keys:
                    status, _, _ = await get_key(http, node.url, key, consistency)
                    assert status == 404, (node.node_id, key, consistency)
            async with http.get(node.url + "/v1/keys?prefix=ttl/&consistency=stale") as resp:
                assert (await resp.json())["keys"] == ["ttl/keeper"], node.node_id

        # Removal is replicated: the leader's expire entries reach every node, so the counters
        # (which only the log changes) end up equal everywhere, with the entries gone.
        async def settled() -> list[dict[str, Any]] | None:
            caches = [(await node_stats(http, n.url))["cache"] for n in cluster.live()]
            views = {(s["expirations"], s["keys"], s["bytes"]) for s in caches}
            return caches if len(views) == 1 and caches[0]["expirations"] >= len(keys) else None

        caches = await wait_for(settled, "expirations replicated to every node", cluster=cluster)
        assert {s["expirations"] for s in caches} == {caches[0]["expirations"]}
        assert await c.get("ttl/keeper") == b"stays"


async def _incr_many(client: AsyncClient, key: str, times: int, out: list[int]) -> None:
    for _ in range(times):
        out.append(await client.incr(key))


async def test_concurrent_incr_counts_every_increment(cluster: ProcessCluster) -> None:
    clients_n, incr_m = 4, 25
    returned: list[int] = []
    clients = [AsyncClient(cluster.endpoints, timeout=30) for _ in range(clients_n)]
    try:
        await asyncio.gather(*(_incr_many(c, "ctr/incr", incr_m, returned) for c in clients))
        total = clients_n * incr_m
        assert await clients[0].get("ctr/incr") == str(total).encode()
        # Every increment was applied exactly once: each saw a different value.
        assert sorted(returned) == list(range(1, total + 1))
    finally:
        for c in clients:
            await c.close()


async def _cas_loop(client: AsyncClient, key: str, successes: int, out: list[int]) -> int:
    """Increment the integer stored at ``key`` by CAS, ``successes`` times; returns attempts."""
    attempts = 0
    while successes:
        attempts += 1
        item = await client.get_with_version(key)
        assert item is not None
        value, version = item
        new = int(value) + 1
        if await client.cas(key, str(new).encode(), version) is not None:
            out.append(new)
            successes -= 1
    return attempts


async def test_concurrent_cas_loops_never_lose_an_update(cluster: ProcessCluster) -> None:
    clients_n, each = 4, 10
    won: list[int] = []
    clients = [AsyncClient(cluster.endpoints, timeout=30) for _ in range(clients_n)]
    try:
        await clients[0].set("ctr/cas", b"0")
        attempts = await asyncio.gather(*(_cas_loop(c, "ctr/cas", each, won) for c in clients))
        total = clients_n * each
        # Each successful CAS moved the counter from n to n+1 with nobody in between.
        assert sorted(won) == list(range(1, total + 1))
        assert await clients[1].get("ctr/cas") == str(total).encode()
        assert sum(attempts) >= total
    finally:
        for c in clients:
            await c.close()


async def test_every_node_holds_the_same_counters(cluster: ProcessCluster) -> None:
    """Replicas are identical: after the writes above, each node's stale view matches."""
    async with aiohttp.ClientSession() as http, AsyncClient(cluster.endpoints, timeout=30) as c:
        await c.incr("ctr/final")
        leader = await wait_for_leader(cluster, http)
        status = await node_status(http, leader.url)
        assert status is not None
        expected = await mget(http, leader.url, COUNTERS)
        assert None not in expected
        for node in cluster.live():
            await wait_applied(cluster, http, node, status["commit_index"])
            await eventually_equal(
                partial(mget, http, node.url, COUNTERS, "stale"),
                expected,
                f"{node.node_id}'s counters",
                cluster=cluster,
            )


COUNTERS = ["ctr/incr", "ctr/cas", "ctr/final"]
