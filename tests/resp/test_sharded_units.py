"""The parts of the sharded RESP fronts that need no cluster: what ``LeaderBackend`` makes of a
store's HTTP answers (the "not the leader" hint, the expiry header, one group's listing and
count) against a stand-in HTTP server on a real socket; how a ``RemoteRouter`` moves its guess;
and the shards a ``StoreTopology`` describes from its peers' reports — CLUSTER SLOTS, NODES,
INFO, ``MOVED`` and ``CLUSTERDOWN`` per group, and CLUSTER SLOTS waiting for the first poll."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import ResponseError

import raftcache.resp.topology as topology_module
from raftcache.cache.commands import DeleteOp, SetOp
from raftcache.network import InMemoryHub, InMemoryNetwork
from raftcache.resp.args import Limits
from raftcache.resp.backend import Backend
from raftcache.resp.cluster import redirect
from raftcache.resp.commands import lookup
from raftcache.resp.errors import UnavailableError
from raftcache.resp.leader import (
    EXPIRES_HEADER,
    FORWARDED_HEADER,
    NOT_LEADER_HEADER,
    GroupScope,
    LeaderBackend,
    LeaderMovedError,
)
from raftcache.resp.protocol import RespError, Verbatim
from raftcache.resp.server import RespServer
from raftcache.resp.shards import RemoteRouter, ShardedRouter
from raftcache.resp.topology import DOWN_AFTER, Advertised, StoreTopology, cluster_node_id
from raftcache.slots import group_range, key_group, key_slot
from raftcache.storage.memory import MemoryStorage
from raftcache.store import RemoteGroup, Store

from .fakes import FakeBackend, router_over

# --- LeaderBackend against a stand-in store -------------------------------------------------


@dataclass
class Stand:
    """What the stand-in HTTP server answers, and what it was asked."""

    seen: list[web.Request] = field(default_factory=list)
    expires: str | None = None
    not_leader: str | None = None  # answer 503 "not the leader" with this hint
    keys: list[str] = field(default_factory=list)
    per_group: dict[str, Any] | None = None


@pytest_asyncio.fixture
async def stand() -> AsyncIterator[tuple[Stand, str]]:
    state = Stand()

    async def get_key(request: web.Request) -> web.Response:
        state.seen.append(request)
        if state.not_leader is not None:
            return web.json_response(
                {"error": "not the leader"},
                status=503,
                headers={NOT_LEADER_HEADER: state.not_leader, "Retry-After": "1"},
            )
        headers = {"ETag": '"7"'}
        if state.expires is not None:
            headers[EXPIRES_HEADER] = state.expires
        return web.Response(body=b"value", headers=headers)

    async def list_keys(request: web.Request) -> web.Response:
        state.seen.append(request)
        after = request.query.get("after")
        limit = int(request.query["limit"])
        rest = [k for k in state.keys if after is None or k > after]
        page = rest[:limit]
        more = len(rest) > limit
        return web.json_response({"keys": page, "next": page[-1] if more else None})

    async def stats(request: web.Request) -> web.Response:
        state.seen.append(request)
        body: dict[str, Any] = {"cache": {"keys": 1000}}
        if state.per_group is not None:
            body["groups"] = state.per_group
        return web.json_response(body)

    async def unavailable(request: web.Request) -> web.Response:
        return web.json_response({"error": "no leader known"}, status=503)

    app = web.Application()
    app.router.add_get("/v1/keys/{key}", get_key)
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_get("/v1/stats", stats)
    app.router.add_post("/v1/keys/{key}/incr", unavailable)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _backend(
    session: aiohttp.ClientSession, url: str, scope: GroupScope | None = None
) -> LeaderBackend:
    return LeaderBackend(
        session,
        url,
        token=None,
        timeout_s=5.0,
        replica=None,
        clock=time.time,
        forwarded=True,
        scope=scope,
    )


async def test_a_remote_groups_backend_reads_the_expiry_from_the_answer(
    stand: tuple[Stand, str],
) -> None:
    state, url = stand
    async with aiohttp.ClientSession() as session:
        backend = _backend(session, url)
        state.expires = "1900000000.25"
        item = (await backend.items(["k"], "linearizable"))[0]
        assert item is not None
        assert (item.value, item.version, item.expires_at) == (b"value", 7, 1900000000.25)
        state.expires = "never"
        item = (await backend.items(["k"], "linearizable"))[0]
        assert item is not None
        assert item.expires_at is None
        assert state.seen[-1].headers[FORWARDED_HEADER] == "1"  # "not the leader", no 2nd hop
        state.expires = None  # a store that does not report expiries: no guess
        with pytest.raises(RespError, match=EXPIRES_HEADER):
            await backend.items(["k"], "linearizable")


async def test_not_the_leader_and_unreachable_are_moves_other_503s_are_not(
    stand: tuple[Stand, str],
) -> None:
    state, url = stand
    async with aiohttp.ClientSession() as session:
        state.not_leader = "s3"
        with pytest.raises(LeaderMovedError) as moved:
            await _backend(session, url).items(["k"], "linearizable")
        assert moved.value.hint == "s3"
        state.not_leader = ""  # not the leader, and no leader known there
        with pytest.raises(LeaderMovedError) as moved:
            await _backend(session, url).items(["k"], "linearizable")
        assert moved.value.hint is None
        with pytest.raises(UnavailableError) as plain:  # the leader itself: no move
            await _backend(session, url).incr("k", 1)
        assert not isinstance(plain.value, LeaderMovedError)
        with pytest.raises(LeaderMovedError):  # nothing listening: certainly not applied
            await _backend(session, "http://127.0.0.1:1").incr("k", 1)


async def test_one_groups_listing_and_count_through_a_store(stand: tuple[Stand, str]) -> None:
    state, url = stand
    groups = 4
    state.keys = sorted(f"key{i}" for i in range(30))
    mine = [k for k in state.keys if key_group(k, groups) == 2]
    scope = GroupScope("g2", 2, groups)
    async with aiohttp.ClientSession() as session:
        backend = _backend(session, url, scope)
        found: list[str] = []
        after = None
        while True:  # a store listing every group: only g2's are kept, the cursor goes on
            keys, after = await backend.list_keys("", after, 7, "linearizable")
            found += keys
            if after is None:
                break
        assert found == mine
        assert all(r.query.get("group") == "g2" for r in state.seen)
        state.per_group = {"g2": {"cache": {"keys": 42}}}  # the store's figure of g2
        assert await backend.dbsize("linearizable") == 42
        state.per_group = {"g1": {"cache": {"keys": 5}}}  # it does not host g2: counted
        assert await backend.dbsize("linearizable") == len(mine)
        assert await _backend(session, url).dbsize("linearizable") == 1000  # unscoped


# --- RemoteRouter -----------------------------------------------------------------------------


class Refusing:
    """A store's backend that refuses (``LeaderMovedError``) unless it leads the group."""

    def __init__(self, leader: str | None, asked: list[str], store: str) -> None:
        self.leader, self.asked, self.store = leader, asked, store

    async def incr(self, key: str, by: int) -> int:
        self.asked.append(self.store)
        if self.store == "down":
            raise LeaderMovedError(None, "leader unreachable")
        if self.store != self.leader:
            raise LeaderMovedError(self.leader, "not the leader")
        return 1


