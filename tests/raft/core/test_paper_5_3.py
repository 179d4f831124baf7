"""§5.3 Log replication.

The leader appends a command to its log and replicates it; an entry is committed once the
leader has replicated it on a majority, and followers apply committed entries in log order.
AppendEntries carries (prevLogIndex, prevLogTerm): a follower refuses entries that do not
follow an entry it holds (Log Matching), and conflicting entries are overwritten by the
leader's. Rejections carry conflict hints so that a lagging follower catches up in a few round
trips, not one per entry.
"""

from __future__ import annotations

import pytest

from raftcache.raft.messages import AppendEntriesRequest, EntryKind, LogEntry
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import (
    LockstepNetwork,
    between,
    log_terms,
    make_config,
    seed_log,
)


def _entry(index: int, term: int) -> LogEntry:
    return LogEntry(term, index, f"{index}@{term}".encode())


def test_5_3_the_leader_appends_a_proposal_and_sends_it_to_every_follower() -> None:
    net = LockstepNetwork(3)
    net.elect("n1")
    net.stabilize()
    core = net["n1"]
    index = net.propose("n1", b"x")
    assert index == core.log.last_index()
    entry = core.log.entry(index)
    assert (entry.term, entry.command, entry.kind) == (core.term, b"x", EntryKind.COMMAND)
    sent = sorted(e.dst for e in net.queue)
    assert sent == ["n2", "n3"]
    for env in net.queue:
        msg = env.message
        assert isinstance(msg, AppendEntriesRequest)
        assert [e.index for e in msg.entries] == [index]
        assert (msg.prev_log_index, msg.prev_log_term) == (index - 1, core.log.term_at(index - 1))


def test_5_3_an_entry_commits_once_a_majority_holds_it_not_before() -> None:
    net = LockstepNetwork(5)
    net.elect("n1")
    net.stabilize()
    core = net["n1"]
    index = net.propose("n1", b"x")
    net.deliver_where(between("n1", "n2"))
    assert core.commit_index < index  # leader + n2: 2 of 5
    net.deliver_where(between("n1", "n3"))
    assert core.commit_index == index  # leader + n2 + n3: 3 of 5
    assert net.nodes["n1"].commands() == [b"x"]


def test_5_3_followers_learn_the_commit_index_and_apply_in_log_order() -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    net.elect("n1")
    commands = [f"c{i}".encode() for i in range(20)]
    for cmd in commands:
        net.propose("n1", cmd)
        checker.check(net)
    net.stabilize()
    checker.check(net)
    for node in net.nodes.values():
        assert node.commands() == commands
        assert node.core.commit_index == net["n1"].commit_index


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "success", "conflict_index", "conflict_term"),
    [
        (0, 0, True, 0, 0),
        (1, 1, True, 0, 0),
        (3, 2, True, 0, 0),
        (1, 2, False, 1, 1),  # term mismatch at 1: its first index of term 1 is 1
        (3, 3, False, 2, 2),  # term mismatch at 3: term 2 starts at 2
        (4, 2, False, 4, 0),  # no entry at 4: "send from my last index + 1"
    ],
)
def test_5_3_the_consistency_check_rejects_entries_that_do_not_follow(
    prev_index: int, prev_term: int, success: bool, conflict_index: int, conflict_term: int
) -> None:
    net = LockstepNetwork(3)
    seed_log(net, "n2", [1, 2, 2])
    core = net["n2"]
    resp = core.handle_append_entries(AppendEntriesRequest(2, "n1", prev_index, prev_term, [], 0))
    assert resp.success is success
    if not success:
        assert (resp.conflict_index, resp.conflict_term) == (conflict_index, conflict_term)
    assert log_terms(core) == [1, 2, 2]  # a heartbeat never changes the log


