"""Measure, from outside, how fast a node's monotonic clock runs.

Rule: the node's own timers are the instrument. A watch stream on a prefix nobody writes gets
one keep-alive comment every ``--watch-heartbeat`` seconds *of the node's event-loop clock*
(its monotonic clock, the one Raft's election timers and leases run on); the harness stamps
each arrival with its real clock. ``n`` keep-alives over a real span ``T`` mean the node counted
``(n - 1) * heartbeat_s`` seconds while ``T`` really passed: its clock rate. Scheduling delays
only lengthen periods, so on a loaded machine the estimate errs low by a percent or so (each
period also pays one loop wake-up); compare against a node that is not drifting.

It proves a drift reached the node's monotonic clock — the fault's real effect — not merely
that a control file was written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp

__all__ = ["KeepAliveProbe", "rate_of"]

#: A prefix no workload writes: the stream carries keep-alives only.
PROBE_PREFIX = "harness-clock-probe/"


def rate_of(arrivals: list[float], heartbeat_s: float) -> float | None:
    """The node's clock rate from keep-alive arrival times (real seconds); None with fewer
    than three arrivals."""
    if len(arrivals) < 3 or arrivals[-1] <= arrivals[0]:
        return None
    return heartbeat_s * (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


class KeepAliveProbe:
    """Records the keep-alives of one watch stream until stopped.

    Args:
        url: The node's client URL.
        heartbeat_s: The node's ``--watch-heartbeat``.
        clock: The harness's real clock.
    """

    def __init__(self, url: str, heartbeat_s: float, clock: Callable[[], float]) -> None:
        self.url = url
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self.arrivals: list[float] = []
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.heartbeat_s * 20 + 5)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as http,
                http.get(f"{self.url}/v1/watch", params={"prefix": PROBE_PREFIX}) as resp,
            ):
                if resp.status != 200:
                    self.error = f"HTTP {resp.status}"
                    return
                async for line in resp.content:
                    if line.startswith(b":"):
                        self.arrivals.append(self._clock())
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    async def stop(self) -> float | None:
        """End the stream; the measured rate (None: too few keep-alives)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return rate_of(self.arrivals, self.heartbeat_s)
