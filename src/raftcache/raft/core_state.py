"""CoreState: the fields of one node's Raft state and the helpers every part of the core shares.

Rule: this is the only place ``RaftCore``'s state is created; the mixins (election, follower,
replication, reads, snapshots) read and change it but add no fields of their own. Methods one
part calls in another are declared here and implemented by exactly one mixin, so each module
type-checks alone and ``RaftCore`` composes them (``raft/core.py``).
"""

from __future__ import annotations

import random
from enum import StrEnum

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    EntryKind,
    LogEntry,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.config import RaftConfig
from raftcache.raft.log import RaftLog
from raftcache.raft.progress import Progress
from raftcache.raft.ready import Outbound
from raftcache.storage.base import RecoveredState, SnapshotData, SnapshotMeta


class Role(StrEnum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


class CoreState:
    """One node's Raft state (see ``RaftCore``)."""

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
        #: (index, configuration) history: the base (snapshot or bootstrap) then every CONFIG entry.
        self._configs: list[tuple[int, Configuration]] = [
            (self.log.snapshot_index, snap.configuration if snap else bootstrap)
        ]
        for e in recovered.entries:
            if e.kind == EntryKind.CONFIG:
                self._configs.append((e.index, Configuration.decode(e.command)))

        self.term = recovered.term
        self.voted_for = recovered.voted_for
        self.role = Role.FOLLOWER
        self.pre_candidate = False
        self.leader_id: str | None = None
        self.commit_index = self.log.snapshot_index
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
        # Counters for statistics.
        self.elections = 0
        self.state_transitions = 0

    @property
    def configuration(self) -> Configuration:
        return self._configs[-1][1]

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

    def config_history(self) -> list[Configuration]:
        """Every configuration this node holds: its base (snapshot or bootstrap), then each
        configuration entry of its log, oldest first."""
        return [c for _, c in self._configs]

    @property
    def config_index(self) -> int:
        return self._configs[-1][0]

    def is_voter(self) -> bool:
        return self.configuration.is_voter(self.id)

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

    def _truncate_configs(self, from_index: int) -> None:
        while len(self._configs) > 1 and self._configs[-1][0] >= from_index:
            self._configs.pop()

    def _record_configs(self, entries: list[LogEntry]) -> None:
        changed = False
        for e in entries:
            if e.kind == EntryKind.CONFIG:
                self._configs.append((e.index, Configuration.decode(e.command)))
                changed = True
        if changed:
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

    def _committed_in_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.term

    def _append_local(self, command: bytes, kind: int) -> int:
        index = self.log.last_index() + 1
        self.log.append([LogEntry(self.term, index, command, kind)])
        self.uncommitted_bytes += len(command)
        return index

    def config_for_snapshot(self, index: int) -> Configuration:
        """The configuration in force at ``index`` (≤ applied)."""
        conf = self._configs[0][1]
        for i, c in self._configs:
            if i <= index:
                conf = c
        return conf

    def _config_at_snapshot(self) -> Configuration:
        conf = self._configs[0][1]
        for i, c in self._configs:
            if i <= self.log.snapshot_index:
                conf = c
        return conf

    # ------------------------------------------------------------------ implemented by mixins
    def campaign(self, *, transfer: bool = False) -> None:  # core_election
        raise NotImplementedError

    def _step_vote_response(
        self, peer: str, req: RequestVoteRequest, resp: RequestVoteResponse
    ) -> None:  # core_election
        raise NotImplementedError

    def _broadcast_append(self) -> None:  # core_replication
        raise NotImplementedError

    def _maybe_send_append(self, peer: str, *, heartbeat_ok: bool = True) -> None:
        raise NotImplementedError  # core_replication

    def _send_heartbeat(self, peer: str, round_: int, *, timeout_now: bool = False) -> None:
        raise NotImplementedError  # core_replication

    def _maybe_commit(self) -> None:  # core_replication
        raise NotImplementedError

    def _register_read(self, read_id: int) -> None:  # core_reads
        raise NotImplementedError

    def _advance_reads(self) -> None:  # core_reads
        raise NotImplementedError

    def quorum_round(self) -> int:  # core_reads
        raise NotImplementedError