@pytest.mark.parametrize(
    ("prev", "entries", "expected"),
    [
        ((2, 2), [(3, 3)], [1, 2, 3]),  # plain append
        ((1, 1), [(2, 3), (3, 4)], [1, 3, 4]),  # conflict at 2: overwritten
        ((0, 0), [(1, 1)], [1, 2]),  # an old request: the matching prefix stays, no truncation
        ((0, 0), [(1, 1), (2, 2)], [1, 2]),  # a duplicate: nothing changes
        ((0, 0), [(1, 3)], [3]),  # conflict at 1: everything after goes
    ],
)
def test_5_3_conflicting_entries_are_overwritten_matching_ones_kept(
    prev: tuple[int, int], entries: list[tuple[int, int]], expected: list[int]
) -> None:
    net = LockstepNetwork(3)
    seed_log(net, "n2", [1, 2])
    core = net["n2"]
    req = AppendEntriesRequest(4, "n1", prev[0], prev[1], [_entry(i, t) for i, t in entries], 0)
    resp = core.handle_append_entries(req)
    assert resp.success
    assert resp.match_index == prev[0] + len(entries)
    assert log_terms(core) == expected
    net.flush("n2")
    assert [e.term for e in net.nodes["n2"].store.entries] == expected  # and durably so


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    "follower",
    [
        [1, 1, 1, 4, 4, 5, 5, 6, 6],  # (a) missing an entry
        [1, 1, 1, 4],  # (b) missing many
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],  # (c) an extra uncommitted entry
        [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],  # (d) extra entries of a later term
        [1, 1, 1, 4, 4, 4, 4],  # (e) missing some, extra of term 4
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],  # (f) a leader of terms 2 and 3 that crashed
    ],
    ids=list("abcdef"),
)
def test_5_3_figure_7_the_leader_brings_every_follower_log_in_line(follower: list[int]) -> None:
    net = LockstepNetwork(3)
    checker = SafetyChecker()
    seed_log(net, "n1", FIGURE_7_LEADER, term=7)
    seed_log(net, "n3", FIGURE_7_LEADER, term=7)  # votes for n1
    seed_log(net, "n2", follower, term=7)
    net.elect("n1")
    assert net["n1"].term == 8
    net.stabilize()
    checker.check(net)
    leader_log = [(e.index, e.term, e.command) for e in net["n1"].log.entries]
    assert log_terms(net["n1"]) == [*FIGURE_7_LEADER, 8]  # its no-op
    for node_id in ("n2", "n3"):
        assert [(e.index, e.term, e.command) for e in net[node_id].log.entries] == leader_log
        assert net[node_id].commit_index == len(leader_log)


@pytest.mark.parametrize(
    ("leader_tail", "follower_tail"),
    [
        # Far behind (960 entries short), with 50 conflicting entries.
        ([3] * 1000, [2] * 50),
        # Far ahead: 1490 entries of a deposed leader, all conflicting.
        ([3] * 1000, [2] * 1490),
        # Two conflicting terms: term 2 (of which the leader holds the first 100) and term 4.
        ([2] * 100 + [5] * 900, [2] * 300 + [4] * 200),
    ],
    ids=["behind", "ahead", "two-terms"],
)
def test_5_3_a_lagging_conflicting_follower_catches_up_in_a_few_round_trips(
    leader_tail: list[int], follower_tail: list[int]
) -> None:
    common = [1] * 10
    net = LockstepNetwork(3, cfg=make_config(max_entries_per_message=512))
    seed_log(net, "n1", common + leader_tail)
    seed_log(net, "n2", common + leader_tail)
    seed_log(net, "n3", common + follower_tail)
    net.elect("n1")
    net.stabilize()
    SafetyChecker().check(net)
    assert log_terms(net["n3"]) == log_terms(net["n1"])
    assert net.nodes["n3"].applied == net.nodes["n1"].applied
    to_n3 = [
        h for h in net.handled if h.dst == "n3" and isinstance(h.request, AppendEntriesRequest)
    ]
    rejected = [h for h in to_n3 if not h.response.success]  # type: ignore[union-attr]
    carrying = [h for h in to_n3 if h.request.entries]  # type: ignore[union-attr]
    # One rejection per conflicting term (plus one for a short log), not one per entry.
    assert len(rejected) <= 3, [h.response for h in rejected]
    # 1000-odd entries at 512 per message: a handful of AppendEntries in all.
    assert len(carrying) <= 6


def test_5_3_a_single_voter_commits_on_its_own_once_its_log_is_durable() -> None:
    net = LockstepNetwork(1, auto_ready=False)
    net["n1"].campaign()
    net.flush("n1")
    core = net["n1"]
    assert core.role.value == "leader"
    index = core.propose(b"alone")
    assert core.commit_index < index  # appended in memory only: not yet durable, not committed
    net.flush("n1")
    assert core.commit_index == index
    assert net.nodes["n1"].commands() == [b"alone"]
