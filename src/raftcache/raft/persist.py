"""PersistThread and PersistWorker: one writer thread takes the Readies ready loops queue
(group commit), for one node or for every replica of a store.

Rule: the thread takes *everything* handed over, writes each storage's jobs in queue order
(snapshot, hard state, entries of each Ready), issues **one** ``sync`` per storage, and only
then tells that storage's event loop — through ``loop.call_soon_threadsafe`` — which jobs are
durable. Nothing is reported durable before its own storage's sync returned, so nothing the
ready loop does on completion (answers, the leader counting itself towards a commit) can run
ahead of the disk. A ``PersistWorker`` is one storage's port on a thread: a lone node's worker
owns its thread; a store's replicas share the store's. Jobs submitted during one loop turn are
handed over together at its end, so one wake-up of the thread covers every group that wrote;
each port is reported the moment its sync returned (one group's slow write never holds another
group's answers), and a port saving a snapshot goes last in its batch. Slowness of the disk
itself is shared: every group on a store waits for the same device.

Failures belong to the port: a batch whose write or sync raised fails that port's jobs as a
whole (none of it may be vouched for). After a ``DiskFullError`` the port writes nothing more —
its later jobs are reported failed unwritten, so no later entry can land after a gap — until
its loop, having taken back every job it had handed over, calls ``resume``. Any other error (a
failed fsync) fails every later job of the port: the ready loop raises it and the node stops
(fail-stop); a thread owned by its worker ends then, a shared one goes on writing the other
storages (their files are their own; the store's process stops anyway when one replica
fails). A port's ``stop`` returns at once when nothing of it is left to write, else right
after its own last report. A port whose ``stop`` gave up waiting writes nothing more — checked
before each job and the sync, and a write already under way is waited for a second timeout —
so its storage, closed and maybe reopened by a new run, gets nothing of the old run's batch
(past both timeouts the disk is stuck: the caller closes it anyway, and says so).
When the thread ends — stopped, or a bug of its own — every job it still owed or had queued is
failed, a job submitted later fails at once, every waiting ``stop`` is released, and after a
bug every port is told (``on_done([], error)``), so every node on it fail-stops instead of
waiting for answers that cannot come.

Compared with ``asyncio.to_thread`` per Ready, the hand-off costs a list append per Ready and
one ``SimpleQueue.put`` per loop turn (no executor work item, no concurrent Future chained to
an asyncio one), and Readies the loops queue while a sync runs share the next batch instead of
each waiting for its own.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from raftcache.raft.ready import Ready
from raftcache.storage.base import DiskFullError, Storage, StorageError

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


class PersistThreadStoppedError(StorageError):
    """A job reached a persist thread that no longer writes (stopped, or ended by a failure)."""


class PersistThread:
    """The writer thread: any number of ``PersistWorker`` ports queue jobs on it (see the
    module rule). A lone node's worker owns a thread of its own; a store's replicas share one,
    so one wake-up of the thread covers every group that wrote during a loop turn."""

    def __init__(self, name: str) -> None:
        # A C-level queue of lists: one ``put`` per loop turn, not per job. Waking the thread
        # is the costly part (a futex wake and, on a store pinned to one core, two context
        # switches while the loop holds the GIL): queued per job it was the largest single
        # item of a loaded store's main thread.
        self._queue: queue.SimpleQueue[list[tuple[PersistWorker, PersistJob | None]] | None] = (
            queue.SimpleQueue()
        )
        # Guards what the loops and the thread share: the jobs not yet handed over, the loops
        # a flush is scheduled on, and whether the thread still takes work.
        self._lock = threading.Lock()
        #: Jobs submitted during this loop turn, handed over together by ``flush``.
        self._pending: list[tuple[PersistWorker, PersistJob | None]] = []
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        #: Why the thread takes no more work (stopped, or failed); None while it does.
        self._closed: BaseException | None = None
        self._ports: weakref.WeakSet[PersistWorker] = weakref.WeakSet()
        self._stopping = False
        #: Why the thread ended on a bug of its own (every job it owed is failed with it).
        self.failure: BaseException | None = None
        self.batches = 0  # batches taken (statistics and tests)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def attach(self, port: PersistWorker) -> None:
        """Know ``port`` (to tell it if the thread fails); a port attaching to a thread that
        already failed is told at once, so its node fail-stops before it waits on a write."""
        with self._lock:
            self._ports.add(port)
            failure = self.failure if self._closed is not None else None
        if failure is not None:
            port.loop.call_soon(_deliver, port, [], failure)

    def put(self, port: PersistWorker, job: PersistJob) -> None:
        """Queue ``job`` for ``port``, from ``port``'s event loop: the jobs of one loop turn
        reach the thread together, at the end of the turn (``flush``), in the order put. On
        a thread that takes no more work, the job is failed at once rather than never."""
        with self._lock:
            closed = self._closed
            if closed is None:
                port.unwritten += 1
                self._pending.append((port, job))
                if port.loop in self._scheduled:
                    return
                self._scheduled.add(port.loop)
        if closed is not None:
            job.error = closed
            port.loop.call_soon(_deliver, port, [job], closed)
            return
        port.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Hand everything put so far to the thread (in order)."""
        with self._lock:
            self._scheduled.clear()
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

    def stop_port(self, port: PersistWorker) -> bool:
        """From any thread: ``port`` stops once everything it put before is written (its
        ``stopped`` event is set then — at once when nothing of it is left to write, however
        busy the thread is with other groups); False if the thread takes no more work."""
        with self._lock:
            if self._closed is not None:
                return False
            if port.unwritten == 0:
                port.stopped.set()
                return True
            self._pending.append((port, None))
            items, self._pending = self._pending, []
            self._queue.put(items)
        return True

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
        reported: set[PersistWorker] = set()  # ports of ``taken`` already told
        end: BaseException = PersistThreadStoppedError("the persist thread has stopped")
        try:
            while (got := self._take()) is not None:
                taken, reported = got, set()
                ports: dict[PersistWorker, list[PersistJob]] = {}
                stops: list[PersistWorker] = []
                for port, job in taken:
                    if job is None:
                        stops.append(port)
                    else:
                        ports.setdefault(port, []).append(job)
                # Each port's jobs in their order, each port reported the moment its sync
                # returned: one group's slow write never holds another's answers. A port
                # saving a snapshot (a whole file) goes last.
                for port in stops:
                    if port not in ports:
                        port.stopped.set()  # nothing of it in this batch
                for port, jobs in sorted(ports.items(), key=lambda item: _saves(item[1])):
                    error = port.write(jobs)
                    reported.add(port)
                    with self._lock:
                        port.unwritten -= len(jobs)
                    delivered = _report(port, jobs, error)
                    if port in stops:
                        port.stopped.set()  # right after its own report, not the batch's end
                    if port.owns_thread and (not delivered or port.fatal):
                        # A lone node's loop is closed (nobody waits), or its fsync failed
                        # (fail-stop): the thread writes nothing more.
                        if error is not None:
                            end = error
                        return
                taken = []
                self.batches += 1
        except BaseException as exc:  # a bug in this thread must surface, not hang a node
            log.critical("persist thread failed: %r", exc)
            self.failure = end = exc
        finally:
            self._close(end, [(p, j) for p, j in taken if p not in reported])

    def _close(
        self, end: BaseException, owed: list[tuple[PersistWorker, PersistJob | None]]
    ) -> None:
        """The thread ends: take no more work, fail every job it still owed or had queued,
        tell every port of a failure (its node fail-stops), and release every waiting stop."""
        with self._lock:
            self._closed = end
            leftover = [*owed]
            while True:
                try:
                    items = self._queue.get_nowait()
                except queue.Empty:
                    break
                if items is not None:
                    leftover.extend(items)
            leftover.extend(self._pending)
            self._pending = []
            ports = list(self._ports)
        failed: dict[PersistWorker, list[PersistJob]] = {}
        for port, job in leftover:
            if job is not None:
                failed.setdefault(port, []).append(job)
        for port, jobs in failed.items():
            _report(port, jobs, end)
        for port in ports:
            if self.failure is not None and port not in failed:
                _report(port, [], self.failure)
            port.stopped.set()


