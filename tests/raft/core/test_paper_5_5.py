"""§5.5 Follower and candidate crashes.

"If a follower or candidate crashes, then future RequestVote and AppendEntries RPCs sent to it
will fail. Raft handles these failures by retrying indefinitely; if the crashed server restarts,
then the RPC will complete successfully. [...] Raft RPCs are idempotent, so this causes no harm."
And what a node acknowledged (a vote, an entry) was persisted first, so a crash never takes it
back.
"""

from __future__ import annotations

from raftcache.raft.core import Role
from raftcache.raft.messages import AppendEntriesRequest, RequestVoteRequest
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import (
    ELECTION_TICKS_MAX,
    HEARTBEAT_TICKS,
    Envelope,
    LockstepNetwork,
    between,
    make_config,
)


def test_5_5_a_crashed_follower_is_retried_until_it_restarts_and_catches_up() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.isolate("n3")  # crashed
    commands = [f"c{i}".encode() for i in range(5)]
    for cmd in commands:
        net.propose("n1", cmd)
    net.stabilize()
    assert net["n1"].commit_index == net["n1"].log.last_index()  # n1 + n2 suffice
    # Retried indefinitely, at the pace of heartbeats (no hot loop against a dead peer).
    for _ in range(10):
        sent_before = len([h for h in net.handled if h.dst == "n3"])
        attempts = 0
        for _ in range(HEARTBEAT_TICKS):
            net.tick("n1")
            attempts += len([e for e in net.queue if e.dst == "n3"])
            net.stabilize()
        assert 1 <= attempts <= 3
        assert len([h for h in net.handled if h.dst == "n3"]) == sent_before
        checker.check(net)
    net.crash_restart("n3")
    net.heal()
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    assert net.nodes["n3"].commands() == commands


def test_5_5_a_crashed_candidate_remembers_its_term_and_its_vote() -> None:
    net = LockstepNetwork(3, cfg=make_config(pre_vote=False))
    checker = SafetyChecker()
    net["n1"].campaign()
    net.flush("n1")  # the vote for itself is durable before the requests leave
    net.deliver_where(lambda e: e.is_request)  # the votes are granted...
    net.crash_restart("n1")  # ...but n1 crashes before hearing them
    core = net["n1"]
    assert (core.role, core.term, core.voted_for) == (Role.FOLLOWER, 1, "n1")
    net.stabilize()  # the replies find no one waiting
    assert net.leaders() == []
    assert not core.handle_request_vote(RequestVoteRequest(1, "n2", 0, 0)).vote_granted
    net.tick_until_leader(4 * ELECTION_TICKS_MAX, checker.check)
    assert len(net.leaders()) == 1
    assert net[net.leaders()[0]].term >= 2


def test_5_5_rpcs_are_idempotent_duplicates_change_nothing() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.propose("n1", b"a")
    net.propose("n1", b"b")
    dupes = [
        Envelope(env.out, env.sender, env.incarnation)
        for env in net.queue
        if isinstance(env.message, AppendEntriesRequest)
    ]
    net.stabilize()
    logs = {n: [(e.index, e.term) for e in net[n].log.entries] for n in net.nodes}
    commit = net["n1"].commit_index
    matches = {p: pr.match_index for p, pr in net["n1"].progress.items()}
    net.queue.extend(dupes)  # the network delivers every request twice...
    net.stabilize()
    checker.check(net)
    assert {n: [(e.index, e.term) for e in net[n].log.entries] for n in net.nodes} == logs
    assert net["n1"].commit_index == commit
    assert {p: pr.match_index for p, pr in net["n1"].progress.items()} == matches
    for node in net.nodes.values():
        assert node.commands() == [b"a", b"b"]


def test_5_5_a_lost_reply_makes_the_leader_retry_and_the_retry_is_harmless() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"a")
    net.deliver_where(lambda e: e.is_request and e.dst == "n2")  # n2 appends and answers...
    assert net.drop(between("n1", "n2")) == 1  # ...but the answer is lost
    assert net["n1"].commit_index < net["n1"].log.last_index()
    net.tick("n1", HEARTBEAT_TICKS)  # the next heartbeat round retries
    net.stabilize()
    checker.check(net)
    assert net["n1"].commit_index == net["n1"].log.last_index()
    assert net.nodes["n2"].commands() == [b"a"]


def test_5_5_what_a_follower_acknowledged_survives_a_crash_of_everyone() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"kept")
    net.stabilize()
    assert net["n1"].commit_index == net["n1"].log.last_index()
    for node_id in net.nodes:
        net.crash_restart(node_id)
    net.heal()
    checker.check(net)
    net.tick_until_leader(4 * ELECTION_TICKS_MAX, checker.check)
    net.tick_all(HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    for node in net.nodes.values():
        assert node.commands() == [b"kept"]


def test_5_5_a_leader_crash_loses_only_what_it_never_persisted() -> None:
    net = LockstepNetwork(3, auto_ready=False)
    checker = SafetyChecker()
    net["n1"].campaign()
    net.flush("n1")
    net.stabilize()
    net.flush_all()
    net.stabilize()
    net.flush_all()
    assert net.role("n1") is Role.LEADER
    net["n1"].propose(b"never persisted")  # appended in memory, no Ready processed yet
    net.crash_restart("n1")
    assert all(e.command != b"never persisted" for e in net["n1"].log.entries)
    checker.check(net)
    net.auto_ready = True
    net.tick_until_leader(4 * ELECTION_TICKS_MAX, checker.check)
    net.tick_all(HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    for node in net.nodes.values():
        assert b"never persisted" not in node.commands()
