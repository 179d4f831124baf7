"""The HTTP front of a store follows its replicas as they move (``StoreFront.rebuild``).

Four in-process stores of two groups, three replicas each, over real ``HttpNetwork``s mounted
on their applications (as ``raftcache serve --groups`` runs them). While a client keeps writing
and reading keys of one group through the store that holds its leader, that store's replica
moves to the fourth store, as the placement driver moves it: the fourth store creates an empty
replica (``<store>.1``), the group leader adds it (learner, then voter), leadership goes to it,
the leader removes the source's replica, the source deletes it, and every store is told the
group's new stores. The client sees no failure but retriable ones (503, 504) that it retried;
every write it was told succeeded is read back after; the source now forwards the group's keys
(it holds no replica), the fourth store serves them from its own replica; ``/v1/shards`` names
the leader by its store, ``/v1/status`` the replica by its id.

``MovingStores`` is shared with ``tests/resp/test_store_moves_front.py``, which adds the RESP
ports.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from raftcache.raft.core import Role
from raftcache.raft.errors import MembershipChangeError
from raftcache.raft.node import RaftNode
from raftcache.server.groups import RemoteNode
from raftcache.slots import key_group
from raftcache.store import Store, group_id
from tests.store.stores_http import (
    StoreServer,
    bootstrap_placement,
    group_leader,
    loopback,
    serve_store,
    settle,
    store_settings,
)

from .cluster import fast_raft

STORES = ("s1", "s2", "s3", "s4")
GROUPS = 2
#: Answers a client retries: nothing happened (503), or it may have (504; a SET of the same
#: value again is harmless).
RETRIABLE = frozenset({503, 504})


@dataclass
class Move:
    """A move of ``gid``'s replica from ``source`` to ``target``: the group's stores
    ``before``, the new replica's id and the removed one's, once made."""

    gid: str
    source: str
    target: str
    before: list[str]
    replica: str = ""
    removed: str = ""

    @property
    def stores(self) -> list[str]:
        """The group's stores after the move."""
        return [self.target, *(s for s in self.before if s != self.source)]


class MovingStores:
    """Four stores of two groups; ``move`` moves a replica as the placement driver does."""

    def __init__(self) -> None:
        self.ports, self.urls = loopback(STORES)
        self.placement = bootstrap_placement(STORES, GROUPS)
        self.running: dict[str, StoreServer] = {}
        self.session = aiohttp.ClientSession()
        #: Awaited first by ``stop`` (what ``start``'s ``extra`` started).
        self.cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(self, extra: Callable[[str, Store, web.Application], Awaitable[None]]) -> None:
        """Start every store (no ``peer_addresses``: a replica id of a later incarnation is
        turned into its store's URL by the fronts alone); ``extra`` runs once each store's
        HTTP port listens, before the stores start."""
        settings = store_settings(self.urls)
        for sid, port in self.ports.items():
            r = await serve_store(
                sid, port, self.urls, settings, groups=GROUPS, placement=self.placement,
                config=fast_raft(), lean=True,
            )  # fmt: skip
            self.running[sid] = r
            await extra(sid, r.store, r.app)
        await asyncio.gather(*(r.store.start() for r in self.running.values()))
        await self.settled()

    async def stop(self) -> None:
        for cleanup in self.cleanups:
            await cleanup()
        await self.session.close()
        for r in self.running.values():
            await r.stop()

    def stores(self) -> dict[str, Store]:
        return {sid: r.store for sid, r in self.running.items()}

    def leader(self, gid: str) -> tuple[str, RaftNode] | None:
        """The store leading ``gid`` and its replica's node, once every replica knows it."""
        return group_leader(self.stores(), gid)

    async def settled(self, timeout_s: float = 10.0) -> None:
        await settle(self.stores, self.placement, timeout_s)

    def plan(self) -> Move:
        """The move to make: group g0's leader store gives its replica to the store that
        holds none of g0."""
        gid = group_id(0)
        found = self.leader(gid)
        assert found is not None
        target = next(s for s in STORES if s not in self.placement[gid])
        return Move(gid, found[0], target, list(self.placement[gid]))

    async def move(self, move: Move) -> None:
        """Carry ``move`` out, step by step, as the placement driver does."""
        gid = move.gid
        found = self.leader(gid)
        assert found is not None
        leader = found[1]
        replica = await self.running[move.target].store.add_replica(gid, leader.members)
        move.replica = replica.node.node_id
        assert move.replica == f"{move.target}.1"
        await leader.add_member(move.replica)
        if found[0] == move.source:  # away from the source: to the new replica
            await leader.transfer_leadership(move.replica)
        async with asyncio.timeout(10):
            while (now := self.leader(gid)) is None or now[0] == move.source:
                await asyncio.sleep(0.02)
        source_replica = self.running[move.source].store.replicas[gid].node.node_id
        async with asyncio.timeout(10):
            while True:  # a new leader first commits an entry of its term
                try:
                    await now[1].remove_member(source_replica)
                    break
                except MembershipChangeError:
                    await asyncio.sleep(0.02)
        move.removed = await self.running[move.source].store.remove_replica(gid)
        assert move.removed == source_replica
        for r in self.running.values():
            r.store.set_placement(gid, move.stores)

    def keys_of(self, gid: str, count: int, prefix: str) -> list[str]:
        index = int(gid[1:])
        return [
            k for k in (f"{prefix}{i}" for i in range(20 * count)) if key_group(k, GROUPS) == index
        ][:count]


