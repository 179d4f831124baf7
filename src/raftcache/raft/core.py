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
"""

from __future__ import annotations

import random
from enum import StrEnum

from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.errors import MembershipChangeError, NotLeaderError, ProposalDroppedError
from raftcache.raft.log import RaftLog
from raftcache.raft.messages import (
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
from raftcache.raft.progress import Progress, ProgressState
from raftcache.raft.ready import Outbound, Ready
from raftcache.storage.base import RecoveredState, SnapshotData, SnapshotMeta


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
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self._new_timeout()
        self.votes: dict[str, bool] = {}
        self.progress: dict[str, Progress] = {}
        self.lead_transferee: str | None = None
        self.transfer_elapsed = 0
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

    # ------------------------------------------------------------------ configuration
    @property
    def configuration(self) -> Configuration:
        return self._configs[-1][1]

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

    # ------------------------------------------------------------------ role changes
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
            self._drop_reads()
            self.progress = {}
            self._broadcast_due = False
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader_id

    def _become_pre_candidate(self) -> None:
        self.state_transitions += self.role is not Role.CANDIDATE
        self.role = Role.CANDIDATE
        self.pre_candidate = True
        self.votes = {}
        self.leader_id = None
        self.election_elapsed = 0
        self.randomized_timeout = self._new_timeout()

    def _become_candidate(self) -> None:
        self.state_transitions += self.role is not Role.CANDIDATE
        self._reset(self.term + 1)
        self._set_term(self.term, self.id)
        self.role = Role.CANDIDATE
        self.elections += 1

    def _become_leader(self) -> None:
        self.state_transitions += 1
        self.role = Role.LEADER
        self.pre_candidate = False
        self.leader_id = self.id
        self.heartbeat_elapsed = 0
        self.progress = {}
        self._on_config_change()
        for pr in self.progress.values():
            pr.last_active = self.ticks  # check-quorum grace: a full election timeout
        self.uncommitted_bytes = 0
        self._uncommitted_from = self.log.last_index() + 1
        # §5.4.2 / §8: a no-op lets the new leader commit (and learn the commit index) at once.
        self._append_local(b"", EntryKind.NOOP)
        self._broadcast_append()

    # ------------------------------------------------------------------ time
    def tick(self) -> None:
        self.ticks += 1
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
            # one election timeout after it last heard from a quorum. (It used to check once per
            # timeout, and an answer that landed just after a check kept a cut-off leader in
            # office for almost two timeouts: found by the lockstep §6 tests.)
            self.become_follower(self.term, None)
            return
        if self.election_elapsed >= self.election_ticks:
            self.election_elapsed = 0
            if self.lead_transferee is not None:
                self.lead_transferee = None  # the transfer took too long: abort it (§3.10)
        if self.heartbeat_elapsed >= self.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_due = True
            for peer in self.progress:
                self._maybe_send_append(peer)

    def _quorum_active(self) -> bool:
        """Whether a quorum of voters (ourselves included) answered within an election timeout."""
        conf = self.configuration
        horizon = self.ticks - self.election_ticks
        active = sum(
            1
            for v in conf.voters
            if v == self.id or (v in self.progress and self.progress[v].last_active > horizon)
        )
        return active >= conf.quorum()

    # ------------------------------------------------------------------ elections
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
        conf = self.configuration
        granted = sum(1 for v, ok in self.votes.items() if ok and v in conf.voters)
        rejected = sum(1 for v, ok in self.votes.items() if not ok and v in conf.voters)
        if granted >= conf.quorum():
            return True
        if rejected > len(conf.voters) - conf.quorum():
            return False
        return None

    def _in_lease(self) -> bool:
        """Check-quorum stickiness: we heard from a live leader less than a minimum election
        timeout ago, so we refuse to help depose it (§9.6 / §4.2.3)."""
        return (
            self.cfg.check_quorum
            and self.leader_id is not None
            and self.election_elapsed < self.election_ticks
        )

    def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
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

    # ------------------------------------------------------------------ follower side
    def _accept_leader(self, term: int, leader_id: str) -> None:
        if term > self.term or self.role is not Role.FOLLOWER:
            self.become_follower(term, leader_id)
        self.leader_id = leader_id
        self.election_elapsed = 0

    def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.term < self.term:
            return AppendEntriesResponse(self.term, False, last_log_index=self.log.last_index())
        self._accept_leader(req.term, req.leader_id)
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
                assert e.index > self.commit_index, "a committed entry would be overwritten"
                self._truncate_configs(e.index)
                self.log.truncate_and_append(rest)
            else:
                self.log.append(rest)
            self._record_configs(rest)
            return

    def _append_ok(self, req: AppendEntriesRequest, last_new: int) -> AppendEntriesResponse:
        if req.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(req.leader_commit, last_new))
        resp = AppendEntriesResponse(
            self.term, True, match_index=last_new, last_log_index=self.log.last_index()
        )
        if req.timeout_now and self.is_voter():
            self.campaign(transfer=True)
        return resp

    def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
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
        # must not stay in force (found by the lockstep §7 tests).
        after = [(i, c) for i, c in self._configs if i > index] if keeps_suffix else []
        self._configs = [(index, meta.configuration), *after]
        self.commit_index = max(self.commit_index, index)
        self.applied = index
        self.snapshot_data = data

    # ------------------------------------------------------------------ leader side
    def _append_local(self, command: bytes, kind: int) -> int:
        index = self.log.last_index() + 1
        self.log.append([LogEntry(self.term, index, command, kind)])
        self.uncommitted_bytes += len(command)
        return index

    def propose(self, command: bytes, kind: int = EntryKind.COMMAND) -> int:
        """Append a command to the leader's log; returns its index."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
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
        if self.config_index > self.commit_index:
            raise MembershipChangeError("another membership change is in progress")
        if not self._committed_in_term():
            raise MembershipChangeError("the leader has not committed an entry in its term yet")
        return self.propose(new.encode(), EntryKind.CONFIG)

    def _committed_in_term(self) -> bool:
        return self.log.term_at(self.commit_index) == self.term

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
            prev_term = self.log.term_at(prev)
            assert prev_term is not None
            req = AppendEntriesRequest(
                self.term, self.id, prev, prev_term, entries, self.commit_index
            )
            # What the follower can learn from it: the commit index, capped by what it matches.
            pr.commit_sent = max(pr.commit_sent, min(self.commit_index, prev + len(entries)))
            pr.on_sent(prev + len(entries))
            self._msgs.append(Outbound(peer, req, self.round))
            if pr.state is not ProgressState.REPLICATE:
                return

    def _send_heartbeat(self, peer: str, round_: int, *, timeout_now: bool = False) -> None:
        pr = self.progress[peer]
        prev = pr.match_index
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            prev, prev_term = 0, 0
        req = AppendEntriesRequest(
            self.term, self.id, prev, prev_term, [], self.commit_index, timeout_now
        )
        pr.commit_sent = max(pr.commit_sent, min(self.commit_index, prev))
        self._msgs.append(Outbound(peer, req, round_, heartbeat=True))

    def _send_snapshot_chunk(self, peer: str, pr: Progress) -> None:
        data = self.snapshot_data
        assert data is not None
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
            self._config_at_snapshot().encode(),
        )
        pr.inflight += 1
        self._msgs.append(Outbound(peer, req, self.round))

    def _config_at_snapshot(self) -> Configuration:
        conf = self._configs[0][1]
        for i, c in self._configs:
            if i <= self.log.snapshot_index:
                conf = c
        return conf

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
        pr.last_active = self.ticks
        if out.round > pr.acked_round:
            pr.acked_round = out.round
            self._advance_reads()
        if isinstance(req, InstallSnapshotRequest):
            assert isinstance(resp, InstallSnapshotResponse)
            self._step_snapshot_response(out.target, pr, req, resp)
        else:
            assert isinstance(req, AppendEntriesRequest)
            assert isinstance(resp, AppendEntriesResponse)
            self._step_append_response(out, pr, req, resp)

    def _step_append_response(
        self, out: Outbound, pr: Progress, req: AppendEntriesRequest, resp: AppendEntriesResponse
    ) -> None:
        if not out.heartbeat:
            pr.on_reply()
        if resp.success:
            if pr.maybe_update(resp.match_index):
                if pr.state is ProgressState.PROBE:
                    pr.become_replicate()
                self._maybe_commit()
                if self.role is not Role.LEADER:
                    # Committing our own removal made us step down (and drop every Progress):
                    # there is nothing left to send (found by the lockstep §6 tests).
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
            return
        pr.on_reply()
        if pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def _maybe_commit(self) -> None:
        conf = self.configuration
        matches = sorted(self._match_of(v) for v in conf.voters)
        if not matches:
            return
        candidate = matches[len(matches) - conf.quorum()]
        # Figure 8: only an entry of the current term is committed by counting replicas.
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            if self.uncommitted_bytes:
                # Subtract what this commit covers (each entry once), not a rescan of the log.
                for i in range(max(self.commit_index + 1, self._uncommitted_from), candidate + 1):
                    self.uncommitted_bytes -= len(self.log.entry(i).command)
                self.uncommitted_bytes = max(0, self.uncommitted_bytes)
            self._uncommitted_from = max(self._uncommitted_from, candidate + 1)
            self.commit_index = candidate
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

    # ------------------------------------------------------------------ reads
    def request_read(self, read_id: int) -> None:
        """Ask for a linearizable read point; confirmed later through ``Ready.reads``."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if not self._committed_in_term():
            self._reads_waiting_commit.append(read_id)
            return
        self._register_read(read_id)

    def _register_read(self, read_id: int) -> None:
        self._pending_reads.append((read_id, self.commit_index, self.round + 1))
        self._broadcast_due = True
        self._advance_reads()

    def quorum_round(self) -> int:
        conf = self.configuration
        rounds = sorted(
            (self.round if v == self.id else self.progress[v].acked_round)
            for v in conf.voters
            if v == self.id or v in self.progress
        )
        if len(rounds) < len(conf.voters):
            return 0
        return rounds[len(rounds) - conf.quorum()]

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

    # ------------------------------------------------------------------ transfer
    def transfer_leadership(self, to: str | None) -> str:
        """Start a leadership transfer (§3.10); returns the chosen target."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        voters = [v for v in self.configuration.voters if v != self.id and v in self.progress]
        if to is None:
            if not voters:
                raise MembershipChangeError("no other voter to transfer leadership to")
            to = max(voters, key=lambda v: (self.progress[v].match_index, v))
        elif to not in voters:
            raise MembershipChangeError(f"{to} is not a voting member")
        self.lead_transferee = to
        self.election_elapsed = 0
        pr = self.progress[to]
        if pr.match_index == self.log.last_index():
            self._send_heartbeat(to, self.round, timeout_now=True)
        else:
            self._maybe_send_append(to)
        return to

    # ------------------------------------------------------------------ snapshots
    def snapshot_taken(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        """The driver persisted a snapshot of the applied state: compact the log."""
        if meta.last_index <= self.log.snapshot_index:
            return
        self.log.compact(meta.last_index, meta.last_term)
        self.snapshot_data = data
        keep = [(i, c) for i, c in self._configs if i > meta.last_index]
        self._configs = [(meta.last_index, meta.configuration), *keep]

    def config_for_snapshot(self, index: int) -> Configuration:
        """The configuration in force at ``index`` (≤ applied)."""
        conf = self._configs[0][1]
        for i, c in self._configs:
            if i <= index:
                conf = c
        return conf

    # ------------------------------------------------------------------ ready / advance
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
        rd.messages, self._msgs = self._msgs, []
        hi = min(self.commit_index, self.applied + self.cfg.max_apply_batch, self.log.last_index())
        if hi > self.applied and self.applied >= self.log.snapshot_index:
            rd.committed = self.log.slice(self.applied + 1, hi, hi - self.applied, 0)
            self.applied = hi
        rd.reads, self._confirmed = self._confirmed, []
        rd.dropped_reads, self._dropped_reads = self._dropped_reads, []
        rd.round = self.round
        rd.confirmed_round = self.quorum_round() if self.role is Role.LEADER else 0
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
            self.log.stable_to(last.index, last.term)
            if self.role is Role.LEADER:
                self._maybe_commit()
