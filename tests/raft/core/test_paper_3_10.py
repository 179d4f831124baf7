"""§3.10 Leadership transfer (dissertation).

The leader stops accepting proposals, brings the target's log up to date, then tells it to
campaign at once — here a TimeoutNow riding on AppendEntries (``timeout_now=True``). The target
campaigns without a pre-vote and its vote requests are marked as a transfer, so voters grant
them even inside their check-quorum lease. A transfer that does not complete within an election
timeout is aborted and the leader accepts proposals again.
"""

from __future__ import annotations

import pytest

from raftcache.raft.core import Role
from raftcache.raft.errors import MembershipChangeError, ProposalDroppedError
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    RequestVoteRequest,
)
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import ELECTION_TICKS, HEARTBEAT_TICKS, Envelope, LockstepNetwork


def _timeout_now(env: Envelope) -> bool:
    return isinstance(env.message, AppendEntriesRequest) and env.message.timeout_now


def _cluster() -> tuple[LockstepNetwork, SafetyChecker]:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.propose("n1", b"a")
    net.stabilize()
    return net, checker


def test_3_10_transfer_to_an_up_to_date_follower() -> None:
    net, checker = _cluster()
    term = net["n1"].term
    assert net["n1"].transfer_leadership("n2") == "n2"
    net.flush("n1")
    nudges = [e for e in net.queue if _timeout_now(e)]
    assert [e.dst for e in nudges] == ["n2"]
    net.stabilize()
    checker.check(net)
    assert net.leaders() == ["n2"]
    assert net["n2"].term == term + 1
    assert net.role("n1") is Role.FOLLOWER
    votes = [h.request for h in net.handled if isinstance(h.request, RequestVoteRequest)]
    # No pre-vote, and marked as a transfer (voters are still inside their lease on n1).
    transfer_votes = [v for v in votes if v.candidate_id == "n2"]
    assert transfer_votes
    assert all(v.leader_transfer and not v.pre_vote for v in transfer_votes)
    net.propose("n2", b"b")
    net.stabilize()
    assert net.nodes["n1"].commands() == [b"a", b"b"]


def test_3_10_a_lagging_target_is_caught_up_before_it_is_told_to_campaign() -> None:
    net, checker = _cluster()
    net.isolate("n3")
    for i in range(5):
        net.propose("n1", f"c{i}".encode())
    net.stabilize()
    net.heal()
    net["n1"].transfer_leadership("n3")
    net.flush("n1")
    while net.queue:
        env = net.queue[0]
        if env.is_request and _timeout_now(env):
            # Only once n3 holds everything the leader has.
            assert net["n3"].log.last_index() == net["n1"].log.last_index()
        net.deliver(env)
        checker.check(net)
    assert net.leaders() == ["n3"]
    assert net.nodes["n3"].commands()[:6] == [b"a"] + [f"c{i}".encode() for i in range(5)]


def test_3_10_proposals_are_refused_while_a_transfer_is_in_progress() -> None:
    net, _ = _cluster()
    net.isolate("n2")
    net["n1"].transfer_leadership("n2")
    with pytest.raises(ProposalDroppedError):
        net["n1"].propose(b"during the transfer")


def test_3_10_a_transfer_that_does_not_complete_is_aborted_after_an_election_timeout() -> None:
    net, checker = _cluster()
    net.isolate("n2")
    net["n1"].transfer_leadership("n2")
    for _ in range(ELECTION_TICKS):
        net.tick("n1")
        net.stabilize()
    assert net.role("n1") is Role.LEADER  # n3 still answers: a quorum
    net.propose("n1", b"after the abort")
    net.stabilize()
    checker.check(net)
    assert net.nodes["n3"].commands() == [b"a", b"after the abort"]


def test_3_10_the_default_target_is_the_most_up_to_date_voter_and_voters_only() -> None:
    net, _ = _cluster()
    net.isolate("n2")
    net.propose("n1", b"n3 has it, n2 does not")
    net.stabilize()
    net.heal()
    with pytest.raises(MembershipChangeError):
        net["n1"].transfer_leadership("n1")
    with pytest.raises(MembershipChangeError):
        net["n1"].transfer_leadership("n9")
    assert net["n1"].transfer_leadership(None) == "n3"
    net.flush("n1")
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    assert net.leaders() == ["n3"]


