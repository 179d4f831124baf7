"""Restarts, votes and stable writes under attack (issue 12).

- A ``RaftNode`` stopped and started again (the same object) must not answer with a new term
  before that term is durable (its answer gate must not remember the previous run).
- With ``persist_in_thread`` and ``persist_inline_max_entries=0`` no write — not even a Ready
  with only a vote — runs on the event loop.
- A freshly (re)started node must not help depose a leader whose lease it may have confirmed
  just before it went down.
- ``RaftLog.stable_to`` for a write that was overtaken (truncated, then the same (index, term)
  re-appended) must not mark the later, not yet durable, writes stable (ABA).

The thread-gated tests run in real time (their storage blocks a real thread; timers are 30 s
long so nothing but the test's own messages happens); the cluster test uses virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.errors import NodeStoppedError
from raftcache.raft.log import RaftLog
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    LogEntry,
    RequestVoteRequest,
)
from raftcache.raft.node import RaftNode
from raftcache.storage.base import StorageFailedError
from raftcache.storage.memory import MemoryStorage
from tests.raft.gated_storage import CONFIG, WAIT, GatedStorage
from tests.raft.lease_sim import LeaseCluster, Request, SlowSyncStorage, StaleProbe, StepStorage
from tests.raft.sim import FAST, ListMachine

#: Every write in the persist thread, whatever its size (-1: even a Ready with no entries;
#: so a held fsync never blocks the event loop, whatever hole 4 leaves inline).
THREADED = dataclasses.replace(CONFIG, persist_inline_max_entries=-1)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (real time, up to ``WAIT``) for a state of the node, not for a fixed time: on a
    loaded machine a fixed sleep may end before the event loop got to the step."""
    async with asyncio.timeout(WAIT):
        while not condition():
            await asyncio.sleep(0.002)
    assert condition(), what


def _entries(term: int, indexes: range) -> list[LogEntry]:
    return [LogEntry(term, i, f"e{i}@{term}".encode()) for i in indexes]


def _append(
    term: int, prev: int, prev_term: int, entries: list[LogEntry], commit: int = 0
) -> AppendEntriesRequest:
    return AppendEntriesRequest(term, f"leader{term}", prev, prev_term, entries, commit)


def _node(storage: MemoryStorage, config: RaftConfig = THREADED) -> RaftNode:
    net = InMemoryNetwork("n1", hub=InMemoryHub(), seed=1)
    return RaftNode(
        "n1", ["n1", "n2", "n3"], net, storage, ListMachine(), config, rng=random.Random(1)
    )


# ---------------------------------------------------------------------------------- 3
async def test_restarted_node_does_not_answer_before_its_new_term_is_durable() -> None:
    """Hole 3: the same RaftNode object, stopped and started again, gets an AppendEntries of
    a new term while the fsync of that term is held: the answer (which carries the term) must
    wait for it. (The first run wrote several terms: a gate that remembered how far the first
    run's hard state was durable would wave the new run's first term through.)"""
    storage = GatedStorage()
    node = _node(storage)
    await node.start()
    try:
        for term in range(2, 8):  # six durable term changes in the first run
            resp = await node.handle_append_entries(_append(term, 0, 0, []))
            assert resp.success
        await node.stop()
        await node.start()
        storage.hold()
        answer = asyncio.create_task(node.handle_append_entries(_append(9, 0, 0, [])))
        assert await asyncio.to_thread(storage.entered.wait, WAIT)
        await asyncio.sleep(0.05)
        assert storage.durable().term == 7
        assert not answer.done(), "answered term 9 while its hard state was not durable"
        storage.open.set()
        async with asyncio.timeout(WAIT):
            got = await answer
        assert got.term == 9
        assert storage.durable().term == 9
    finally:
        storage.open.set()
        await node.stop()


