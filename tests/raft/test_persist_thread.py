"""The dedicated persist thread (``raft/persist.py``, ``raft/pipeline.py``; issue 5).

Readies handed out while an fsync runs queue up and share the next fsync (group commit), and
no answer leaves before the fsync covering it returned; a failing fsync, or a crash in the
thread, stops the node and surfaces through ``wait_failed``; after a full disk the thread
writes nothing more (no entry after a gap) until the loop has taken every job back.
The storage's ``sync`` blocks on a ``threading.Event`` the test controls, so "the fsync is
still running" is a fact, not a window of time.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.protocol.configuration import Configuration
from raftcache.raft import persist
from raftcache.raft.errors import NodeStoppedError
from raftcache.raft.messages import AppendEntriesRequest, LogEntry
from raftcache.raft.node import RaftNode
from raftcache.raft.persist import (
    PersistJob,
    PersistThread,
    PersistThreadStoppedError,
    PersistWorker,
)
from raftcache.raft.ready import Ready
from raftcache.storage.base import DiskFullError, SnapshotMeta
from tests.raft.gated_storage import CONFIG, WAIT, GatedStorage, running_follower
from tests.raft.sim import ListMachine


def _append(prev: int, indexes: range, term: int = 2) -> AppendEntriesRequest:
    entries = [LogEntry(term, i, f"e{i}".encode()) for i in indexes]
    return AppendEntriesRequest(term, "n2", prev, term if prev else 0, entries, 0)


async def _until(predicate: object, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds (it must: the test made it certain)."""
    assert callable(predicate)
    async with asyncio.timeout(WAIT):
        while not predicate():
            await asyncio.sleep(0.001)
    assert predicate(), what


async def test_readies_queued_during_an_fsync_share_the_next_and_wait_for_it() -> None:
    async with running_follower() as (storage, node):
        assert (await node.handle_append_entries(_append(0, range(1, 2)))).success
        storage.hold()
        first = asyncio.create_task(node.handle_append_entries(_append(1, range(2, 4))))
        assert await asyncio.to_thread(storage.entered.wait, WAIT)
        syncs_before = storage.syncs
        # While that fsync is held, two more appends are stepped and handed to the thread.
        second = asyncio.create_task(node.handle_append_entries(_append(3, range(4, 6))))
        third = asyncio.create_task(node.handle_append_entries(_append(5, range(6, 8))))
        await _until(lambda: node.core.log.last_index() == 7, "all entries stepped")
        await _until(lambda: not node.core.has_unpersisted(), "all handed to the thread")
        # Nothing is answered before its fsync returned, and nothing of it is durable yet.
        assert [t.done() for t in (first, second, third)] == [False, False, False]
        assert [e.index for e in storage.durable().entries] == [1]
        storage.open.set()
        async with asyncio.timeout(WAIT):
            answers = [await first, await second, await third]
        assert [a.match_index for a in answers] == [3, 5, 7]
        assert all(a.success for a in answers)
        # The held fsync, then one for the two Readies queued behind it (group commit).
        assert storage.syncs - syncs_before == 2
        assert [e.index for e in storage.durable().entries] == list(range(1, 8))


async def test_a_failing_fsync_in_the_thread_stops_the_node_and_surfaces() -> None:
    async with running_follower() as (storage, node):
        assert (await node.handle_append_entries(_append(0, range(1, 2)))).success
        storage.sync_error = OSError(5, "Input/output error (simulated fsync failure)")
        with pytest.raises(NodeStoppedError):
            await node.handle_append_entries(_append(1, range(2, 3)))
        async with asyncio.timeout(WAIT):
            failure = await node.wait_failed()
        assert failure is storage.sync_error
        assert [e.index for e in storage.durable().entries] == [1]


