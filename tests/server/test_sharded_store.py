"""The HTTP front of a store hosting many Raft groups (``create_store_app``), over real sockets.

Three (or four) in-process stores, each one ``Store`` of G = 4 groups over one ``HttpNetwork``
mounted on its application — one port per store for the client API and every group's Raft
traffic, as ``raftcache serve --groups`` runs it. With three stores and RF 3 every store hosts
every group, and a key whose group this store follows is forwarded to the group leader's
store; with four stores some groups are not hosted at all on a store, which forwards through
its ``RemoteGroup``. The key routes run on both fronts (aiohttp alone, and the lean front:
``three``); routes the lean front does not serve itself but hands to aiohttp (batch, mget,
listing, status, admin, watch) run once, on the lean front (``three_lean``), hand-off included.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.watch import WatchHistory
from raftcache.server.app import create_app
from raftcache.slots import key_group, key_slot
from raftcache.store import group_id
from tests.store.stores_http import (
    RunningStores,
    StoreServer,
    bootstrap_placement,
    keys_of,
    start_stores,
    store_ids,
)

from .fakes import FakeNode, FakeService

GROUPS = 4


@dataclass
class Stores(RunningStores):
    lean: bool = False
    served: list[int] = field(default_factory=list)

    def lean_served(self) -> int:
        return sum(r.lean_served for r in self.running.values())


async def _start(count: int, lean: bool) -> Stores:
    ids = store_ids(count)
    placement = bootstrap_placement(ids, GROUPS)
    _, running = await start_stores(
        ids,
        groups=GROUPS,
        placement=placement,
        lean=lean,
        machine=lambda gid: CacheStateMachine(watch=WatchHistory()),
    )
    stores = Stores(GROUPS, running, aiohttp.ClientSession(), placement, lean)
    await stores.settled()
    return stores


async def _stop_one(r: StoreServer) -> None:
    await r.stop(drain_s=5.0)  # as a stopping store does: ends the watch streams


async def _stop(stores: Stores) -> None:
    await stores.stop(drain_s=5.0)


@pytest.fixture(params=["aiohttp", "lean"])
async def three(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    stores = await _start(3, lean=request.param == "lean")
    yield stores
    await _stop(stores)


@pytest.fixture
async def three_lean() -> AsyncIterator[Stores]:
    stores = await _start(3, lean=True)
    yield stores
    await _stop(stores)


@pytest.fixture
async def four() -> AsyncIterator[Stores]:
    stores = await _start(4, lean=True)
    yield stores
    await _stop(stores)


def keys_in(group: int, count: int, prefix: str = "k") -> list[str]:
    """``count`` keys of ``group`` (among GROUPS)."""
    return keys_of(group, GROUPS, count, prefix)


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await resp.json(content_type=None)
    assert isinstance(body, dict), body
    return body


async def test_any_key_through_any_store(three: Stores) -> None:
    s = three.session
    ids = list(three.running)
    keys = [f"user:{i}" for i in range(24)]
    assert {key_group(k, GROUPS) for k in keys} == set(range(GROUPS))
    for i, key in enumerate(keys):  # each written through a different store
        async with s.put(f"{three.url(ids[i % 3])}/v1/keys/{key}", data=f"v{i}") as resp:
            assert resp.status == 200, await resp.text()
    for sid in ids:  # and read back, linearizably, through every store
        for i, key in enumerate(keys):
            async with s.get(f"{three.url(sid)}/v1/keys/{key}") as resp:
                assert resp.status == 200, (sid, key, await resp.text())
                assert await resp.read() == f"v{i}".encode()
    # incr, ttl and delete through a store that follows the key's group
    key = "counter"
    gid = group_id(key_group(key, GROUPS))
    leader = three.leader_of(gid)
    follower = next(sid for sid in ids if sid != leader)
    base = f"{three.url(follower)}/v1/keys/{key}"
    before = three.running[follower].front.forwarders[gid].forwarded_total
    async with s.post(f"{base}/incr", json={"by": 5}) as resp:
        assert resp.status == 200
        assert (await _json(resp))["value"] == 5
    async with s.post(f"{base}/ttl", json={"ttl": 60}) as resp:
        assert resp.status == 200
        assert (await _json(resp))["changed"] is True
    async with s.delete(base) as resp:
        assert (await _json(resp)) == {"deleted": True}
    async with s.get(base) as resp:
        assert resp.status == 404
    assert three.running[follower].front.forwarders[gid].forwarded_total >= before + 4
    if three.lean:
        assert three.lean_served() >= len(keys) * 4  # the hot key routes took the lean path


async def test_follower_forwards_to_group_leader_and_serves_stale_reads(three: Stores) -> None:
    s = three.session
    key = "held-by-a-follower"
    gid = group_id(key_group(key, GROUPS))
    leader = three.leader_of(gid)
    assert leader is not None
    follower = next(sid for sid in three.running if sid != leader)
    forwarder = three.running[follower].front.forwarders[gid]
    before = forwarder.forwarded_total
    async with s.put(f"{three.url(follower)}/v1/keys/{key}", data=b"x") as resp:
        assert resp.status == 200, await resp.text()
    assert forwarder.forwarded_total == before + 1
    # The leader's store holds it; the follower's replica answers a stale read itself.
    replica = three.running[leader].store.replicas[gid]
    assert (await replica.service.get(key, "stale")) is not None
    async with asyncio.timeout(5):
        while (await three.running[follower].store.replicas[gid].service.get(key, "stale")) is None:
            await asyncio.sleep(0.02)
    async with s.get(f"{three.url(follower)}/v1/keys/{key}?consistency=stale") as resp:
        assert resp.status == 200
        assert await resp.read() == b"x"
    assert forwarder.forwarded_total == before + 1  # not forwarded
    # A request already forwarded once is never forwarded again: 503 with the leader's hint.
    headers = {"X-Raftcache-Forwarded": "1"}
    async with s.get(f"{three.url(follower)}/v1/keys/{key}", headers=headers) as resp:
        assert resp.status == 503
        assert resp.headers["X-Raftcache-Not-Leader"] == leader
        assert "error" in await _json(resp)


async def test_batch_within_a_hash_tag_and_across_groups(three_lean: Stores) -> None:
    three = three_lean
    s = three.session
    url = three.url("s2")
    ops = [
        {"op": "set", "key": "user:{42}:name", "value": base64.b64encode(b"ann").decode()},
        {"op": "incr", "key": "user:{42}:visits", "by": 2},
        {"op": "get", "key": "user:{42}:name"},
    ]
    async with s.post(f"{url}/v1/batch", json={"ops": ops}) as resp:
        assert resp.status == 200, await resp.text()
        results = (await _json(resp))["results"]
    assert results[1] == {"value": 2}
    assert results[2] == {"value": "YW5u"}
    a, b = "a", "b"
    assert key_group(a, GROUPS) != key_group(b, GROUPS)
    cross = [{"op": "set", "key": a, "value": "eA=="}, {"op": "delete", "key": b}]
    async with s.post(f"{url}/v1/batch", json={"ops": cross}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        error = str((await _json(resp))["error"])
    ga, gb = group_id(key_group(a, GROUPS)), group_id(key_group(b, GROUPS))
    assert error.startswith("CROSSSLOT: keys span groups ")
    assert f'{ga} (slot {key_slot(a)}: "a")' in error
    assert f'{gb} (slot {key_slot(b)}: "b")' in error
    assert "hash tag" in error
    async with s.get(f"{url}/v1/keys/a") as resp:
        assert resp.status == 404  # nothing of the refused batch was applied


async def test_mget_across_groups_in_request_order(three_lean: Stores) -> None:
    three = three_lean
    s = three.session
    keys = [k for g in range(GROUPS) for k in keys_in(g, 3, prefix="m")]
    for key in keys:
        async with s.put(f"{three.url('s1')}/v1/keys/{key}", data=f"={key}") as resp:
            assert resp.status == 200
    asked = [*reversed(keys), "missing-1", keys[0], "missing-2"]
    for sid in three.running:
        async with s.post(f"{three.url(sid)}/v1/mget", json={"keys": asked}) as resp:
            assert resp.status == 200, await resp.text()
            values = (await _json(resp))["values"]
        assert isinstance(values, list)
        got = [None if v is None else base64.b64decode(v).decode() for v in values]
        assert got == [f"={k}" if k in keys else None for k in asked]
    async with s.post(f"{three.url('s3')}/v1/mget?consistency=bogus", json={"keys": keys}) as resp:
        assert resp.status == 400


async def test_listing_is_merged_and_paginated_flush_sums(three_lean: Stores) -> None:
    three = three_lean
    s = three.session
    keys = sorted(f"p:{i:02d}" for i in range(30))
    assert len({key_group(k, GROUPS) for k in keys}) == GROUPS
    for key in keys:
        async with s.put(f"{three.url('s3')}/v1/keys/{key}", data=b"1") as resp:
            assert resp.status == 200
    async with s.put(f"{three.url('s3')}/v1/keys/other", data=b"1") as resp:
        assert resp.status == 200
    for sid in three.running:
        listed: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            query = {"prefix": "p:", "limit": "7"} | ({"after": after} if after else {})
            async with s.get(f"{three.url(sid)}/v1/keys", params=query) as resp:
                assert resp.status == 200, await resp.text()
                page = await _json(resp)
            page_keys = page["keys"]
            assert isinstance(page_keys, list)
            assert len(page_keys) <= 7
            listed += page_keys
            pages += 1
            if page["next"] is None:
                break
            assert page["next"] == page_keys[-1]
            after = str(page["next"])
        assert listed == keys
        assert pages == 5
    # Keys of one group (a hash tag): its page is cut while the merged page is not overfull.
    tagged = sorted(f"t:{{x}}:{i}" for i in range(10))
    for key in tagged:
        async with s.put(f"{three.url('s1')}/v1/keys/{key}", data=b"1") as resp:
            assert resp.status == 200
    async with s.get(f"{three.url('s2')}/v1/keys", params={"prefix": "t:", "limit": "7"}) as resp:
        first = await _json(resp)
    assert first == {"keys": tagged[:7], "next": tagged[6]}
    params = {"prefix": "t:", "limit": "7", "after": tagged[6]}
    async with s.get(f"{three.url('s2')}/v1/keys", params=params) as resp:
        assert await _json(resp) == {"keys": tagged[7:], "next": None}
    async with s.delete(f"{three.url('s1')}/v1/keys", params={"prefix": "t:"}) as resp:
        assert await _json(resp) == {"deleted": 10}
    async with s.delete(f"{three.url('s1')}/v1/keys", params={"prefix": "p:"}) as resp:
        assert resp.status == 200
        assert await _json(resp) == {"deleted": 30}
    async with s.get(f"{three.url('s2')}/v1/keys") as resp:
        assert (await _json(resp))["keys"] == ["other"]
    async with s.get(f"{three.url('s2')}/v1/keys?group=g7") as resp:
        assert resp.status == 400
        assert "group" in str((await _json(resp))["error"])


async def test_status_stats_health_metrics(three_lean: Stores) -> None:
    three = three_lean
    s = three.session
    url = three.url("s1")
    async with s.get(f"{url}/v1/status") as resp:
        status = await _json(resp)
    assert status["id"] == "s1"
    for field_name in ("role", "term", "leader", "commit_index", "last_applied", "members"):
        assert field_name in status
    assert status["sharding"] == {"groups": GROUPS, "store": "s1"}
    groups = status["groups"]
    assert isinstance(groups, list)
    assert [g["group"] for g in groups] == ["g0", "g1", "g2", "g3"]
    assert groups[0]["slots"] == [0, 4095]
    assert groups[3]["slots"] == [12288, 16383]
    for g in groups:
        assert g["hosted"] is True
        assert g["leader"] == three.leader_of(g["group"])
        assert g["members"] == ["s1", "s2", "s3"]
        assert g["role"] in ("leader", "follower")
    async with s.get(f"{url}/v1/health") as resp:
        assert resp.status == 200
        health = await _json(resp)
    assert set(health["groups"]) == {"g0", "g1", "g2", "g3"}
    for key in ("a", "b", "c"):
        async with s.put(f"{url}/v1/keys/{key}", data=b"12345") as resp:
            assert resp.status == 200
    async with asyncio.timeout(5):  # the followers apply the writes too
        while True:
            async with s.get(f"{url}/v1/stats") as resp:
                stats = await _json(resp)
            cache = stats["cache"]
            assert isinstance(cache, dict)
            if cache["keys"] == 3:
                break
            await asyncio.sleep(0.02)
    per_group = stats["groups"]
    assert isinstance(per_group, dict)
    assert set(per_group) == {"g0", "g1", "g2", "g3"}
    assert sum(g["cache"]["keys"] for g in per_group.values()) == 3
    async with s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    assert 'raftcache_raft_term{group="g0"}' in text
    assert 'raftcache_cache_keys{group="g3"}' in text
    assert 'raftcache_http_forwarded_total{group="g1"}' in text
    assert 'raftcache_watch_streams{group="g2"}' in text
    # Read back as Prometheus does: per-group Raft series keep ``group`` beside ``peer``/``rpc``.
    families = {f.name: f for f in text_string_to_metric_families(text)}
    lag = families["raftcache_raft_follower_lag"].samples
    assert all(set(sample.labels) == {"group", "peer"} for sample in lag)
    sent = families["raftcache_raft_rpcs_received"]
    assert sent.type == "counter"
    assert {tuple(sorted(x.labels)) for x in sent.samples} == {("group", "rpc")}
    fsync = families["raftcache_raft_fsync_duration_seconds"].samples
    assert {x.labels["group"] for x in fsync} == {"g0", "g1", "g2", "g3"}
    assert all(f.documentation for f in families.values())


async def test_admin_routes_name_their_group(three_lean: Stores) -> None:
    three = three_lean
    s = three.session
    url = three.url("s2")
    for method, path in (
        ("POST", "/v1/snapshot"),
        ("POST", "/v1/leader/transfer"),
        ("POST", "/v1/members"),
        ("DELETE", "/v1/members/s9"),
        ("GET", "/v1/alarms"),
        ("GET", "/v1/backup"),
    ):
        async with s.request(method, f"{url}{path}") as resp:
            assert resp.status == 400, (path, await resp.text())
            error = str((await _json(resp))["error"])
            assert "group" in error, error
            assert "g0, g1, g2, g3" in error, error
        async with s.request(method, f"{url}{path}?group=g4") as resp:
            assert resp.status == 400, path
            assert "names no group" in str((await _json(resp))["error"])
    # A watch without ?group= spans every group (tests/server/test_store_watch.py).
    async with s.get(f"{url}/v1/watch?group=g4") as resp:
        assert resp.status == 400
        assert "names no group" in str((await _json(resp))["error"])
    async with s.post(f"{url}/v1/snapshot?group=g1") as resp:
        assert resp.status == 200, await resp.text()
    gid = "g2"
    leader = three.leader_of(gid)
    follower = next(sid for sid in three.running if sid != leader)
    target = next(sid for sid in three.running if sid not in (leader, follower))
    # A follower of g2 forwards the transfer to g2's leader; no other group moves.
    others = {g: three.leader_of(g) for g in ("g0", "g1", "g3")}
    async with s.post(
        f"{three.url(follower)}/v1/leader/transfer?group={gid}", json={"to": target}
    ) as resp:
        assert resp.status == 200, await resp.text()
        assert (await _json(resp))["leader"] == target
    assert three.leader_of(gid) == target
    assert {g: three.leader_of(g) for g in others} == others
    async with s.get(f"{url}/v1/alarms?group=g3") as resp:
        assert resp.status == 200
        assert await _json(resp) == {"alarms": []}
    # A backup of one group, through a follower of it, restored into that group only.
    key = keys_in(1, 1, prefix="b")[0]
    async with s.put(f"{url}/v1/keys/{key}", data=b"kept") as resp:
        assert resp.status == 200
    g1_follower = next(sid for sid in three.running if sid != three.leader_of("g1"))
    async with s.get(f"{three.url(g1_follower)}/v1/backup?group=g1") as resp:
        assert resp.status == 200, await resp.text()
        backup = await resp.read()
    async with s.put(f"{url}/v1/keys/{key}", data=b"changed") as resp:
        assert resp.status == 200
    restore = f"{three.url(g1_follower)}/v1/restore?group=g1"
    async with s.post(restore, data=backup) as resp:
        assert resp.status == 200, await resp.text()
        assert (await _json(resp))["restored"] is True
    async with s.get(f"{url}/v1/keys/{key}") as resp:
        assert await resp.read() == b"kept"
    async with s.post(f"{url}/v1/restore?group=g2", data=backup) as resp:
        assert resp.status == 400  # another group's backup: refused, naming the problem
        assert "a key of group g1" in str((await _json(resp))["error"])


async def test_groups_held_elsewhere_are_forwarded(four: Stores) -> None:
    s = four.session
    # A store that holds no replica of some group, and a key of that group.
    sid, gid = next(
        (sid, gid)
        for sid, r in four.running.items()
        for gid in r.store.group_ids()
        if gid in r.store.remote
    )
    g = int(gid[1:])
    key = keys_in(g, 1, prefix="far")[0]
    url = four.url(sid)
    remote = four.running[sid].store.remote[gid]
    leader = four.leader_of(gid)
    assert leader is not None
    assert leader in remote.members
    # Make its guess a follower: that follower refuses (forwarded once), and the hint moves
    # the guess to the leader.
    remote._guess = next(i for i, m in enumerate(remote.members) if m != leader)
    async with s.put(f"{url}/v1/keys/{key}", data=b"far") as resp:
        assert resp.status == 200, await resp.text()
    assert remote.leader_id == leader
    async with s.get(f"{url}/v1/keys/{key}") as resp:
        assert resp.status == 200
        assert await resp.read() == b"far"
    # A stale read too: this store has no replica to read from.
    async with s.get(f"{url}/v1/keys/{key}?consistency=stale") as resp:
        assert resp.status == 200
    near = [k for h in range(GROUPS) for k in keys_in(h, 2, prefix="near")]
    for k in near:
        async with s.put(f"{url}/v1/keys/{k}", data=k) as resp:
            assert resp.status == 200, await resp.text()
    async with s.post(f"{url}/v1/mget", json={"keys": [key, *near]}) as resp:
        values = (await _json(resp))["values"]
    assert isinstance(values, list)
    assert [base64.b64decode(v) for v in values] == [b"far", *(k.encode() for k in near)]
    async with s.get(f"{url}/v1/keys", params={"prefix": "near"}) as resp:
        assert (await _json(resp))["keys"] == sorted(near)
    async with s.get(f"{url}/v1/status") as resp:
        status = await _json(resp)
    entry = next(e for e in status["groups"] if e["group"] == gid)
    assert entry["hosted"] is False
    assert entry["leader"] is None
    assert entry["members"] == sorted(four.placement[gid])
    # Routes of one group: forwarded when they need its leader, refused when they need a
    # replica here.
    async with s.post(f"{url}/v1/snapshot?group={gid}") as resp:
        assert resp.status == 404
        assert sid in str((await _json(resp))["error"])
    async with s.post(f"{url}/v1/leader/transfer?group={gid}", json={}) as resp:
        assert resp.status == 200, await resp.text()
    async with s.get(f"{url}/v1/alarms?group={gid}") as resp:
        assert resp.status == 200
    # The guess is a store that is down: unreachable, so the next replica is tried.
    leader = four.leader_of(gid)
    down = next(m for m in remote.members if m != leader)
    await _stop_one(four.running.pop(down))
    remote._guess = remote.members.index(down)
    async with s.put(f"{url}/v1/keys/{key}", data=b"again") as resp:
        assert resp.status == 200, await resp.text()
    assert remote.leader_id != down


async def test_a_watch_follows_one_group(three_lean: Stores) -> None:
    three = three_lean
    s = three.session
    key = "w:{7}:a"
    gid = group_id(key_group(key, GROUPS))
    url = three.url("s3")
    query = {"group": gid, "prefix": "w:", "from_version": "0"}
    async with s.get(f"{url}/v1/watch", params=query) as stream:
        assert stream.status == 200
        assert stream.content_type == "text/event-stream"
        async with s.put(f"{three.url('s1')}/v1/keys/{key}", data=b"seen") as resp:
            assert resp.status == 200
        async with asyncio.timeout(10):
            while True:
                line = await stream.content.readline()
                if line.startswith(b"data: ") and b'"changes"' in line:
                    break
    assert f'"key":"{key}"'.encode() in line
    assert base64.b64encode(b"seen") in line


async def test_a_node_serves_keys_with_hash_tags() -> None:
    """A single-group node too: aiohttp's default {key} pattern refused braces (405)."""
    node = FakeNode()
    app = create_app(node, FakeService(node))
    async with TestClient(TestServer(app)) as client:
        resp = await client.put("/v1/keys/user:{42}:cart", data=b"x")
        assert resp.status == 200
        resp = await client.post("/v1/keys/user:{42}:n/incr", json={"by": 2})
        assert resp.status == 200
        resp = await client.get("/v1/keys/user:{42}:cart")
        assert await resp.read() == b"x"


