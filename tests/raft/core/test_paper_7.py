"""§7 Log compaction.

Each server snapshots its applied state and discards the log up to it. A follower that needs
entries the leader has discarded receives the snapshot with InstallSnapshot, in chunks; a lost
chunk or a lost reply costs a resend from the offset the follower expects (``next_offset``), and
a new leader starts its own transfer from scratch. A snapshot covering no more than the
follower already committed changes nothing.
"""

from __future__ import annotations

import pytest

from raftcache.raft.core import Role
from raftcache.raft.messages import (
    AppendEntriesRequest,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
)
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import (
    ELECTION_TICKS_MAX,
    HEARTBEAT_TICKS,
    Envelope,
    LockstepNetwork,
    Predicate,
    make_config,
)

CHUNK = 64


def _lagging_n3(entries: int = 30) -> tuple[LockstepNetwork, SafetyChecker, int]:
    """n1 leads; n3 was cut off while ``entries`` commands committed; n1 then compacted."""
    net = LockstepNetwork(3, cfg=make_config(snapshot_chunk_size=CHUNK))
    checker = SafetyChecker()
    net.elect("n1")
    net.isolate("n3")
    for i in range(entries):
        net.propose("n1", f"command-{i:03}".encode())
    net.stabilize()
    index = net.take_snapshot("n1")
    assert index == net["n1"].commit_index
    checker.check(net)
    return net, checker, index


def _chunks_to_n3(net: LockstepNetwork) -> list[InstallSnapshotRequest]:
    return [
        h.request
        for h in net.handled
        if h.dst == "n3" and isinstance(h.request, InstallSnapshotRequest)
    ]


def _snapshot_size(net: LockstepNetwork, node_id: str) -> int:
    snap = net.nodes[node_id].store.snapshot
    assert snap is not None
    return len(snap[1])


def test_7_a_snapshot_compacts_the_log_in_memory_and_on_disk() -> None:
    net, checker, index = _lagging_n3()
    core, store = net["n1"], net.nodes["n1"].store
    assert core.log.snapshot_index == index
    assert core.log.entries == []
    assert core.log.term_at(index) == core.term
    assert store.snapshot_index == index
    assert store.entries == []
    # Proposals continue after the snapshot; the log starts right after it.
    net.propose("n1", b"after")
    net.deliver_where(lambda e: e.src != "n3" and e.dst != "n3")
    assert [e.index for e in core.log.entries] == [index + 1]
    checker.check(net)


def test_7_a_lagging_follower_receives_the_snapshot_in_chunks_then_the_tail() -> None:
    net, checker, index = _lagging_n3()
    net.propose("n1", b"after the snapshot")
    net.heal()
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    chunks = _chunks_to_n3(net)
    size = _snapshot_size(net, "n1")
    assert size > 3 * CHUNK
    assert [c.offset for c in chunks] == list(range(0, size, CHUNK))
    assert all(len(c.data) <= CHUNK for c in chunks)
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert net["n3"].log.snapshot_index == index
    assert net.nodes["n3"].applied == net.nodes["n1"].applied
    assert net.nodes["n3"].commands()[-1] == b"after the snapshot"


def _drop_first(net: LockstepNetwork, pred: Predicate) -> Envelope:
    """Deliver everything, except that the first envelope matching ``pred`` is lost."""
    while net.queue:
        env = net.queue[0]
        if pred(env):
            net.drop_envelope(env)
            return env
        net.deliver(env)
    raise AssertionError("nothing matched")


def _finish(net: LockstepNetwork, checker: SafetyChecker) -> None:
    for _ in range(3):
        net.tick("n1", HEARTBEAT_TICKS)  # the retry comes with the next heartbeat
        net.stabilize()
        checker.check(net)
    assert net.nodes["n3"].applied == net.nodes["n1"].applied