def _remote_router(
    group: RemoteGroup, leader: str | None, asked: list[str], wait_s: float = 1.0
) -> RemoteRouter:
    urls = {m: f"http://{m}" for m in group.members}

    def make(url: str) -> Backend:
        store = url.removeprefix("http://")
        return Refusing(leader, asked, store)  # type: ignore[return-value]

    return RemoteRouter(group, make, urls.get, leader_wait_s=wait_s, poll_interval_s=0.01)


async def test_a_remote_router_follows_hints_and_skips_stores_it_cannot_reach() -> None:
    group = RemoteGroup("s1", "g3", ["s2", "s3", "s4"])
    asked: list[str] = []
    first = group.leader_id
    leader = next(m for m in group.members if m != first)
    router = _remote_router(group, leader, asked)
    assert await router.call(lambda b: b.incr("k", 1)) == 1
    assert asked == [first, leader]  # the first guess said where the leader is
    assert group.leader_id == leader
    asked.clear()
    assert await router.call(lambda b: b.incr("k", 1), asyncio.Lock()) == 1
    assert asked == [leader]  # remembered
    # No store leads (an election): every store is tried, in rounds, until the wait is over.
    asked.clear()
    stuck = _remote_router(group, None, asked, wait_s=0.2)
    with pytest.raises(UnavailableError, match="no store of group g3"):
        await stuck.call(lambda b: b.incr("k", 1))
    assert set(asked) == set(group.members)
    assert stuck.forwarded_total == len(asked)


