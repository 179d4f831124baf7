"""RaftCore: the pure Raft consensus state machine — no asyncio, no sockets, no clock, no disk.

Theory of operation (modelled on etcd-io/raft's RawNode/Ready, adapted to request/response RPCs):
- Inputs: ``tick()`` (logical time), inbound requests (``handle_*`` return the response the
  driver sends back *after* persisting), responses to our own requests (``step_response`` /
  ``step_failure``), and local intents (``propose``, ``request_read``, ``transfer_leadership``,
  ``propose_config``, ``snapshot_taken``).
- Output: ``ready()`` gathers what to persist, send, apply and which reads are confirmed; the
  driver persists first, then calls ``advance(ready)``.

Safety rules enforced here: one vote per term (persisted before it is answered — the driver's
job), the election restriction (§5.4.1), log matching on every append, commit only of
current-term entries by counting (§5.4.2, Figure 8), configuration taking effect on append and
one change at a time (dissertation §4.1), pre-vote and check-quorum leases (§9.6), ReadIndex
only after the leader committed an entry of its term (§6.4).

The state lives in ``raft/core_state.py``; each concern is a mixin in its own module:
``core_election`` (timers, votes), ``core_follower`` (AppendEntries in), ``core_replication``
(proposals, AppendEntries out, commit, transfer), ``core_reads`` (ReadIndex), ``core_snapshot``
(compaction, InstallSnapshot in). This module composes them and owns the Ready hand-off.
"""

from __future__ import annotations

from raftcache.raft.core_election import ElectionMixin
from raftcache.raft.core_follower import FollowerMixin
from raftcache.raft.core_reads import ReadsMixin
from raftcache.raft.core_replication import ReplicationMixin
from raftcache.raft.core_snapshot import SnapshotMixin
from raftcache.raft.core_state import CoreState, Role
from raftcache.raft.progress import Progress, ProgressState
from raftcache.raft.ready import Ready

__all__ = ["RaftCore", "Role"]


class RaftCore(
    ElectionMixin, FollowerMixin, ReplicationMixin, ReadsMixin, SnapshotMixin, CoreState
):
    """One node's Raft state. Not thread-safe; the driver calls it from one task at a time."""

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._hard_state_dirty
            or self.log.has_unstable()
            or self._snapshot_to_install
            or self.commit_index > self.applied
            or self._confirmed
            or self._dropped_reads
            or self._broadcast_due
            or (self.role is Role.LEADER and self._commit_update_due())
        )

    def mark_hard_state_unpersisted(self) -> None:
        """The write of the hard state handed out by ``ready()`` failed: hand it out again."""
        self._hard_state_dirty = True

    def snapshot_pending(self) -> bool:
        """A received snapshot is adopted in memory but not yet handed out for persisting."""
        return self._snapshot_to_install is not None

    def has_unpersisted(self) -> bool:
        return (
            self._hard_state_dirty
            or self.log.has_unstable()
            or self._snapshot_to_install is not None
        )

    def ready(self) -> Ready:
        rd = Ready()
        if self.role is Role.LEADER:
            self._leader_ready_broadcasts()
        if self._hard_state_dirty:
            rd.hard_state = (self.term, self.voted_for)
            self._hard_state_dirty = False
        rd.snapshot, self._snapshot_to_install = self._snapshot_to_install, None
        rd.entries = self.log.unstable()
        rd.log_mark = self.log.mark
        rd.messages, self._msgs = self._msgs, []
        hi = min(self.commit_index, self.applied + self.cfg.max_apply_batch, self.log.last_index())
        if hi > self.applied and self.applied >= self.log.snapshot_index:
            rd.committed = self.log.slice(self.applied + 1, hi, hi - self.applied, 0)
            self.applied = hi
        rd.reads, self._confirmed = self._confirmed, []
        rd.dropped_reads, self._dropped_reads = self._dropped_reads, []
        rd.round = self.round
        if self.role is Role.LEADER:
            rd.confirmed_round = self.quorum_round()
            rd.lease_round = self.lease_round(rd.confirmed_round)
        rd.lease_epoch = self.lease_epoch
        return rd

    def _leader_ready_broadcasts(self) -> None:
        if self._broadcast_due:
            self._broadcast_due = False
            self.round += 1
            for peer in self.progress:
                self._send_heartbeat(peer, self.round)
            self._advance_reads()
        for peer in self.progress:
            self._maybe_send_append(peer)
        self._send_commit_updates()

    def _commit_update_due(self) -> bool:
        return any(self._needs_commit_update(pr) for pr in self.progress.values())

    def _needs_commit_update(self, pr: Progress) -> bool:
        """An idle follower could learn a higher commit index than any we sent it. (One with
        appends in flight learns it from their answers' successor, or from here once idle.)"""
        return (
            pr.inflight == 0
            and pr.state is not ProgressState.SNAPSHOT
            and min(self.commit_index, pr.match_index) > pr.commit_sent
        )

    def _send_commit_updates(self) -> None:
        """Tell idle followers the new commit index promptly (their apply latency): at most
        one commit-only message per follower per ready cycle, and none when an append that
        left in this cycle (or earlier) already carried it. Busy followers get it for free on
        their next AppendEntries, which is why one write at a time costs 2 requests per
        follower (the entry, then the commit) and a pipelined load close to 1."""
        for peer, pr in self.progress.items():
            if self._needs_commit_update(pr):
                self._send_heartbeat(peer, self.round)

    def advance(self, rd: Ready) -> None:
        """The driver persisted ``rd``: entries are stable, our own match index may advance."""
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term, rd.log_mark)
            if self.role is Role.LEADER:
                self._maybe_commit()
