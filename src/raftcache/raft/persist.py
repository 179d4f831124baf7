"""PersistThread and PersistWorker: one writer thread takes the Readies ready loops queue
(group commit), for one node or for every replica of a store.

Rule: the thread takes *everything* queued, writes each storage's jobs in queue order
(snapshot, hard state, entries of each Ready), then issues **one** ``sync`` per storage for the
batch, and only then tells the event loop — once per batch, through
``loop.call_soon_threadsafe`` — which jobs are durable. Nothing is reported durable before
that sync returned, so nothing the ready loop does on completion (answers, the leader counting
itself towards a commit) can run ahead of the disk. A ``PersistWorker`` is one storage's port
on a thread: a lone node's worker owns its thread; a store's replicas share the store's, so a
batch covers every group the store hosts (one wake-up of the thread and one report to the loop
per batch, however many groups wrote).

Failures belong to the port: a batch whose write or sync raised fails that port's jobs as a
whole (none of it may be vouched for). After a ``DiskFullError`` the port writes nothing more —
its later jobs are reported failed unwritten, so no later entry can land after a gap — until
its loop, having taken back every job it had handed over, calls ``resume``. Any other error (a
failed fsync) fails every later job of the port: the ready loop raises it and the node stops
(fail-stop), as it did when the write ran in ``asyncio.to_thread``; a thread owned by its
worker ends then, a shared one goes on writing the other storages (their files are their own;
the store's process stops anyway when one replica fails). A bug in the thread itself fails
every job it held and every later one.

Compared with ``asyncio.to_thread`` per Ready, the hand-off costs one ``SimpleQueue.put`` per
Ready and one ``call_soon_threadsafe`` per *batch* (no executor work item, no concurrent
Future chained to an asyncio one), and Readies the loops queue while a sync runs share the
next batch instead of each waiting for its own.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from raftcache.raft.ready import Ready
from raftcache.storage.base import DiskFullError, Storage

log = logging.getLogger("raftcache.raft")


@dataclass(slots=True, eq=False)
class PersistJob:
    """One Ready on its way to disk, and what the ready loop does once it is durable."""

    rd: Ready
    #: The core's ``hard_state_version`` when the Ready was made (durable once this is done).
    hs_version: int
    #: Its requests already left (they needed no new term, vote or snapshot on disk).
    early: bool
    #: Flush waiters covered by this job (and every job before it).
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    #: Handed to the thread (False: nothing to write, it only keeps its place in the order).
    submitted: bool = False
    done: bool = False
    error: BaseException | None = None


def write_ready(storage: Storage, rd: Ready) -> None:
    """Write one Ready's durable parts, without syncing (the caller syncs once per batch)."""
    if rd.snapshot is not None:
        storage.save_snapshot(*rd.snapshot)
    if rd.hard_state is not None:
        storage.set_hard_state(*rd.hard_state)
    if rd.entries:
        storage.append(rd.entries)


def timed_sync(storage: Storage, observe: Callable[[float], None] | None) -> None:
    """``storage.sync()``, its duration (wall seconds, a figure for operators only: no
    decision depends on it) passed to ``observe`` when it succeeded."""
    if observe is None:
        storage.sync()
        return
    started = time.perf_counter()
    storage.sync()
    observe(time.perf_counter() - started)


class PersistThread:
    """The writer thread: any number of ``PersistWorker`` ports queue jobs on it (see the
    module rule). A lone node's worker owns a thread of its own; a store's replicas share one,
    so a batch covers every group it hosts (one wake-up of the thread and one report to the
    event loop per batch, not one per group)."""

    def __init__(self, name: str) -> None:
        # A C-level queue of lists: one ``put`` per loop turn, not per job. Waking the thread
        # is the costly part (a futex wake and, on a store pinned to one core, two context
        # switches while the loop holds the GIL): queued per job it was the largest single
        # item of a loaded store's main thread.
        self._queue: queue.SimpleQueue[list[tuple[PersistWorker, PersistJob | None]] | None] = (
            queue.SimpleQueue()
        )
        #: Jobs submitted during this loop turn, handed over together by ``flush``.
        self._pending: list[tuple[PersistWorker, PersistJob | None]] = []
        self._pending_lock = threading.Lock()  # ``stop`` may flush from another thread
        self._flush_scheduled = False
        self._stopping = False
        #: Why the thread ended on a bug of its own (every later job is failed with it).
        self.failure: BaseException | None = None
        self.batches = 0  # batches taken (statistics and tests)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, port: PersistWorker, job: PersistJob | None) -> None:
        """Queue ``job`` for ``port`` (None: the port stops once what it queued is written).
        Called in ``port``'s event loop: the jobs of one loop turn reach the thread together,
        at the end of the turn (``flush``), in the order they were put."""
        with self._pending_lock:
            self._pending.append((port, job))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        port.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand everything put so far to the thread (in order)."""
        with self._pending_lock:
            self._flush_scheduled = False
            items, self._pending = self._pending, []
            if items:
                self._queue.put(items)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> bool:
        """Write what is queued, then end; False if the thread did not end in time."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop_port(self, port: PersistWorker) -> None:
        """From any thread: ``port`` stops once everything it put before is written."""
        with self._pending_lock:
            self._pending.append((port, None))
            items, self._pending = self._pending, []
            self._queue.put(items)

    def _take(self) -> list[tuple[PersistWorker, PersistJob | None]] | None:
        """Block for one hand-over, then take every one queued behind it (None: stop)."""
        if self._stopping:
            return None
        first = self._queue.get()
        if first is None:
            return None
        batch = list(first)
        while True:
            try:
                items = self._queue.get_nowait()
            except queue.Empty:
                return batch
            if items is None:
                self._stopping = True  # write what came before the stop, then end
                return batch
            batch.extend(items)

    def _run(self) -> None:
        taken: list[tuple[PersistWorker, PersistJob | None]] = []
        try:
            while (got := self._take()) is not None:
                taken = got
                # Each port's jobs in their queue order; ports in the order they first came.
                ports: dict[PersistWorker, list[PersistJob]] = {}
                stops: list[PersistWorker] = []
                for port, job in taken:
                    if job is None:
                        stops.append(port)
                    else:
                        ports.setdefault(port, []).append(job)
                reports = [(port, jobs, port.write(jobs)) for port, jobs in ports.items()]
                taken = []
                self.batches += 1
                if not _report(reports):
                    return  # the loop is closed: nobody is waiting any more
                for port in stops:
                    port.stopped.set()
                if any(port.owns_thread and port.fatal for port in ports):
                    return  # a lone node's failed fsync: fail-stop, nothing more is written
        except BaseException as exc:  # a bug in this thread must surface, not hang the node
            log.critical("persist thread failed: %r", exc)
            self.failure = exc
            self._stopping = True
            owed: dict[PersistWorker, list[PersistJob]] = {}
            for port, job in taken:
                if job is not None:
                    owed.setdefault(port, []).append(job)
            _report([(port, jobs, exc) for port, jobs in owed.items()])


