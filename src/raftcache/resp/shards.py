"""Routing RESP commands on a sharded store: each key to its data group, wherever it is served.

Rule: a store (``raftcache.store.Store``) hosts replicas of some data groups; every key belongs
to exactly one group (``Store.group_of``). Each group gets its own router: a group hosted here
gets today's ``Router`` (the local replica's ``CacheService``, else the group's leader store
over HTTP on ``NotLeaderError``), a group held elsewhere a ``RemoteRouter`` (one of the group's
stores over HTTP — the store's ``RemoteGroup`` guesses which — and the next guess whenever that
one certainly did not take the request). ``ShardedRouter`` is the router over all of them that
the commands see: every ``Backend`` operation it is given runs on the router of its keys'
group (``ShardedBackend``), so commands are written once, for one group or many.

What spans groups. An operation whose keys all lie in one group runs there as one operation,
atomic as today. Reads of many keys (MGET, EXISTS) and unconditional deletes (DEL, UNLINK)
split by group and run on every group concurrently, in no common order — not atomic across
groups, each group's part is. Anything else whose keys span groups (MSET, a MULTI) is refused
before it runs (``raftcache.resp.cluster.spans_groups``): ``-CROSSSLOT``. Listings merge every
group's keys in key order; counts and flushes add up the groups' (``raftcache.resp.scan``
pages SCAN group by group).

Order and grouping are today's, per group: plain writes of every connection share a log entry
per group (one ``WriteGroups`` per group) and reads a read barrier per group (one
``ReadGroups``); a connection's forwarded operations pass its one ``gate`` in the order they
were issued, whatever their group, so pipelined writes reach each group's leader in order.

Replicas move (``Store.on_change``): ``ShardedRouter.replace`` puts a group's new router where
the next operation looks it up, while the group commit reaches it through ``CurrentRouter``
(the same ``WriteGroups`` and gate, so order holds across the change). Operations running on
the old router finish there: a removed replica's ``ReplicaRouter`` hands those its stopped
replica did not take to its successor, and a ``RemoteRouter`` reads the store's ``RemoteGroup``
at each attempt (``LiveRemoteGroup``), so it follows the group's new stores.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

from raftcache.cache.commands import BatchOp, DeleteOp, GetOp
from raftcache.cache.entries import Item
from raftcache.cache.formats import COMMAND_VERSION
from raftcache.cache.results import BatchItem
from raftcache.cache.script_commands import NO_KEYS
from raftcache.cache.scripting import Reply as ScriptReply
from raftcache.network.groups import store_of
from raftcache.raft.errors import IndeterminateError, NodeStoppedError, NotLeaderError
from raftcache.resp.backend import (
    Backend,
    CallRouter,
    FormatPort,
    Router,
    ScriptBackend,
    ServiceView,
)
from raftcache.resp.coalesce import ReadGroups, WriteGroups
from raftcache.resp.errors import UnavailableError
from raftcache.resp.leader import LeaderMovedError
from raftcache.resp.protocol import RespError
from raftcache.slots import key_slot

if TYPE_CHECKING:
    from raftcache.store import Store

T = TypeVar("T")
X = TypeVar("X")

_RANDOM: Final = random.SystemRandom()  # RANDOMKEY's draw of a group: node-local
CROSSGROUP: Final = RespError("CROSSSLOT Keys in request don't hash to the same slot")


class RemoteGroupPort(Protocol):
    """What a ``RemoteRouter`` uses of a store's ``RemoteGroup``."""

    @property
    def group(self) -> str: ...

    @property
    def members(self) -> tuple[str, ...]: ...

    @property
    def leader_id(self) -> str: ...

    def moved(self, hint: str | None = None) -> None: ...