# --- StoreTopology ----------------------------------------------------------------------------

GROUPS = 4
PLACEMENT = {
    "g0": ("s1", "s2", "s3"),
    "g1": ("s2", "s3", "s4"),
    "g2": ("s1", "s3", "s4"),
    "g3": ("s1", "s2", "s4"),
}


@dataclass
class FakeNode:
    node_id: str
    leader_id: str | None
    members: list[str]
    current_term: int = 5
    last_applied: int = 10

    def peer_url(self, node_id: str) -> str | None:
        return f"http://{node_id}.test"


@dataclass
class FakeReplica:
    node: FakeNode


class FakeStore:
    """What ``StoreTopology`` reads of a store: s1, hosting g0, g2 and g3."""

    def __init__(self, leaders: Mapping[str, str | None]) -> None:
        self.store_id = "s1"
        self.groups = GROUPS
        self.placement = dict(PLACEMENT)
        self.replicas = {
            gid: FakeReplica(FakeNode("s1", leaders[gid], list(stores)))
            for gid, stores in PLACEMENT.items()
            if "s1" in stores
        }

    def group_ids(self) -> list[str]:
        return [f"g{g}" for g in range(GROUPS)]


def _status(store: str, groups: dict[str, tuple[str | None, int]]) -> dict[str, Any]:
    """A store's /v1/status: its cluster port, and the groups it hosts (leader, term)."""
    number = store.removeprefix("s")
    return {
        "resp": {"address": f"h{number}:600{number}", "cluster_address": f"h{number}:700{number}"},
        "groups": [
            {"group": gid, "hosted": True, "leader": leader, "term": term,
             "members": list(PLACEMENT[gid]), "slots": [0, 0]}
            for gid, (leader, term) in groups.items()
        ],
    }  # fmt: skip


def _topology(statuses: dict[str, Any], leaders: Mapping[str, str | None]) -> StoreTopology:
    async def fetch(url: str) -> Mapping[str, Any] | None:
        found = statuses.get(url)
        return found if isinstance(found, Mapping) else None

    topology = StoreTopology(FakeStore(leaders), Advertised(), fetch)  # type: ignore[arg-type]
    topology.set_own(Advertised("h1:6001", "h1:7001"))
    asyncio.run(topology.refresh())
    return topology


@dataclass
class FakeServer:
    topology: StoreTopology
    cluster_mode: bool = True


@dataclass
class FakeClient:
    server: FakeServer
    consistency: str = "linearizable"


def _cluster(topology: StoreTopology, sub: bytes) -> Any:
    spec = lookup(b"CLUSTER")
    assert spec is not None
    return spec.parse([sub], Limits()).run_server(FakeClient(FakeServer(topology)))


