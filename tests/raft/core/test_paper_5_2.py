"""§5.2 Leader election.

Servers start as followers; a leader sends periodic heartbeats; a follower that hears nothing for
an election timeout becomes a candidate, votes for itself and asks the others; each server votes
for at most one candidate per term (first come, first served); a majority wins; a candidate that
hears from a leader of its term steps down; split votes are retried, made rare by randomized
timeouts.
"""

from __future__ import annotations

import pytest

from raftcache.raft.core import Role
from raftcache.raft.messages import (
    AppendEntriesRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import (
    ELECTION_TICKS,
    ELECTION_TICKS_MAX,
    HEARTBEAT_TICKS,
    LockstepNetwork,
    make_config,
    seed_log,
)

NO_PRE_VOTE = make_config(pre_vote=False)


def test_5_2_servers_start_as_followers() -> None:
    net = LockstepNetwork(5)
    for node_id in net.nodes:
        core = net[node_id]
        assert core.role is Role.FOLLOWER
        assert (core.term, core.voted_for, core.leader_id) == (0, None, None)
    assert not net.queue


def test_5_2_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    net = LockstepNetwork(3)
    net.elect("n1")
    for _ in range(3):
        net.tick("n1", HEARTBEAT_TICKS - 1)
        assert not net.queue
        net.tick("n1")
        beats = sorted((e.dst, type(e.message).__name__) for e in net.queue)
        assert beats == [("n2", "AppendEntriesRequest"), ("n3", "AppendEntriesRequest")]
        assert all(isinstance(e.message, AppendEntriesRequest) for e in net.queue)
        assert all(not e.message.entries for e in net.queue)  # type: ignore[union-attr]
        net.stabilize()
    assert net.role("n1") is Role.LEADER


def test_5_2_election_timeout_makes_a_follower_a_candidate() -> None:
    net = LockstepNetwork(3, cfg=NO_PRE_VOTE)
    net.tick("n1", ELECTION_TICKS - 1)
    assert net.role("n1") is Role.FOLLOWER
    assert not net.queue
    net.tick("n1", ELECTION_TICKS_MAX - ELECTION_TICKS)
    core = net["n1"]
    assert core.role is Role.CANDIDATE
    assert (core.term, core.voted_for) == (1, "n1")
    votes = sorted((e.dst, e.message.term) for e in net.queue)
    assert votes == [("n2", 1), ("n3", 1)]
    assert all(isinstance(e.message, RequestVoteRequest) for e in net.queue)
    # The vote for itself is durable before any request leaves (the harness flushed).
    assert (net.nodes["n1"].store.term, net.nodes["n1"].store.voted_for) == (1, "n1")


def test_5_2_with_pre_vote_the_timeout_starts_a_pre_vote_that_keeps_the_term() -> None:
    net = LockstepNetwork(3)
    net.tick("n1", ELECTION_TICKS_MAX)
    core = net["n1"]
    assert core.role is Role.CANDIDATE
    assert core.pre_candidate
    assert (core.term, core.voted_for) == (0, None)
    msgs = [e.message for e in net.queue]
    assert all(isinstance(m, RequestVoteRequest) and m.pre_vote and m.term == 1 for m in msgs)
    net.stabilize()
    assert net.role("n1") is Role.LEADER
    assert core.term == 1


def _ticks_until_campaign(seed: int) -> int:
    net = LockstepNetwork(3, seed=seed)
    for t in range(1, 10 * ELECTION_TICKS_MAX):
        net.tick("n1")
        if net.role("n1") is Role.CANDIDATE:
            return t
    raise AssertionError("never campaigned")


def test_5_2_election_timeouts_are_randomized_in_one_to_two_timeouts() -> None:
    timeouts = [_ticks_until_campaign(seed) for seed in range(60)]
    assert all(ELECTION_TICKS <= t < ELECTION_TICKS_MAX for t in timeouts), timeouts
    assert len(set(timeouts)) >= 5, f"timeouts barely vary: {sorted(set(timeouts))}"


@pytest.mark.parametrize(
    ("size", "votes", "role"),
    [
        (1, {}, Role.LEADER),
        (3, {"n2": True}, Role.LEADER),
        (3, {"n2": False}, Role.CANDIDATE),
        (3, {"n2": False, "n3": False}, Role.FOLLOWER),
        (5, {"n2": True}, Role.CANDIDATE),
        (5, {"n2": True, "n3": True}, Role.LEADER),
        (5, {"n2": False, "n3": False}, Role.CANDIDATE),
        (5, {"n2": False, "n3": False, "n4": False}, Role.FOLLOWER),
        (5, {"n2": True, "n3": False, "n4": False, "n5": True}, Role.LEADER),
    ],
)
def test_5_2_a_candidate_wins_with_a_majority_of_votes(
    size: int, votes: dict[str, bool], role: Role
) -> None:
    net = LockstepNetwork(size, cfg=NO_PRE_VOTE)
    core = net["n1"]
    core.campaign()
    net.flush("n1")
    requests = {e.dst: e for e in net.queue}
    net.queue.clear()
    for voter, granted in votes.items():
        env = requests[voter]
        core.step_response(env.out, RequestVoteResponse(core.term, granted))
    assert core.role is role
    assert core.term == 1


def test_5_2_each_server_votes_once_per_term_first_come_first_served() -> None:
    net = LockstepNetwork(3, cfg=NO_PRE_VOTE)
    voter = net["n3"]
    first = voter.handle_request_vote(RequestVoteRequest(1, "n1", 0, 0))
    assert first.vote_granted
    second = voter.handle_request_vote(RequestVoteRequest(1, "n2", 0, 0))
    assert not second.vote_granted
    again = voter.handle_request_vote(RequestVoteRequest(1, "n1", 0, 0))
    assert again.vote_granted  # a retried request from the same candidate
    # The vote is durable: a crash and restart does not free it.
    net.flush("n3")
    net.crash_restart("n3")
    voter = net["n3"]
    assert not voter.handle_request_vote(RequestVoteRequest(1, "n2", 0, 0)).vote_granted
    # A restarted node that had a term may have acknowledged a leader just before it went
    # down: it keeps that leader's lease for an election timeout, refusing even a new term...
    assert not voter.handle_request_vote(RequestVoteRequest(2, "n2", 0, 0)).vote_granted
    # ...after which a new term frees the vote.
    net.tick("n3", voter.election_ticks)
    assert voter.handle_request_vote(RequestVoteRequest(2, "n2", 0, 0)).vote_granted


def test_5_2_split_vote_is_retried_and_resolved_by_randomized_timeouts() -> None:
    net = LockstepNetwork(4, cfg=make_config(pre_vote=False, check_quorum=False), seed=3)
    checker = SafetyChecker()
    net["n1"].campaign()
    net["n2"].campaign()
    net.flush_all()
    # n3 hears n1 first, n4 hears n2 first: two votes each, quorum is three.
    net.drop(lambda e: (e.src, e.dst) in {("n1", "n4"), ("n2", "n3")})
    net.stabilize()
    assert (net.role("n1"), net.role("n2")) == (Role.CANDIDATE, Role.CANDIDATE)
    assert net.leaders() == []
    checker.check(net)
    net.tick_until_leader(5 * ELECTION_TICKS_MAX, checker.check)
    assert len(net.leaders()) == 1
    leader = net.leaders()[0]
    assert net[leader].term >= 2


@pytest.mark.parametrize("pre_vote", [False, True])
def test_5_2_a_candidate_steps_down_when_a_leader_of_its_term_appends(pre_vote: bool) -> None:
    net = LockstepNetwork(3, cfg=make_config(pre_vote=pre_vote))
    seed_log(net, "n1", [], term=3)
    core = net["n1"]
    core.campaign()
    net.flush("n1")
    net.queue.clear()
    assert core.role is Role.CANDIDATE
    assert core.pre_candidate is pre_vote
    term = core.term  # 3 for a pre-candidate (it keeps its term), 4 for a candidate
    # A stale leader is rejected and does not make it step down...
    stale = core.handle_append_entries(AppendEntriesRequest(term - 1, "n3", 0, 0, [], 0))
    assert not stale.success
    assert stale.term == term
    assert net.role("n1") is Role.CANDIDATE
    # ...a leader of its current term does.
    resp = core.handle_append_entries(AppendEntriesRequest(term, "n2", 0, 0, [], 0))
    assert resp.success
    assert net.role("n1") is Role.FOLLOWER
    assert core.leader_id == "n2"
    assert core.term == term


@pytest.mark.parametrize("size", [1, 3, 5])
@pytest.mark.parametrize("seed", range(4))
def test_5_2_a_cluster_elects_exactly_one_leader_everyone_follows(size: int, seed: int) -> None:
    net = LockstepNetwork(size, seed=seed)
    checker = SafetyChecker()
    net.tick_until_leader(4 * ELECTION_TICKS_MAX, checker.check)
    net.tick_all(HEARTBEAT_TICKS)
    net.stabilize()
    leaders = net.leaders()
    assert len(leaders) == 1
    term = net[leaders[0]].term
    for node_id in net.nodes:
        assert net[node_id].term == term
        assert net[node_id].leader_id == leaders[0]
