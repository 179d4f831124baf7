"""§5.4 Safety: the election restriction (§5.4.1) and committing entries from previous terms
(§5.4.2, Figure 8).

A voter denies its vote to a candidate whose log is less up-to-date than its own (compare the
last terms, then the lengths), so a leader always holds every committed entry. A leader never
commits an entry of an earlier term by counting replicas: such an entry, even on a majority,
can still be overwritten (Figure 8 (d)); it becomes committed only indirectly, once an entry of
the leader's own term is committed (Figure 8 (e)).
"""

from __future__ import annotations

import pytest

from raftcache.raft.core import Role
from raftcache.raft.messages import AppendEntriesRequest, RequestVoteRequest
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import (
    HEARTBEAT_TICKS,
    Envelope,
    LockstepNetwork,
    log_terms,
    make_config,
    of_type,
    seed_log,
)


@pytest.mark.parametrize("pre_vote", [False, True])
@pytest.mark.parametrize(
    ("voter_log", "last_index", "last_term", "granted"),
    [
        ([1, 1], 2, 1, True),  # same last term, same length
        ([1, 1], 3, 1, True),  # same last term, longer
        ([1, 1], 1, 1, False),  # same last term, shorter
        ([1, 1], 1, 2, True),  # a later last term wins whatever the length
        ([1, 2], 3, 1, False),  # an earlier last term loses whatever the length
        ([1, 2], 1, 2, False),
        ([1, 2], 2, 2, True),
        ([1, 2], 1, 3, True),
        ([], 0, 0, True),
    ],
)
def test_5_4_1_a_voter_grants_only_a_candidate_at_least_as_up_to_date(
    voter_log: list[int], last_index: int, last_term: int, granted: bool, pre_vote: bool
) -> None:
    net = LockstepNetwork(3)
    seed_log(net, "n2", voter_log)
    core = net["n2"]
    req = RequestVoteRequest(5, "n1", last_index, last_term, pre_vote)
    assert core.handle_request_vote(req).vote_granted is granted


@pytest.mark.parametrize("pre_vote", [False, True])
def test_5_4_1_a_candidate_missing_a_committed_entry_cannot_win(pre_vote: bool) -> None:
    net = LockstepNetwork(3, cfg=make_config(pre_vote=pre_vote, check_quorum=False))
    checker = SafetyChecker()
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"committed without n3")
    net.stabilize()
    assert net["n1"].commit_index == net["n1"].log.last_index()
    checker.check(net)
    net.heal()
    net.isolate("n1")  # the leader crashes; n3 is back
    net.campaign("n3")
    checker.check(net)
    assert net.role("n3") is not Role.LEADER
    net.campaign("n2")
    checker.check(net)
    assert net.role("n2") is Role.LEADER
    net.stabilize()
    assert net.nodes["n3"].commands() == [b"committed without n3"]


def _figure_8_c() -> tuple[LockstepNetwork, SafetyChecker]:
    """Figure 8 (c): S1 leads term 4 and has replicated its term-2 entry at index 2 to S3, so
    a majority (S1, S2, S3) holds it, while its own term-4 entry at index 3 (here: its no-op)
    is only on S1 and S2. S4 and S5 are cut off from S1."""
    net = LockstepNetwork(5, cfg=make_config(check_quorum=False, max_entries_per_message=1))
    checker = SafetyChecker()
    seed_log(net, "n1", [1, 2], term=3)  # everyone has seen term 3 begin
    seed_log(net, "n2", [1, 2], term=3)
    seed_log(net, "n3", [1], term=3)  # voted for n5 in term 3
    seed_log(net, "n4", [1], term=3)
    seed_log(net, "n5", [1, 3], term=3)  # led term 3, appended index 2 only locally
    net["n1"].campaign()
    net.flush("n1")
    net.deliver_where(of_type(RequestVoteRequest))
    assert net.role("n1") is Role.LEADER
    assert net["n1"].term == 4
    assert log_terms(net["n1"]) == [1, 2, 4]
    net.cut("n1", "n4")
    net.cut("n1", "n5")

    def index_3_to_n3(env: Envelope) -> bool:
        # n3 may learn index 2 (after rejecting a probe), never index 3.
        msg = env.message
        return (
            env.dst == "n3"
            and isinstance(msg, AppendEntriesRequest)
            and any(e.index == 3 for e in msg.entries)
            and net["n3"].log.last_index() >= 2
        )

    while net.queue:
        env = net.queue[0]
        if env.is_request and index_3_to_n3(env):
            net.drop_envelope(env)
        else:
            net.deliver(env)
        checker.check(net)
    assert log_terms(net["n2"]) == [1, 2, 4]
    assert log_terms(net["n3"]) == [1, 2]
    return net, checker


def test_5_4_2_figure_8_an_old_term_entry_on_a_majority_is_not_committed() -> None:
    net, checker = _figure_8_c()
    # Index 2 is on n1, n2, n3: three of five. Counting replicas would commit it; Raft must not.
    assert net["n1"].commit_index < 2
    # (d) S1 crashes; S5 is elected by S3, S4 and itself (its last term 3 beats their 2 and 1).
    net.heal()
    net.isolate("n1")
    net.campaign("n5")
    assert net.role("n5") is Role.LEADER
    net.stabilize()
    checker.check(net)
    # It overwrites index 2 everywhere: which is fine, because it was never committed.
    for node_id in ("n2", "n3", "n4", "n5"):
        assert log_terms(net[node_id]) == [1, 3, 5]
        assert net[node_id].commit_index == 3


def test_5_4_2_figure_8_a_current_term_commit_commits_the_old_entry_too() -> None:
    net, checker = _figure_8_c()
    # (e) S1 replicates its term-4 entry to a majority: now index 3 commits, and 2 with it.
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    assert net["n1"].commit_index == 3
    assert [(i, t) for i, t, _, _ in net.nodes["n1"].applied] == [(1, 1), (2, 2), (3, 4)]
    # S5 can no longer win: a majority holds a term-4 entry, more up-to-date than its log.
    net.isolate("n1")
    for _ in range(3):
        net.campaign("n5")
        checker.check(net)
        assert net.role("n5") is not Role.LEADER
    net.campaign("n2")
    assert net.role("n2") is Role.LEADER
    net.stabilize()
    checker.check(net)
    assert log_terms(net["n5"])[:3] == [1, 2, 4]
