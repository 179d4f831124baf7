"""§5.1 Raft basics — terms act as a logical clock.

"If a server's current term is smaller than the other's, it updates its current term to the
larger value. If a candidate or leader discovers that its term is out of date, it immediately
reverts to follower state. If a server receives a request with a stale term number, it rejects
the request."
"""

from __future__ import annotations

import pytest

from raftcache.raft.core import Role
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    LogEntry,
    RaftResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import LockstepNetwork, make_config, of_type, requests


def _in_role(role: str) -> LockstepNetwork:
    """A 3-node network whose n1 is a follower, a candidate or the leader of term 2."""
    net = LockstepNetwork(3, cfg=make_config(pre_vote=False, check_quorum=False))
    net.elect("n1")
    net.elect("n2")  # term 2: n2 leads, n1 follows
    if role == "leader":
        net.elect("n1")  # term 3
    elif role == "candidate":
        net.isolate("n1")
        net["n1"].campaign()  # term 3, its votes never arrive
        net.flush("n1")
        net.queue.clear()
        net.heal()
    assert net["n1"].role.value == role
    return net


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_5_1_a_request_with_a_higher_term_makes_any_node_a_follower(role: str) -> None:
    net = _in_role(role)
    core = net["n1"]
    higher = core.term + 5
    resp = core.handle_append_entries(
        AppendEntriesRequest(higher, "n3", core.log.last_index(), core.log.last_term(), [], 0)
    )
    assert resp.term == higher
    assert resp.success
    assert core.role is Role.FOLLOWER
    assert core.term == higher
    assert core.leader_id == "n3"
    # The new term must be persisted before this response leaves the node.
    assert core.has_unpersisted()
    net.flush("n1")
    assert net.nodes["n1"].store.term == higher


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_5_1_a_response_with_a_higher_term_makes_any_node_a_follower(role: str) -> None:
    net = _in_role(role)
    core = net["n1"]
    # One of our own requests, answered by a node that has moved on to a later term.
    if role == "leader":
        net.tick("n1", 2)  # a heartbeat round
    else:
        core.campaign()
        net.flush("n1")
    env = next(e for e in net.queue if e.src == "n1")
    net.queue.clear()
    higher = env.message.term + 1
    resp: RaftResponse
    if isinstance(env.message, RequestVoteRequest):
        resp = RequestVoteResponse(higher, False)
    else:
        resp = AppendEntriesResponse(higher, False)
    core.step_response(env.out, resp)
    assert core.role is Role.FOLLOWER
    assert core.term == higher


def test_5_1_stale_append_entries_rejected_without_side_effects() -> None:
    net = LockstepNetwork(3, cfg=make_config(check_quorum=False))
    net.elect("n1")
    net.propose("n1", b"a")
    net.stabilize()
    net.elect("n2")
    core = net["n3"]
    before = ([(e.index, e.term) for e in core.log.entries], core.term, core.leader_id)
    stale = AppendEntriesRequest(
        core.term - 1,
        "n1",
        core.log.last_index(),
        core.log.last_term(),
        [LogEntry(core.term - 1, core.log.last_index() + 1, b"stale")],
        core.log.last_index() + 1,
    )
    resp = core.handle_append_entries(stale)
    assert not resp.success
    assert resp.term == core.term  # tells the stale leader the current term
    after = ([(e.index, e.term) for e in core.log.entries], core.term, core.leader_id)
    assert after == before
    assert not core.has_unpersisted()


def test_5_1_stale_vote_and_snapshot_requests_rejected() -> None:
    net = LockstepNetwork(3, cfg=make_config(pre_vote=False, check_quorum=False))
    net.elect("n1")
    net.elect("n2")
    core = net["n3"]
    term = core.term
    vote = core.handle_request_vote(RequestVoteRequest(term - 1, "n1", 100, term - 1))
    assert not vote.vote_granted
    assert vote.term == term
    snap = core.handle_install_snapshot(
        InstallSnapshotRequest(term - 1, "n1", 50, term - 1, 0, b"[]", True, b"")
    )
    assert snap.term == term
    assert core.log.snapshot_index == 0
    assert core.leader_id == "n2"


def test_5_1_a_deposed_leader_learns_the_new_term_from_any_reply() -> None:
    """An old leader cut off while a new one was elected steps down on its first reply."""
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.isolate("n1")
    net.tick("n3", 10)  # n3's lease on n1 expires: it may vote again
    net.tick("n2", 40)  # n2's election timer fires
    net.stabilize()
    assert net.role("n2") is Role.LEADER
    new_term = net["n2"].term
    assert net.role("n1") is Role.LEADER  # it does not know yet
    net.heal()
    net.tick("n1", 2)  # a heartbeat round
    assert net.drop(requests(of_type(RequestVoteRequest))) == 0
    net.stabilize()
    assert net.role("n1") is Role.FOLLOWER
    assert net["n1"].term == new_term
    checker.check(net)