def _answer(topology: StoreTopology, *words: bytes, stale: bool = False) -> str | None:
    spec = lookup(words[0])
    assert spec is not None
    call = spec.parse(list(words[1:]), Limits())
    client = FakeClient(FakeServer(topology), "stale" if stale else "linearizable")
    answer = redirect(client, call)  # type: ignore[arg-type]
    return None if answer is None else answer.line


LEADERS = {"g0": "s1", "g1": None, "g2": "s3", "g3": "s2"}  # as s1's own replicas see them
STATUSES = {
    "http://s2.test": _status("s2", {"g0": ("s1", 5), "g1": ("s3", 4), "g3": ("s2", 5)}),
    "http://s3.test": _status("s3", {"g0": ("s1", 5), "g1": ("s4", 6), "g2": ("s3", 5)}),
    "http://s4.test": _status("s4", {"g1": ("s4", 6), "g2": ("s3", 5), "g3": ("s2", 5)}),
}


def _key_of(group: int) -> bytes:
    return next(f"k{i}".encode() for i in range(1000) if key_group(f"k{i}", GROUPS) == group)


def test_store_topology_has_one_shard_per_group_led_as_reported() -> None:
    topology = _topology(dict(STATUSES), LEADERS)
    shards = topology.shards()
    assert [s.group for s in shards] == ["g0", "g1", "g2", "g3"]
    assert [(s.first, s.last) for s in shards] == [
        (r.start, r.stop - 1) for r in (group_range(g, GROUPS) for g in range(GROUPS))
    ]
    # g1 is held elsewhere: the report of the highest term wins (s4, term 6, over s3's 4).
    assert [s.leader for s in shards] == ["s1", "s4", "s3", "s2"]
    assert [s.hosted for s in shards] == [True, False, True, True]
    slots = _cluster(topology, b"SLOTS")
    assert [(e[0], e[1], e[2][1]) for e in slots] == [
        (0, 4095, 7001), (4096, 8191, 7004), (8192, 12287, 7003), (12288, 16383, 7002)
    ]  # fmt: skip
    # A store is listed as a replica only after the shard it masters (redis-py's typing).
    assert [{n[1] for n in e[3:]} for e in slots] == [set(), set(), {7001, 7004}, {7001, 7004}]
    nodes = str(_cluster(topology, b"NODES")).splitlines()
    assert len(nodes) == 4
    s1 = next(line for line in nodes if line.startswith(cluster_node_id("s1")))
    assert " myself,master - " in s1
    assert s1.endswith(" 0-4095")
    assert "cluster_state:ok" in str(_cluster(topology, b"INFO"))
    assert "cluster_size:4" in str(_cluster(topology, b"INFO"))
    shards_reply = _cluster(topology, b"SHARDS")
    assert [len(entry["nodes"]) for entry in shards_reply] == [3, 3, 3, 3]


def test_moved_per_group_and_clusterdown_without_a_leader() -> None:
    topology = _topology(dict(STATUSES), LEADERS)
    key = {g: _key_of(g) for g in range(GROUPS)}
    assert _answer(topology, b"GET", key[0]) is None  # s1 leads g0: served here
    assert _answer(topology, b"SET", key[1], b"v") == f"MOVED {key_slot(key[1])} h4:7004"
    assert _answer(topology, b"GET", key[2]) == f"MOVED {key_slot(key[2])} h3:7003"
    assert _answer(topology, b"INCR", key[3]) == f"MOVED {key_slot(key[3])} h2:7002"
    # READONLY: a group with a replica here is read here; one without is still moved.
    assert _answer(topology, b"GET", key[2], stale=True) is None
    assert _answer(topology, b"GET", key[1], stale=True) == f"MOVED {key_slot(key[1])} h4:7004"
    assert _answer(topology, b"SET", key[2], b"v", stale=True) is not None  # writes move
    # Nobody reports a leader of g1: its keys are CLUSTERDOWN, its slots unserved.
    statuses = {
        url: _status(url.removeprefix("http://").removesuffix(".test"), {"g1": (None, 7)})
        for url in STATUSES
    }
    down = _topology(statuses, LEADERS)
    assert _answer(down, b"GET", key[1]) == "CLUSTERDOWN The cluster is down"
    assert [e[0] for e in _cluster(down, b"SLOTS")] == [0, 8192, 12288]
    assert "cluster_state:fail" in str(_cluster(down, b"INFO"))