def _report(reports: list[tuple[PersistWorker, list[PersistJob], BaseException | None]]) -> bool:
    """Tell each port's event loop, once per batch and loop, which jobs are done; False if a
    loop is closed."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[PersistWorker, list[PersistJob]]]] = {}
    for port, jobs, error in reports:
        for job in jobs:
            job.error = error
        by_loop.setdefault(port.loop, []).append((port, jobs))
    delivered = True
    for loop, done in by_loop.items():
        try:
            loop.call_soon_threadsafe(_deliver, done)
        except RuntimeError:  # the loop is closed
            delivered = False
    return delivered


def _deliver(done: list[tuple[PersistWorker, list[PersistJob]]]) -> None:
    """In the event loop: each port's callback with its jobs of the batch."""
    for port, jobs in done:
        port.on_done(jobs, jobs[0].error if jobs else None)


class PersistWorker:
    """One storage's port on a ``PersistThread``: its own thread's (a lone node) or a store's
    shared one. Jobs are written in the order submitted; the port's failures are its own."""

    def __init__(
        self,
        storage: Storage,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[PersistJob], BaseException | None], None],
        name: str,
        observe_sync: Callable[[float], None] | None = None,
        thread: PersistThread | None = None,
    ) -> None:
        self._storage = storage
        self._observe_sync = observe_sync
        self.loop = loop
        self.on_done = on_done
        self.owns_thread = thread is None
        self._thread = PersistThread(name) if thread is None else thread
        # After a DiskFullError, until resume(). Set by the thread before it reports the
        # failure, cleared by the loop only after every job came back: no lock needed.
        self._blocked = False
        #: A failed fsync or write: every later job of this port fails with it (fail-stop).
        self._fatal: BaseException | None = None
        #: Set by the thread once everything queued before ``stop`` was written.
        self.stopped = threading.Event()
        self.batches = 0  # syncs issued (statistics and tests)

    @property
    def fatal(self) -> bool:
        return self._fatal is not None

    def submit(self, job: PersistJob) -> None:
        job.submitted = True
        failure = self._thread.failure
        if failure is not None:  # the thread is gone: report at once rather than never
            job.error = failure
            self.loop.call_soon(self.on_done, [job], failure)
            return
        self._thread.put(self, job)

    def resume(self) -> None:
        """The loop took back every job after a full disk: write again from now on."""
        self._blocked = False

    def stop(self, timeout: float) -> bool:
        """Let what this port queued be written; False if that did not happen in time. A
        worker with its own thread ends it."""
        if self.owns_thread:
            return self._thread.stop(timeout)
        if self._thread.failure is not None:
            return True
        self._thread.stop_port(self)
        return self.stopped.wait(timeout)

    def write(self, jobs: list[PersistJob]) -> BaseException | None:
        """In the thread: write ``jobs`` in order and sync once; the error, if any."""
        if self._fatal is not None:
            return self._fatal
        if self._blocked:
            return DiskFullError("an earlier write failed: the disk is full")
        try:
            for job in jobs:
                write_ready(self._storage, job.rd)
            timed_sync(self._storage, self._observe_sync)
        except DiskFullError as exc:
            self._blocked = True
            return exc
        except BaseException as exc:  # a failed fsync: fatal for the node
            self._fatal = exc
            return exc
        self.batches += 1
        return None
