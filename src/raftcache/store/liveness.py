"""``StoreLiveness``: whether each peer store answers, so that quiet groups wake when one fails.

Rule: a quiesced group sends nothing (``RaftCore``, quiescence), so a quiet follower cannot
see its leader fail, nor a quiet leader its followers. The store does it for all of them at
once: every ``interval`` it pings each store it shares a group with — one request per peer
store on the shared transport, whatever the number of groups. When a peer store

- stopped answering for ``down_after`` (crashed, paused, cut off; or this store is the one
  cut off, and every peer looks down) — checked again every round while it stays silent, or
- answered as another process than before (restarted faster than ``down_after``), or
- answered with a new health epoch: one of its leader replicas stalled (a ready loop stuck in
  an await for ``down_after``: it sends nothing, and its quiet followers would never know),

it wakes the quiet leaders with a replica there (they must learn who answers) and the quiet
followers led from there, each with its election timer advanced by the time the store has
been silent: it has not heard its leader for at least that long. That is safe: the promise
a follower made to a leader's lease is kept by the core's own deadline (``promise_until``),
not by the timer. A quiet follower led from elsewhere stays quiet: its leader's store speaks
for it (waking it would make it campaign against a leader that is fine). A peer of an older
release, which answers the ping "no such group", is up. A replica that fails stop takes its
process down (``StoreServer.wait_failed``); one whose ready loop hangs without failing is
reported through the health epoch (which group is not said: every quiet group sharing the
store wakes, and only those led from a stalled replica elect).

A ping is an AppendEntries of term 0 to the reserved group ``LIVENESS_GROUP``, which the
receiving store's ``GroupRouter`` answers itself with its process incarnation in ``term``: no
Raft replica sees it, and every transport, fault injector and TLS setting applies to it as to
the groups' own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raftcache.network.groups import LIVENESS_GROUP, store_of
from raftcache.network.interface import NetworkInterface
from raftcache.protocol.messages import AppendEntriesRequest
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode

__all__ = ["StoreLiveness"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Peer:
    """What this store knows of one peer store's answers."""

    last_ok: float
    incarnation: int | None = None
    health: int | None = None
    down: bool = False
    pinging: bool = False