async def test_cluster_slots_during_the_first_poll_lists_the_groups_led_elsewhere() -> None:
    """Right after the start, a store knows the leaders of groups it does not host, and the
    other stores' addresses, only from its poll: CLUSTER SLOTS waits for it (s4, the last to
    answer, reports g1's leader) instead of answering with this store's group alone."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def fetch(url: str) -> Mapping[str, Any] | None:
        if url == "http://s4.test":
            asked.set()
            await release.wait()
        return STATUSES.get(url)

    topology = StoreTopology(FakeStore(LEADERS), Advertised(), fetch)  # type: ignore[arg-type]
    topology.set_own(Advertised("h1:6001", "h1:7001"))
    topology.settle_s = 30.0  # s4 is released well before: the content is what is tested
    topology.start()
    try:
        reply = _cluster(topology, b"SLOTS")
        assert inspect.isawaitable(reply)  # the first poll is not over: the command waits
        waiting = asyncio.ensure_future(reply)
        await asyncio.wait_for(asked.wait(), 30)
        key = _key_of(1)
        assert _answer(topology, b"GET", key) == "CLUSTERDOWN The cluster is down"  # no wait
        release.set()
        slots = await asyncio.wait_for(waiting, 30)
        assert [(e[0], e[2][1]) for e in slots] == [
            (0, 7001),
            (4096, 7004),
            (8192, 7003),
            (12288, 7002),
        ]
        assert _answer(topology, b"GET", key) == f"MOVED {key_slot(key)} h4:7004"
    finally:
        await topology.stop()


def _g1_leaderless() -> dict[str, Any]:
    """The other stores' status while g1 (led by none of them yet) elects its leader."""
    return {
        "http://s2.test": _status("s2", {"g0": ("s1", 5), "g1": (None, 1), "g3": ("s2", 5)}),
        "http://s3.test": _status("s3", {"g0": ("s1", 5), "g1": (None, 1), "g2": ("s3", 5)}),
        "http://s4.test": _status("s4", {"g1": (None, 1), "g2": ("s3", 5), "g3": ("s2", 5)}),
    }


def _counted(
    statuses: dict[str, Any],
) -> tuple[Callable[[str], Awaitable[Mapping[str, Any] | None]], list[int]]:
    """A status fetch over ``statuses`` (read at each call) and its count of polls (s4's)."""
    polls = [0]

    async def fetch(url: str) -> Mapping[str, Any] | None:
        polls[0] += url == "http://s4.test"
        found = statuses.get(url)
        return found if isinstance(found, Mapping) else None

    return fetch, polls


async def test_cluster_slots_polls_again_for_a_group_whose_leader_was_unknown() -> None:
    """Every store answered the first poll, but before g1 (held elsewhere) had elected its
    leader: CLUSTER SLOTS asks for a fresh poll (bounded) rather than leave g1's slots out,
    which makes redis-py's RedisCluster refuse to start ("All slots are not covered")."""
    statuses = _g1_leaderless()
    fetch, polls = _counted(statuses)
    topology = StoreTopology(FakeStore(LEADERS), Advertised(), fetch)  # type: ignore[arg-type]
    topology.set_own(Advertised("h1:6001", "h1:7001"))
    topology.settle_s = 30.0  # the poll answers at once: the content is what is tested
    topology.start()
    try:
        while polls[0] < 1:  # the scheduled first poll: every store answers, g1 has no leader
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert topology.shard_of(group_range(1, GROUPS).start).leader is None
        statuses.update(STATUSES)  # g1 elected s4 meanwhile
        reply = _cluster(topology, b"SLOTS")
        assert inspect.isawaitable(reply)  # a group held elsewhere has no known leader: poll
        slots = await asyncio.wait_for(reply, 30)
        assert [(e[0], e[2][1]) for e in slots] == [
            (0, 7001),
            (4096, 7004),
            (8192, 7003),
            (12288, 7002),
        ]
        assert polls[0] >= 2
        assert not inspect.isawaitable(_cluster(topology, b"SLOTS"))  # nothing left unknown
    finally:
        await topology.stop()


