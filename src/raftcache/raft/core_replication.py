"""The leader side of log replication: proposals, AppendEntries out, answers in, commit (§5.3–5.4).

Rule: a leader commits only an entry of its own term by counting replicas (§5.4.2, Figure 8),
and counts itself only for what its own disk holds (``log.stable_index``); one configuration
change at a time, taking effect on append (dissertation §4.1); per follower, pipelining is
bounded by ``Progress`` (probe, replicate, snapshot) and ``max_inflight``.
"""

from __future__ import annotations

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    EntryKind,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RaftResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.core_state import CoreState, Role
from raftcache.raft.errors import MembershipChangeError, NotLeaderError, ProposalDroppedError
from raftcache.raft.progress import Progress, ProgressState
from raftcache.raft.ready import Outbound


class ReplicationMixin(CoreState):
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