async def test_restarted_node_does_not_grant_a_vote_before_it_is_durable() -> None:
    """Hole 3, the RequestVote side (regression guard: the original code already waits for
    the full flush here): after a restart of the same object, a granted vote leaves only once
    the vote is durable."""
    storage = GatedStorage()
    node = _node(storage)
    await node.start()
    try:
        for term in range(2, 8):
            await node.handle_append_entries(_append(term, 0, 0, []))
        await node.stop()
        await node.start()
        storage.hold()
        # A transfer's vote: a just-restarted node may refuse ordinary ones (hole 5).
        vote = asyncio.create_task(
            node.handle_request_vote(RequestVoteRequest(9, "n2", 0, 0, leader_transfer=True))
        )
        assert await asyncio.to_thread(storage.entered.wait, WAIT)
        await asyncio.sleep(0.05)
        assert not vote.done(), "a vote left while it was not durable"
        storage.open.set()
        async with asyncio.timeout(WAIT):
            granted = await vote
        assert granted.vote_granted
        assert (storage.durable().term, storage.durable().voted_for) == (9, "n2")
    finally:
        storage.open.set()
        await node.stop()


# ---------------------------------------------------------------------------------- 4
async def test_a_vote_alone_is_written_in_the_persist_thread() -> None:
    """Hole 4: persist_in_thread with persist_inline_max_entries=0 ("0: always in the
    thread"): a Ready carrying only a hard state (a vote, a new term) must be written and
    synced in the persist thread, never on the event loop (an fsync there stalls every
    request and timer of the node)."""
    config = dataclasses.replace(CONFIG, persist_in_thread=True, persist_inline_max_entries=0)
    storage = SlowSyncStorage()
    node = _node(storage, config)
    await node.start()
    loop_thread = threading.get_ident()
    try:
        storage.threads.clear()
        # A transfer request: a node just started refuses ordinary votes for a while.
        resp = await node.handle_request_vote(RequestVoteRequest(4, "n2", 0, 0, False, True))
        assert resp.vote_granted
        resp2 = await node.handle_append_entries(_append(5, 0, 0, []))
        assert resp2.success
        on_loop = [op for op, ident in storage.threads if ident == loop_thread]
        assert storage.threads, "nothing was written"
        assert not on_loop, f"written on the event loop thread: {on_loop}"
    finally:
        await node.stop()


# ---------------------------------------------------------------------------------- 5
@pytest.mark.looptime
async def test_restarted_follower_does_not_vote_within_a_lease() -> None:
    """Hole 5: the leader's lease rests on a follower refusing votes for an election timeout
    after it acknowledged a round. That follower crashes and restarts at once (forgetting it
    heard from the leader); a candidate cut off from the leader long ago asks it for a vote
    right then. A restarted node must refuse (non-transfer) votes for an election timeout
    after it starts, or the old leader serves stale lease reads."""
    c = LeaseCluster(3, seed=31)
    await c.start()
    try:
        old = await c.elect()
        await c.write_through(b"x=1", [old.node_id])
        await c.wait_applied(old.commit_index)
        f1, f2 = [i for i in c.ids if i != old.node_id]
        probe = StaleProbe(old, b"x=2")
        probe.start()
        c.hub.partition(old.node_id, f2)  # f2 times out and campaigns; f1 refuses (lease)
        await asyncio.sleep(0.5)
        assert old.role.value == "leader"
        assert probe.served > 0, "the lease was not in use: the test proves nothing"
        restarted = asyncio.Event()

        async def crash_f1_first(target: str, req: Request) -> None:
            if target != f1 or not isinstance(req, RequestVoteRequest) or restarted.is_set():
                return
            restarted.set()
            # f1 acknowledged the leader's last round moments ago; it goes down, comes back
            # at once, and the leader cannot reach it any more.
            c.hub.partition(old.node_id, f1)
            await c.crash(f1)
            await c.restart(f1)

        c.taps[f2].send_hooks.append(crash_f1_first)
        async with asyncio.timeout(3.0):
            await restarted.wait()
        _, probe.acked_at = await c.write_through(b"x=2", [f1, f2])
        await asyncio.sleep(0.5)
        await probe.stop()
        assert not probe.stale, (
            f"{len(probe.stale)} lease read(s) on {old.node_id} returned x=1 after x=2 was "
            f"acknowledged at {probe.acked_at:.3f}: the restarted {f1} voted at once"
        )
    finally:
        await c.stop()


