"""PersistPipeline: the driver's Readies on their way to disk, finished strictly in order.

Rule: every Ready the core hands out becomes a ``PersistJob`` in ``jobs``, in order, and is
finished (``core.advance``, answers released, late requests sent, entries applied) strictly in
that order and only once it — and therefore every job before it — is durable. The ready loop may
hand out the next Ready while earlier ones are being written (up to ``persist_max_inflight``
jobs in the thread), so Readies made during one fsync share the next one. Safety holds because:

- nothing is answered or counted for commit before its fsync returned: the AnswerGate and the
  flush waiters are released, and ``core.advance`` (the leader counting itself) runs, only when
  a job is finished;
- a request leaves early (during the write) only if it needs no new term, vote or snapshot on
  disk *and* no earlier job still carries one (``durable_version`` has caught up); otherwise it
  leaves when its job is finished;
- a failed write fails its job and every job made before the failure was handled (``tainted``):
  nothing after a gap is vouched for, and the core hands the writes out again. A full disk is
  retried; any other storage failure is raised and stops the node (fail-stop).

The storage lock is held while the thread has work; a snapshot write waiting for it stops the
hand-off until the thread is idle, so it is never starved. A snapshot Ready, or a received
snapshot waiting to be installed, also waits for an idle thread (they change what the log is).

The pipeline owns the jobs, the persist thread, the storage lock, the answer gate and the flush
waiters; what finishing a job does beyond them (send, apply, restore a snapshot) the node hands
in as callbacks, so the two meet at four named calls and nothing else.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from raftcache.raft.config import RaftConfig
from raftcache.raft.core import RaftCore
from raftcache.raft.durable import AnswerGate
from raftcache.raft.persist import (
    PersistJob,
    PersistThread,
    PersistWorker,
    timed_sync,
    write_ready,
)
from raftcache.raft.ready import Ready
from raftcache.storage.base import DiskFullError, SnapshotMeta, Storage

log = logging.getLogger("raftcache.raft")


class PersistPipeline:
    """One run's persist hand-off (``RaftNode`` makes a new one for every run)."""

    def __init__(
        self,
        node_id: str,
        storage: Storage,
        config: RaftConfig,
        *,
        send_all: Callable[[Ready], None],
        after_persist: Callable[[Ready], None],
        snapshot_durable: Callable[[SnapshotMeta, bytes], None],
        wake: Callable[[], None],
        observe_sync: Callable[[float], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self._observe_sync = observe_sync
        self.storage = storage
        self.config = config
        self._send_all = send_all
        self._after_persist = after_persist
        self._snapshot_durable = snapshot_durable
        self._wake = wake
        #: Readies handed out by the core and not yet done with, in order.
        self.jobs: collections.deque[PersistJob] = collections.deque()
        #: Jobs handed to the persist thread and not yet reported back.
        self.inflight_writes = 0
        #: The dedicated persist thread (``persist_in_thread``), from ``start_worker`` to stop.
        self.worker: PersistWorker | None = None
        #: Held while the persist thread has work (released once it is idle).
        self.storage_lock = asyncio.Lock()
        self.lock_held = False
        #: A failed write was seen: jobs made before it was handled fail too (no gap).
        self.tainted = False
        #: Why the persist thread itself died (reported with no job), raised by ``finish``.
        self.persist_error: BaseException | None = None
        #: AppendEntries answers waiting for what they vouch for to be durable; bound to one
        #: core when the node makes it (``AnswerGate.bind``).
        self.gate = AnswerGate()
        #: Waiters for "everything so far is durable" not yet covered by a job.
        self.flush_waiters: list[asyncio.Future[None]] = []
        #: The last write failed with a full disk (cleared by the next successful one).
        self.disk_full = False

    @property
    def busy(self) -> bool:
        """A Ready handed out by the core is not done with yet (maybe not durable)."""
        return bool(self.jobs)

    def start_worker(
        self, loop: asyncio.AbstractEventLoop, thread: PersistThread | None = None
    ) -> None:
        """Write through ``thread`` (a store's, shared by its replicas), or a thread of the
        pipeline's own."""
        self.worker = PersistWorker(
            self.storage,
            loop,
            self.on_persisted,
            name=f"raft-persist-{self.node_id}",
            observe_sync=self._observe_sync,
            thread=thread,
        )

    def release_storage_lock(self) -> None:
        """Stopping: the ready loop may have died holding the lock for the persist thread."""
        if self.lock_held:
            self.lock_held = False
            self.storage_lock.release()

    # ------------------------------------------------------------------ handing out
    def full(self) -> bool:
        """No new Ready now on the pipeline's own account: the thread has all it may take, or
        a snapshot is being written (the node adds its own reasons)."""
        return self.inflight_writes >= self.config.persist_max_inflight or self.gate.snapshot_busy

    def _write_inline(self, rd: Ready) -> bool:
        """Write ``rd`` on the event loop? Only without a persist thread, or when the option
        allows small entry writes there (``persist_inline_max_entries`` > 0) and nothing else
        is being written. A new term or vote (a file replaced and two fsyncs) or a snapshot
        always goes to the thread: a stalled loop stalls the ticker and every answer."""
        cfg = self.config
        if self.worker is None:
            return True
        return (
            cfg.persist_inline_max_entries > 0
            and self.inflight_writes == 0
            and rd.snapshot is None
            and rd.hard_state is None
            and 0 < len(rd.entries) <= cfg.persist_inline_max_entries
        )

    async def hand_off(self, core: RaftCore, rd: Ready) -> bool:
        """Start ``rd``'s way to disk; True if a write failed (hand out nothing more until the
        next wake-up)."""
        hs_version = core.hard_state_version
        # A leader's AppendEntries may leave while its own disk write is under way
        # (dissertation §10.2.1): they are requests, not answers, and the leader counts
        # itself towards a commit only once the write is done (advance). Anything sent with
        # a new term or vote — or made while an earlier one is still being written — waits.
        early = (
            rd.hard_state is None
            and rd.snapshot is None
            and self.gate.durable_version >= hs_version
        )
        # Flush waiters registered so far are covered by this job and the ones before it.
        job = PersistJob(rd, hs_version, early, self.flush_waiters)
        self.flush_waiters = []
        self.jobs.append(job)
        if early:
            self._send_all(rd)
            # Sent: the job need not keep them (snapshot chunks) while it waits its turn.
            rd.messages = []
        if rd.snapshot is not None:
            # No answer leaves until the snapshot is on disk: the core's stable index already
            # covers it (cleared when the job is finished, or failed).
            self.gate.snapshot_busy = True
        if not rd.needs_persist():
            job.done = True  # nothing to write: it only keeps its place in the order
        elif self._write_inline(rd):
            async with self.storage_lock:
                try:
                    write_ready(self.storage, rd)
                    timed_sync(self.storage, self._observe_sync)
                except DiskFullError as exc:
                    job.error = exc
            job.done = True
        else:
            assert self.worker is not None
            if not self.lock_held:
                await self.storage_lock.acquire()
                self.lock_held = True
            self.inflight_writes += 1
            self.worker.submit(job)
            return False
        return self.finish(core)

    def on_persisted(self, batch: list[PersistJob], error: BaseException | None) -> None:
        """Called in the event loop by the persist thread, once per batch."""
        for job in batch:
            job.done = True
        if error is not None and not batch:
            self.persist_error = error
        self._wake()

    # ------------------------------------------------------------------ finishing
    def finish(self, core: RaftCore) -> bool:
        """Finish every job at the head of the queue that is done; True if a write failed
        (the loop then hands nothing out until its next wake-up, not in a busy loop)."""
        if self.persist_error is not None:
            raise self.persist_error
        failed = False
        while self.jobs and self.jobs[0].done:
            job = self.jobs.popleft()
            if job.submitted:
                self.inflight_writes -= 1
            error = job.error
            if error is None and self.tainted:
                error = DiskFullError("an earlier write failed: the disk is full")
            if error is None:
                self._on_durable(core, job)
            elif isinstance(error, DiskFullError):
                self.tainted = True
                self._on_disk_full(core, job, error)
                failed = True
            else:
                raise error  # a failed fsync: fail-stop
        if not self.jobs:
            self.tainted = False
        if self.inflight_writes == 0:
            self.release_storage_lock()
            if self.worker is not None:
                self.worker.resume()  # after a full disk: every job it had is back
        return failed

    def _on_durable(self, core: RaftCore, job: PersistJob) -> None:
        rd = job.rd
        if rd.needs_persist():
            self.disk_full = False
        if rd.snapshot is not None:
            self.gate.snapshot_busy = False
            self._snapshot_durable(*rd.snapshot)
        core.advance(rd)
        # Everything this Ready handed out is durable now (or was already).
        self.gate.durable_version = max(self.gate.durable_version, job.hs_version)
        self.gate.release(core)
        for w in job.waiters:
            if not w.done():
                w.set_result(None)
        if not job.early:
            self._send_all(rd)
        self._after_persist(rd)

    def _on_disk_full(self, core: RaftCore, job: PersistJob, exc: DiskFullError) -> None:
        """Nothing of the job may be vouched for: fail the RPCs waiting on it (their senders
        retry later), keep the writes pending in the core, refuse new proposals until a write
        succeeds. Reads and elections go on as long as the small hard-state file can be written.
        """
        rd = job.rd
        if not self.disk_full:
            log.error(
                "disk full on %s: refusing writes until space is freed (%s)", self.node_id, exc
            )
        self.disk_full = True
        if rd.snapshot is not None:
            self.gate.snapshot_busy = False
        if rd.hard_state is not None:
            core.mark_hard_state_unpersisted()
        if rd.entries:
            core.log.mark_unstable(rd.entries[0].index)
        for w in job.waiters:
            if not w.done():
                w.set_exception(exc)
        self.gate.fail_all(exc)
        if not job.early:
            # Requests that needed the write (votes, a new term) are not sent: the core
            # learns they failed, so it does not wait for answers to them.
            for out in rd.messages:
                core.step_failure(out)
        if rd.hard_state is None and rd.snapshot is None:
            # The rest of this Ready (applies, reads) does not depend on the failed write.
            self._after_persist(rd)
        # Retry the write after a pause, not in a busy loop.
        asyncio.get_running_loop().call_later(self.config.heartbeat_interval, self._wake)

    def settle_flush_waiters(self, core: RaftCore) -> None:
        """Waiters registered while the core had nothing new to write need only what is on
        its way already: the last job covers them (or nothing is pending at all)."""
        if not self.flush_waiters or self.disk_full or core.has_unpersisted():
            return
        if self.jobs:
            self.jobs[-1].waiters.extend(self.flush_waiters)
        else:
            for w in self.flush_waiters:
                if not w.done():
                    w.set_result(None)
        self.flush_waiters = []

    def fail_all(self, exc: BaseException) -> None:
        """The run ends: fail every waiter for durability (flush waiters, jobs', the gate's)."""
        for waiter in self.flush_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self.flush_waiters.clear()
        for job in self.jobs:
            for waiter in job.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            job.waiters = []
        self.gate.fail_all(exc)
