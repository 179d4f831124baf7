"""Elections: timers, pre-vote, votes and becoming leader (§5.2, §9.6, §3.10).

Rule: one vote per term — ``_set_term`` records it and the driver persists it before the answer
leaves; a vote goes only to a candidate whose log is at least as up to date (§5.4.1); a node
that heard from a live leader within an election timeout refuses to help depose it (check-quorum
lease), unless the request is a leadership transfer; a node that has just started refuses the
same way for its first election timeout, since it may have acknowledged a leader's round
before it went down and cannot remember it (the follower half of the lease argument in
``raft/lease.py``). A leader steps down one election timeout after it last heard from a quorum.
"""

from __future__ import annotations

from raftcache.protocol.messages import (
    EntryKind,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.core_state import CoreState, Role
from raftcache.raft.ready import Outbound


class ElectionMixin(CoreState):
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
            # one election timeout after it last heard from a quorum (a check once per timeout
            # would let an answer landing just after it keep a cut-off leader for almost two).
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