class LiveRemoteGroup:
    """A group this store holds no replica of, as the store's ``RemoteGroup`` of it is at each
    use (``RemoteGroupPort``). When the store learns the group's stores anew
    (``Store.set_placement`` makes a new ``RemoteGroup``), an operation already under way on
    the old router goes on with the new stores, rather than circling the old ones until it
    gives up; when the store comes to host the group again, it keeps the last guess."""

    __slots__ = ("_last", "_remote", "group")

    def __init__(self, remote: Mapping[str, RemoteGroupPort], last: RemoteGroupPort) -> None:
        self._remote = remote
        self._last = last
        self.group = last.group

    def _now(self) -> RemoteGroupPort:
        found = self._remote.get(self.group)
        if found is not None:
            self._last = found
        return self._last

    @property
    def members(self) -> tuple[str, ...]:
        return self._now().members

    @property
    def leader_id(self) -> str:
        return self._now().leader_id

    def moved(self, hint: str | None = None) -> None:
        self._now().moved(hint)


class RemoteRouter:
    """Runs a group's operations on the group's stores, for a store that holds no replica of it.

    The group's ``RemoteGroup`` names the store to try (the last leader hint heard, else one of
    the group's stores). An attempt that certainly did not take effect there — the store could
    not be reached, or answered "not the leader" (``LeaderMovedError``, with the leader it
    knows of) — moves the guess and tries again, until ``leader_wait_s`` has passed; after a
    round of every store without an answer it waits ``poll_interval_s`` (an election).

    Args:
        group: the store's ``RemoteGroup`` of this group (shared with its HTTP front).
        remote: makes the backend for a store's base URL.
        url_of: a store's base URL (None: unknown, that store is skipped).
        leader_wait_s: how long to keep trying before ``UnavailableError`` (``-TRYAGAIN``).
        poll_interval_s: the pause after a round of every store.
    """

    def __init__(
        self,
        group: RemoteGroupPort,
        remote: Callable[[str], Backend],
        url_of: Callable[[str], str | None],
        *,
        leader_wait_s: float = 2.0,
        poll_interval_s: float = 0.02,
    ) -> None:
        self.group = group
        self._remote = remote
        self._url_of = url_of
        self._leader_wait_s = leader_wait_s
        self._poll_interval_s = poll_interval_s
        self.forwarded_total = 0

    async def call(
        self, fn: Callable[[Backend], Awaitable[T]], gate: asyncio.Lock | None = None
    ) -> T:
        """``fn`` run against the group's leader store (see the class docstring)."""
        if gate is None:
            return await self._send(fn)
        async with gate:
            return await self._send(fn)

    async def _send(self, fn: Callable[[Backend], Awaitable[T]]) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._leader_wait_s
        group = self.group
        attempts = 0
        why = "none of its stores is known"
        while True:
            url = self._url_of(group.leader_id)
            if url is None:
                group.moved()
            else:
                self.forwarded_total += 1
                try:
                    return await fn(self._remote(url))
                except LeaderMovedError as exc:
                    group.moved(exc.hint)  # the hint, else the next store: tried at once
                    why = str(exc)
            if loop.time() >= deadline:
                raise UnavailableError(f"no store of group {group.group} took the request ({why})")
            attempts += 1
            if attempts % len(group.members) == 0:  # a round without an answer: an election?
                await asyncio.sleep(self._poll_interval_s)


class ReplicaRouter(Router):
    """The ``Router`` of a group hosted here, on a store whose replicas move.

    Two things differ from a single-group node's. A leader named by a replica id of a later
    incarnation (``<store>.<n>``, which no peer list names) is reached at its store. And once
    the store's replica is removed, the router is retired: the store's new router of the group
    (``successor``) takes every operation that the stopped replica certainly did not take
    (``NodeStoppedError``, not ``IndeterminateError``) — the operations that were running on
    it when it stopped; later ones are routed to the successor from the start.
    """

    successor: CallRouter | None = None

    async def call(
        self, fn: Callable[[Backend], Awaitable[T]], gate: asyncio.Lock | None = None
    ) -> T:
        """As ``Router.call`` (the local replica, else the leader), then the successor."""
        try:
            return await fn(self.local)
        except NotLeaderError as exc:
            hint = exc.leader_id
        except NodeStoppedError as exc:
            return await self._after_stop(exc, fn, gate)
        try:
            if gate is None:
                return await self._elsewhere(fn, hint)
            async with gate:
                return await self._elsewhere(fn, hint)
        except NodeStoppedError as exc:
            return await self._after_stop(exc, fn, gate)

    async def _after_stop(
        self,
        exc: NodeStoppedError,
        fn: Callable[[Backend], Awaitable[T]],
        gate: asyncio.Lock | None,
    ) -> T:
        successor = self.successor
        if successor is None or isinstance(exc, IndeterminateError):
            raise exc
        return await successor.call(fn, gate)

    def _leader_url(self, leader: str) -> str | None:
        url = super()._leader_url(leader)
        if url is None and store_of(leader) != leader:
            url = self._peer_urls.get(store_of(leader))
        return url