# ---------------------------------------------------------------------------------- 7
_HandOff = tuple[list[LogEntry], int | None]


def _hand_out(log: RaftLog) -> _HandOff:
    """``unstable()``, with the hand-off's mark where the log keeps one (the original
    ``stable_to(index, term)`` took none)."""
    entries = log.unstable()
    return entries, getattr(log, "mark", None)


def _stable(log: RaftLog, handed: _HandOff) -> None:
    entries, mark = handed
    stable_to: Any = log.stable_to  # two or three arguments, depending on the version
    if mark is None:
        stable_to(entries[-1].index, entries[-1].term)
    else:
        stable_to(entries[-1].index, entries[-1].term, mark)


def test_stable_to_of_an_overtaken_write_does_not_cover_later_writes() -> None:
    """Hole 7 (pure RaftLog): 6..10@5 handed out; a leader of term 6 truncates at 8; a later
    leader re-appends 8..10@5 (the same (index, term) as the first write). The first write's
    completion, ``stable_to(10, 5)``, must not make 8..10 stable: the truncation and the
    re-append that came after it are not durable."""
    log = RaftLog(0, 0, _entries(1, range(1, 6)))
    assert log.stable_index == 5
    log.append(_entries(5, range(6, 11)))
    first = _hand_out(log)
    assert [(e.index, e.term) for e in first[0]] == [(i, 5) for i in range(6, 11)]
    log.truncate_and_append(_entries(6, range(8, 9)))
    second = _hand_out(log)
    assert [(e.index, e.term) for e in second[0]] == [(8, 6)]
    log.truncate_and_append(_entries(5, range(8, 11)))
    third = _hand_out(log)
    assert [(e.index, e.term) for e in third[0]] == [(8, 5), (9, 5), (10, 5)]
    _stable(log, first)  # the first write is durable
    assert log.stable_index <= 7, (
        f"stable_index {log.stable_index}: the truncation to 8@6 and the re-append of 8..10@5 "
        "are not durable yet"
    )
    _stable(log, second)
    assert log.stable_index <= 7
    _stable(log, third)
    assert log.stable_index == 10


async def test_an_overtaken_write_does_not_vouch_for_its_rewrite() -> None:
    """Hole 7 at the driver: a follower's write of 6..10@5 is held in the persist thread; a
    term-6 leader truncates at 8 (8@6) and a term-7 leader first sends a heartbeat (its term is
    handed out alone), then re-appends 8..10@5 — held back in the core (the persist queue is
    full). When the first write completes, then the term-6/term-7 batch, the answer to the
    re-append (match 10) must not leave: 8..10@5 are not durable (the disk has 8@6)."""
    config = dataclasses.replace(THREADED, persist_max_inflight=3)
    storage = StepStorage()
    storage.free = True
    node = _node(storage, config)
    await node.start()
    tasks: list[asyncio.Task[AppendEntriesResponse]] = []
    try:
        base = await node.handle_append_entries(_append(5, 0, 0, _entries(5, range(1, 6))))
        assert base.match_index == 5
        storage.free = False
        entered = storage.entered
        tasks.append(
            asyncio.create_task(
                node.handle_append_entries(_append(5, 5, 5, _entries(5, range(6, 11))))
            )
        )
        assert await asyncio.to_thread(storage.wait_entered, entered + 1)  # job 1 held
        tasks.append(
            asyncio.create_task(
                node.handle_append_entries(_append(6, 7, 5, _entries(6, range(8, 9))))
            )
        )
        await _until(lambda: len(node._persist.jobs) == 2, "job 2 (term 6, 8@6) queued")
        tasks.append(asyncio.create_task(node.handle_append_entries(_append(7, 7, 5, []))))
        await _until(lambda: len(node._persist.jobs) == 3, "job 3 (term 7) queued: queue full")
        rewrite = asyncio.create_task(
            node.handle_append_entries(_append(7, 7, 5, _entries(5, range(8, 11))))
        )
        tasks.append(rewrite)
        await _until(lambda: node.core.log.term_at(10) == 5, "8..10@5 appended in the core")
        # Release the held syncs one at a time, in whatever batches the persist thread forms
        # (a loaded machine changes them). After each, whatever the rewrite's answer says must
        # be on disk: a match of 10 while the disk holds 8@6 is the bug.
        for _ in range(8):
            if rewrite.done():
                break
            started = storage.entered
            storage.step()
            await _until(
                lambda started=started: storage.entered > started or rewrite.done(),  # type: ignore[misc]
                "the next sync",
            )
            await asyncio.sleep(0.02)  # an answer that may leave now has left
            durable = [(e.index, e.term) for e in storage.durable().entries]
            if rewrite.done() and rewrite.result().success:
                vouched = f"match {rewrite.result().match_index} acknowledged, disk {durable[5:]}"
                assert (10, 5) in durable, vouched
                assert (8, 6) not in durable, vouched
        async with asyncio.timeout(WAIT):
            got = await rewrite
        assert got.success
        assert got.match_index == 10
        assert [(e.index, e.term) for e in storage.durable().entries][7:] == [
            (8, 5),
            (9, 5),
            (10, 5),
        ]
    finally:
        storage.free = True
        for _ in range(8):
            storage.step()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, WAIT)
        await node.stop()


