"""What replication costs in messages and bookkeeping (issue 5's write path), checked in lockstep.

A follower learns a new commit index from the next AppendEntries that carries entries, or,
when it has none in flight, from one commit-only message per ready cycle — never one per
acknowledgement (the leader used to send up to three per write: one when an ack found the
follower's last append stale, then one more for every idle follower in the next ready). The
flow-control total of uncommitted bytes is kept as a running sum, equal at every step to what
a rescan of the log would give.
"""

from __future__ import annotations

from collections import Counter

from raftcache.raft.messages import AppendEntriesRequest
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import Handled, LockstepNetwork, between


def _appends_from(net: LockstepNetwork, leader: str, since: int) -> list[Handled]:
    return [
        h
        for h in net.handled[since:]
        if h.src == leader and isinstance(h.request, AppendEntriesRequest)
    ]


def _commit_only(handled: list[Handled]) -> Counter[str]:
    """Commit-only messages per follower: no entries, a commit index the follower lacked."""
    return Counter(
        h.dst
        for h in handled
        if isinstance(h.request, AppendEntriesRequest) and not h.request.entries
    )


def test_one_write_at_a_time_costs_one_commit_update_per_follower() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.stabilize()
    for i in range(5):
        since = len(net.handled)
        index = net.propose("n1", f"w{i}".encode())
        net.stabilize()
        checker.check(net)
        sent = _appends_from(net, "n1", since)
        with_entries = Counter(h.dst for h in sent if h.request.entries)  # type: ignore[union-attr]
        assert with_entries == {"n2": 1, "n3": 1}
        assert _commit_only(sent) == {"n2": 1, "n3": 1}, sent
        for follower in ("n2", "n3"):
            assert net[follower].commit_index == index  # and they did learn it


def test_pipelined_writes_carry_the_commit_index_on_the_next_append() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.stabilize()
    since = len(net.handled)
    last = 0
    for i in range(6):  # six appends in flight to each follower before any answer
        last = net.propose("n1", f"p{i}".encode())
    net.stabilize()
    checker.check(net)
    sent = _appends_from(net, "n1", since)
    # Only the last answer finds its append's commit index stale: one update per follower.
    assert _commit_only(sent) == {"n2": 1, "n3": 1}, sent
    for follower in ("n2", "n3"):
        assert net[follower].commit_index == last
        assert net.nodes[follower].commands() == [f"p{i}".encode() for i in range(6)]


def test_a_slow_follower_gets_the_commit_index_once_its_appends_are_answered() -> None:
    net = LockstepNetwork(3)
    net.elect("n1")
    net.stabilize()
    index = net.propose("n1", b"x")
    net.deliver_where(between("n1", "n2"))  # n2 answers: committed; n3's append still out
    assert net["n1"].commit_index == index
    since = len(net.handled)
    net.stabilize()  # n3's stale-commit answer arrives last
    assert _commit_only(_appends_from(net, "n1", since)) == {"n3": 1}
    assert net["n3"].commit_index == index


def _rescanned(net: LockstepNetwork, leader: str, first_counted: int) -> int:
    core = net[leader]
    return sum(
        len(e.command)
        for e in core.log.entries
        if e.index > core.commit_index and e.index >= first_counted
    )


def test_uncommitted_bytes_is_a_running_total_of_the_leaders_own_proposals() -> None:
    net = LockstepNetwork(3)
    net.elect("n1")
    net.stabilize()
    core = net["n1"]
    first = core.log.last_index() + 1
    assert core.uncommitted_bytes == 0
    net.propose("n1", b"a" * 10)
    net.propose("n1", b"b" * 20)
    assert core.uncommitted_bytes == 30 == _rescanned(net, "n1", first)
    net.deliver_where(between("n1", "n2"))  # both commit with n2
    assert core.uncommitted_bytes == 0 == _rescanned(net, "n1", first)
    net.propose("n1", b"c" * 7)
    net.propose("n1", b"d" * 5)
    assert core.uncommitted_bytes == 12 == _rescanned(net, "n1", first)
    # n3 gets all four; its first answers cover entries already committed (nothing to
    # subtract twice), the last ones commit c and d.
    net.deliver_where(between("n1", "n3"))
    assert core.uncommitted_bytes == 0 == _rescanned(net, "n1", first)


def test_a_heartbeat_that_overtakes_an_append_does_not_count_as_telling_the_commit() -> None:
    """A heartbeat carries the commit index capped by the follower's match: if it leaves while
    the append of the newest entry is still out, the follower learns the commit only from a
    later message — which must then be sent, not skipped as already told."""
    net = LockstepNetwork(3)
    net.elect("n1")
    net.stabilize()
    index = net.propose("n1", b"x")
    net.deliver_where(between("n1", "n2"))  # committed with n2; n3's append still out
    assert net["n1"].commit_index == index
    for _ in range(10):  # a heartbeat round leaves with n3's append in flight
        net.tick("n1")
        if any(_is_heartbeat_to(env.message, env.dst, "n3") for env in net.queue):
            break
    else:
        raise AssertionError("no heartbeat within 10 ticks")
    net.stabilize()  # no more ticks: only the messages already due
    assert net["n3"].commit_index == index


def _is_heartbeat_to(msg: object, dst: str, target: str) -> bool:
    return dst == target and isinstance(msg, AppendEntriesRequest) and not msg.entries
