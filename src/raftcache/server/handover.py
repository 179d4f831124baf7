"""Leadership hand-over before a leader stops (SIGTERM), so clients barely notice it leave.

Rule: a stopping leader first hands leadership to the most up-to-date follower that is alive
(it answered within the last few heartbeats), with Raft's own transfer (§3.10: the leader stops
appending, brings the target's log up to its own, then sends it TimeoutNow, and the target
campaigns at once, without waiting for an election timeout — the term grows by exactly one).
The hand-over is bounded (``timeout_s``); if no follower can take over, or it takes too long,
the node stops anyway and the others elect a leader as after a crash. It is given up early,
not waited out, once it cannot complete (``_transfer``): when every node stops at once, the
chosen follower is stopping too and declines or vanishes. While it still leads, the node then
tries the next live follower (``_transfer_to_any``): when two nodes stop at once, the one chosen
first may decline while the other can take over. Either way safety is Raft's: nothing
acknowledged is lost.

While the transfer runs, the leader refuses proposals (``ProposalDroppedError``: certainly not
appended). A client would see a 503 and — honouring ``Retry-After`` — wait a second. Instead,
``handover_middleware`` holds such a request until the hand-over ends and then raises
``NotLeaderError``, so the forwarding middleware sends it on to the new leader (or, if the
transfer failed and this node still leads, serves it here). The listener stays open meanwhile:
a client that knew this node as the leader is served through it instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any, Final

from aiohttp import web

from raftcache.raft.errors import NotLeaderError, ProposalDroppedError
from raftcache.server.forwarding import Handler

log = logging.getLogger("raftcache.server")


class Handover:
    """Whether a shutdown hand-over is in progress; requests wait on it."""

    def __init__(self) -> None:
        self.in_progress = False
        self._done = asyncio.Event()
        self._done.set()

    def begin(self) -> None:
        self.in_progress = True
        self._done.clear()

    def end(self) -> None:
        self.in_progress = False
        self._done.set()

    async def wait(self) -> None:
        await self._done.wait()


HANDOVER: Final = web.AppKey("raftcache.server.handover", Handover)


@web.middleware
async def handover_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Innermost (inside ``forwarding``): a proposal dropped because of the hand-over waits for
    it to end, then goes to whoever leads (``NotLeaderError`` is the forwarder's cue)."""
    try:
        return await handler(request)
    except ProposalDroppedError:
        handover = request.config_dict.get(HANDOVER)
        if handover is None or not handover.in_progress:
            raise
        await handover.wait()  # bounded: the hand-over has its own timeout
        # Nothing was appended, so the request may go to the new leader (the forwarder asks
        # the node who leads now; if the transfer failed, that is still this node).
        raise NotLeaderError(None) from None


def pick_successor(node: Any, exclude: Collection[str] = ()) -> str | None:
    """The voter (not this node, nor one in ``exclude``) with the longest log among those that
    answered recently; None when there is none (a single node, or all others silent).

    "Recently" is within three heartbeat intervals when any follower qualifies (a follower
    answers every heartbeat, so one that just died drops out at once), else within an election
    timeout (a follower slowed down by load).
    """
    core = node.core
    voters = [
        (peer, pr)
        for peer, pr in core.progress.items()
        if peer != node.node_id and peer in core.configuration.voters and peer not in exclude
    ]
    for window in (3 * core.heartbeat_ticks, core.election_ticks):
        horizon = core.ticks - window
        # Real answers (``last_heard``), never ``last_active``: a woken leader grants every
        # peer a fresh ``last_active`` without having heard from any.
        live = [
            (pr.match_index, peer)
            for peer, pr in voters
            if pr.last_heard is not None and pr.last_heard > horizon
        ]
        if live:
            return str(max(live)[1])
    return None


def _answered_recently(node: Any, peer: str) -> bool:
    core = node.core
    progress = core.progress.get(peer)
    return (
        progress is not None
        and progress.last_heard is not None
        and progress.last_heard > core.ticks - 3 * core.heartbeat_ticks
    )


