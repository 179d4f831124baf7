"""LeaderLease: when a leader may answer a read from its lease, without a quorum round.

Rule: a lease rests on one broadcast round of the current lease epoch that a quorum
acknowledged; it starts when that round *started* (before any of its messages existed) and
lasts ``(E - 1) × tick_interval × (1 - lease_clock_drift)`` seconds, both ends read on the
driver's one clock. It is dropped, never carried, across an epoch change (role, term,
configuration, a leadership transfer: ``RaftCore.lease_epoch``).

Why that is safe (Raft dissertation §6.4.1, made exact for this code). Let E be the election
timeout in ticks (``RaftCore.election_ticks``), τ the tick interval, ρ the drift bound, and
suppose every node's clock runs at a rate within a factor (1 - ρ) of every other's.

1. *A follower's promise.* A follower F that accepts an AppendEntries (or a snapshot chunk) of
   leader L sets ``promise_until`` to E ticks from now before its answer leaves. Until then F
   refuses every vote and pre-vote of a higher term that is not a transfer request
   (``_in_lease``) — whatever it learns meanwhile: a late response carrying a higher term makes
   it forget L, not the promise. The driver's ticker ticks only when F's clock has advanced by
   at least τ since the previous tick, and the first tick after the receipt comes after it, so
   F keeps the promise for more than (E - 1)·τ of F's clock from the moment it received the
   message. A restart does not break it: a node that had a term when it started refuses votes
   for its first E ticks (``RaftCore.quiet_ticks``), and it started after anything it had
   acked. (A node with no term acknowledged nobody. One whose disk was wiped has forgotten its
   votes too, which breaks election safety itself: it must rejoin as a new member.)
2. *When the promises began.* The driver notes its clock *before* the core hands out the Ready
   that opens a round r (``round_started``); every message tagged r is created later, so any
   follower received it at a real time no earlier than that reading, s_r.
3. *What the leader assumes.* Once a quorum Q acknowledged round r, L takes the lease until
   s_r + D on its own clock, D = (1 - ρ)·(E - 1)·τ. In real time that is at most D / (1 - ρ) =
   (E - 1)·τ of a follower's clock after s_r, which every member of Q still promises.
4. *Why no other leader can act meanwhile.* A new leader needs the votes of a quorum, which
   meets Q in a member that refuses until its promise ends — unless the request carries the
   transfer flag, which only L itself causes: L takes no lease in the rest of a term in which it
   started a transfer (a TimeoutNow delayed in the network may reach its target after an abort).
   So until the lease ends, no leader of a later term exists, and no write L has not seen can
   be committed; the value at L's commit index is current.
5. *What bounds the rest.* The round must belong to the current configuration (a quorum of an
   older one may not meet every quorum of the new one after several changes) and check-quorum
   must be on (without it followers give no promise); the leader must have committed an entry
   of its term (its commit index is then as new as any acknowledged write). All three are the
   core's ``lease_allowed``/``lease_round``; a lease read that finds none falls back to ReadIndex.

Nothing here waits for the disk: the time that counts is when the round's heartbeats could
first be received, not when the Ready carrying them was persisted (timing it from the persist
would push the start of the lease — and so its end — late by the length of a slow fsync).
"""

from __future__ import annotations

from raftcache.raft.config import RaftConfig
from raftcache.raft.ready import Ready


def lease_duration(config: RaftConfig, election_ticks: int) -> float:
    """D = (1 - ρ)·(E - 1)·τ seconds of the leader's clock (see the module rule)."""
    return (1.0 - config.lease_clock_drift) * max(0, election_ticks - 1) * config.tick_interval


class LeaderLease:
    """The lease of one leader incarnation, on the driver's clock."""

    __slots__ = ("_epoch", "_started", "_until", "duration")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        #: Round → the clock reading taken before the Ready that opened it was made.
        self._started: dict[int, float] = {}
        self._epoch = -1
        self._until = 0.0

    def observe(self, rd: Ready, started_before: float) -> None:
        """A leader's Ready was just handed out; ``started_before`` was read before it was made."""
        self._started.setdefault(rd.round, started_before)
        if rd.lease_epoch != self._epoch:
            self._epoch = rd.lease_epoch
            self._until = 0.0
        if rd.lease_round:
            start = self._started.get(rd.lease_round)
            if start is not None:
                self._until = max(self._until, start + self.duration)
        # Rounds older than the newest a quorum acknowledged can never ground a lease again.
        floor = max(rd.lease_round, rd.confirmed_round)
        if floor and len(self._started) > 1:
            for r in [r for r in self._started if r < floor]:
                del self._started[r]

    def clear(self) -> None:
        """Not the leader (any more): nothing learnt so far may ground a lease."""
        self._started.clear()
        self._until = 0.0
        self._epoch = -1

    def valid(self, now: float, epoch: int) -> bool:
        """Whether a read may be served from the lease at ``now`` in the core's ``epoch``."""
        return epoch == self._epoch and now < self._until

    @property
    def until(self) -> float:
        return self._until