async def test_a_crash_in_the_thread_is_fatal_and_surfaces() -> None:
    async with running_follower() as (storage, node):
        storage.broken = RuntimeError("a bug in the storage")
        with pytest.raises(NodeStoppedError):
            await node.handle_append_entries(_append(0, range(1, 2)))
        async with asyncio.timeout(WAIT):
            failure = await node.wait_failed()
        assert isinstance(failure, RuntimeError)
        assert str(failure) == "a bug in the storage"


class _Recorder:
    """Collects the worker's reports (called in the event loop)."""

    def __init__(self) -> None:
        self.reports: list[tuple[list[PersistJob], BaseException | None]] = []
        self.changed = asyncio.Event()

    def __call__(self, batch: list[PersistJob], error: BaseException | None) -> None:
        self.reports.append((batch, error))
        self.changed.set()

    async def wait_jobs(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while sum(len(b) for b, _ in self.reports) < count:
                self.changed.clear()
                await self.changed.wait()


def _job(index: int) -> PersistJob:
    return PersistJob(Ready(entries=[LogEntry(1, index, b"x")]), 0, True)


async def test_after_a_full_disk_the_worker_writes_nothing_until_resumed() -> None:
    storage = GatedStorage()
    recorder = _Recorder()
    worker = PersistWorker(storage, asyncio.get_running_loop(), recorder, "test-persist")
    try:
        storage.broken = DiskFullError("no space (simulated)")
        worker.submit(_job(1))
        await recorder.wait_jobs(1)
        storage.broken = None  # space is back, but job 2 follows a failed job 1: no gap
        worker.submit(_job(2))
        await recorder.wait_jobs(2)
        assert [type(e) for _, e in recorder.reports] == [DiskFullError, DiskFullError]
        assert storage.durable().entries == []
        worker.resume()  # the loop took every job back and hands the writes out again
        worker.submit(_job(1))
        await recorder.wait_jobs(3)
        assert recorder.reports[-1][1] is None
        assert [e.index for e in storage.durable().entries] == [1]
        assert worker.batches == 1
    finally:
        assert await asyncio.to_thread(worker.stop, WAIT)


async def test_a_node_stopped_during_a_write_restarts_and_writes_again() -> None:
    async with running_follower() as (storage, node):
        assert (await node.handle_append_entries(_append(0, range(1, 2)))).success
        pending = await _held(node, storage, _append(1, range(2, 3)))
        worker = node._persist.worker  # its thread must be ended by stop(), not left behind
        assert worker is not None
        stopping = asyncio.create_task(node.stop())  # waits for the thread to finish
        await asyncio.sleep(0)
        storage.open.set()
        async with asyncio.timeout(WAIT):
            await stopping
        with pytest.raises(NodeStoppedError):
            await pending
        # stop() ended the node's persist thread (it joins it before closing the storage).
        assert not worker._thread.is_alive()
        await node.start()  # a fresh thread; the storage lock was not left held
        async with asyncio.timeout(WAIT):
            again = await node.handle_append_entries(_append(2, range(3, 4)))
        assert again.success
        assert [e.index for e in storage.durable().entries] == [1, 2, 3]


async def _held(
    node: RaftNode, storage: GatedStorage, req: AppendEntriesRequest
) -> asyncio.Task[object]:
    """Start handling ``req`` and return once its fsync is running (and held)."""
    storage.hold()
    task: asyncio.Task[object] = asyncio.create_task(node.handle_append_entries(req))
    assert await asyncio.to_thread(storage.entered.wait, WAIT)
    return task


# ---------------------------------------------------------------- a store's shared thread
async def test_a_shared_thread_writes_every_port_in_one_batch_each_in_order() -> None:
    thread = PersistThread("test-shared")
    loop = asyncio.get_running_loop()
    gated, other = GatedStorage(), GatedStorage()
    a_done, b_done = _Recorder(), _Recorder()
    a = PersistWorker(gated, loop, a_done, "a", thread=thread)
    b = PersistWorker(other, loop, b_done, "b", thread=thread)
    try:
        gated.hold()
        a.submit(_job(1))  # the thread takes it and holds in a's fsync
        assert await asyncio.to_thread(gated.entered.wait, WAIT)
        # Queued while that fsync runs: both ports' jobs make the next batch together.
        a.submit(_job(2))
        b.submit(_job(1))
        b.submit(_job(2))
        a.submit(_job(3))
        gated.open.set()
        await a_done.wait_jobs(3)
        await b_done.wait_jobs(2)
        # The held batch, then everything queued behind it (counted once a batch is done).
        await _until(lambda: thread.batches == 2, "two batches")
        assert [e.index for e in gated.durable().entries] == [1, 2, 3]
        assert [e.index for e in other.durable().entries] == [1, 2]
        # One report per port per batch; each port's jobs in the order it submitted them.
        assert [[j.rd.entries[0].index for j in jobs] for jobs, _ in a_done.reports] == [
            [1],
            [2, 3],
        ]
        assert [[j.rd.entries[0].index for j in jobs] for jobs, _ in b_done.reports] == [[1, 2]]
        assert (gated.syncs, other.syncs) == (2, 1)  # one sync per storage per batch
    finally:
        gated.open.set()
        assert await asyncio.to_thread(thread.stop, WAIT)


async def test_a_failed_fsync_fails_its_port_only_and_the_thread_serves_the_others() -> None:
    thread = PersistThread("test-shared")
    loop = asyncio.get_running_loop()
    broken, healthy = GatedStorage(), GatedStorage()
    bad_done, good_done = _Recorder(), _Recorder()
    bad = PersistWorker(broken, loop, bad_done, "bad", thread=thread)
    good = PersistWorker(healthy, loop, good_done, "good", thread=thread)
    try:
        broken.sync_error = OSError(5, "Input/output error (simulated fsync failure)")
        bad.submit(_job(1))
        good.submit(_job(1))
        await bad_done.wait_jobs(1)
        await good_done.wait_jobs(1)
        assert bad_done.reports[0][1] is broken.sync_error
        assert good_done.reports[0][1] is None
        # The failed port writes nothing more (fail-stop: nothing after a gap) ...
        broken.sync_error = None
        bad.submit(_job(2))
        await bad_done.wait_jobs(2)
        assert bad_done.reports[1][1] is not None
        assert broken.durable().entries == []
        # ... while the other keeps being written and synced.
        good.submit(_job(2))
        await good_done.wait_jobs(2)
        assert good_done.reports[1][1] is None
        assert [e.index for e in healthy.durable().entries] == [1, 2]
        assert thread.is_alive()
    finally:
        assert await asyncio.to_thread(thread.stop, WAIT)


async def test_stopping_one_port_waits_for_its_writes_and_leaves_the_thread_running() -> None:
    thread = PersistThread("test-shared")
    loop = asyncio.get_running_loop()
    first, second = GatedStorage(), GatedStorage()
    first_done, second_done = _Recorder(), _Recorder()
    leaving = PersistWorker(first, loop, first_done, "leaving", thread=thread)
    staying = PersistWorker(second, loop, second_done, "staying", thread=thread)
    try:
        first.hold()
        leaving.submit(_job(1))
        assert await asyncio.to_thread(first.entered.wait, WAIT)
        stopping = asyncio.create_task(asyncio.to_thread(leaving.stop, WAIT))
        await asyncio.sleep(0.01)
        assert not stopping.done()  # its write is still being synced
        first.open.set()
        assert await stopping
        assert [e.index for e in first.durable().entries] == [1]
        staying.submit(_job(1))
        await second_done.wait_jobs(1)
        assert [e.index for e in second.durable().entries] == [1]
        assert thread.is_alive()
    finally:
        first.open.set()
        assert await asyncio.to_thread(thread.stop, WAIT)


async def test_jobs_of_one_loop_turn_reach_the_thread_together() -> None:
    # The thread is woken once per loop turn, not once per job: jobs submitted without
    # yielding to the loop are one batch, one sync per storage.
    thread = PersistThread("test-shared")
    loop = asyncio.get_running_loop()
    storages = [GatedStorage() for _ in range(3)]
    recorders = [_Recorder() for _ in storages]
    ports = [
        PersistWorker(s, loop, r, f"p{i}", thread=thread)
        for i, (s, r) in enumerate(zip(storages, recorders, strict=True))
    ]
    try:
        for index in (1, 2):
            for port in ports:
                port.submit(_job(index))
                # The GIL let go between two submits, as a socket write between two groups'
                # Readies does: a thread woken per job would take the first alone.
                time.sleep(0.005)  # noqa: ASYNC251 (blocking the loop is the point)
        for recorder in recorders:
            await recorder.wait_jobs(2)
        await _until(lambda: thread.batches >= 1, "a batch done")
        assert thread.batches == 1
        assert [s.syncs for s in storages] == [1, 1, 1]
        assert [len(r.reports) for r in recorders] == [1, 1, 1]
        # Stopping a port from another thread (as ``RaftNode.stop`` does) hands over what the
        # loop put before it, so nothing it queued is left behind.
        ports[0].submit(_job(3))
        assert await asyncio.to_thread(ports[0].stop, WAIT)
        assert [e.index for e in storages[0].durable().entries] == [1, 2, 3]
    finally:
        assert await asyncio.to_thread(thread.stop, WAIT)


# ---------------------------------------------------------------- the shared thread's failures
# One test per finding of the hostile review of the shared thread: each failed before its fix.
async def test_a_bug_in_the_thread_fails_every_job_it_owed_and_every_port() -> None:
    # A bug while port a's batch is written: port b's job queued meanwhile is failed too
    # (never left unreported), and a port with nothing queued is told, so its node stops.
    thread = PersistThread("test-bug")
    loop = asyncio.get_running_loop()
    a_done, b_done, idle_done = _Recorder(), _Recorder(), _Recorder()
    a = PersistWorker(GatedStorage(), loop, a_done, "a", thread=thread)
    b = PersistWorker(GatedStorage(), loop, b_done, "b", thread=thread)
    idle = PersistWorker(GatedStorage(), loop, idle_done, "idle", thread=thread)
    entered, release = threading.Event(), threading.Event()

    def buggy_write(jobs: list[PersistJob]) -> BaseException | None:
        entered.set()
        release.wait(WAIT)
        raise RuntimeError("a bug in the thread (outside the storage calls)")

    a.write = buggy_write  # type: ignore[method-assign]
    try:
        a.submit(_job(1))
        assert await asyncio.to_thread(entered.wait, WAIT)
        b.submit(_job(1))
        await asyncio.sleep(0)  # the loop turn's flush hands it to the queue
        release.set()
        await a_done.wait_jobs(1)
        await b_done.wait_jobs(1)
        assert isinstance(a_done.reports[0][1], RuntimeError)
        assert isinstance(b_done.reports[0][1], RuntimeError)
        async with asyncio.timeout(WAIT):
            while not idle_done.reports:
                await asyncio.sleep(0.001)
        assert idle_done.reports == [([], thread.failure)]
        # Later jobs fail at once instead of waiting on a thread that is gone.
        b.submit(_job(2))
        await b_done.wait_jobs(2)
        assert isinstance(b_done.reports[-1][1], RuntimeError)
        assert await asyncio.to_thread(idle.stop, WAIT)
    finally:
        release.set()
        await asyncio.to_thread(thread.stop, WAIT)


async def test_a_bug_after_the_write_fail_stops_the_node() -> None:
    # A bug while reporting a written batch: the node sharing the thread must fail-stop
    # (``wait_failed``) rather than wait forever for an answer.
    thread = PersistThread("test-bug-node")
    storage = GatedStorage()
    node = RaftNode(
        "n1",
        ["n1", "n2", "n3"],
        InMemoryNetwork("n1", hub=InMemoryHub(), seed=1),
        storage,
        ListMachine(),
        CONFIG,
        rng=random.Random(1),
        persist_thread=thread,
    )
    await node.start()
    real = persist._report
    broken = [True]

    def report_once_broken(
        port: PersistWorker, jobs: list[PersistJob], error: BaseException | None
    ) -> bool:
        if broken and jobs:
            broken.clear()
            raise RuntimeError("a bug while reporting")
        return real(port, jobs, error)

    persist._report = report_once_broken
    try:
        answer = asyncio.create_task(node.handle_append_entries(_append(0, range(1, 2))))
        async with asyncio.timeout(WAIT):
            failure = await node.wait_failed()
        assert isinstance(failure, RuntimeError)
        with pytest.raises(NodeStoppedError):
            await answer
    finally:
        persist._report = real
        await node.stop()
        await asyncio.to_thread(thread.stop, WAIT)


async def test_a_job_for_a_stopped_thread_fails_at_once() -> None:
    thread = PersistThread("test-stopped")
    assert await asyncio.to_thread(thread.stop, WAIT)
    done = _Recorder()
    port = PersistWorker(GatedStorage(), asyncio.get_running_loop(), done, "late", thread=thread)
    port.submit(_job(1))
    await done.wait_jobs(1)
    assert isinstance(done.reports[0][1], PersistThreadStoppedError)
    assert await asyncio.to_thread(port.stop, WAIT)  # nothing to wait for


async def test_one_ports_slow_write_does_not_hold_another_ports_report() -> None:
    thread = PersistThread("test-hol")
    loop = asyncio.get_running_loop()
    slow, fast = GatedStorage(), GatedStorage()
    a_done, b_done = _Recorder(), _Recorder()
    a = PersistWorker(slow, loop, a_done, "a", thread=thread)
    b = PersistWorker(fast, loop, b_done, "b", thread=thread)
    try:
        slow.hold()
        b.submit(_job(1))
        a.submit(_job(1))  # one loop turn: one batch, a's fsync held
        await b_done.wait_jobs(1)
        assert b_done.reports[0][1] is None
        assert a_done.reports == []  # a is still syncing: only b was vouched for
        slow.open.set()
        await a_done.wait_jobs(1)
    finally:
        slow.open.set()
        await asyncio.to_thread(thread.stop, WAIT)


async def test_a_snapshot_save_is_written_after_the_other_ports_of_its_batch() -> None:
    thread = PersistThread("test-snapshot-last")
    loop = asyncio.get_running_loop()
    order: list[str] = []

    class Recording(GatedStorage):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def sync(self) -> None:
            order.append(self.name)
            super().sync()

    saving, plain = Recording("saving"), Recording("plain")
    s_done, p_done = _Recorder(), _Recorder()
    s = PersistWorker(saving, loop, s_done, "s", thread=thread)
    p = PersistWorker(plain, loop, p_done, "p", thread=thread)
    try:
        snap = Ready(snapshot=(SnapshotMeta(5, 1, Configuration.of(["n1"])), b"data"))
        s.submit(PersistJob(snap, 0, False))
        p.submit(_job(1))
        await s_done.wait_jobs(1)
        await p_done.wait_jobs(1)
        # (saving a snapshot syncs the storage itself, then the batch's sync follows)
        assert order[0] == "plain"
        assert set(order[1:]) == {"saving"}
    finally:
        await asyncio.to_thread(thread.stop, WAIT)


async def test_a_flush_lost_with_its_loop_does_not_block_other_loops() -> None:
    thread = PersistThread("test-flush")
    old_loop = asyncio.new_event_loop()
    gone = PersistWorker(GatedStorage(), old_loop, _Recorder(), "gone", thread=thread)
    gone.submit(_job(1))  # its flush is scheduled on old_loop, which never runs it
    old_loop.close()
    done = _Recorder()
    port = PersistWorker(GatedStorage(), asyncio.get_running_loop(), done, "p", thread=thread)
    try:
        port.submit(_job(1))
        await done.wait_jobs(1)
        assert done.reports[0][1] is None
    finally:
        await asyncio.to_thread(thread.stop, WAIT)


async def test_a_port_that_gave_up_waiting_writes_nothing_more() -> None:
    # ``stop`` timed out (the caller then closes the storage): what the port still had queued
    # is dropped, never written into a storage a new run may have reopened.
    thread = PersistThread("test-abandon")
    loop = asyncio.get_running_loop()
    blocker, storage = GatedStorage(), GatedStorage()
    port = PersistWorker(storage, loop, _Recorder(), "p", thread=thread)
    other = PersistWorker(blocker, loop, _Recorder(), "other", thread=thread)
    try:
        blocker.hold()
        other.submit(_job(1))
        assert await asyncio.to_thread(blocker.entered.wait, WAIT)
        port.submit(_job(1))
        await asyncio.sleep(0)  # handed over, queued behind the held batch
        assert not await asyncio.to_thread(port.stop, 0.05)
        blocker.open.set()
        await asyncio.to_thread(thread.stop, WAIT)
        assert storage.durable().entries == []
    finally:
        blocker.open.set()
        await asyncio.to_thread(thread.stop, WAIT)


# ---------------------------------------------------------------- the re-review's findings
class _AppendGatedStorage(GatedStorage):
    """``append`` waits on ``append_open`` (after saying so through ``append_entered``)."""

    def __init__(self) -> None:
        super().__init__()
        self.append_open = threading.Event()
        self.append_open.set()
        self.append_entered = threading.Event()

    def append(self, entries: Sequence[LogEntry]) -> None:
        self.append_entered.set()
        assert self.append_open.wait(WAIT)
        super().append(entries)


async def test_a_write_under_way_when_stop_gives_up_never_lands_in_the_reopened_storage() -> None:
    # stop() timed out while the port's batch was being written; the caller closes the
    # storage and a new run reopens it (RaftNode.stop, then start: storage.load()). The rest
    # of the old batch must not be written (nor synced, nor reported durable) into it.
    thread = PersistThread("test-abandon-midway")
    storage = _AppendGatedStorage()
    done = _Recorder()
    port = PersistWorker(storage, asyncio.get_running_loop(), done, "p", thread=thread)
    try:
        storage.append_open.clear()
        port.submit(_job(1))
        port.submit(_job(2))  # same loop turn: one batch
        assert await asyncio.to_thread(storage.append_entered.wait, WAIT)
        assert not await asyncio.to_thread(port.stop, 0.05)
        storage.close()  # RaftNode.stop: "closing the storage anyway"
        storage.load()  # RaftNode.start of the next run reopens it
        storage.append_open.set()
        await done.wait_jobs(2)
        assert storage.durable().entries == [], "the old run's batch was synced into the new run"
        assert done.reports[0][1] is not None, "reported durable after stop gave up"
    finally:
        storage.append_open.set()
        await asyncio.to_thread(thread.stop, WAIT)


async def test_an_idle_ports_stop_does_not_wait_for_another_ports_write() -> None:
    # A port with nothing queued is stopped while another group's fsync is held (a snapshot
    # save, put last in its batch, is the likely case): stop markers are honoured only at the
    # end of the whole batch, so the idle port's stop times out and it is marked abandoned.
    thread = PersistThread("test-stop-hol")
    loop = asyncio.get_running_loop()
    slow = GatedStorage()
    busy = PersistWorker(slow, loop, _Recorder(), "busy", thread=thread)
    idle = PersistWorker(GatedStorage(), loop, _Recorder(), "idle", thread=thread)
    try:
        slow.hold()
        busy.submit(_job(1))
        assert await asyncio.to_thread(slow.entered.wait, WAIT)
        # Returns True while busy's fsync is still held: it did not wait on another group.
        assert await asyncio.to_thread(idle.stop, 1.0), "an idle port's stop waited on busy"
        assert not slow.open.is_set()
    finally:
        slow.open.set()
        await asyncio.to_thread(thread.stop, WAIT)
