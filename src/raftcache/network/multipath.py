"""Load balancing across several transports to the same peers, with failover.

Rule: every path is a full ``NetworkInterface`` of this node (say two ``HttpNetwork``s bound to
different interfaces, or two ``InMemoryNetwork``s on two hubs). For each call:

- *Choice*: paths are ranked healthy first, then by fewest calls in flight (over all peers),
  ties rotating so that idle paths share the load.
- *Pinning*: AppendEntries to a peer go to that peer's *pinned* path while it stays healthy, so
  pipelined AppendEntries are not spread over paths of different latency, where later ones would
  overtake earlier ones and the follower would reject them (a needless re-probe for Raft). The
  pin is set to the best healthy path when there is none, and moves only when its path fails.
  RequestVote and InstallSnapshot are balanced call by call (``pin_append_entries=False``
  balances AppendEntries too).
- *Failover*: a transient error (or ``attempt_timeout`` running out) marks that path unhealthy
  for that peer for ``unhealthy_for`` seconds and the same request is sent on the next path;
  each path is tried at most once per call, then the last error is raised. Raft's RPCs are
  idempotent, so a request that did arrive before its reply was lost may safely arrive twice.
  A permanent error is raised at once (the peer answered: another path would hear the same).
  A success marks the path healthy again; an unhealthy path is tried again, last, after
  ``unhealthy_for``.

Inbound: the node's handlers are registered on every path, so peers may use any of them.
``set_peer_address`` is forwarded to every path (paths that reach a peer at different addresses
are configured with their own ``node_addresses``, and the forwarded one only fits paths whose
peers share it: pass ``forward_addresses=False`` to keep paths' addresses as configured).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftcache.network.errors import NetworkError, NetworkTimeoutError
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.wrapper import Clock, NetworkWrapper, loop_clock

__all__ = ["MultiPathNetwork", "PathStats"]

_SEND = {
    "RequestVote": "send_request_vote",
    "AppendEntries": "send_append_entries",
    "InstallSnapshot": "send_install_snapshot",
}


@dataclass(slots=True)
class PathStats:
    """What one path did: calls started on it, transient failures, calls it took over."""

    in_flight: int = 0
    calls: int = 0
    failures: int = 0
    failovers: int = 0


class MultiPathNetwork(NetworkWrapper):
    """Spreads RPCs over ``paths`` (see the module rule).

    Args:
        paths: two or more transports of this node (same ``node_id``).
        pin_append_entries: keep each peer's AppendEntries on one path while it is healthy.
        unhealthy_for: seconds a path that failed towards a peer is tried last for that peer.
        attempt_timeout: seconds one path gets before the call fails over (None: no limit of
            its own; set it below the caller's deadline so that a hung path fails over).
        forward_addresses: forward ``set_peer_address`` to every path.
        clock: monotonic seconds (default: the running loop's time).
    """

    def __init__(
        self,
        paths: Sequence[NetworkInterface],
        *,
        pin_append_entries: bool = True,
        unhealthy_for: float = 1.0,
        attempt_timeout: float | None = None,
        forward_addresses: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if len(paths) < 1:
            raise ValueError("MultiPathNetwork needs at least one path")
        if len({p.node_id for p in paths}) != 1:
            raise ValueError("every path must belong to the same node_id")
        if unhealthy_for < 0 or (attempt_timeout is not None and attempt_timeout <= 0):
            raise ValueError("unhealthy_for must be >= 0 and attempt_timeout > 0")
        super().__init__(paths[0])
        self.paths = list(paths)
        self.pin_append_entries = pin_append_entries
        self.unhealthy_for = unhealthy_for
        self.attempt_timeout = attempt_timeout
        self.forward_addresses = forward_addresses
        self._clock = clock or loop_clock
        self.path_stats = [PathStats() for _ in self.paths]
        self._failed_at: dict[tuple[int, str], float] = {}
        self._pinned: dict[str, int] = {}
        self._rotation = 0

    # -- lifecycle: every path ------------------------------------------------------------------

    def register_handlers(self, handlers: RpcHandlers) -> None:
        for path in self.paths:
            path.register_handlers(handlers)

    async def start(self) -> None:
        for path in self.paths:
            await path.start()

    async def stop(self) -> None:
        results = await asyncio.gather(*(p.stop() for p in self.paths), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        if self.forward_addresses:
            for path in self.paths:
                path.set_peer_address(node_id, address)

    # -- choice ---------------------------------------------------------------------------------

    def healthy(self, path: int, peer: str) -> bool:
        """Whether ``path`` has not failed towards ``peer`` within ``unhealthy_for``."""
        failed = self._failed_at.get((path, peer))
        return failed is None or self._clock() - failed >= self.unhealthy_for

    def pinned(self, peer: str) -> int | None:
        """The index of the path pinned for AppendEntries to ``peer``, if any."""
        return self._pinned.get(peer)

    def _order(self, rpc: str, peer: str) -> list[int]:
        n = len(self.paths)
        healthy = [self.healthy(i, peer) for i in range(n)]
        rotation = self._rotation
        self._rotation = (rotation + 1) % n
        order = sorted(
            range(n),
            key=lambda i: (not healthy[i], self.path_stats[i].in_flight, (i - rotation) % n),
        )
        if rpc == "AppendEntries" and self.pin_append_entries:
            pin = self._pinned.get(peer)
            if pin is None or not healthy[pin]:
                pin = self._pinned[peer] = order[0]
            order.remove(pin)
            order.insert(0, pin)
        return order

    # -- calls ----------------------------------------------------------------------------------

    async def _call(self, rpc: str, send: Any, target: str, req: Any) -> Any:
        del send  # the wrapper's default sender is the first path's; we pick our own
        last_error: NetworkError | None = None
        for attempt, index in enumerate(self._order(rpc, target)):
            stats = self.path_stats[index]
            stats.calls += 1
            stats.failovers += attempt > 0
            stats.in_flight += 1
            try:
                response = await self._attempt(index, rpc, target, req)
            except NetworkError as exc:
                if exc.permanent:
                    raise
                stats.failures += 1
                self._failed_at[(index, target)] = self._clock()
                if self._pinned.get(target) == index:
                    del self._pinned[target]  # the next AppendEntries picks a healthy path
                last_error = exc
                continue
            finally:
                stats.in_flight -= 1
            self._failed_at.pop((index, target), None)
            if rpc == "AppendEntries" and self.pin_append_entries:
                self._pinned[target] = index  # the pin follows the path that works
            return response
        assert last_error is not None  # every path was tried and failed transiently
        raise last_error

    async def _attempt(self, index: int, rpc: str, target: str, req: Any) -> Any:
        send = getattr(self.paths[index], _SEND[rpc])
        if self.attempt_timeout is None:
            return await send(target, req)
        deadline = asyncio.timeout(self.attempt_timeout)
        try:
            async with deadline:
                return await send(target, req)
        except TimeoutError:
            if not deadline.expired():
                raise
            raise NetworkTimeoutError(
                f"{rpc} to {target} on path {index} timed out after {self.attempt_timeout:g}s"
            ) from None

    def snapshot(self) -> dict[str, Any]:
        """Per-path counters, health and pins, JSON-ready (for ``/v1/stats``)."""
        return {
            "paths": [
                {
                    "in_flight": s.in_flight,
                    "calls": s.calls,
                    "failures": s.failures,
                    "failovers": s.failovers,
                }
                for s in self.path_stats
            ],
            "pinned": dict(sorted(self._pinned.items())),
        }
