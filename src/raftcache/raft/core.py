"""RaftCore: the pure Raft consensus state machine — no asyncio, no sockets, no clock, no disk.

Theory of operation (modelled on etcd-io/raft's RawNode/Ready, adapted to request/response RPCs):
- Inputs: ``tick()`` (logical time), inbound requests (``handle_*`` return the response the
  driver sends back *after* persisting), responses to our own requests (``step_response`` /
  ``step_failure``), and local intents (``propose``, ``request_read``, ``transfer_leadership``,
  ``propose_config``, ``snapshot_taken``).
- Output: ``ready()`` gathers what to persist, send, apply and which reads are confirmed; the
  driver persists first, then calls ``advance(ready)``.

One class, in sections by concern, as etcd's ``raft.go``; what is separate and testable alone is
a collaborator in its own module: ``RaftLog`` (``raft/log.py``), ``Progress`` per follower
(``raft/progress.py``), the quorum arithmetic (``raft/quorum.py``), the configuration history
(``raft/confhistory.py``).

Rule: the invariants ``applied ≤ commit_index ≤ log.last_index()`` and the role transitions
(follower → candidate → leader, any role → follower; never leader → candidate, never leader
but from a candidate that won a real election) are checked where they could break, and raise
``InvariantError`` (a bug: the driver fails-stop). Per concern:
- Elections (§5.2, §9.6, §3.10): one vote per term — ``_set_term`` records it and the driver
  persists it before the answer leaves; a vote goes only to a candidate whose log is at least as
  up to date (§5.4.1); a node that heard from a live leader within an election timeout refuses
  to help depose it (check-quorum lease), unless the request is a leadership transfer; a node
  that is leaving (about to stop) ignores TimeoutNow: it would only win a leadership it then
  drops; it says so in its answer (``transfer_declined``) and its leader gives the transfer up
  at once (``abort_leadership_transfer``); a node
  that has just started refuses the same way for its first election timeout, since it may have
  acknowledged a leader's round before it went down and cannot remember it (the follower half
  of the lease argument in ``raft/lease.py``). A leader steps down one election timeout after it
  last heard from a quorum.
- AppendEntries in (§5.3): log matching on every append — an entry is accepted only after the
  one before it matches the leader's (``prev_log_index``/``prev_log_term``); a conflicting
  suffix is truncated, never a committed entry; the commit index learnt from the leader is
  capped by what this request proved we hold.
- Replication out (§5.3–5.4): a leader commits only an entry of its own term by counting
  replicas (§5.4.2, Figure 8), and counts itself only for what its own disk holds
  (``log.stable_index``); one configuration change at a time, taking effect on append
  (dissertation §4.1); per follower, pipelining is bounded by ``Progress`` (probe, replicate,
  snapshot) and ``max_inflight``.
- Reads (§6.4): a read is confirmed at the commit index current when it was asked, once a
  quorum has acknowledged a broadcast round started after it; a leader serves none before it
  committed an entry of its own term (reads asked earlier wait for that commit). A lease (timed
  by the driver, argued in ``raft/lease.py``) rests only on a round of the current term and
  configuration, only with check-quorum on, and never once this leader started a leadership
  transfer in its term.
- Quiescence (``cfg.quiesce``, CockroachDB's): a leader that saw no request for an election
  timeout, whose log is committed and held by every peer that answered it within one, sends
  a last round of heartbeats flagged ``quiesce`` and then stops its heartbeats and its
  check-quorum; a follower that gets one, holding exactly the leader's committed log, stops
  its election timer. Anything else — a proposal, a read, a transfer, any other message, a
  failed quiescing heartbeat, or ``wake()`` from the driver (its store saw a peer store fail)
  — wakes the node, a leader with a fresh check-quorum grace. Only timers stop: no rule of
  safety reads them, and a lease still rests only on acknowledged rounds (the quiescing round
  is one; once it is older than the lease, reads go through ReadIndex, which wakes the
  group). What a dead leader's quiesced followers need, the store's liveness of peer stores
  gives (``raftcache.store.liveness``).
- Snapshots (§7): a snapshot replaces only what it covers — entries after it survive when the
  log agrees with it at its index, otherwise the whole log goes; its configuration becomes the
  base of the configuration history; the commit index only grows. Nothing here touches the
  disk: a received snapshot is handed to the driver through ``Ready.snapshot`` (in-memory
  assembly) or installed by the driver itself first (streaming, ``snapshot_installed``).
"""

from __future__ import annotations

import random
from enum import StrEnum

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    EntryKind,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RaftResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.confhistory import ConfigHistory
from raftcache.raft.config import RaftConfig
from raftcache.raft.errors import (
    InvariantError,
    MembershipChangeError,
    NotLeaderError,
    ProposalDroppedError,
)
from raftcache.raft.log import RaftLog
from raftcache.raft.progress import Progress, ProgressState
from raftcache.raft.quorum import quorum_reached, quorum_value, vote_result
from raftcache.raft.ready import Outbound, Ready
from raftcache.storage.base import RecoveredState, SnapshotData, SnapshotMeta

__all__ = ["RaftCore", "Role"]