@dataclass
class Tally:
    """What a client saw: the writes acknowledged, the answers retried, the failures, and
    how many keys it wrote and read back since the move was over."""

    acked: dict[str, bytes] = field(default_factory=dict)
    retried: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    moved: bool = False
    after_move: int = 0


async def keep_going(
    tally: Tally,
    stop: asyncio.Event,
    keys: list[str],
    write: Callable[[str, bytes], Awaitable[None]],
    read: Callable[[str], Awaitable[bytes | None]],
) -> None:
    """Write each key once (a value of its own), then read it back, until ``stop``: what
    ``write`` and ``read`` raise ``RetryError`` for is retried; anything else is a failure."""
    for i, key in enumerate(keys):
        if stop.is_set():
            return
        value = f"{key}={i}".encode()
        if not await _retrying(tally, functools.partial(write, key, value)):
            return
        tally.acked[key] = value
        got: list[bytes | None] = []
        if not await _retrying(tally, functools.partial(_read_into, read, key, got)):
            return
        if got[-1] != value:
            tally.failed.append(f"read {key}: {got[-1]!r}, acknowledged {value!r}")
        tally.after_move += tally.moved
    tally.failed.append("ran out of keys")


async def _read_into(
    read: Callable[[str], Awaitable[bytes | None]], key: str, got: list[bytes | None]
) -> None:
    got.append(await read(key))


class RetryError(Exception):
    """An answer the client retries (it says nothing happened, or a SET may be repeated)."""


async def _retrying(tally: Tally, op: Callable[[], Awaitable[None]]) -> bool:
    deadline = time.monotonic() + 10
    while True:
        try:
            await op()
            return True
        except RetryError as exc:
            tally.retried[str(exc)[:300]] += 1
            if time.monotonic() > deadline:
                tally.failed.append(f"still retrying: {exc}")
                return False
            await asyncio.sleep(0.02)
        except Exception as exc:
            tally.failed.append(f"{type(exc).__name__}: {exc}")
            return False


async def run_during(
    stores: MovingStores,
    move: Move,
    clients: list[tuple[Tally, Callable[[asyncio.Event], Awaitable[None]]]],
) -> None:
    """Run the clients until each did ten writes, then while ``move`` is carried out, and on
    until each did ten more writes and reads after it (or failed)."""
    stop = asyncio.Event()
    tasks = [asyncio.ensure_future(client(stop)) for _, client in clients]
    tallies = [tally for tally, _ in clients]
    try:
        # The clients are at it before the move begins: ten writes each (a count, not a
        # time — a slow machine writes fewer in any given time).
        deadline = time.monotonic() + 10
        while any(len(t.acked) < 10 for t in tallies) and not any(t.done() for t in tasks):
            assert time.monotonic() < deadline, [(len(t.acked), t.failed) for t in tallies]
            await asyncio.sleep(0.02)
        await stores.move(move)
        for tally in tallies:
            tally.moved = True
        deadline = time.monotonic() + 10
        while any(t.after_move < 10 for t in tallies) and not any(t.done() for t in tasks):
            assert time.monotonic() < deadline, [(t.after_move, t.failed) for t in tallies]
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def http_client(
    session: aiohttp.ClientSession, url: str
) -> tuple[Callable[[str, bytes], Awaitable[None]], Callable[[str], Awaitable[bytes | None]]]:
    async def write(key: str, value: bytes) -> None:
        async with session.put(f"{url}/v1/keys/{key}", data=value) as answer:
            text = await answer.text()
            if answer.status in RETRIABLE:
                raise RetryError(f"PUT {answer.status}: {text}")
            if answer.status != 200:
                raise AssertionError(f"PUT {key}: {answer.status} {text}")

    async def read(key: str) -> bytes | None:
        async with session.get(f"{url}/v1/keys/{key}") as answer:
            body = await answer.read()
            if answer.status in RETRIABLE:
                raise RetryError(f"GET {answer.status}: {body[:80]!r}")
            if answer.status == 404:
                return None
            if answer.status != 200:
                raise AssertionError(f"GET {key}: {answer.status} {body[:200]!r}")
            return body

    return write, read