def test_7_a_lost_chunk_is_sent_again() -> None:
    net, checker, _ = _lagging_n3()
    net.heal()
    net.tick("n1", HEARTBEAT_TICKS)
    lost = _drop_first(
        net,
        lambda e: (
            e.is_request
            and isinstance(e.message, InstallSnapshotRequest)
            and e.message.offset == 2 * CHUNK
        ),
    )
    assert lost.dst == "n3"
    _finish(net, checker)
    offsets = [c.offset for c in _chunks_to_n3(net)]
    assert offsets == sorted(offsets)
    assert offsets.count(2 * CHUNK) == 1  # the lost one never arrived; its resend did


def test_7_a_lost_reply_resumes_at_the_offset_the_follower_expects() -> None:
    net, checker, _ = _lagging_n3()
    net.heal()
    net.tick("n1", HEARTBEAT_TICKS)
    _drop_first(
        net,
        lambda e: (
            not e.is_request
            and isinstance(e.message, InstallSnapshotRequest)
            and e.message.offset == 2 * CHUNK
        ),
    )
    _finish(net, checker)
    replies = [
        (h.request.offset, h.response)
        for h in net.handled
        if h.dst == "n3" and isinstance(h.request, InstallSnapshotRequest)
    ]
    # The resent chunk is refused with the offset n3 expects, and the leader jumps there.
    assert (2 * CHUNK, InstallSnapshotResponse(net["n1"].term, False, 3 * CHUNK)) in replies
    offsets = [offset for offset, _ in replies]
    assert offsets.count(2 * CHUNK) == 2
    assert offsets.count(3 * CHUNK) == 1


