"""Deadlines: one sweep on the driver's tick times out every waiting proposal and read.

Rule: a future registered here with a timeout gets the exception its ``expire`` callback makes
once the driver's clock — the node's injected clock, the one its ticker and lease use — has
passed its deadline: at the first tick after it, so up to one tick (``tick_interval``, 20 ms by
default) late, unless it was done (resolved, failed or cancelled) first; a done future is only
dropped. It replaces an ``asyncio.timeout`` per request: each of those armed and cancelled a
timer handle and wrapped the await in a context manager, about 4-8% of a loaded leader's CPU,
while the timeouts (10 s by default) need no millisecond precision.

Waiters with the same timeout duration share one FIFO queue: their deadlines are in arrival
order, so a sweep only looks at each queue's head, and proposals — which finish roughly in
arrival order too — leave their queue soon after they finish instead of staying until their
deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

#: Makes the exception of a waiter whose deadline passed; gets the waiter's key.
Expire = Callable[[Any], BaseException]

_Entry = tuple[float, "asyncio.Future[Any]", Expire, Any]


class Deadlines:
    """Waiting futures by timeout duration, each queue in deadline order."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        self._queues: dict[float, deque[_Entry]] = {}

    def add(
        self, now: float, timeout: float, fut: asyncio.Future[Any], expire: Expire, key: Any
    ) -> None:
        """Fail ``fut`` with ``expire(key)`` once ``now + timeout`` has passed."""
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        queue.append((now + timeout, fut, expire, key))

    def sweep(self, now: float) -> None:
        """Expire every waiter whose deadline is at or before ``now``; drop finished ones."""
        empty: list[float] = []
        for timeout, queue in self._queues.items():
            while queue:
                deadline, fut, expire, key = queue[0]
                if not fut.done():
                    if deadline > now:
                        break
                    fut.set_exception(expire(key))
                queue.popleft()
            if not queue:
                empty.append(timeout)
        for timeout in empty:
            del self._queues[timeout]

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())
