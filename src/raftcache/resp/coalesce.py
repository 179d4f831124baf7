"""Group commit for the RESP server: plain writes from every connection share one log entry,
and reads share one read barrier.

Rule: submissions are collected into groups, and a group is sent as one operation — writes as
one cache batch (one Raft entry, applied atomically), reads as one ``values`` read (one read
barrier). At most ``max_in_flight`` groups of a kind are outstanding; while that many are, the
open group keeps filling (up to its size limits), so the busier the server, the larger the
groups — Raft's cost is per entry and per barrier, not per key. An idle server sends a group at
the end of the event-loop turn in which it was opened, so a lone command waits for nothing.

Why this is a valid schedule: the grouped operations were all in flight at once, so any order
among different connections is allowed; each connection's own operations keep their order in
the group; and a read group's barrier is taken after every read in it was submitted. Groups
are sent in the order they were closed, each proposed before its task first suspends, so they
reach the log in that order; their fallbacks to the leader pass one gate for the same reason.

Only unconditional ops are grouped (set, delete, get): a group cannot fail because of another
connection's condition. If a write group fails with a cache error (an entry too large for the
cache, say), nothing was applied, and each submission is retried alone, in order, so the error
reaches only the submission that caused it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

from raftcache.cache.commands import BatchOp, SetOp
from raftcache.cache.errors import CacheError
from raftcache.cache.results import BatchItem
from raftcache.resp.backend import Backend, CallRouter

T = TypeVar("T")
R = TypeVar("R")

MAX_GROUP_ITEMS: Final = 1000  # also the HTTP API's default batch limit (forwarded groups)
MAX_GROUP_BYTES: Final = 4 * 1024 * 1024
MAX_IN_FLIGHT: Final = 4

Submission = tuple[Sequence[T], "asyncio.Future[list[R]]"]


class WritePort(Protocol):
    """What the connections submit plain writes to (``WriteGroups``; per group on a sharded
    store: ``raftcache.resp.shards.ShardedWrites``)."""

    def submit(self, ops: Sequence[BatchOp], /) -> asyncio.Future[list[BatchItem]]: ...

    async def close(self) -> None: ...


class ReadPort(Protocol):
    """What the connections submit value reads to (``ReadGroups``; ``ShardedReads``)."""

    def submit(
        self, keys: Sequence[str], consistency: str, /, *, touch: bool = True
    ) -> asyncio.Future[list[bytes | None]]: ...

    async def close(self) -> None: ...


Runner = Callable[[list[Sequence[T]]], Awaitable[list["list[R] | Exception"]]]


class Batcher(Generic[T, R]):
    """Groups submissions of items and runs each group with one call of ``run``.

    Args:
        run: performs a group; gets the submissions in order, returns for each its results or
            the exception it failed with.
        size: the bytes an item counts for ``max_bytes``.
        max_items: items per group (a larger submission still goes alone, in one group).
        max_bytes: bytes per group.
        max_in_flight: groups outstanding at once.
    """

    def __init__(
        self,
        run: Runner[T, R],
        *,
        size: Callable[[T], int] = lambda item: 0,
        max_items: int = MAX_GROUP_ITEMS,
        max_bytes: int = MAX_GROUP_BYTES,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._run, self._size = run, size
        self._max_items, self._max_bytes = max_items, max_bytes
        self._max_in_flight = max_in_flight
        self._open: list[Submission[T, R]] = []
        self._items = self._bytes = 0
        self._closed: deque[list[Submission[T, R]]] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def submit(self, items: Sequence[T]) -> asyncio.Future[list[R]]:
        """Queue ``items``; the future gets their results, in order."""
        loop = asyncio.get_running_loop()
        size = sum(map(self._size, items))
        if self._open and (
            self._items + len(items) > self._max_items or self._bytes + size > self._max_bytes
        ):
            self._close()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._open.append((items, future))
        self._items += len(items)
        self._bytes += size
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._on_turn_end)
        return future

    def _close(self) -> None:
        if self._open:
            self._closed.append(self._open)
            self._open = []
            self._items = self._bytes = 0

    def _on_turn_end(self) -> None:
        self._scheduled = False
        if len(self._in_flight) < self._max_in_flight:
            self._close()  # else it keeps filling until a group in flight is done
        self._pump()

    def _pump(self) -> None:
        while self._closed and len(self._in_flight) < self._max_in_flight:
            group = self._closed.popleft()
            task = asyncio.get_running_loop().create_task(self._send(group))
            self._in_flight.add(task)
            task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not self._closed:
            self._close()
        self._pump()

    async def _send(self, group: list[Submission[T, R]]) -> None:
        try:
            outcomes = await self._run([items for items, _ in group])
        except BaseException as exc:
            for _, future in group:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Exception):
                _fail(future, outcome)
            elif not future.done():
                future.set_result(outcome)

    async def close(self) -> None:
        """Send what is queued and wait for every group in flight."""
        self._close()
        while self._closed or self._in_flight:
            self._pump()
            if self._in_flight:
                await asyncio.wait(list(self._in_flight))


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())


def _op_size(op: BatchOp) -> int:
    return len(op.key) + (len(op.value) if isinstance(op, SetOp) else 0)


class WriteGroups(Batcher[BatchOp, BatchItem]):
    """Write groups: one cache batch per group (see the module docstring)."""

    def __init__(self, router: CallRouter, **limits: Any) -> None:
        super().__init__(self._commit, size=_op_size, **limits)
        self._router = router
        self._gate = asyncio.Lock()

    async def _commit(self, group: list[Sequence[BatchOp]]) -> list[list[BatchItem] | Exception]:
        ops = [op for submitted in group for op in submitted]
        try:
            results = await self._router.call(_batch_of(ops), self._gate)
        except CacheError:
            if len(group) == 1:
                raise
            return [await self._alone(submitted) for submitted in group]
        outcomes: list[list[BatchItem] | Exception] = []
        position = 0
        for submitted in group:
            outcomes.append(results[position : position + len(submitted)])
            position += len(submitted)
        return outcomes

    async def _alone(self, ops: Sequence[BatchOp]) -> list[BatchItem] | Exception:
        try:
            return await self._router.call(_batch_of(ops), self._gate)
        except Exception as exc:
            return exc


def _batch_of(ops: Sequence[BatchOp]) -> Callable[[Backend], Awaitable[list[BatchItem]]]:
    return lambda backend: backend.batch(ops)


class ReadGroups:
    """Read groups, one stream per consistency level and touch mode (``CLIENT NO-TOUCH``
    connections' reads leave recency alone, so they never share a read with the others): one
    ``values`` read per group."""

    def __init__(self, router: CallRouter, **limits: Any) -> None:
        self._router = router
        self._limits = limits
        self._streams: dict[tuple[str, bool], Batcher[str, bytes | None]] = {}

    def submit(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> asyncio.Future[list[bytes | None]]:
        """Queue a read of ``keys``; the future gets their values, in order."""
        stream = self._streams.get((consistency, touch))
        if stream is None:
            stream = Batcher(self._reader(consistency, touch), **self._limits)
            self._streams[consistency, touch] = stream
        return stream.submit(keys)

    def _reader(self, consistency: str, touch: bool) -> Runner[str, bytes | None]:
        async def read(group: list[Sequence[str]]) -> list[list[bytes | None] | Exception]:
            keys = [key for submitted in group for key in submitted]
            values = await self._router.call(lambda b: b.values(keys, consistency, touch=touch))
            outcomes: list[list[bytes | None] | Exception] = []
            position = 0
            for submitted in group:
                outcomes.append(values[position : position + len(submitted)])
                position += len(submitted)
            return outcomes

        return read

    async def close(self) -> None:
        """Wait for the reads in flight."""
        for stream in list(self._streams.values()):
            await stream.close()