class StoreLiveness:
    """Pings peer stores and wakes the quiet replicas that share a group with a failed one.

    Args:
        store_id: This store's id (the pings' sender).
        network: The store's shared transport.
        nodes: The Raft nodes of every replica this store hosts, asked again each round (the
            set changes as replicas move).
        interval: Seconds between two pings of one peer store.
        down_after: Seconds without an answer after which a peer store counts as down.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        store_id: str,
        network: NetworkInterface,
        nodes: Callable[[], Iterable[RaftNode]],
        *,
        interval: float,
        down_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < interval < down_after:
            raise ValueError("need 0 < interval < down_after")
        self.store_id = store_id
        self.network = network
        self._nodes = nodes
        self.interval = interval
        self.down_after = down_after
        self._clock = clock
        self._peers: dict[str, _Peer] = {}
        self._task: asyncio.Task[None] | None = None
        self._pings: set[asyncio.Task[None]] = set()
        #: Wake-ups done (a peer store found down or restarted), for status and tests.
        self.wakeups = 0
        #: Bumped when one more of this store's replicas is found stalled: answered to pings
        #: (``GroupRouter.health``), so the peers wake the quiet groups it leads or follows.
        self.health_epoch = 0
        self._stalled = 0

    def peer_stores(self) -> set[str]:
        """The stores holding a replica of a group this store hosts (itself excluded)."""
        stores: set[str] = set()
        for node in self._nodes():
            for member in (*node.members, *node.learners):
                stores.add(store_of(member))
        stores.discard(self.store_id)
        return stores

    def down(self) -> list[str]:
        """The peer stores counted as down now, sorted."""
        return sorted(s for s, p in self._peers.items() if p.down)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"liveness-{self.store_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        tasks = [*self._pings, *([task] if task is not None else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._pings.clear()

    async def _run(self) -> None:
        while True:
            try:
                self.round()
            except Exception:  # never let one bad round end the pings: quiet groups need them
                log.exception("liveness round failed on %s", self.store_id)
            await asyncio.sleep(self.interval)

    def round(self) -> None:
        """Send the pings due and judge the peers that stopped answering."""
        now = self._clock()
        # Leaders only: a stalled follower costs its group nothing (a follower installing a
        # big snapshot is busy that long by right), a stalled leader costs it everything.
        stalled = sum(
            1 for node in self._nodes() if node.stalled_for(leading=True) >= self.down_after
        )
        if stalled > self._stalled:
            self.health_epoch += 1
            log.warning(
                "%d replica(s) of store %s stalled for %.1f s: asking its peers to wake "
                "their groups",
                stalled,
                self.store_id,
                self.down_after,
            )
        self._stalled = stalled
        stores = self.peer_stores()
        for gone in set(self._peers) - stores:
            del self._peers[gone]
        for store in stores:
            peer = self._peers.get(store)
            if peer is None:
                # A new peer counts as answering from now: nothing proves it failed yet.
                peer = self._peers[store] = _Peer(last_ok=now)
            if now - peer.last_ok >= self.down_after:
                if not peer.down:
                    peer.down = True
                    self.wakeups += 1
                    log.info(
                        "peer store %s has not answered for %.1f s: waking the quiet groups "
                        "it shares with %s",
                        store,
                        now - peer.last_ok,
                        self.store_id,
                    )
                # Every round while it is down, not only once: a group may go quiet again
                # (its leader elsewhere still hears everyone) and must not stay so.
                self._wake(store, now - peer.last_ok)
            if not peer.pinging:
                peer.pinging = True
                task = asyncio.create_task(self._ping(store, peer))
                self._pings.add(task)
                task.add_done_callback(self._pings.discard)

    async def _ping(self, store: str, peer: _Peer) -> None:
        req = AppendEntriesRequest(0, self.store_id, 0, 0, to=store, group=LIVENESS_GROUP)
        incarnation: int | None
        health: int | None
        try:
            async with asyncio.timeout(self.down_after):
                resp = await self.network.send_append_entries(store, req)
            incarnation, health = resp.term, resp.match_index
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure is "no answer"; the judging is in round()
            if getattr(exc, "kind", None) != "group_not_hosted":
                log.debug("liveness ping of %s failed: %r", store, exc)
                return
            incarnation = health = None  # a release without pings answered: it is up
        finally:
            peer.pinging = False
        now = self._clock()
        restarted = None not in (peer.incarnation, incarnation) and incarnation != peer.incarnation
        sick = not restarted and None not in (peer.health, health) and health != peer.health
        silent = now - peer.last_ok
        peer.incarnation, peer.health = incarnation, health
        peer.last_ok = now
        if peer.down:
            peer.down = False
            log.info("peer store %s answers again after %.1f s", store, silent)
        elif restarted or sick:
            self.wakeups += 1
            log.info(
                "peer store %s %s: waking the quiet groups it shares",
                store,
                "restarted" if restarted else "reports a stalled replica",
            )
            self._wake(store, self.down_after)

    def _wake(self, store: str, silent_for: float) -> None:
        """Wake the quiet replicas that ``store`` concerns: a leader with any replica there (it
        must see who answers), a follower led from there, its timer advanced by
        ``silent_for`` (it heard nothing from its leader that long). A follower led from
        elsewhere stays quiet: its leader, woken by its own store, speaks for it."""
        for node in list(self._nodes()):
            if not node.quiesced:
                continue
            if node.role is Role.LEADER:
                if any(store_of(m) == store for m in (*node.members, *node.learners)):
                    node.wake()
                continue
            leader = node.leader_id
            if leader is None or store_of(leader) == store:
                node.wake(silent_for)