class CurrentRouter:
    """The router a ``ShardedRouter`` has for one group at each call: what holds on to a
    group's router across a move (the group commit of ``ShardedWrites``, ``ShardedReads``)."""

    __slots__ = ("_gid", "_routers")

    def __init__(self, shards: ShardedRouter, gid: str) -> None:
        self._routers = shards.routers
        self._gid = gid

    @property
    def forwarded_total(self) -> int:
        return self._routers[self._gid].forwarded_total

    def call(
        self, fn: Callable[[Backend], Awaitable[T]], gate: asyncio.Lock | None = None
    ) -> Coroutine[Any, Any, T]:
        return self._routers[self._gid].call(fn, gate)


def _deletes_or_gets(ops: Sequence[BatchOp]) -> bool:
    """Whether ``ops`` may be split by group: reads, and deletes with no condition (each
    group's part stays atomic; the whole need not be: DEL of keys in many groups)."""
    return all(
        isinstance(op, GetOp) or (isinstance(op, DeleteOp) and op.if_version is None) for op in ops
    )


class ShardedRouter:
    """The router over every group of a store (see the module docstring).

    Args:
        group_of: the group id of a key.
        routers: group id → its router, every group of the cluster in slot order.
    """

    def __init__(self, group_of: Callable[[str], str], routers: Mapping[str, CallRouter]) -> None:
        self.group_of = group_of
        self.routers: dict[str, CallRouter] = dict(routers)
        self._retired_forwarded = 0

    @property
    def forwarded_total(self) -> int:
        current = sum(router.forwarded_total for router in self.routers.values())
        return self._retired_forwarded + current

    def replace(self, gid: str, router: CallRouter) -> None:
        """Group ``gid`` is routed by ``router`` from now on (this store's replica of it was
        added or removed, or its stores changed). The operations running on the old router
        finish there — a retired ``ReplicaRouter`` hands to ``router`` those its stopped
        replica did not take."""
        old = self.routers[gid]
        self.routers[gid] = router  # in place: ``CurrentRouter``s hold this dict
        self._retired_forwarded += old.forwarded_total
        if isinstance(old, ReplicaRouter):
            old.successor = router

    async def call(
        self, fn: Callable[[Backend], Awaitable[T]], gate: asyncio.Lock | None = None
    ) -> T:
        """``fn`` run against a backend that sends each operation to its keys' group."""
        return await fn(ShardedBackend(self, gate))

    def split(self, keys: Sequence[str]) -> dict[str, list[int]]:
        """Group id → the positions in ``keys`` of that group's keys (in order)."""
        parts: dict[str, list[int]] = {}
        group_of = self.group_of
        for position, key in enumerate(keys):
            parts.setdefault(group_of(key), []).append(position)
        return parts