class Role(StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


class RaftCore:
    """One node's Raft state. Not thread-safe; the driver calls it from one task at a time."""

    def __init__(
        self,
        node_id: str,
        config: RaftConfig,
        recovered: RecoveredState,
        bootstrap: Configuration,
        rng: random.Random,
        snapshot_data: SnapshotData | None = None,
    ) -> None:
        self.id = node_id
        self.cfg = config
        self.rng = rng
        self.election_ticks = config.ticks(config.election_timeout_min)
        self.election_ticks_max = max(
            self.election_ticks + 1, config.ticks(config.election_timeout_max)
        )
        self.heartbeat_ticks = config.ticks(config.heartbeat_interval)

        snap = recovered.snapshot
        self.log = RaftLog(
            snap.last_index if snap else 0, snap.last_term if snap else 0, recovered.entries
        )
        self.snapshot_data: SnapshotData | None = snapshot_data
        #: The configurations the log holds; the newest is in force (``configuration``).
        self.configs = ConfigHistory(
            self.log.snapshot_index, snap.configuration if snap else bootstrap, recovered.entries
        )

        self.term = recovered.term
        self.voted_for = recovered.voted_for
        #: Changed only by ``become_follower`` (from any role), ``_become_pre_candidate`` and
        #: ``_become_candidate`` (never from LEADER) and ``_become_leader`` (only from a
        #: candidate of a real election): each checks where it comes from.
        self.role = Role.FOLLOWER
        self.pre_candidate = False
        self.leader_id: str | None = None
        #: The highest index known committed. Invariant: ``applied ≤ commit_index ≤
        #: log.last_index()``; it never decreases. Set only through ``_commit_to`` (and the
        #: snapshot paths, which check the invariant after compacting).
        self.commit_index = self.log.snapshot_index
        #: The highest index handed out to be applied (``Ready.committed``) or covered by an
        #: adopted snapshot. Invariant: ``applied ≤ commit_index``.
        self.applied = self.log.snapshot_index

        #: Ticks since this core was created: the clock of check-quorum's activity window.
        self.ticks = 0
        #: A node that had a term before it started may have acknowledged a leader just before
        #: it went down: it refuses votes for this many ticks (``_in_lease``). A node with no
        #: term has acknowledged nobody and owes nothing.
        self.quiet_ticks = self.election_ticks if recovered.term > 0 else 0
        #: The tick until which this node promised the leader it last accepted not to vote for
        #: anyone else (``_in_lease``). A deadline, not "leader known and timer running": a
        #: response carrying a higher term (to a stale request of ours) makes us forget the
        #: leader, but must not cancel the promise a leader's lease rests on.
        self.promise_until = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._new_timeout()
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.lead_transferee: str | None = None
        self.transfer_elapsed = 0
        #: This node is about to stop (the driver says so, ``RaftNode.prepare_to_stop``): it
        #: ignores TimeoutNow and answers ``transfer_declined``. Declining a transfer is always
        #: safe (it is an optimisation); votes, appends and election timeouts are unaffected.
        self.leaving = False
        #: Bumped whenever a lease this node holds as leader stops being trustworthy: on every
        #: change of role or term, at the start of a leadership transfer, and on every
        #: configuration change. The driver keeps a lease only for the epoch it was granted in.
        self.lease_epoch = 0
        #: Broadcast rounds below this cannot ground a lease (they started before the current
        #: term or configuration: their acknowledgements prove nothing about today's quorum).
        self.lease_floor_round = 0
        #: This leader started a leadership transfer in its term: no lease until the term ends
        #: (a delayed TimeoutNow may still make its target campaign with the transfer flag).
        self.transfer_started = False
        #: Bytes of this leader's own proposals not yet committed (flow control), kept as a
        #: running total: entries from ``_uncommitted_from`` on are counted in it.
        self.uncommitted_bytes = 0
        self._uncommitted_from = 0

        # ReadIndex state (leader only).
        self.round = 0
        self._broadcast_due = False
        #: The next broadcast round is the quiescing one (if ``_can_quiesce`` still holds).
        self._quiesce_due = False
        self._pending_reads: list[tuple[int, int, int]] = []  # (read_id, index, round needed)
        self._reads_waiting_commit: list[int] = []
        self._confirmed: list[tuple[int, int]] = []
        self._dropped_reads: list[int] = []

        # Follower: snapshot being received in chunks.
        self._incoming: tuple[int, int, bytearray] | None = None
        self._snapshot_to_install: tuple[SnapshotMeta, bytes] | None = None

        self._hard_state_dirty = False
        #: Bumped on every change of (term, vote): an answer that reports or relies on the
        #: hard state may leave once the version current when it was made is durable.
        self.hard_state_version = 0
        self._msgs: list[Outbound] = []
        #: Quiesced (see the module docstring): a leader sends no heartbeats and does not
        #: check its quorum, a follower's election timer stands still.
        self.quiesced = False
        #: The tick of this leader's last request (proposal, read, transfer) or wake-up: it
        #: quiesces only an election timeout after it.
        self.busy_tick = 0
        # Counters for statistics.
        self.elections = 0
        self.state_transitions = 0

    # ==================== state and invariants
    @property
    def configuration(self) -> Configuration:
        return self.configs.current

    @property
    def config_index(self) -> int:
        return self.configs.current_index

    def config_history(self) -> list[Configuration]:
        """Every configuration this node holds: its base (snapshot or bootstrap), then each
        configuration entry of its log, oldest first."""
        return self.configs.all()

    def config_for_snapshot(self, index: int) -> Configuration:
        """The configuration in force at ``index`` (≤ applied)."""
        return self.configs.at(index)

    def is_voter(self) -> bool:
        return self.configuration.is_voter(self.id)

    def resume_applied(self, index: int) -> None:
        """The state machine already holds the log up to ``index`` (it outlived a restart of
        its node): hand those entries out no more. Only committed entries are ever applied,
        so ``index`` is committed too."""
        if not self.log.snapshot_index <= index <= self.log.last_index():
            raise ValueError(
                f"the state machine applied up to {index} but the log holds "
                f"{self.log.snapshot_index + 1}..{self.log.last_index()}: give the node a "
                "fresh state machine"
            )
        self.applied = max(self.applied, index)
        self.commit_index = max(self.commit_index, index)
        self._check_indexes()

    def _check_indexes(self) -> None:
        """applied ≤ commit_index ≤ last index: raise if a change broke it."""
        if not self.applied <= self.commit_index <= self.log.last_index():
            raise InvariantError(
                f"{self.id}: applied {self.applied} ≤ commit {self.commit_index} ≤ last index "
                f"{self.log.last_index()} does not hold"
            )

    def _commit_to(self, index: int) -> None:
        """Raise the commit index to ``index`` (never lower it, never past the log)."""
        if not self.commit_index < index <= self.log.last_index():
            raise InvariantError(
                f"{self.id}: commit index {self.commit_index} → {index} with last index "
                f"{self.log.last_index()}"
            )
        self.commit_index = index

    def _peers(self) -> list[str]:
        return [p for p in self.configuration.all_ids() if p != self.id]

    def _on_config_change(self) -> None:
        if self.role is not Role.LEADER:
            return
        # A quorum of the old configuration may not intersect every quorum of the new one
        # across several changes: the lease must come from rounds started from now on.
        self.lease_epoch += 1
        self.lease_floor_round = self.round + 1
        conf = self.configuration
        peers = self._peers()
        for p in list(self.progress):
            if p not in peers:
                del self.progress[p]
        for p in peers:
            pr = self.progress.get(p)
            if pr is None:
                pr = self.progress[p] = Progress(self.log.last_index() + 1)
                pr.last_active = self.ticks  # a newcomer gets a full election timeout
            pr.is_learner = not conf.is_voter(p)
        if self.lead_transferee is not None and not conf.is_voter(self.lead_transferee):
            self.lead_transferee = None

    def _record_configs(self, entries: list[LogEntry]) -> None:
        if self.configs.record(entries):
            self._on_config_change()

    def _new_timeout(self) -> int:
        return self.rng.randrange(self.election_ticks, self.election_ticks_max)

    def _set_term(self, term: int, voted_for: str | None) -> None:
        if term != self.term or voted_for != self.voted_for:
            self.term, self.voted_for = term, voted_for
            self._hard_state_dirty = True
            self.hard_state_version += 1

    def _reset(self, term: int) -> None:
        if term != self.term:
            self._set_term(term, None)
        self.quiesced = False
        self.leader_id = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._new_timeout()
        self.votes = {}
        self.lead_transferee = None
        self.pre_candidate = False

    def _drop_reads(self) -> None:
        self._dropped_reads.extend(r for r, _, _ in self._pending_reads)
        self._dropped_reads.extend(self._reads_waiting_commit)
        self._pending_reads = []
        self._reads_waiting_commit = []

    def _committed_in_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.term

    def _append_local(self, command: bytes, kind: int) -> int:
        index = self.log.last_index() + 1
        self.log.append([LogEntry(self.term, index, command, kind)])
        self.uncommitted_bytes += len(command)
        return index

    # ==================== role transitions
    def become_follower(self, term: int, leader_id: str | None) -> None:
        if self.role is not Role.FOLLOWER:
            self.state_transitions += 1
        if self.role is Role.LEADER:
            self.lease_epoch += 1
            self._drop_reads()
            self.progress = {}
            self._broadcast_due = False
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id

    def _accept_leader(self, term: int, leader_id: str) -> None:
        if term > self.term or self.role is not Role.FOLLOWER:
            self.become_follower(term, leader_id)
        self.leader_id = leader_id
        self.election_elapsed = 0
        self.promise_until = self.ticks + self.election_ticks

    def _become_pre_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantError(f"{self.id}: a leader cannot become a pre-candidate")
        self.state_transitions += self.role is not Role.CANDIDATE
        self.role = Role.CANDIDATE
        self.pre_candidate = True
        self.votes = {}
        self.leader_id = None
        self.election_elapsed = 0
        self.randomized_timeout = self._new_timeout()

    def _become_candidate(self) -> None:
        if self.role is Role.LEADER:
            raise InvariantError(f"{self.id}: a leader cannot become a candidate")
        self.state_transitions += self.role is not Role.CANDIDATE
        self._reset(self.term + 1)
        self._set_term(self.term, self.id)
        self.role = Role.CANDIDATE
        self.elections += 1

    def _become_leader(self) -> None:
        if self.role is not Role.CANDIDATE or self.pre_candidate:
            raise InvariantError(
                f"{self.id}: only a candidate that won a real election becomes leader, not a "
                f"{'pre-candidate' if self.pre_candidate else self.role.value}"
            )
        self.state_transitions += 1
        self.role = Role.LEADER
        self.pre_candidate = False
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        self.busy_tick = self.ticks
        self.progress = {}
        # A new term's lease starts from nothing: only rounds of this term count.
        self.lease_epoch += 1
        self.lease_floor_round = self.round + 1
        self.transfer_started = False
        self._on_config_change()
        for pr in self.progress.values():
            pr.last_active = self.ticks  # check-quorum grace: a full election timeout
        self.uncommitted_bytes = 0
        self._uncommitted_from = self.log.last_index() + 1
        # §5.4.2 / §8: a no-op lets the new leader commit (and learn the commit index) at once.
        self._append_local(b"", EntryKind.NOOP)
        self._broadcast_append()

    # ==================== the Ready hand-off
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
            self._check_indexes()
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
            quiesce = self._quiesce_due and self._can_quiesce()
            self._quiesce_due = False
            self.round += 1
            for peer in self.progress:
                self._send_heartbeat(peer, self.round, quiesce=quiesce)
            self.quiesced = quiesce
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

    # ==================== elections
    def tick(self) -> None:
        self.ticks += 1
        if self.quiesced:
            return  # no heartbeats, no check-quorum, no election timer (module docstring)
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout and self.is_voter():
            self.campaign()

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.cfg.check_quorum and not self._quorum_active():
            # Checked on every tick against a sliding window, so the leader steps down exactly
            # one election timeout after it last heard from a quorum (a check once per timeout
            # would let an answer landing just after it keep a cut-off leader for almost two).
            self.become_follower(self.term, None)
            return
        if self.election_elapsed >= self.election_ticks:
            self.election_elapsed = 0
            if self.lead_transferee is not None:
                self.abort_leadership_transfer()  # it took too long (§3.10)
        if self.heartbeat_elapsed >= self.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_due = True
            self._quiesce_due = self._can_quiesce()
            for peer in self.progress:
                self._maybe_send_append(peer)

    # ==================== quiescence
    def _can_quiesce(self) -> bool:
        """Whether this leader may send its quiescing round now: idle for an election timeout,
        everything committed and on its disk, nothing in flight, and every peer holding the
        whole log and the commit index's bound, heard from within an election timeout."""
        if not self.cfg.quiesce or self.quiesced or self.role is not Role.LEADER:
            return False
        last = self.log.last_index()
        if (
            self.ticks - self.busy_tick < self.election_ticks
            or self.commit_index != last
            or self.log.stable_index != last
            or not self._committed_in_term()
            or self._pending_reads
            or self._reads_waiting_commit
            or self.lead_transferee is not None
        ):
            return False
        horizon = self.ticks - self.election_ticks
        return all(
            pr.state is ProgressState.REPLICATE
            and pr.match_index == last
            and pr.inflight == 0
            and pr.last_heard is not None
            and pr.last_heard > horizon
            for pr in self.progress.values()
        )

    def wake(self, silent_ticks: int = 0) -> None:
        """Leave quiescence (a no-op otherwise): the timers run again; a leader sends a round
        of heartbeats at once and gets a full election timeout of check-quorum grace, as at
        its election, since nobody was expected to answer it while it was quiet. A follower's
        election timer goes on from ``silent_ticks`` at least: the driver knows its leader has
        been silent that long (its promise to that leader is ``promise_until``'s, untouched)."""
        self.busy_tick = self.ticks
        if not self.quiesced:
            return
        self.quiesced = False
        if self.role is Role.LEADER:
            for pr in self.progress.values():
                pr.last_active = self.ticks
            self.heartbeat_elapsed = 0
            self._broadcast_due = True
        else:
            self.election_elapsed = max(self.election_elapsed, silent_ticks)

    def note_activity(self) -> None:
        """The driver served a request of this group without the core (a lease read): keep
        the group awake for another election timeout."""
        self.busy_tick = self.ticks

    def _quorum_active(self) -> bool:
        """Whether a quorum of voters (ourselves included) answered within an election timeout
        (a peer counts as having answered at our election: check-quorum's grace)."""
        horizon = self.ticks - self.election_ticks
        progress = self.progress
        return quorum_reached(
            self.configuration,
            lambda v: v == self.id or (v in progress and progress[v].last_active > horizon),
        )

    def quorum_active_in(self, configuration: Configuration) -> bool:
        """Whether a quorum of ``configuration``'s voters (ourselves included) really answered
        this leader, in its term, within an election timeout — no grace for a peer it has not
        heard from since its election: a membership change to a configuration where that is
        false could leave the group without a leader able to commit (etcd's strict
        reconfiguration check)."""
        return quorum_reached(configuration, self._heard_recently)

    def voters_heard(self) -> int:
        """How many voters of the configuration in force (this node included) answered this
        leader, in its term, within an election timeout: at ``quorum()`` one more failure
        loses the quorum (the operators' "quorum at risk")."""
        return sum(1 for v in self.configuration.voters if self._heard_recently(v))

    def _heard_recently(self, voter: str) -> bool:
        if voter == self.id:
            return True
        pr = self.progress.get(voter)
        horizon = self.ticks - self.election_ticks
        return pr is not None and pr.last_heard is not None and pr.last_heard > horizon

    def campaign(self, *, transfer: bool = False) -> None:
        """Start an election (after a pre-vote round unless ``transfer``)."""
        if not self.is_voter():
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
            term, pre = self.term + 1, True
        else:
            self._become_candidate()
            term, pre = self.term, False
        self.votes[self.id] = True
        if self._vote_result() is True:
            self._won_votes(pre)
            return
        for peer in self.configuration.voters:
            if peer == self.id:
                continue
            req = RequestVoteRequest(
                term, self.id, self.log.last_index(), self.log.last_term(), pre, transfer
            )
            self._msgs.append(Outbound(peer, req))

    def _won_votes(self, pre_vote: bool) -> None:
        if pre_vote:
            self._start_real_election()
        else:
            self._become_leader()

    def _start_real_election(self) -> None:
        self.pre_candidate = False
        self._become_candidate()
        self.votes[self.id] = True
        if self._vote_result() is True:
            self._become_leader()
            return
        for peer in self.configuration.voters:
            if peer != self.id:
                req = RequestVoteRequest(
                    self.term, self.id, self.log.last_index(), self.log.last_term()
                )
                self._msgs.append(Outbound(peer, req))

    def _vote_result(self) -> bool | None:
        return vote_result(self.configuration, self.votes)

    def _in_lease(self) -> bool:
        """Check-quorum stickiness: we heard from a live leader less than a minimum election
        timeout ago, so we refuse to help depose it (§9.6 / §4.2.3). Measured from the last
        time we accepted a leader (``promise_until``), not from "a leader is known": a higher
        term learnt from a late response makes us forget the leader, not the promise.

        A node in its first election timeout since it started counts as having heard from one:
        before a crash it may have acknowledged a leader's heartbeat and so promised that
        leader not to vote for anyone else for an election timeout; a restart must not break
        that promise (a leader's lease reads rely on it)."""
        if not self.cfg.check_quorum:
            return False
        if self.ticks < max(self.quiet_ticks, self.promise_until):
            return True  # a promise to a leader, kept whatever we learnt since
        return self.leader_id is not None and self.election_elapsed < self.election_ticks

    def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        if req.candidate_id in self.configuration.voters:
            # A voter campaigning: its leader may be gone, time it again. (Not for a replica
            # removed that has not learnt it: it would wake the group at every attempt.)
            self.wake()
        if req.term > self.term and not req.leader_transfer and self._in_lease():
            return RequestVoteResponse(self.term, False, req.pre_vote)
        if req.pre_vote:
            grant = req.term > self.term and self.log.is_up_to_date(
                req.last_log_index, req.last_log_term
            )
            return RequestVoteResponse(req.term if grant else self.term, grant, True)
        if req.term > self.term:
            self.become_follower(req.term, None)
        if req.term < self.term:
            return RequestVoteResponse(self.term, False)
        can_vote = self.voted_for == req.candidate_id or (
            self.voted_for is None and self.leader_id is None
        )
        if can_vote and self.log.is_up_to_date(req.last_log_index, req.last_log_term):
            self._set_term(self.term, req.candidate_id)
            self.election_elapsed = 0
            return RequestVoteResponse(self.term, True)
        return RequestVoteResponse(self.term, False)

    def _step_vote_response(
        self, peer: str, req: RequestVoteRequest, resp: RequestVoteResponse
    ) -> None:
        if resp.term > self.term and not (req.pre_vote and resp.vote_granted):
            self.become_follower(resp.term, None)
            return
        if self.role is not Role.CANDIDATE or req.pre_vote != self.pre_candidate:
            return
        expected_term = self.term + 1 if self.pre_candidate else self.term
        if req.term != expected_term:
            return
        self.votes[peer] = resp.vote_granted
        result = self._vote_result()
        if result is True:
            self._won_votes(self.pre_candidate)
        elif result is False:
            self.become_follower(self.term, None)

    # ==================== AppendEntries in
    def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.term < self.term:
            self.wake()
            return AppendEntriesResponse(self.term, False, last_log_index=self.log.last_index())
        self._accept_leader(req.term, req.leader_id)
        resp = self._append_entries(req)
        # Quiet only with exactly the leader's log, all of it committed: a follower lacking
        # anything keeps its timer, so that it asks again (and wakes the leader) if the
        # leader's next message never comes.
        self.quiesced = (
            req.quiesce
            and resp.success
            and not req.entries
            and self.role is Role.FOLLOWER
            and self.log.last_index() == req.prev_log_index == req.leader_commit
            and self.commit_index == req.leader_commit
        )
        return resp

    def _append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        prev, prev_term, entries = req.prev_log_index, req.prev_log_term, req.entries
        if prev < self.log.snapshot_index:
            # Entries up to our snapshot are committed, hence identical to the leader's.
            skip = self.log.snapshot_index - prev
            if skip >= len(entries):
                return self._append_ok(req, max(prev + len(entries), 0))
            entries = entries[skip:]
            prev, prev_term = self.log.snapshot_index, self.log.snapshot_term
        have = self.log.term_at(prev)
        if have is None:
            return AppendEntriesResponse(
                self.term,
                False,
                conflict_index=self.log.last_index() + 1,
                last_log_index=self.log.last_index(),
            )
        if have != prev_term:
            return AppendEntriesResponse(
                self.term,
                False,
                conflict_index=self.log.first_index_of_term(prev),
                conflict_term=have,
                last_log_index=self.log.last_index(),
            )
        self._merge_entries(entries)
        return self._append_ok(req, prev + len(entries))

    def _merge_entries(self, entries: list[LogEntry]) -> None:
        for i, e in enumerate(entries):
            have = self.log.term_at(e.index)
            if have == e.term:
                continue
            rest = entries[i:]
            if have is not None:
                if e.index <= self.commit_index:
                    raise InvariantError(
                        f"{self.id}: entry {e.index} (committed up to {self.commit_index}) "
                        "would be overwritten"
                    )
                self.configs.truncate(e.index)
                self.log.truncate_and_append(rest)
            else:
                self.log.append(rest)
            self._record_configs(rest)
            return

    def _append_ok(self, req: AppendEntriesRequest, last_new: int) -> AppendEntriesResponse:
        commit = min(req.leader_commit, last_new)
        if commit > self.commit_index:
            self._commit_to(commit)
        resp = AppendEntriesResponse(
            self.term, True, match_index=last_new, last_log_index=self.log.last_index()
        )
        if req.timeout_now and self.is_voter():
            if self.leaving:
                resp.transfer_declined = True  # its leader gives the transfer up at once
            else:
                self.campaign(transfer=True)
        return resp

    # ==================== replication out
    def propose(self, command: bytes, kind: int = EntryKind.COMMAND) -> int:
        """Append a command to the leader's log; returns its index."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        self.wake()
        if self.lead_transferee is not None:
            raise ProposalDroppedError("leadership transfer in progress")
        if self.uncommitted_bytes + len(command) > self.cfg.max_uncommitted_bytes:
            raise ProposalDroppedError("too many uncommitted proposals (flow control)")
        index = self._append_local(command, kind)
        if kind == EntryKind.CONFIG:
            self._record_configs([self.log.entry(index)])
        return index

    def propose_config(self, new: Configuration) -> int:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        self.wake()
        if self.config_index > self.commit_index:
            raise MembershipChangeError("another membership change is in progress")
        if not self._committed_in_term():
            raise MembershipChangeError("the leader has not committed an entry in its term yet")
        if new.voters != self.configuration.voters and not self.quorum_active_in(new):
            # The leader counts the new configuration at once: without such a quorum it could
            # neither commit the change nor keep leading, with nobody able to take over.
            raise MembershipChangeError(
                f"the change would leave voters {sorted(new.voters)} without a quorum this "
                "leader has heard from recently: refused"
            )
        return self.propose(new.encode(), EntryKind.CONFIG)

    def _broadcast_append(self) -> None:
        for peer in self.progress:
            self._maybe_send_append(peer)

    def _maybe_send_append(self, peer: str, *, heartbeat_ok: bool = True) -> None:
        pr = self.progress[peer]
        if pr.state is ProgressState.SNAPSHOT:
            if pr.inflight == 0:
                self._send_snapshot_chunk(peer, pr)
            return
        last = self.log.last_index()
        while pr.can_send(self.cfg.max_inflight):
            if pr.next_index <= self.log.snapshot_index:
                if self.snapshot_data is None:
                    return  # no snapshot to send yet; the driver will take one
                pr.become_snapshot(self.log.snapshot_index)
                self._send_snapshot_chunk(peer, pr)
                return
            if pr.next_index > last and pr.state is ProgressState.REPLICATE:
                return
            prev = pr.next_index - 1
            entries = (
                self.log.slice(
                    pr.next_index,
                    last,
                    self.cfg.max_entries_per_message,
                    self.cfg.max_bytes_per_message,
                )
                if pr.next_index <= last
                else []
            )
            if (
                pr.state is ProgressState.REPLICATE
                and pr.inflight >= self.cfg.max_inflight_small
                and prev + len(entries) >= last  # it carries all there is ...
                and len(entries) < self.cfg.max_entries_per_message  # ... and has room
            ):
                # A message that is not full (it carries every pending entry) waits for an
                # answer in flight: what arrives meanwhile leaves with it (the answer sends
                # it: ``_step_append_response``). Full ones — catch-up, bulk — pipeline on.
                return
            prev_term = self.log.term_at(prev)
            if prev_term is None:
                raise InvariantError(f"{self.id}: no term for entry {prev} after the snapshot")
            req = AppendEntriesRequest(
                self.term, self.id, prev, prev_term, entries, self.commit_index
            )
            # What the follower can learn from it: the commit index, capped by what it matches.
            pr.commit_sent = max(pr.commit_sent, min(self.commit_index, prev + len(entries)))
            pr.on_sent(prev + len(entries))
            self._msgs.append(Outbound(peer, req, self.round))
            if pr.state is not ProgressState.REPLICATE:
                return

    def _send_heartbeat(
        self, peer: str, round_: int, *, timeout_now: bool = False, quiesce: bool = False
    ) -> None:
        pr = self.progress[peer]
        prev = pr.match_index
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            prev, prev_term = 0, 0
        req = AppendEntriesRequest(
            self.term, self.id, prev, prev_term, [], self.commit_index, timeout_now, quiesce
        )
        pr.commit_sent = max(pr.commit_sent, min(self.commit_index, prev))
        self._msgs.append(Outbound(peer, req, round_, heartbeat=True))

    def _send_snapshot_chunk(self, peer: str, pr: Progress) -> None:
        data = self.snapshot_data
        if data is None:
            raise InvariantError(f"{self.id}: a snapshot to send but no snapshot data")
        if pr.snapshot_index != self.log.snapshot_index:
            pr.become_snapshot(self.log.snapshot_index)
        off = pr.snapshot_offset
        chunk = data[off : off + self.cfg.snapshot_chunk_size]
        done = off + len(chunk) >= len(data)
        req = InstallSnapshotRequest(
            self.term,
            self.id,
            self.log.snapshot_index,
            self.log.snapshot_term,
            off,
            chunk,
            done,
            self.configs.at(self.log.snapshot_index).encode(),
        )
        pr.inflight += 1
        self._msgs.append(Outbound(peer, req, self.round))

    def step_response(self, out: Outbound, resp: RaftResponse) -> None:
        """A response to one of our requests arrived."""
        req = out.message
        if isinstance(req, RequestVoteRequest):
            assert isinstance(resp, RequestVoteResponse)
            self._step_vote_response(out.target, req, resp)
            return
        if resp.term > self.term:
            self.become_follower(resp.term, None)
            return
        pr = self.progress.get(out.target)
        if (
            self.role is not Role.LEADER
            or resp.term < self.term
            or req.term != self.term
            or pr is None
        ):
            return
        pr.last_active = pr.last_heard = self.ticks
        if out.round > pr.acked_round:
            pr.acked_round = out.round
            self._advance_reads()
        if isinstance(req, InstallSnapshotRequest):
            assert isinstance(resp, InstallSnapshotResponse)
            self._step_snapshot_response(out.target, pr, req, resp)
        else:
            assert isinstance(req, AppendEntriesRequest)
            assert isinstance(resp, AppendEntriesResponse)
            if resp.transfer_declined and req.timeout_now and out.target == self.lead_transferee:
                self.abort_leadership_transfer()  # the target is about to stop
            self._step_append_response(out, pr, req, resp)

    def _step_append_response(
        self, out: Outbound, pr: Progress, req: AppendEntriesRequest, resp: AppendEntriesResponse
    ) -> None:
        if not out.heartbeat:
            pr.on_reply()
        elif (
            pr.state is ProgressState.REPLICATE
            and self.cfg.max_inflight_small <= pr.inflight < self.cfg.max_inflight
        ):
            # A heartbeat came back while small messages wait behind one in flight: lend one
            # slot, so entries waiting behind a lost message leave within a heartbeat, not
            # after its RPC timeout (etcd frees one on a heartbeat answer too). One lend at a
            # time, repaid by the next reply: never more than one beyond the count, and a
            # full pipeline (catch-up) is never lent to.
            pr.lend()
        if resp.success:
            if pr.maybe_update(resp.match_index):
                if pr.state is ProgressState.PROBE:
                    pr.become_replicate()
                self._maybe_commit()
                if self.role is not Role.LEADER:
                    # Committing our own removal made us step down (and drop every Progress):
                    # there is nothing left to send.
                    return
                if out.target == self.lead_transferee and pr.match_index == self.log.last_index():
                    self._send_heartbeat(out.target, self.round, timeout_now=True)
            elif pr.state is ProgressState.PROBE and not out.heartbeat:
                pr.become_replicate()
            # A follower whose last append carried a stale commit index gets the new one from
            # the next ready() (``_send_commit_updates``): one message per follower per cycle,
            # not one per acknowledgement.
            self._maybe_send_append(out.target)
            return
        self.wake()  # a follower that refused: whatever follows must not wait in quiet
        if req.prev_log_index < pr.match_index or pr.state is ProgressState.SNAPSHOT:
            return  # stale rejection of something already matched
        if out.heartbeat:
            pr.become_probe()  # the follower lost entries it had acknowledged (disk loss)
        else:
            pr.become_probe()
            if resp.conflict_term > 0:
                last_of_term = self.log.last_index_of_term(resp.conflict_term)
                nxt = last_of_term + 1 if last_of_term > 0 else resp.conflict_index
            else:
                nxt = resp.conflict_index
            pr.next_index = max(min(nxt, req.prev_log_index), pr.match_index + 1, 1)
        self._maybe_send_append(out.target)

    def _step_snapshot_response(
        self, peer: str, pr: Progress, req: InstallSnapshotRequest, resp: InstallSnapshotResponse
    ) -> None:
        pr.inflight = max(0, pr.inflight - 1)
        if pr.state is not ProgressState.SNAPSHOT or req.last_included_index != pr.snapshot_index:
            return
        if resp.success and req.done:
            pr.maybe_update(req.last_included_index)
            pr.become_probe()
        else:
            pr.snapshot_offset = resp.next_offset
        self._maybe_send_append(peer)

    def step_failure(self, out: Outbound) -> None:
        """One of our requests failed (timeout, drop, unreachable)."""
        pr = self.progress.get(out.target)
        if (
            self.role is not Role.LEADER
            or pr is None
            or isinstance(out.message, RequestVoteRequest)
        ):
            return
        if out.message.term != self.term:
            return
        if isinstance(out.message, InstallSnapshotRequest):
            pr.inflight = max(0, pr.inflight - 1)
            return
        if out.heartbeat:
            if self.quiesced:
                self.wake()  # the follower may not have heard it: keep it in touch
            return
        pr.on_reply()
        if pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def _maybe_commit(self) -> None:
        candidate = quorum_value(self.configuration, self._match_of)
        # Figure 8: only an entry of the current term is committed by counting replicas.
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            if self.uncommitted_bytes:
                # Subtract what this commit covers (each entry once), not a rescan of the log.
                for i in range(max(self.commit_index + 1, self._uncommitted_from), candidate + 1):
                    self.uncommitted_bytes -= len(self.log.entry(i).command)
                self.uncommitted_bytes = max(0, self.uncommitted_bytes)
            self._uncommitted_from = max(self._uncommitted_from, candidate + 1)
            self._commit_to(candidate)
            self._on_commit()

    def _match_of(self, voter: str) -> int:
        if voter == self.id:
            return self.log.stable_index
        pr = self.progress.get(voter)
        return pr.match_index if pr is not None else 0

    def _on_commit(self) -> None:
        if self._reads_waiting_commit and self._committed_in_term():
            for read_id in self._reads_waiting_commit:
                self._register_read(read_id)
            self._reads_waiting_commit = []
        if (
            self.configuration.voters
            and not self.is_voter()
            and self.commit_index >= self.config_index
        ):
            # A leader removed from the configuration steps down once the removal commits.
            self.become_follower(self.term, None)

    def transfer_leadership(self, to: str | None) -> str:
        """Start a leadership transfer (§3.10); returns the chosen target."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        self.wake()
        voters = [v for v in self.configuration.voters if v != self.id and v in self.progress]
        if to is None:
            if not voters:
                raise MembershipChangeError("no other voter to transfer leadership to")
            to = max(voters, key=lambda v: (self.progress[v].match_index, v))
        elif to not in voters:
            raise MembershipChangeError(f"{to} is not a voting member")
        self.lead_transferee = to
        # The target may campaign with the transfer flag, which voters honour even inside
        # their lease: from now on, until the term ends, this leader's lease proves nothing.
        # (Not only while the transfer lasts: a TimeoutNow delayed in the network can reach
        # the target after an abort.)
        self.transfer_started = True
        self.lease_epoch += 1
        self.election_elapsed = 0
        pr = self.progress[to]
        if pr.match_index == self.log.last_index():
            self._send_heartbeat(to, self.round, timeout_now=True)
        else:
            self._maybe_send_append(to)
        return to

    def abort_leadership_transfer(self) -> None:
        """Give a transfer under way up now rather than after its election timeout (its
        target is gone or declined): proposals are accepted again. The lease stays off for
        the term (``transfer_started``): a TimeoutNow already sent may still be acted on."""
        self.lead_transferee = None

    # ==================== reads
    def request_read(self, read_id: int) -> None:
        """Ask for a linearizable read point; confirmed later through ``Ready.reads``."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        self.wake()
        if not self._committed_in_term():
            self._reads_waiting_commit.append(read_id)
            return
        self._register_read(read_id)

    def _register_read(self, read_id: int) -> None:
        self._pending_reads.append((read_id, self.commit_index, self.round + 1))
        self._broadcast_due = True
        self._advance_reads()

    def quorum_round(self) -> int:
        """The newest broadcast round a quorum of voters acknowledged (0 while a voter has no
        ``Progress`` yet)."""
        conf, progress, own = self.configuration, self.progress, self.id
        if any(v != own and v not in progress for v in conf.voters):
            return 0
        return quorum_value(conf, lambda v: self.round if v == own else progress[v].acked_round)

    def lease_round(self, confirmed: int | None = None) -> int:
        """The newest broadcast round a quorum acknowledged that may ground a lease, or 0
        (``confirmed``: ``quorum_round()`` when the caller has it already)."""
        if not self.lease_allowed():
            return 0
        if confirmed is None:
            confirmed = self.quorum_round()
        return confirmed if confirmed >= self.lease_floor_round else 0

    def lease_allowed(self) -> bool:
        """Whether this node may serve reads from a lease at all right now (the driver still
        checks the lease's time and epoch). Check-quorum is what makes followers refuse votes
        inside their lease; a transfer lets the target's votes through regardless."""
        return (
            self.role is Role.LEADER
            and self.cfg.check_quorum
            and not self.transfer_started
            and self._committed_in_term()
        )

    def _advance_reads(self) -> None:
        if not self._pending_reads:
            return
        confirmed = self.quorum_round()
        keep = []
        for read_id, index, needed in self._pending_reads:
            if needed <= confirmed:
                self._confirmed.append((read_id, index))
            else:
                keep.append((read_id, index, needed))
        self._pending_reads = keep

    # ==================== snapshots
    def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        self.wake()
        if req.term < self.term:
            return InstallSnapshotResponse(self.term, False, 0)
        self._accept_leader(req.term, req.leader_id)
        key = (req.last_included_index, req.last_included_term)
        if req.offset == 0:
            self._incoming = (key[0], key[1], bytearray())
        inc = self._incoming
        if inc is None or (inc[0], inc[1]) != key or req.offset != len(inc[2]):
            expected = len(inc[2]) if inc is not None and (inc[0], inc[1]) == key else 0
            return InstallSnapshotResponse(self.term, False, expected)
        inc[2].extend(req.data)
        if not req.done:
            return InstallSnapshotResponse(self.term, True, len(inc[2]))
        self._incoming = None
        self._install_snapshot(req, bytes(inc[2]))
        return InstallSnapshotResponse(self.term, True, req.offset + len(req.data))

    def _install_snapshot(self, req: InstallSnapshotRequest, data: bytes) -> None:
        index, term = req.last_included_index, req.last_included_term
        if index <= self.commit_index:
            return  # we already have (and may have applied) everything it covers
        # An empty configuration (a minimal peer) keeps the one in force here.
        conf = Configuration.decode(req.configuration) if req.configuration else self.configuration
        meta = SnapshotMeta(index, term, conf)
        self._adopt_snapshot(meta, data)
        self._snapshot_to_install = (meta, data)

    def accept_snapshot_sender(self, req: InstallSnapshotRequest) -> bool:
        """A chunk the driver streams to disk itself arrived: follow its sender unless its
        term is stale (False). The driver then calls ``snapshot_installed`` once installed."""
        if req.term < self.term:
            return False
        self._accept_leader(req.term, req.leader_id)
        return True

    def snapshot_installed(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        """The driver installed a streamed snapshot on disk: adopt it, nothing left to persist.
        The commit index only grows (entries may have arrived during the install)."""
        if meta.last_index > self.log.snapshot_index:
            self._adopt_snapshot(meta, data)

    def _adopt_snapshot(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        index, term = meta.last_index, meta.last_term
        keeps_suffix = self.log.term_at(index) == term
        self.log.compact(index, term)
        # Configurations from entries after the snapshot survive only if those entries do: a
        # conflicting log is discarded whole, and a stale, never-committed CONFIG entry in it
        # must not stay in force.
        self.configs.rebase(index, meta.configuration, keep_later=keeps_suffix)
        self.commit_index = max(self.commit_index, index)
        self.applied = index
        self.snapshot_data = data
        self._check_indexes()

    def snapshot_taken(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        """The driver persisted a snapshot of the applied state: compact the log."""
        if meta.last_index <= self.log.snapshot_index:
            return
        self.log.compact(meta.last_index, meta.last_term)
        self.snapshot_data = data
        self.configs.rebase(meta.last_index, meta.configuration, keep_later=True)
        self._check_indexes()