async def test_a_leaderless_group_starts_at_most_one_poll_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A group held elsewhere that stays leaderless (its quorum lost) must not make every
    CLUSTER SLOTS poll every store: once a poll started less than ``LEADERLESS_REPOLL_S`` ago,
    the command answers at once from what is known."""
    fetch, polls = _counted(_g1_leaderless())
    topology = StoreTopology(FakeStore(LEADERS), Advertised(), fetch)  # type: ignore[arg-type]
    topology.set_own(Advertised("h1:6001", "h1:7001"))
    topology.start()
    try:
        while polls[0] < 1:
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)  # the first poll is over; g1 still has no leader
        monkeypatch.setattr(topology_module, "LEADERLESS_REPOLL_S", 3600.0)
        reply = _cluster(topology, b"SLOTS")
        assert inspect.isawaitable(reply)  # the first ask for g1's leader: one more poll
        await asyncio.wait_for(reply, 30)
        assert polls[0] == 2
        for _ in range(20):
            reply = _cluster(topology, b"SLOTS")
            assert not inspect.isawaitable(reply)  # one was asked for just now: no new one
            assert [e[0] for e in reply] == [0, 8192, 12288]  # g1's slots: no leader known
        assert polls[0] == 2
        monkeypatch.setattr(topology_module, "LEADERLESS_REPOLL_S", 0.0)
        reply = _cluster(topology, b"SLOTS")
        assert inspect.isawaitable(reply)  # past the interval: one more poll is worth it
        await asyncio.wait_for(reply, 30)
        assert polls[0] == 3
    finally:
        await topology.stop()


def test_a_reporter_that_stops_answering_is_not_believed() -> None:
    statuses: dict[str, Any] = dict(STATUSES)
    topology = _topology(statuses, LEADERS)
    assert topology.shard_of(5000).leader == "s4"
    del statuses["http://s3.test"]
    del statuses["http://s4.test"]  # the two reports of s4 leading g1 stop coming
    for _ in range(DOWN_AFTER):
        asyncio.run(topology.refresh())
    assert topology.shard_of(5000).leader == "s3"  # s2's report, term 4: what is left
    assert isinstance(_cluster(topology, b"NODES"), Verbatim)


def test_the_status_format_is_read_defensively() -> None:
    statuses: dict[str, Any] = dict(STATUSES)
    statuses["http://s4.test"] = {
        "resp": {"address": "", "cluster_address": "h4:7004"},
        "groups": [
            {"group": "g1", "hosted": True, "leader": 17, "members": "s4"},
            {"group": "g1", "hosted": False, "leader": "s2"},
            "nonsense",
        ],
    }
    statuses["http://s3.test"] = {"groups": {"g1": "s3"}}
    topology = _topology(statuses, LEADERS)
    assert topology.shard_of(5000).leader == "s3"  # s2's report, the only sound one
    assert orjson.dumps(_cluster(topology, b"SHARDS"))


def test_a_deposed_leaders_claim_loses_to_a_newer_term() -> None:
    statuses: dict[str, Any] = {
        "http://s2.test": _status("s2", {"g1": ("s3", 7)}),
        "http://s4.test": _status("s4", {"g1": ("s4", 6)}),  # deposed, and unaware of it
    }
    topology = _topology(statuses, LEADERS)
    assert topology.shard_of(5000).leader == "s3"
    statuses["http://s2.test"] = _status("s2", {"g1": ("s3", -1)})  # no terms: a claim wins
    statuses["http://s4.test"] = _status("s4", {"g1": ("s4", -1)})
    asyncio.run(topology.refresh())
    assert topology.shard_of(5000).leader == "s4"


# --- a forwarded write whose answer is lost -----------------------------------------------------


async def test_a_lost_answer_to_a_forwarded_write_is_indeterminate_never_resent() -> None:
    """A store that holds no group forwards SETNX (an HTTP PUT) to the group's store. When the
    connection breaks before the answer, the write may have been applied: the reply says so,
    and the request is not sent a second time (aiohttp resends a PUT on a reused connection,
    which would apply it twice — or, failing to connect, pass for "never applied")."""
    requests = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                requests += 1
                if requests == 2:  # applied, say, but the answer never leaves
                    return
                body = b'{"version": 5}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    store = Store(
        "s1",
        InMemoryNetwork("s1", hub=InMemoryHub()),
        groups=1,
        placement={"g0": ["s2"]},
        storage=lambda gid: MemoryStorage(),
        clock=time.time,
    )
    resp = RespServer(None, None, store=store, clock=time.time, peer_urls={"s2": url})
    await resp.start()
    client = aioredis.Redis(port=resp.port, socket_timeout=10)

    async def nothing(url: str) -> Mapping[str, Any] | None:
        return None

    clustered = RespServer(
        None,
        None,
        store=store,
        clock=time.time,
        peer_urls={"s2": url},
        cluster_mode=True,
        topology=StoreTopology(store, Advertised("", "h1:7001"), nothing),
    )
    await clustered.start()
    cluster = aioredis.Redis(port=clustered.port, socket_timeout=10)
    try:
        assert await client.setnx("k", b"v") is True
        with pytest.raises(ResponseError, match="INDETERMINATE"):
            await client.setnx("k", b"v")
        assert requests == 2
        # A cluster-mode port of a store that hosts no group answers for no key.
        assert await cluster.scan(0) == (0, [])
        assert await cluster.dbsize() == 0
        assert await cluster.keys() == []
    finally:
        await cluster.aclose()
        await clustered.stop()
        await client.aclose()
        await resp.stop()
        server.close()
        await server.wait_closed()


# --- ShardedBackend over in-memory groups ---------------------------------------------------


async def test_the_sharded_backend_splits_merges_and_refuses_by_group() -> None:
    groups = {"a": FakeBackend(time.time), "b": FakeBackend(time.time), "c": FakeBackend(time.time)}
    router = ShardedRouter(lambda key: key[0], {g: router_over(b) for g, b in groups.items()})
    keys = [f"{g}{i:02}" for g in "abc" for i in range(9) if (i + ord(g)) % 3]
    for key in keys:
        groups[key[0]].put(key, key.encode())

    async def listing(b: Backend) -> list[str]:
        found: list[str] = []
        after = None
        while True:
            page, after = await b.list_keys("", after, 4, "linearizable")
            assert len(page) <= 4
            found += page
            if after is None:
                return found

    assert await router.call(listing) == sorted(keys)  # every group's, in key order, once
    assert await router.call(lambda b: b.dbsize("linearizable")) == len(keys)
    wanted = ["c01", "a99", "a01", "b02", "a02"]
    expected = [k.encode() if k in keys else None for k in wanted]
    assert await router.call(lambda b: b.values(wanted, "linearizable")) == expected
    with pytest.raises(RespError, match="CROSSSLOT"):  # a write spanning groups: refused
        await router.call(lambda b: b.batch([SetOp("a1", b"x"), SetOp("b1", b"y")]))
    assert groups["a"].commits == groups["b"].commits == 0  # and nothing applied
    deleted = await router.call(lambda b: b.batch([DeleteOp(k) for k in wanted]))
    assert deleted == [k in keys for k in wanted]  # deletes split, answered in order
    assert await router.call(lambda b: b.flush("")) == len(keys) - deleted.count(True)
