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
from collections.abc import Callable

from raftcache.raft.messages import AppendEntriesRequest
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import Envelope, Handled, LockstepNetwork, between, make_config


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
    for i in range(6):  # six writes before any answer (the first append out, the rest wait)
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


# ---------------------------------------------------------------- how deep small appends pipeline
def _appends_queued(net: LockstepNetwork, src: str, dst: str) -> list[AppendEntriesRequest]:
    """AppendEntries with entries from ``src`` to ``dst`` still on their way (not answered)."""
    return [
        env.out.message
        for env in net.queue
        if env.response is None
        and env.sender == src
        and env.out.target == dst
        and isinstance(env.out.message, AppendEntriesRequest)
        and env.out.message.entries
    ]


def test_entries_proposed_while_an_append_is_out_wait_and_leave_together() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.stabilize()
    first = net.propose("n1", b"a")
    for i in range(5):  # arrive while the first append is still out: no message each
        net.propose("n1", f"b{i}".encode())
    out = _appends_queued(net, "n1", "n2")
    assert [[e.index for e in req.entries] for req in out] == [[first]]
    net.deliver_where(between("n1", "n2"))  # its answer sends what waited, in one message
    sent = _appends_from(net, "n1", 0)
    to_n2 = [[e.index for e in h.request.entries] for h in sent if h.dst == "n2"]  # type: ignore[union-attr]
    assert [batch for batch in to_n2 if batch][-2:] == [[first], list(range(first + 1, first + 6))]
    net.stabilize()
    checker.check(net)
    for follower in ("n2", "n3"):
        assert net.nodes[follower].commands()[-6:] == [b"a", *(f"b{i}".encode() for i in range(5))]


def test_full_appends_still_pipeline() -> None:
    # Catch-up and bulk writes: a message that cannot carry everything pending is full and
    # goes at once, up to max_inflight of them.
    net = LockstepNetwork(3, cfg=make_config(max_entries_per_message=4, max_inflight=8))
    net.elect("n1")
    net.stabilize()
    net.propose("n1", b"first")  # one small append out
    for i in range(12):
        net.propose("n1", f"bulk{i}".encode())
    sizes = [len(req.entries) for req in _appends_queued(net, "n1", "n2")]
    assert sizes[0] == 1
    assert sizes[1:4] == [4, 4, 4]  # full ones pipelined behind the small one
    net.stabilize()
    assert net.nodes["n2"].commands()[-13:] == [
        b"first",
        *(f"bulk{i}".encode() for i in range(12)),
    ]


def test_a_heartbeat_answer_frees_a_slot_so_a_lost_append_does_not_hold_the_rest() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    net.stabilize()
    net.propose("n1", b"lost")
    # The append to n2 is lost without a failure report (as a dropped packet whose RPC has
    # not timed out yet): only a heartbeat answer can let what follows leave.
    lost = next(
        env
        for env in net.queue
        if env.out.target == "n2" and isinstance(env.out.message, AppendEntriesRequest)
    )
    net.queue.remove(lost)
    index = net.propose("n1", b"after")
    assert _appends_queued(net, "n1", "n2") == []  # waits behind the lost one
    for _ in range(2):  # heartbeat rounds: the first lends a slot, the next brings the commit
        net.tick("n1", net["n1"].heartbeat_ticks)
        net.deliver_where(between("n1", "n2"))
        net.stabilize()
    checker.check(net)
    assert net["n2"].log.last_index() >= index
    assert net.nodes["n2"].commands()[-2:] == [b"lost", b"after"]


# ---------------------------------------------------------------- heartbeat-lent slots stay bounded
def _heartbeat_traffic(src: str, dst: str) -> Callable[[Envelope], bool]:
    """Heartbeats (requests and answers) between ``src`` and ``dst``: appends stay in flight."""
    pair = between(src, dst)
    return lambda env: pair(env) and env.out.heartbeat


def test_heartbeat_answers_do_not_let_full_appends_exceed_max_inflight() -> None:
    # A follower slow to answer appends (a WAN, a slow disk) during a catch-up: full appends
    # fill the pipeline, and its heartbeat answers come back while they are still out. Each
    # heartbeat answer "frees" a slot the append's own answer frees again later (on_reply):
    # the counter undercounts, and the real number of appends in flight grows by one per
    # heartbeat round, without bound.
    cfg = make_config(max_entries_per_message=4, max_inflight=4)
    net = LockstepNetwork(3, cfg=cfg)
    net.elect("n1")
    net.stabilize()
    for i in range(200):
        net.propose("n1", f"bulk{i}".encode())
    assert len(_appends_queued(net, "n1", "n2")) <= cfg.max_inflight
    for _ in range(10):  # ten heartbeat rounds; n2 answers only the heartbeats meanwhile
        net.tick("n1", net["n1"].heartbeat_ticks)
        net.deliver_where(_heartbeat_traffic("n1", "n2"))
    out = _appends_queued(net, "n1", "n2")
    assert len(out) <= cfg.max_inflight, (len(out), net["n1"].progress["n2"].inflight)
