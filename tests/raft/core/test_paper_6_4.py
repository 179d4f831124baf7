"""§6.4 Processing read-only queries more efficiently: ReadIndex (dissertation §6.4).

The leader records its commit index as the read index, then confirms it is still the leader
with a round of heartbeats acknowledged by a majority — a round that started *after* the read
arrived — and only then may the read be served at that index. A leader first commits an entry
of its own term (its no-op) so that its commit index is at least every earlier leader's. A
deposed leader cannot gather such a majority, so it never confirms a read.
"""

from __future__ import annotations

import pytest

from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.errors import NotLeaderError
from raftcache.raft.messages import RequestVoteRequest
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import (
    ELECTION_TICKS_MAX,
    HEARTBEAT_TICKS,
    Envelope,
    LockstepNetwork,
    between,
    make_config,
    of_type,
)


def _leader_with_data(cfg: RaftConfig | None = None) -> LockstepNetwork:
    net = LockstepNetwork(3, cfg=cfg)
    net.elect("n1")
    for i in range(3):
        net.propose("n1", f"c{i}".encode())
    net.stabilize()
    return net


def _read(net: LockstepNetwork, node_id: str, read_id: int) -> None:
    net[node_id].request_read(read_id)
    net.flush(node_id)


def test_6_4_a_read_is_confirmed_only_by_a_quorum_round_started_after_it() -> None:
    net = _leader_with_data()
    commit = net["n1"].commit_index
    net.tick("n1", HEARTBEAT_TICKS)  # a heartbeat round, sent before the read arrived
    earlier_round = list(net.queue)
    assert earlier_round
    _read(net, "n1", 1)
    later_round = [e for e in net.queue if all(e is not o for o in earlier_round)]
    assert later_round  # the read started a round of its own
    net.deliver_where(lambda e: any(e is o for o in earlier_round))
    assert net.nodes["n1"].reads == []  # acknowledgements of the earlier round do not count
    net.deliver_where(lambda e: any(e is o for o in later_round) and "n2" in (e.src, e.dst))
    assert net.nodes["n1"].reads == [(1, commit)]  # n1 + n2: a quorum of three


def test_6_4_the_read_index_is_the_commit_index_when_the_read_arrived() -> None:
    net = _leader_with_data()
    commit = net["n1"].commit_index
    _read(net, "n1", 1)
    net.propose("n1", b"after the read")  # does not move the read's index
    net.stabilize()
    assert net["n1"].commit_index == commit + 1
    assert net.nodes["n1"].reads == [(1, commit)]


def test_6_4_a_single_voter_confirms_reads_at_once() -> None:
    net = LockstepNetwork(1)
    net.elect("n1")
    _read(net, "n1", 9)
    assert net.nodes["n1"].reads == [(9, net["n1"].commit_index)]


def test_6_4_a_follower_refuses_reads_with_a_leader_hint() -> None:
    net = _leader_with_data()
    with pytest.raises(NotLeaderError) as info:
        net["n2"].request_read(1)
    assert info.value.leader_id == "n1"


def _deposed_n1() -> tuple[LockstepNetwork, SafetyChecker]:
    """n1 leads term 1; cut off from n2 and n3, which elect n2 in term 2."""
    net = _leader_with_data()
    checker = SafetyChecker()
    net.cut("n1", "n2")
    net.cut("n1", "n3")
    net.run(
        2 * ELECTION_TICKS_MAX,
        until=lambda net: Role.LEADER in (net.role("n2"), net.role("n3")),
        nodes=("n2", "n3"),
    )
    assert net.role("n1") is Role.LEADER
    assert len(net.leaders()) == 2
    checker.check(net)
    return net, checker


def test_6_4_a_deposed_leader_in_a_minority_never_confirms_a_read() -> None:
    net, checker = _deposed_n1()
    _read(net, "n1", 7)
    for _ in range(2 * ELECTION_TICKS_MAX):
        net.tick("n1")
        net.stabilize()
        assert net.nodes["n1"].reads == []
        if net.role("n1") is not Role.LEADER:
            break
    assert net.role("n1") is Role.FOLLOWER  # check-quorum
    assert net.nodes["n1"].dropped_reads == [7]  # the driver fails it with NotLeaderError
    checker.check(net)


def test_6_4_a_deposed_leader_that_reaches_the_new_majority_learns_it_and_drops_the_read() -> None:
    net, checker = _deposed_n1()
    _read(net, "n1", 7)
    net.heal()
    net.cut("n1", "n2")  # n1 still reaches n3, which voted in term 2
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    assert net.nodes["n1"].reads == []
    assert net.nodes["n1"].dropped_reads == [7]
    assert net.role("n1") is Role.FOLLOWER
    checker.check(net)


def test_6_4_a_new_leader_serves_reads_only_after_committing_an_entry_of_its_term() -> None:
    # Without check-quorum, so that n3 votes for n2 at once (no lease on n1 to wait out).
    net = _leader_with_data(make_config(check_quorum=False))
    committed_before = net["n1"].commit_index
    net.isolate("n1")  # n2 takes over; its no-op commits only when we let it
    net["n2"].campaign()
    net.flush("n2")
    net.deliver_where(of_type(RequestVoteRequest))
    assert net.role("n2") is Role.LEADER
    noop = net["n2"].log.last_index()
    assert net["n2"].log.term_at(noop) == net["n2"].term
    _read(net, "n2", 3)
    # Heartbeat rounds complete (leadership is confirmed), but nothing of its term is committed.
    net.tick("n2", HEARTBEAT_TICKS)

    def heartbeat(env: Envelope) -> bool:
        return env.out.heartbeat

    net.deliver_where(heartbeat)
    assert net.nodes["n2"].reads == []
    net.deliver_where(between("n2", "n3"))  # the no-op reaches a majority
    net.stabilize()
    reads = net.nodes["n2"].reads
    assert len(reads) == 1
    read_id, index = reads[0]
    assert read_id == 3
    assert index >= noop > committed_before  # covers everything committed in earlier terms