@pytest.fixture
async def stores() -> AsyncIterator[MovingStores]:
    running = MovingStores()

    async def nothing(sid: str, store: Store, app: web.Application) -> None:
        return None

    try:
        await running.start(nothing)
        yield running
    finally:
        await running.stop()


async def _json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as answer:
        assert answer.status == 200, await answer.text()
        body = await answer.json()
        assert isinstance(body, dict)
        return body


async def test_http_front_follows_a_replica_move(stores: MovingStores) -> None:
    move = stores.plan()
    gid, source, target = move.gid, move.source, move.target
    write, read = http_client(stores.session, stores.urls[source])
    keys = stores.keys_of(gid, 4000, "mv")
    tallies = [Tally(), Tally()]

    def client(tally: Tally, mine: list[str]) -> Callable[[asyncio.Event], Awaitable[None]]:
        return lambda stop: keep_going(tally, stop, mine, write, read)

    await run_during(stores, move, [(t, client(t, keys[i::2])) for i, t in enumerate(tallies)])
    tally = Tally()
    for each in tallies:
        tally.acked.update(each.acked)
        tally.retried.update(each.retried)
        tally.failed += each.failed
    assert not tally.failed, (tally.failed, tally.retried)
    assert len(tally.acked) >= 20

    # Every acknowledged write reads back, through every store.
    for sid in STORES:
        w, r = http_client(stores.session, stores.urls[sid])
        for key, value in list(tally.acked.items())[:: max(1, len(tally.acked) // 25)]:
            assert await r(key) == value, (sid, key)

    src, tgt = stores.running[source].front, stores.running[target].front
    replica = stores.running[target].store.replicas[gid]
    # The source holds no replica: it forwards the group's keys (its RemoteGroup's view).
    assert gid not in stores.running[source].store.replicas
    assert isinstance(src.nodes[gid], RemoteNode)
    assert src.contexts[gid].node is src.nodes[gid]
    before = src.forwarded_of(gid)
    key, value = next(iter(tally.acked.items()))
    _, read_source = http_client(stores.session, stores.urls[source])
    assert await read_source(key) == value
    assert src.forwarded_of(gid) > before
    # The target serves them from its own replica, which leads (``<target>.1``).
    assert tgt.nodes[gid] is replica.node
    assert replica.node.role is Role.LEADER
    before = tgt.forwarded_of(gid)
    _, read_target = http_client(stores.session, stores.urls[target])
    assert await read_target(key) == value
    w, _ = http_client(stores.session, stores.urls[target])
    await w(key, b"again")
    assert tgt.forwarded_of(gid) == before
    assert replica.machine.get(key, time.time()) is not None

    # /v1/status: this store's replica id, Raft's ids for leader and members.
    status = await _json(stores.session, f"{stores.urls[target]}/v1/status")
    entry = next(g for g in status["groups"] if g["group"] == gid)
    assert entry["hosted"] is True
    assert entry["replica"] == move.replica
    assert entry["leader"] == move.replica
    assert move.replica in entry["members"]
    assert move.removed not in entry["members"]
    status = await _json(stores.session, f"{stores.urls[source]}/v1/status")
    entry = next(g for g in status["groups"] if g["group"] == gid)
    assert entry["hosted"] is False
    assert "replica" not in entry
    assert sorted(entry["members"]) == sorted(move.stores)
    # /v1/shards: stores only, the leader's store — on every store.
    for sid in STORES:
        shards = await _json(stores.session, f"{stores.urls[sid]}/v1/shards")
        shard = next(s for s in shards["shards"] if s["group"] == gid)
        assert sorted(shard["members"]) == sorted(move.stores), sid
        if shard["hosted"]:
            assert shard["leader"] == target, sid
    # The store's metrics follow: the target's replica is there, the source's is gone.
    async with stores.session.get(f"{stores.urls[target]}/metrics") as answer:
        text = await answer.text()
    assert f'raftcache_raft_is_leader{{group="{gid}"}} 1.0' in text
    async with stores.session.get(f"{stores.urls[source]}/metrics") as answer:
        text = await answer.text()
    assert f'raftcache_raft_term{{group="{gid}"}}' not in text
