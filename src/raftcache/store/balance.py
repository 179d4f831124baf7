"""Preferred leaders: each group is led by the store its placement names first, when it can be.

Rule: a store that leads a group whose *preferred leader* (the first store of the group's
placement, spread evenly over the stores at bootstrap) is another store hands leadership over
to it, with Raft's own transfer (§3.10; safe as any transfer — a leader that started one serves
no lease read for the rest of its term, docs/safety.md), only when all of these hold:

- this store has led the group for at least ``settle_s`` (an election just happened: the
  cluster settles first);
- the preferred store is a voter, answered within the last three heartbeats, and its log
  matches the leader's last index (the transfer completes in one round, no catch-up);
- no transfer of the group was tried within its back-off, which doubles (up to
  ``max_backoff_s``) whenever leadership comes back to this store soon after a transfer — a
  preferred store that cannot keep leadership (slow, half-partitioned) is not pestered;
- no other transfer of this store is running (one at a time).

This is how a cluster of static placement spreads write load over its stores: an election
picks leaders at random, so without it one store may lead every group. With the meta group
(docs/sharding.md, step 5) the placement driver balances leaders the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raftcache.network.groups import store_of
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.store.store import Store

log = logging.getLogger("raftcache.store")


@dataclass(slots=True)
class _GroupState:
    led_since: float | None = None
    next_try: float = 0.0
    backoff_s: float = 0.0
    transferred_at: float | None = None


def replica_on(node: RaftNode, store: str) -> str | None:
    """The voter of ``node``'s group held by ``store`` (a replica id names its store)."""
    core = node.core
    if core is None:
        return None
    return next((v for v in core.configuration.voters if store_of(v) == store), None)


def ready_to_take_over(node: RaftNode, target: str, *, target_store_up: bool = True) -> bool:
    """Whether ``target`` (a replica id) is a live voter of ``node``'s group with the
    leader's whole log (``target_store_up``: whether its store answers this store's liveness
    pings, which is all a quiet group can go by)."""
    core = node.core
    if core is None or node.role is not Role.LEADER or target not in core.configuration.voters:
        return False
    if not target_store_up:
        return False
    if core.quiesced:
        # A quiet leader went quiet only once every peer held its whole log, and has sent
        # nothing since: the target holds it still, and its store answers pings.
        return True
    progress = core.progress.get(target)
    if progress is None or progress.last_heard is None:
        return False
    # Real answers, never ``last_active``: a woken leader grants that to every peer.
    alive = progress.last_heard > core.ticks - 3 * core.heartbeat_ticks
    return alive and progress.match_index >= core.log.last_index()


class PreferredLeaders:
    """The background task of one store (see the module docstring).

    Args:
        store: the store whose groups it watches.
        clock: monotonic seconds.
        interval_s: how often the groups are looked at.
        settle_s: how long a store leads a group before handing it over.
        backoff_s: first wait after a transfer whose group came back; doubles up to
            ``max_backoff_s``.
        around: wraps each transfer (the store server holds client requests meanwhile, as
            during a shutdown hand-over, so they are served by the new leader, not refused).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float],
        interval_s: float = 1.0,
        settle_s: float = 5.0,
        backoff_s: float = 10.0,
        max_backoff_s: float = 300.0,
        around: Callable[[Awaitable[str]], Awaitable[str]] | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._first_backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._around = around
        #: Per hosted group; made when a group is first seen here, dropped when it leaves.
        self._groups: dict[str, _GroupState] = {}
        self._task: asyncio.Task[None] | None = None
        #: Transfers started, and those that ended with the preferred store leading.
        self.transfers_total = 0
        self.transfers_done = 0

    def preferred(self, gid: str) -> str:
        return self._store.placement[gid][0]

    def _store_up(self, store: str) -> bool:
        liveness = self._store.liveness
        return liveness is None or store not in liveness.down()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="preferred-leaders")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let balancing take the store down
                log.exception("preferred-leader check failed")

    def due(self) -> list[tuple[str, str]]:
        """(group, the preferred store's replica) of the groups to hand over now, updating
        the timers."""
        now = self._clock()
        due: list[tuple[str, str]] = []
        hosted = self._store.replicas
        for gone in [g for g in self._groups if g not in hosted]:
            del self._groups[gone]  # its replica left this store
        for gid, replica in list(hosted.items()):
            state = self._groups.setdefault(gid, _GroupState())
            node = replica.node
            if node.role is not Role.LEADER:
                state.led_since = None
                continue
            if state.led_since is None:
                state.led_since = now
                if state.transferred_at is not None and now - state.transferred_at < 3 * max(
                    self._settle_s, self._interval_s
                ):
                    # It came back soon after we handed it over: back off, doubling.
                    state.backoff_s = min(
                        self._max_backoff_s, max(self._first_backoff_s, 2 * state.backoff_s)
                    )
                    state.next_try = now + state.backoff_s
            preferred = self.preferred(gid)
            target = replica_on(node, preferred)
            if (
                target is not None
                and preferred != self._store.store_id
                and now - state.led_since >= self._settle_s
                and now >= state.next_try
                and ready_to_take_over(node, target, target_store_up=self._store_up(preferred))
            ):
                due.append((gid, target))
        return due

    async def step(self) -> None:
        """Hand over at most one group (the first due)."""
        due = self.due()
        if not due:
            return
        gid, target = due[0]
        state = self._groups[gid]
        replica = self._store.replicas.get(gid)
        if replica is None:
            return
        node = replica.node
        state.transferred_at = self._clock()
        state.next_try = state.transferred_at + max(self._settle_s, self._first_backoff_s)
        self.transfers_total += 1
        log.info("handing group to its preferred leader", extra={"group": gid, "to": target})
        transfer = node.transfer_leadership(target)
        try:
            leader = await (self._around(transfer) if self._around else transfer)
        except Exception as exc:  # TimeoutError, NotLeaderError...: try again after back-off
            log.info(
                "preferred-leader transfer failed",
                extra={"group": gid, "to": target, "reason": repr(exc)},
            )
            return
        if leader == target:
            self.transfers_done += 1