def _saves(jobs: list[PersistJob]) -> bool:
    """Whether ``jobs`` save a snapshot (a whole file: slow)."""
    return any(job.rd.snapshot is not None for job in jobs)


def _report(port: PersistWorker, jobs: list[PersistJob], error: BaseException | None) -> bool:
    """Tell ``port``'s event loop which of its jobs are done; False if that loop is closed."""
    for job in jobs:
        job.error = error
    try:
        port.loop.call_soon_threadsafe(_deliver, port, jobs, error)
    except RuntimeError:  # the loop is closed
        return False
    return True


def _deliver(port: PersistWorker, jobs: list[PersistJob], error: BaseException | None) -> None:
    """In the event loop: the port's callback (its failure is logged, never lost)."""
    try:
        port.on_done(jobs, error)
    except Exception:
        log.exception("persist report to %s failed", port.name)


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
        self.name = name
        self.loop = loop
        self.on_done = on_done
        self.owns_thread = thread is None
        self._thread = PersistThread(name) if thread is None else thread
        # After a DiskFullError, until resume(). Set by the thread before it reports the
        # failure, cleared by the loop only after every job came back: no lock needed.
        self._blocked = False
        #: A failed fsync or write: every later job of this port fails with it (fail-stop).
        self._fatal: BaseException | None = None
        #: ``stop`` gave up waiting: the storage is being closed, write nothing more of ours.
        self._abandoned = False
        #: Held by the thread while it writes this port's jobs: ``stop`` giving up waits for
        #: a write under way to end (the next one sees ``_abandoned`` and writes nothing).
        self._io = threading.Lock()
        #: Jobs submitted and not yet written (maintained under the thread's lock).
        self.unwritten = 0
        #: Set by the thread once everything queued before ``stop`` was written.
        self.stopped = threading.Event()
        self.batches = 0  # syncs issued (statistics and tests)
        self._thread.attach(self)

    @property
    def fatal(self) -> bool:
        return self._fatal is not None

    def submit(self, job: PersistJob) -> None:
        job.submitted = True
        self._thread.put(self, job)

    def resume(self) -> None:
        """The loop took back every job after a full disk: write again from now on."""
        self._blocked = False

    def stop(self, timeout: float) -> bool:
        """Let what this port queued be written; False if that did not happen in time (its
        remaining jobs are then dropped unwritten: the caller closes the storage). A worker
        with its own thread ends it."""
        if self.owns_thread:
            done = self._thread.stop(timeout)
        elif not self._thread.stop_port(self):
            return True  # the thread ended: it failed or reported everything it had
        else:
            done = self.stopped.wait(timeout)
        if not done:
            self._abandoned = True
            # A write under way may still be in a syscall: let it end before the caller
            # closes the storage (and a new run reopens it); past a second timeout the disk
            # is stuck and the caller closes anyway (it logs so).
            if self._io.acquire(timeout=timeout):
                self._io.release()
        return done

    def write(self, jobs: list[PersistJob]) -> BaseException | None:
        """In the thread: write ``jobs`` in order and sync once; the error, if any."""
        with self._io:
            return self._write(jobs)

    def _write(self, jobs: list[PersistJob]) -> BaseException | None:
        if self._fatal is not None:
            return self._fatal
        if self._blocked:
            return DiskFullError("an earlier write failed: the disk is full")
        abandoned = PersistThreadStoppedError("the node stopped before this write was made")
        try:
            for job in jobs:
                if self._abandoned:  # checked before every job and the sync
                    return abandoned
                write_ready(self._storage, job.rd)
            if self._abandoned:
                return abandoned
            timed_sync(self._storage, self._observe_sync)
        except DiskFullError as exc:
            self._blocked = True
            return exc
        except BaseException as exc:  # a failed fsync: fatal for the node
            self._fatal = exc
            return exc
        self.batches += 1
        return None