def test_3_10_a_leaving_target_declines_and_its_leader_gives_up_at_once() -> None:
    """A node about to stop (``leaving``) ignores TimeoutNow — it would win a leadership only
    to drop it — and says so; the leader aborts the transfer at once, not after an election
    timeout, and accepts proposals again."""
    net, checker = _cluster()
    term = net["n1"].term
    net["n2"].leaving = True
    net["n1"].transfer_leadership("n2")
    net.flush("n1")
    assert [e.dst for e in net.queue if _timeout_now(e)] == ["n2"]  # it was told...
    net.stabilize()  # no tick: well within the election timeout
    checker.check(net)
    # ...did not campaign, and declined in its answer.
    votes = [h.request for h in net.handled if isinstance(h.request, RequestVoteRequest)]
    assert not [v for v in votes if v.candidate_id == "n2"]
    answers = [
        h.response
        for h in net.handled
        if isinstance(h.request, AppendEntriesRequest) and h.request.timeout_now
    ]
    assert [getattr(a, "transfer_declined", None) for a in answers] == [True]
    assert net["n2"].term == term
    assert net.leaders() == ["n1"]
    assert net["n1"].lead_transferee is None
    net.propose("n1", b"accepted at once")
    net.stabilize()
    checker.check(net)
    assert net.nodes["n2"].commands() == [b"a", b"accepted at once"]


def test_3_10_the_driver_may_abort_a_transfer_without_waiting() -> None:
    """``abort_leadership_transfer``: the driver knows the target is gone (it stopped answering)
    and gives the transfer up before the core's own election-timeout abort."""
    net, checker = _cluster()
    net.isolate("n2")
    net["n1"].transfer_leadership("n2")
    with pytest.raises(ProposalDroppedError):
        net.propose("n1", b"refused while the transfer is under way")
    net["n1"].abort_leadership_transfer()
    net.propose("n1", b"accepted again, no tick needed")
    net.stabilize()
    checker.check(net)
    assert net.nodes["n3"].commands() == [b"a", b"accepted again, no tick needed"]


def test_3_10_an_abort_after_a_delivered_timeout_now_keeps_the_lease_off() -> None:
    """The driver aborts a transfer (the target looked silent, or a decline raced) after the
    target already acted on TimeoutNow: the old leader accepts writes again, but serves no
    lease read for the rest of its term — the target's transfer-flagged votes win inside the
    voters' lease — and the writes it accepted after the abort are never acknowledged unless
    the new leader carries them."""
    net, checker = _cluster()
    term = net["n1"].term
    net["n1"].transfer_leadership("n2")
    net.flush("n1")
    nudge = next(e for e in net.queue if _timeout_now(e))
    net.deliver(nudge)  # n2 campaigns at once; its answer and its votes are in flight
    assert net["n2"].term == term + 1
    net["n1"].abort_leadership_transfer()
    net.propose("n1", b"accepted after the abort")
    assert not net["n1"].lease_allowed()
    assert net["n1"].lease_round() == 0
    # n3 hears n2's transfer-flagged vote before n1's new entry: n2 wins in n3's lease.
    net.deliver_where(
        lambda e: (
            isinstance(e.message, RequestVoteRequest) and e.sender == "n2" and e.out.target == "n3"
        )
    )
    assert net.role("n2") is Role.LEADER
    net.stabilize()
    checker.check(net)
    assert net.leaders() == ["n2"]
    for node in ("n1", "n2", "n3"):
        assert b"accepted after the abort" not in net.nodes[node].commands()


def test_3_10_a_decline_from_an_earlier_target_leaves_a_newer_transfer_alone() -> None:
    """A decline that arrives late, after the transfer it answered was given up and another
    started towards a different node, must not abort the newer one."""
    net, checker = _cluster()
    net["n2"].leaving = True
    net["n1"].transfer_leadership("n2")
    net.flush("n1")
    nudge = next(e for e in net.queue if _timeout_now(e))
    net.deliver(nudge)  # declined; the answer is on its way back, delayed
    assert isinstance(nudge.response, AppendEntriesResponse)
    assert nudge.response.transfer_declined
    net["n1"].abort_leadership_transfer()
    net["n1"].transfer_leadership("n3")
    net.flush("n1")
    net.deliver(nudge)  # the late decline
    assert net["n1"].lead_transferee == "n3"
    net.stabilize()
    checker.check(net)
    assert net.leaders() == ["n3"]


def test_3_10_a_decline_flag_on_an_answer_to_a_plain_append_is_not_a_decline() -> None:
    """Only the answer to the TimeoutNow itself can decline a transfer (a misbehaving peer's
    flag on any other answer aborts nothing)."""
    net, checker = _cluster()
    net.propose("n1", b"b")
    net.flush("n1")
    plain = next(
        e
        for e in net.queue
        if e.dst == "n2" and isinstance(e.message, AppendEntriesRequest) and e.message.entries
    )
    assert net["n1"].transfer_leadership("n2") == "n2"  # n2 lags: caught up first
    net.deliver(plain)
    assert isinstance(plain.response, AppendEntriesResponse)
    plain.response.transfer_declined = True  # forged
    net.deliver(plain)
    assert net["n1"].lead_transferee == "n2"
    net.stabilize()
    checker.check(net)
    assert net.leaders() == ["n2"]
