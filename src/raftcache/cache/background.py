"""Leader-only housekeeping of the cache: expiry proposals and LRU access batches.

Rule: only the leader proposes these, and only from its own view; a follower's loops idle. Both
are hints — a lost round changes nothing that the next round does not fix — so failures are
logged and the loops carry on; ``stop()`` cancels them and waits for them to end.

- Expiry: every ``expiry_interval_s`` the leader asks its machine for keys expired at its
  clock's ``now`` and proposes EXPIRE for up to ``expiry_batch_size`` of them (repeating at
  once, up to ``_MAX_ROUNDS_PER_TICK``, while batches come back full). The machine removes only
  keys still expired at the command's ``now``, so a racing overwrite is never lost.
- Recency: reads served on the leader are recorded (deduplicated, at most
  ``touch_batch_size`` keys; later ones are dropped until the next flush) and proposed as one
  TOUCH batch every ``touch_interval_s``. A follower's own reads never change recency.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from raftcache.cache.commands import encode_expire, encode_touch
from raftcache.cache.results import CommandError
from raftcache.raft.errors import RaftError

log = logging.getLogger(__name__)

_MAX_ROUNDS_PER_TICK = 10


class ProposerNode(Protocol):
    """What housekeeping needs from the Raft node."""

    @property
    def role(self) -> Any: ...

    async def propose(self, command: bytes, timeout: float | None = None) -> Any: ...


class ExpirySource(Protocol):
    """What housekeeping needs from the state machine."""

    def expired_keys(self, now: float, limit: int) -> list[str]: ...


def is_leader(node: ProposerNode) -> bool:
    """Whether ``node`` is the leader (``Role`` is a ``StrEnum``, so it equals its value)."""
    return bool(node.role == "leader")


class Housekeeping:
    """The two leader-only loops (see the module docstring)."""

    def __init__(
        self,
        node: ProposerNode,
        machine: ExpirySource,
        clock: Callable[[], float],
        *,
        expiry_interval_s: float = 1.0,
        touch_interval_s: float = 1.0,
        expiry_batch_size: int = 1000,
        touch_batch_size: int = 10_000,
    ) -> None:
        if min(expiry_interval_s, touch_interval_s) <= 0:
            raise ValueError("housekeeping intervals must be positive")
        if min(expiry_batch_size, touch_batch_size) < 1:
            raise ValueError("housekeeping batch sizes must be at least 1")
        self._node = node
        self._machine = machine
        self._clock = clock
        self.expiry_interval_s = expiry_interval_s
        self.touch_interval_s = touch_interval_s
        self.expiry_batch_size = expiry_batch_size
        self.touch_batch_size = touch_batch_size
        self._touched: dict[str, None] = {}  # an ordered set: proposal order is deterministic
        self._tasks: list[asyncio.Task[None]] = []

    def record_access(self, keys: Iterable[str]) -> None:
        """Note keys read on this node; kept only while it is the leader."""
        if not is_leader(self._node):
            return
        touched = self._touched
        room = self.touch_batch_size - len(touched)
        for key in keys:
            if room <= 0:
                break
            if key not in touched:
                touched[key] = None
                room -= 1

    @property
    def pending_touches(self) -> int:
        """Keys waiting for the next TOUCH batch."""
        return len(self._touched)

    async def propose_expiry(self) -> int:
        """One expiry round; returns how many keys the committed EXPIRE removed."""
        now = self._clock()
        keys = self._machine.expired_keys(now, self.expiry_batch_size)
        if not keys:
            return 0
        removed = await self._node.propose(encode_expire(keys, now=now))
        return _count(removed, "EXPIRE")

    async def flush_touches(self) -> int:
        """Propose the pending TOUCH batch; returns how many keys it refreshed."""
        if not self._touched:
            return 0
        keys, self._touched = list(self._touched), {}
        touched = await self._node.propose(encode_touch(keys, now=self._clock()))
        return _count(touched, "TOUCH")

    async def _expiry_tick(self) -> None:
        for _ in range(_MAX_ROUNDS_PER_TICK):
            if await self.propose_expiry() < self.expiry_batch_size:
                return

    async def _touch_tick(self) -> None:
        await self.flush_touches()

    def start(self) -> None:
        """Start both loops (idempotent)."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._every(self.expiry_interval_s, self._expiry_tick, "expiry")),
            asyncio.create_task(self._every(self.touch_interval_s, self._touch_tick, "touch")),
        ]

    async def stop(self) -> None:
        """Cancel both loops and wait for them to finish."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _every(self, interval: float, tick: Callable[[], Awaitable[None]], what: str) -> None:
        while True:
            await asyncio.sleep(interval)
            if not is_leader(self._node):
                self._touched.clear()  # a former leader's reads are not the new leader's
                continue
            try:
                await tick()
            except Exception as exc:
                # Leadership changes and timeouts are expected here; the next round retries.
                log.log(_level(exc), "cache %s round failed: %r", what, exc)


def _level(exc: Exception) -> int:
    return logging.DEBUG if isinstance(exc, RaftError | TimeoutError) else logging.WARNING


def _count(result: Any, what: str) -> int:
    if isinstance(result, CommandError):
        raise result.to_exception()
    if type(result) is not int:
        raise TypeError(f"{what} returned {result!r}, expected a count")
    return result