async def _transfer(node: Any, target: str) -> str:
    """``node.transfer_leadership(target)``, given up as soon as it can no longer complete
    rather than at the bound — which matters when every node stops at once (the target is
    stopping too):

    - while this node leads: the target fell silent (a follower that stopped a moment ago
      still looks alive when it is chosen), or the core gave the transfer up — at once when
      the target declined it (a node about to stop answers TimeoutNow with
      ``transfer_declined``, ``RaftNode.prepare_to_stop``), else after an election timeout;
    - once it stepped down (the target campaigned): another leader is known — done, whoever it
      is — or none is for three heartbeat intervals. A live target that got this node's vote
      wins within a round trip; one that stopped right after campaigning never will.

    Giving up early is harmless: the transfer is only an optimisation, and an election the
    target started goes on without us.
    """
    transfer = asyncio.ensure_future(node.transfer_leadership(target))
    loop = asyncio.get_running_loop()
    interval = float(getattr(node.config, "heartbeat_interval", 0.1))
    leaderless_since: float | None = None
    try:
        while True:
            # Looked at five times a heartbeat: a decline arrives within a round trip.
            done, _ = await asyncio.wait({transfer}, timeout=interval / 5)
            if done:
                return str(transfer.result())
            if node.role.value == "leader":
                if not _answered_recently(node, target):
                    raise TimeoutError(f"{target} stopped answering")
                if getattr(node.core, "lead_transferee", None) is None:
                    raise TimeoutError(f"{target} declined (it is stopping) or did not take over")
            elif node.leader_id is not None:
                return str(node.leader_id)
            elif leaderless_since is None:
                leaderless_since = loop.time()
            elif loop.time() - leaderless_since >= 3 * interval:
                raise TimeoutError(f"no leader since stepping down: {target} did not win")
    finally:
        transfer.cancel()


async def _transfer_to_any(node: Any, target: str) -> str:
    """``_transfer`` to ``target``, then — while this node still leads — to the next live
    follower, until one takes over or none is left: when two nodes stop at once, the follower
    chosen first may be stopping too (it declines), while another one could take over."""
    tried: list[str] = []
    while True:
        try:
            return await _transfer(node, target)
        except Exception as exc:
            tried.append(target)
            following = None
            if getattr(getattr(node, "role", None), "value", None) == "leader":
                following = pick_successor(node, exclude=tried)
            if following is None:
                raise
            log.info(
                "leadership transfer failed; trying another follower",
                extra={"to": target, "next": following, "reason": repr(exc)},
            )
            target = following


async def hand_over(node: Any, handover: Handover, timeout_s: float) -> str | None:
    """Transfer leadership away from ``node`` if it leads; the new leader's id, or None when
    there was nothing to do or it failed (logged; the caller stops anyway)."""
    if getattr(getattr(node, "role", None), "value", None) != "leader":
        return None
    if getattr(node, "quiesced", False):
        # A quiet leader heard nobody lately: one round first, to know who answers now.
        with contextlib.suppress(Exception):
            await node.read_index(min(timeout_s, 1.0))
    target = pick_successor(node)
    if target is None:
        log.warning("no live follower to hand leadership to; stopping without a transfer")
        return None
    loop = asyncio.get_running_loop()
    started, term = loop.time(), node.current_term
    log.info("handing leadership over", extra={"to": target, "term": term})
    handover.begin()
    try:
        async with asyncio.timeout(timeout_s):
            leader = await _transfer_to_any(node, target)
    except Exception as exc:  # TimeoutError, NotLeaderError, MembershipChangeError...
        log.warning(
            "leadership transfer failed; stopping without it",
            extra={"to": target, "reason": repr(exc)},
        )
        # Still leading: accept proposals again now (the core would refuse them for up to an
        # election timeout more), so held requests are served here.
        node.abort_transfer()
        return None
    finally:
        handover.end()
    log.info(
        "leadership transferred",
        extra={
            "to": leader,
            "term": node.current_term,
            "previous_term": term,
            "ms": round((loop.time() - started) * 1000, 1),
        },
    )
    return leader