@pytest.mark.parametrize("new_leader_compacted", [True, False])
def test_7_a_leader_change_in_the_middle_of_a_transfer(new_leader_compacted: bool) -> None:
    net, checker, _ = _lagging_n3()
    if new_leader_compacted:
        net.take_snapshot("n2")
    net.heal()
    net.tick("n1", HEARTBEAT_TICKS)
    delivered_chunks = 0
    while net.queue and delivered_chunks < 3:
        env = net.queue[0]
        if env.is_request and isinstance(env.message, InstallSnapshotRequest):
            delivered_chunks += 1
        net.deliver(env)
    assert net["n3"].log.snapshot_index == 0  # the transfer is not complete
    net.isolate("n1")  # the leader crashes mid-transfer
    net.run(
        4 * ELECTION_TICKS_MAX,
        checker.check,
        until=lambda net: net.role("n2") is Role.LEADER,
        nodes=("n2", "n3"),
    )
    assert net.role("n2") is Role.LEADER
    net.propose("n2", b"under the new leader")
    net.tick("n2", HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    assert net.nodes["n3"].applied == net.nodes["n2"].applied
    assert net.nodes["n3"].commands()[-1] == b"under the new leader"
    from_n2 = [
        h.request
        for h in net.handled
        if h.src == "n2" and h.dst == "n3" and isinstance(h.request, InstallSnapshotRequest)
    ]
    if new_leader_compacted:
        assert from_n2[0].offset == 0  # its own transfer, from the start
    else:
        assert from_n2 == []  # n2 still has the log: plain AppendEntries do it


def test_7_a_snapshot_no_newer_than_the_commit_index_changes_nothing() -> None:
    net = LockstepNetwork(3)
    net.elect("n1")
    for i in range(5):
        net.propose("n1", f"c{i}".encode())
    net.stabilize()
    core = net["n2"]
    before = [(e.index, e.term) for e in core.log.entries]
    applied = list(net.nodes["n2"].applied)
    req = InstallSnapshotRequest(core.term, "n1", 3, core.log.term_at(3) or 0, 0, b"[]", True)
    resp = core.handle_install_snapshot(req)
    assert resp.term == core.term
    net.flush("n2")
    assert [(e.index, e.term) for e in core.log.entries] == before
    assert net.nodes["n2"].applied == applied
    assert net.nodes["n2"].store.snapshot is None


def test_7_a_restarted_node_recovers_from_its_snapshot_and_log_tail() -> None:
    net, checker, index = _lagging_n3()
    net.propose("n1", b"tail")
    net.stabilize()
    net.crash_restart("n1")
    core = net["n1"]
    assert core.log.snapshot_index == index
    assert core.applied == index
    assert len(net.nodes["n1"].applied) == index  # restored from the snapshot
    net.heal()
    net.tick_until_leader(4 * ELECTION_TICKS_MAX, checker.check)
    net.tick_all(HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    for node in net.nodes.values():
        assert node.commands()[-1] == b"tail"


def test_7_a_new_learner_is_brought_up_by_snapshot_and_learns_its_own_addition() -> None:
    net, checker, index = _lagging_n3()
    net.heal()
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    net.add_node("n4")
    conf = net["n1"].configuration.with_learner("n4", "addr4")
    net["n1"].propose_config(conf)
    net.flush("n1")
    net.stabilize()
    checker.check(net)
    assert net["n4"].log.snapshot_index == index
    assert net["n4"].configuration == conf  # the snapshot's, then the CONFIG entry after it
    assert net.nodes["n4"].applied == net.nodes["n1"].applied


def test_7_a_snapshot_replacing_a_conflicting_log_also_discards_its_configurations() -> None:
    """A follower holds a stale, never-committed tail with a CONFIG entry beyond the index of
    the snapshot it receives; the snapshot's term at that index differs, so the whole log goes,
    and the configuration that tail carried must go with it."""
    net = LockstepNetwork(5, cfg=make_config(check_quorum=False))
    checker = SafetyChecker()
    net.elect("n1")
    for i in range(5):
        net.propose("n1", f"c{i}".encode())
    net.stabilize()
    for peer in ("n2", "n4", "n5"):
        net.cut("n1", peer)  # n1 now reaches only n3: nothing it appends can commit
    for i in range(7):
        net.propose("n1", f"stale{i}".encode())
    stale_conf = net["n1"].configuration.with_learner("n5", None)
    net["n1"].propose_config(stale_conf)
    net.propose("n1", b"stale-last")
    net.stabilize()
    assert net["n3"].configuration == stale_conf
    stale_index = net["n3"].config_index
    net.heal()
    net.isolate("n1")
    net.isolate("n3")
    net.elect("n2")  # with n4 and n5
    for i in range(5):
        net.propose("n2", f"new{i}".encode())
    net.stabilize()
    snap_index = net.take_snapshot("n2")
    assert snap_index < stale_index  # the stale CONFIG entry lies beyond the snapshot
    net.heal()
    net.isolate("n1")
    net.tick("n2", HEARTBEAT_TICKS)
    net.stabilize()
    checker.check(net)
    assert net["n3"].log.snapshot_index == snap_index
    assert net["n3"].configuration == net["n2"].configuration
    assert sorted(net["n3"].configuration.voters) == ["n1", "n2", "n3", "n4", "n5"]


def test_7_an_append_overlapping_a_followers_snapshot_is_trimmed_not_rejected() -> None:
    net = LockstepNetwork(3)
    net.elect("n1")
    for i in range(10):
        net.propose("n1", f"c{i}".encode())
    net.stabilize()
    snap = net.take_snapshot("n2")
    core = net["n2"]
    assert core.log.snapshot_index == snap
    leader = net["n1"]
    beyond = net.propose("n1", b"beyond the snapshot")
    net.drop(lambda e: True)  # the leader's own sends are lost
    # A delayed AppendEntries that starts below n2's snapshot and runs past it.
    prev = snap - 5
    entries = leader.log.slice(prev + 1, beyond, 100, 0)
    req = AppendEntriesRequest(
        leader.term, "n1", prev, leader.log.term_at(prev) or 0, entries, leader.commit_index
    )
    resp = core.handle_append_entries(req)
    assert resp.success
    assert resp.match_index == beyond
    assert core.log.snapshot_index == snap  # nothing below the snapshot is touched
    assert [e.index for e in core.log.entries] == [beyond]
    net.flush("n2")
    net.propose("n1", b"more")
    net.tick("n1", HEARTBEAT_TICKS)
    net.stabilize()
    SafetyChecker().check(net)
    assert net.nodes["n2"].commands()[-1] == b"more"