# ------------------------------------------------------- the hostile review of the fixes
class _FailOnce(MemoryStorage):
    """A storage whose next sync fails once (a failed fsync: the node stops itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def sync(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StorageFailedError("simulated fsync failure")
        super().sync()


def _single(storage: MemoryStorage, machine: ListMachine) -> RaftNode:
    net = InMemoryNetwork("n1", hub=InMemoryHub(), seed=1)
    return RaftNode("n1", ["n1"], net, storage, machine, FAST, rng=random.Random(1))


async def _leading_and_applied(node: RaftNode) -> None:
    async with asyncio.timeout(5):
        while node.role is not Role.LEADER or node.last_applied < node.core.log.last_index():
            await asyncio.sleep(0.01)


@pytest.mark.looptime
async def test_a_restarted_node_object_does_not_apply_its_commands_twice() -> None:
    """The state machine outlives a stop()/start() of its node. Without a stored snapshot to
    reset it, the new run must resume after what it applied, not feed it the log again."""
    storage, machine = MemoryStorage(), ListMachine()
    node = _single(storage, machine)
    await node.start()
    try:
        await _leading_and_applied(node)
        await node.propose(b"a")
        await node.propose(b"b")
        assert machine.commands() == [b"a", b"b"]
        await node.stop()
        await node.start()
        await _leading_and_applied(node)
        await node.propose(b"c")
        assert machine.commands() == [b"a", b"b", b"c"], machine.applied
        assert [i for i, _ in machine.applied] == sorted({i for i, _ in machine.applied})
    finally:
        await node.stop()


@pytest.mark.looptime
async def test_start_after_a_fail_stop_leaves_one_ticker() -> None:
    """A node that stopped itself (failed fsync) and is started again without stop(): the old
    run's ticker must not go on ticking the new core (two ticks per interval would halve every
    timer, a follower's lease promise included)."""
    storage = _FailOnce()
    cfg = dataclasses.replace(FAST, election_timeout_min=5.0, election_timeout_max=6.0)
    net = InMemoryNetwork("n1", hub=InMemoryHub(), seed=1)
    node = RaftNode(
        "n1", ["n1", "n2", "n3"], net, storage, ListMachine(), cfg, rng=random.Random(1)
    )
    await node.start()
    try:
        await asyncio.sleep(0.1)
        storage.fail_next = True
        # A vote makes the node write its hard state: the sync fails and the node stops.
        with pytest.raises(NodeStoppedError):
            await node.handle_request_vote(RequestVoteRequest(5, "n2", 0, 0, False, True))
        await asyncio.wait_for(node.wait_failed(), 2)
        await node.start()
        first = node.core.ticks
        await asyncio.sleep(1.0)  # 100 tick intervals
        ticks = node.core.ticks - first
        assert ticks <= 101, f"{ticks} ticks in 100 intervals: an old ticker ticks the new core"
    finally:
        await node.stop()