class ShardedBackend:
    """``Backend`` whose every operation runs on its keys' group (``ShardedRouter``)."""

    __slots__ = ("_gate", "_shards")

    def __init__(self, shards: ShardedRouter, gate: asyncio.Lock | None) -> None:
        self._shards = shards
        self._gate = gate

    def _on(self, key: str) -> CallRouter:
        return self._shards.routers[self._shards.group_of(key)]

    async def _split_read(
        self,
        keys: Sequence[str],
        read: Callable[[Backend, list[str]], Awaitable[list[X]]],
    ) -> list[X]:
        parts = self._shards.split(keys)
        routers = self._shards.routers
        if len(parts) <= 1:
            group = next(iter(parts), None)
            if group is None:
                return []
            return await routers[group].call(lambda b: read(b, list(keys)), self._gate)

        def one(group: str, positions: list[int]) -> Awaitable[list[X]]:
            chosen = [keys[p] for p in positions]
            return routers[group].call(lambda b: read(b, chosen), self._gate)

        answers = await asyncio.gather(*(one(g, ps) for g, ps in parts.items()))
        return _merge(len(keys), list(parts.values()), answers)

    async def values(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[bytes | None]:
        return await self._split_read(keys, lambda b, ks: b.values(ks, consistency, touch=touch))

    async def items(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[Item | None]:
        return await self._split_read(keys, lambda b, ks: b.items(ks, consistency, touch=touch))

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        return await self._on(key).call(
            lambda b: b.set(key, value, ttl=ttl, if_version=if_version, if_absent=if_absent),
            self._gate,
        )

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        return await self._on(key).call(lambda b: b.delete(key, if_version=if_version), self._gate)

    async def incr(self, key: str, by: int) -> int:
        return await self._on(key).call(lambda b: b.incr(key, by), self._gate)

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchItem]:
        parts = self._shards.split([op.key for op in ops])
        routers = self._shards.routers
        if len(parts) <= 1:
            group = next(iter(parts), None)
            if group is None:
                return []
            return await routers[group].call(lambda b: b.batch(ops), self._gate)
        if not _deletes_or_gets(ops):
            raise CROSSGROUP  # atomic only within a group: refused, nothing applied

        def one(group: str, positions: list[int]) -> Awaitable[list[BatchItem]]:
            chosen = [ops[p] for p in positions]
            return routers[group].call(lambda b: b.batch(chosen), self._gate)

        answers = await asyncio.gather(*(one(g, ps) for g, ps in parts.items()))
        return _merge(len(ops), list(parts.values()), answers)

    async def list_keys(
        self, prefix: str, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        """The first ``limit`` keys after ``after`` over every group, in key order: each group's
        first ``limit`` hold them all (a key missing from its group's page comes after
        ``limit`` keys of that group)."""
        pages = await asyncio.gather(
            *(
                router.call(lambda b: b.list_keys(prefix, after, limit, consistency), self._gate)
                for router in self._shards.routers.values()
            )
        )
        merged = list(heapq.merge(*(keys for keys, _ in pages)))
        more = len(merged) > limit or any(nxt is not None for _, nxt in pages)
        page = merged[:limit]
        return page, (page[-1] if more and page else None)

    async def dbsize(self, consistency: str) -> int:
        counts = await asyncio.gather(
            *(
                router.call(lambda b: b.dbsize(consistency), self._gate)
                for router in self._shards.routers.values()
            )
        )
        return sum(counts)

    # --- scripts: one group each, the table in every group ---------------------------------

    def _script_home(self, keys: Sequence[str]) -> tuple[CallRouter, int]:
        """Where a script runs and the slot it is bound to: its keys' one slot (else
        ``CROSSSLOT``: a script is atomic, so one group's, and Redis Cluster's rule is one
        slot), or with no keys the first group, touching no key."""
        if not keys:
            return next(iter(self._shards.routers.values())), NO_KEYS
        slot = key_slot(keys[0])
        if any(key_slot(key) != slot for key in keys[1:]):
            raise CROSSGROUP
        return self._on(keys[0]), slot

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        router, bound = self._script_home(keys)
        return await router.call(
            lambda b: _scripts(b).eval(script, keys, args, slot=bound, read_only=read_only),
            self._gate,
        )

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        router, bound = self._script_home(keys)
        return await router.call(
            lambda b: _scripts(b).evalsha(sha, keys, args, slot=bound, read_only=read_only),
            self._gate,
        )

    async def script_load(self, script: bytes) -> str:
        """Loaded into every group's table (EVALSHA runs in its keys' group)."""
        shas = await asyncio.gather(
            *(
                router.call(lambda b: _scripts(b).script_load(script), self._gate)
                for router in self._shards.routers.values()
            )
        )
        return str(shas[0])

    async def script_exists(self, shas: Sequence[str], consistency: str) -> list[bool]:
        """A script exists when every group holds it."""
        answers = await asyncio.gather(
            *(
                router.call(lambda b: _scripts(b).script_exists(shas, consistency), self._gate)
                for router in self._shards.routers.values()
            )
        )
        return [all(found) for found in zip(*answers, strict=True)]

    async def script_flush(self) -> int:
        dropped = await asyncio.gather(
            *(
                router.call(lambda b: _scripts(b).script_flush(), self._gate)
                for router in self._shards.routers.values()
            )
        )
        return max(dropped, default=0)

    async def publish(self, channel: bytes, message: bytes) -> int:
        # Through the first group, whatever the channel (raftcache.resp.pubsub).
        first = next(iter(self._shards.routers.values()))
        return await first.call(lambda b: b.publish(channel, message), self._gate)

    async def random_key(self, consistency: str) -> str | None:
        """A group drawn in proportion to its keys held, then a key drawn in it."""
        routers = list(self._shards.routers.values())
        counts = await asyncio.gather(
            *(router.call(lambda b: b.dbsize(consistency), self._gate) for router in routers)
        )
        weighted = [(r, c) for r, c in zip(routers, counts, strict=True) if c > 0]
        while weighted:
            router = _RANDOM.choices([r for r, _ in weighted], [c for _, c in weighted])[0]
            key = await router.call(lambda b: b.random_key(consistency), self._gate)
            if key is not None:
                return key
            weighted = [(r, c) for r, c in weighted if r is not router]  # only expired keys
        return None

    async def flush(self, prefix: str) -> int:
        deleted = await asyncio.gather(
            *(
                router.call(lambda b: b.flush(prefix), self._gate)
                for router in self._shards.routers.values()
            )
        )
        return sum(deleted)


def _scripts(backend: Backend) -> ScriptBackend:
    """A backend's script operations (every backend of the server has them)."""
    return cast(ScriptBackend, backend)


def _merge(
    count: int, positions: Sequence[Sequence[int]], answers: Sequence[Sequence[X]]
) -> list[X]:
    """The answers of the parts of a split operation, back in the order of its keys."""
    out: list[Any] = [None] * count
    for places, answer in zip(positions, answers, strict=True):
        for place, value in zip(places, answer, strict=True):
            out[place] = value
    return out


def _joined(
    count: int, parts: Sequence[tuple[list[int], asyncio.Future[list[X]]]]
) -> asyncio.Future[list[X]]:
    """One future for the futures of a split submission, in the submission's order: the first
    failure fails it (the other parts went on: not atomic across groups)."""
    joined: asyncio.Future[list[X]] = asyncio.get_running_loop().create_future()
    out: list[Any] = [None] * count
    remaining = len(parts)

    def done(places: list[int], part: asyncio.Future[list[X]]) -> None:
        nonlocal remaining
        error = None if part.cancelled() else part.exception()  # retrieved, in every case
        if joined.done():
            return
        if part.cancelled():
            joined.cancel()
        elif error is not None:
            joined.set_exception(error)
        else:
            for place, value in zip(places, part.result(), strict=True):
                out[place] = value
            remaining -= 1
            if remaining == 0:
                joined.set_result(out)

    for places, part in parts:
        part.add_done_callback(functools.partial(done, places))
    return joined


class ShardedWrites:
    """Group commit per group: a submission's ops go to their groups' ``WriteGroups``.

    A submission whose ops span groups is split only when it is deletes (DEL, UNLINK);
    anything else answers ``CROSSSLOT`` without running (the connection refuses those first).
    """

    def __init__(self, shards: ShardedRouter, **limits: Any) -> None:
        self._shards = shards
        self._groups = {
            gid: WriteGroups(CurrentRouter(shards, gid), **limits) for gid in shards.routers
        }

    def submit(self, ops: Sequence[BatchOp]) -> asyncio.Future[list[BatchItem]]:
        """Queue ``ops``; the future gets their results, in order."""
        parts = self._shards.split([op.key for op in ops])
        if len(parts) == 1:
            return self._groups[next(iter(parts))].submit(ops)
        if not parts or not _deletes_or_gets(ops):
            refused: asyncio.Future[list[BatchItem]] = asyncio.get_running_loop().create_future()
            if parts:
                refused.set_exception(CROSSGROUP)
            else:
                refused.set_result([])
            return refused
        futures = [
            (positions, self._groups[gid].submit([ops[p] for p in positions]))
            for gid, positions in parts.items()
        ]
        return _joined(len(ops), futures)

    async def close(self) -> None:
        for groups in self._groups.values():
            await groups.close()


class ShardedReads:
    """Read barriers shared per group: a read's keys go to their groups' ``ReadGroups``."""

    def __init__(self, shards: ShardedRouter, **limits: Any) -> None:
        self._shards = shards
        self._groups = {
            gid: ReadGroups(CurrentRouter(shards, gid), **limits) for gid in shards.routers
        }

    def submit(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> asyncio.Future[list[bytes | None]]:
        """Queue a read of ``keys``; the future gets their values, in order."""
        parts = self._shards.split(keys)
        if len(parts) == 1:
            return self._groups[next(iter(parts))].submit(keys, consistency, touch=touch)
        futures = [
            (
                positions,
                self._groups[gid].submit([keys[p] for p in positions], consistency, touch=touch),
            )
            for gid, positions in parts.items()
        ]
        if not futures:
            empty: asyncio.Future[list[bytes | None]] = asyncio.get_running_loop().create_future()
            empty.set_result([])
            return empty
        return _joined(len(keys), futures)

    async def close(self) -> None:
        for groups in self._groups.values():
            await groups.close()


class _LowestFormat:
    """The command format every hosted group has enabled (the lowest of theirs)."""

    def __init__(self, machines: Sequence[FormatPort]) -> None:
        self._machines = machines

    @property
    def command_version(self) -> int:
        return min(machine.command_version for machine in self._machines)

    @property
    def max_command_version(self) -> int:
        return min(getattr(m, "max_command_version", 1) for m in self._machines)


#: ``stats`` fields that add up over a store's groups (the others are the first group's).
_SUMMED: Final = ("keys", "bytes", "max_bytes", "hits", "misses", "expirations", "evictions")


class _Newest:
    """The command format of a store hosting no group: the newest this release applies (a
    group's leader refuses, naming the format, what its group has not enabled yet)."""

    command_version: int = COMMAND_VERSION
    max_command_version: int = COMMAND_VERSION


class StoreView:
    """``ServiceView`` of a store for INFO, CONFIG GET and the command-format checks: the
    command format is the lowest any hosted group has enabled (so a command never takes a
    route some group cannot apply yet — a group held elsewhere, unknown here, answers an
    error naming the format if it lags), and the counters add up the hosted groups' — the
    keys this store holds, as a Redis Cluster node reports its own.

    Args:
        store: the store.
        fallback: the service to report when the store hosts no group (None: nothing).
    """

    def __init__(self, store: Store, fallback: ServiceView | None = None) -> None:
        self._store = store
        self._fallback = fallback
        self.refresh()

    def refresh(self) -> None:
        """Read the hosted groups again (a replica was added or removed)."""
        self._services = [replica.service for replica in self._store.replicas.values()]
        machines: list[FormatPort] = [s.machine for s in self._services]
        if not machines:
            fallback = self._fallback
            machines = [fallback.machine if fallback is not None else _Newest()]
        self.machine = _LowestFormat(machines)

    async def stats(self) -> Mapping[str, Any]:
        if not self._services:
            if self._fallback is None:
                return {"keys": 0}
            stats: Mapping[str, Any] = await self._fallback.stats()
            return stats
        each = [await service.stats() for service in self._services]
        total = dict(each[0])
        for name in _SUMMED:
            values = [s.get(name) for s in each]
            if all(isinstance(v, int) for v in values):
                total[name] = sum(v for v in values if isinstance(v, int))
        return total


class StoreFace:
    """``NodePort`` of a store that hosts no group, for HELLO and INFO: the store's id, no
    Raft state of its own."""

    def __init__(self, store: Store) -> None:
        self.node_id = store.store_id

    @property
    def leader_id(self) -> str | None:
        return None

    @property
    def last_applied(self) -> int:
        return 0

    @property
    def last_log_index(self) -> int:
        return 0

    def leader_address(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"id": self.node_id, "role": "none", "members": []}

    def raft_stats(self) -> dict[str, Any]:
        return {}