async def test_bad_input_is_a_4xx_naming_it(four: Stores) -> None:
    s = four.session
    url = four.url("s1")
    cases: list[tuple[str, str, Any]] = [
        ("GET", "/v1/keys?group=g1&group=g2", None),
        ("GET", "/v1/keys?group=", None),
        ("GET", "/v1/keys?limit=abc", None),
        ("GET", "/v1/keys?consistency=never", None),
        ("DELETE", "/v1/keys", None),
        ("DELETE", "/v1/keys?prefix=x&group=meta", None),
        ("POST", "/v1/mget", {"keys": "a"}),
        ("POST", "/v1/mget", {"keys": ["a", ""]}),
        ("POST", "/v1/mget?touch=maybe", {"keys": ["a"]}),
        ("POST", "/v1/batch", {"ops": [{"op": "set", "key": "a"}]}),
        ("POST", "/v1/batch", {"ops": [{"op": "get", "key": "a"}, {"op": "get", "key": "b"}]}),
        ("POST", "/v1/snapshot?group=G1", None),
        ("POST", "/v1/leader/transfer?group=g1", {"to": 7}),
        ("GET", "/v1/watch?group=g0&from_version=soon", None),
        ("POST", "/v1/restore?group=g0", b"not a backup"),
        ("GET", "/raft/digest?index=1", None),
        ("PUT", "/v1/keys/a/b", b"x"),
    ]
    for method, path, body in cases:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with s.request(method, f"{url}{path}", **kwargs) as resp:
            assert 400 <= resp.status < 500, (method, path, resp.status, await resp.text())
            assert str((await _json(resp))["error"]), (method, path)
