"""PersistWorker: one dedicated thread writes the Readies the ready loop queues (group commit).

Rule: the thread takes *everything* queued, writes it in queue order (snapshot, hard state,
entries of each Ready), then issues **one** ``sync`` for the whole batch, and only then tells
the event loop — once per batch, through ``loop.call_soon_threadsafe`` — which jobs are durable.
Nothing is reported durable before that sync returned, so nothing the ready loop does on
completion (answers, the leader counting itself towards a commit) can run ahead of the disk.

Failures: a batch whose write or sync raised is reported failed as a whole (none of it may be
vouched for). After a ``DiskFullError`` the thread writes nothing more — later jobs are reported
failed unwritten, so no later entry can land after a gap — until the loop, having taken back
every job it had handed over, calls ``resume``. Any other error (a failed fsync, a bug in this
thread) is reported and ends the thread: the ready loop raises it and the node stops
(fail-stop), as it did when the write ran in ``asyncio.to_thread``.

Compared with ``asyncio.to_thread`` per Ready, the hand-off costs one ``SimpleQueue.put`` per
Ready and one ``call_soon_threadsafe`` per *batch* (no executor work item, no concurrent
Future chained to an asyncio one), and Readies the loop queues while a sync runs share the
next sync instead of each waiting for its own.
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


class PersistWorker:
    """The thread, its queue, and the report back to the event loop (see the module rule)."""

    def __init__(
        self,
        storage: Storage,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[list[PersistJob], BaseException | None], None],
        name: str,
        observe_sync: Callable[[float], None] | None = None,
    ) -> None:
        self._storage = storage
        self._observe_sync = observe_sync
        self._loop = loop
        self._on_done = on_done
        # A C-level queue: ``put`` costs the loop no Python-level lock or notify (a
        # ``threading.Condition`` here was ~5% of a loaded leader's main thread).
        self._queue: queue.SimpleQueue[PersistJob | None] = queue.SimpleQueue()
        self._stopping = False
        # After a DiskFullError, until resume(). Set by the thread before it reports the
        # failure, cleared by the loop only after every job came back: no lock needed.
        self._blocked = False
        self.batches = 0  # syncs issued (statistics and tests)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: PersistJob) -> None:
        job.submitted = True
        self._queue.put(job)

    def resume(self) -> None:
        """The loop took back every job after a full disk: write again from now on."""
        self._blocked = False

    def stop(self, timeout: float) -> bool:
        """Let the thread finish what is queued and end; False if it did not in time."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self) -> list[PersistJob] | None:
        """Block for one job, then take every job queued behind it (None: stop)."""
        if self._stopping:
            return None
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return batch
            if job is None:
                self._stopping = True  # write what came before the stop, then end
                return batch
            batch.append(job)

    def _write(self, batch: list[PersistJob]) -> BaseException | None:
        if self._blocked:
            return DiskFullError("an earlier write failed: the disk is full")
        try:
            for job in batch:
                write_ready(self._storage, job.rd)
            timed_sync(self._storage, self._observe_sync)
        except DiskFullError as exc:
            self._blocked = True
            return exc
        except BaseException as exc:  # a failed fsync: fatal for the node
            return exc
        self.batches += 1
        return None

    def _report(self, batch: list[PersistJob], error: BaseException | None) -> bool:
        for job in batch:
            job.error = error
        try:
            self._loop.call_soon_threadsafe(self._on_done, batch, error)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            return False
        return True

    def _run(self) -> None:
        batch: list[PersistJob] = []
        try:
            while (taken := self._take()) is not None:
                batch = taken
                error = self._write(batch)
                reported = self._report(batch, error)
                batch = []
                if not reported or (error is not None and not isinstance(error, DiskFullError)):
                    return  # fatal: the node stops; nothing more may be written
        except BaseException as exc:  # a bug in this thread must surface, not hang the node
            log.critical("persist thread failed: %r", exc)
            self._stopping = True
            self._report(batch, exc)
