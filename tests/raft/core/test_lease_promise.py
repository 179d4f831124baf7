"""A follower's lease promise survives a late response carrying a higher term (issue 12 review).

A follower that acknowledged a leader's round promised that leader not to vote for anyone else
for an election timeout (raft/lease.py, step 1). A response to a stale request of its own — here
a pre-vote rejection sent before it followed the leader — carries a higher term: the follower
adopts it and forgets the leader, but must keep the promise. Before the fix the promise was
"a leader is known and the timer runs", so forgetting the leader cancelled it, and a second
leader committed a write 7 ticks into the first leader's 8.1-tick lease (found by the hostile
review of the lease fix; pure lockstep cores, pre-vote and check-quorum on, E = 10).
"""

from __future__ import annotations

from raftcache.raft.core import Role
from raftcache.raft.messages import RequestVoteRequest, RequestVoteResponse
from tests.raft.core.lockstep import Envelope, LockstepNetwork

E = 10
LEASE_TICKS = 0.9 * (E - 1)


def _is_vote(env: Envelope, *, pre: bool | None = None) -> bool:
    m = env.message
    return isinstance(m, RequestVoteRequest) and (pre is None or m.pre_vote == pre)


def test_a_late_higher_term_response_does_not_cancel_the_lease_promise() -> None:
    net = LockstepNetwork(5)
    n = ["n1", "n2", "n3", "n4", "n5"]
    net.elect("n1")
    net.propose("n1", b"x=1")
    net.stabilize()
    net.tick("n1", 2)
    net.stabilize()
    assert all(net[i].commit_index == net["n1"].commit_index for i in n)

    # Phase B: n1 pauses (GC, SIGSTOP) and is cut off; the others time out of their lease.
    net.isolate("n1")
    for i in n[1:]:
        net[i].randomized_timeout = 19  # an RNG draw in [10, 20): nobody campaigns yet
    for _ in range(E):
        for i in n[1:]:
            net.tick(i)
    # n5's timer fires: pre-vote at term 2 succeeds (n2..n4 are out of lease), its real
    # RequestVote(2)s are lost. n5 now sits at term 2.
    net["n5"].campaign()
    net.flush("n5")
    net.deliver_where(
        lambda e: (
            _is_vote(e, pre=True)
            and ((e.is_request and e.src == "n5") or (not e.is_request and e.dst == "n5"))
        )
    )
    assert net["n5"].term == 2
    assert net["n5"].role is Role.CANDIDATE
    net.drop(lambda e: _is_vote(e, pre=False))
    # n2, n3, n4 time out too and send pre-votes (term 2); n5 (term 2) rejects them with
    # term 2; the rejections are delayed in the network. The other pre-votes are lost.
    for i in ("n2", "n3", "n4"):
        net[i].campaign()
        net.flush(i)
    net.drop(lambda e: e.is_request and _is_vote(e) and e.dst != "n5")
    net.deliver_where(lambda e: e.is_request and _is_vote(e) and e.dst == "n5")
    held = {e.dst: e for e in net.queue if not e.is_request and e.src == "n5"}
    assert set(held) == {"n2", "n3", "n4"}
    for e in held.values():
        assert isinstance(e.response, RequestVoteResponse)
        assert e.response.term == 2
        assert not e.response.vote_granted

    # Time X: n4 gets its rejection: term 2, no leader (it acked nothing of round r: fine).
    net.deliver(held["n4"])
    assert net["n4"].term == 2
    assert net["n4"].leader_id is None
    net["n4"].randomized_timeout = 10  # an RNG draw in [10, 20)

    running = ["n1", "n2", "n3", "n4"]  # n5 stays paused from here on (its answers are out)
    step = 0

    def tick_all() -> None:
        nonlocal step
        step += 1
        for i in running:
            net[i].tick()
            net.flush(i)

    # n1 resumes, still cut from n4, n5; reachable by n2, n3.
    for _ in range(3):
        tick_all()
    net.rejoin("n1")
    net.cut("n1", "n4")
    net.cut("n1", "n5")
    net.drop(lambda e: "n1" in (e.src, e.dst))  # whatever n1 sent while isolated
    # A client read opens round r at once (the driver reads its clock just before ready()).
    net["n1"].request_read(1)
    net.flush("n1")
    round_r, s_r = net["n1"].round, step
    net.deliver_where(lambda e: {e.src, e.dst} in ({"n1", "n2"}, {"n1", "n3"}))
    assert net["n2"].leader_id == "n1"
    assert net["n3"].leader_id == "n1"
    assert net["n1"].role is Role.LEADER
    assert net["n1"].lease_allowed()
    assert net["n1"].lease_round() == round_r  # n1 + n2 + n3: a quorum of five acked round r

    # The delayed pre-vote rejections from n5 arrive: term 2 > 1, so n2, n3 adopt term 2 and
    # forget their leader -- inside the promise they just made to n1.
    net.deliver(held["n2"])
    net.deliver(held["n3"])
    assert net["n2"].term == 2
    assert net["n2"].leader_id is None

    # n1 is partitioned from everyone now (the usual lease attack); time goes on for the lease.
    net.isolate("n1")
    second_leader_commit = None
    while step - s_r < LEASE_TICKS:
        tick_all()
        net.deliver_where(lambda e: "n1" not in (e.src, e.dst) and "n5" not in (e.src, e.dst))
        net.drop(lambda e: "n5" in (e.src, e.dst))
        if net["n4"].role is Role.LEADER and second_leader_commit is None:
            idx = net.propose("n4", b"x=2")
            net.deliver_where(lambda e: "n1" not in (e.src, e.dst) and "n5" not in (e.src, e.dst))
            if net["n4"].commit_index >= idx:
                second_leader_commit = (step, idx)
    # n1 still leads term 1 with a lease on round r: nobody else may have committed meanwhile.
    assert net["n1"].role is Role.LEADER
    assert net["n1"].lease_round() == round_r
    assert second_leader_commit is None, (
        f"n4 committed x=2 at step {second_leader_commit[0]}, {second_leader_commit[0] - s_r} "
        f"ticks into n1's lease of {LEASE_TICKS:.1f}: a lease read at n1 would be stale"
    )
    for i in ("n2", "n3"):
        assert net[i].voted_for != "n4", f"{i} voted inside its promise to n1"
