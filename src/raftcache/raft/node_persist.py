"""The ready loop's persist hand-off: Readies queued to the persist thread, finished in order.

Rule: every Ready the core hands out becomes a ``PersistJob`` in ``_jobs``, in order, and is
finished (``core.advance``, answers released, late requests sent, entries applied) strictly in
that order and only once it — and therefore every job before it — is durable. The loop may hand
out the next Ready while earlier ones are being written (up to ``persist_max_inflight`` jobs in
the thread), so Readies made during one fsync share the next one. Safety holds because:

- nothing is answered or counted for commit before its fsync returned: the AnswerGate and the
  flush waiters are released, and ``core.advance`` (the leader counting itself) runs, only when
  a job is finished;
- a request leaves early (during the write) only if it needs no new term, vote or snapshot on
  disk *and* no earlier job still carries one (``durable_version`` has caught up); otherwise it
  leaves when its job is finished;
- a failed write fails its job and every job made before the failure was handled (``_tainted``):
  nothing after a gap is vouched for, and the core hands the writes out again. A full disk is
  retried; any other storage failure is raised and stops the node (fail-stop).

The storage lock is held while the thread has work; a snapshot write waiting for it stops the
hand-off until the thread is idle, so it is never starved. A snapshot Ready, or a received
snapshot waiting to be installed, also waits for an idle thread (they change what the log is).
"""

from __future__ import annotations

import asyncio
import logging

from raftcache.raft.core import RaftCore, Role
from raftcache.raft.node_base import NodeBase
from raftcache.raft.persist import PersistJob, write_ready
from raftcache.raft.ready import Ready
from raftcache.storage.base import DiskFullError

log = logging.getLogger("raftcache.raft")


class PersistMixin(NodeBase):
    # ------------------------------------------------------------------ handing out
    def _hold_hand_off(self) -> bool:
        """Make no new Ready now: the persist thread must become idle first (or is full)."""
        if not self._jobs:
            return False
        return (
            self._inflight_writes >= self.config.persist_max_inflight
            or self._gate.snapshot_busy
            or self._pending_install is not None
            or self._snapshots.io_waiting > 0
        )

    def _write_inline(self, rd: Ready) -> bool:
        """Write ``rd`` on the event loop? Only without a persist thread, or when the option
        allows small entry writes there (``persist_inline_max_entries`` > 0) and nothing else
        is being written. A new term or vote (a file replaced and two fsyncs) or a snapshot
        always goes to the thread: a stalled loop stalls the ticker and every answer."""
        cfg = self.config
        if self._worker is None:
            return True
        return (
            cfg.persist_inline_max_entries > 0
            and self._inflight_writes == 0
            and rd.snapshot is None
            and rd.hard_state is None
            and 0 < len(rd.entries) <= cfg.persist_inline_max_entries
        )

    async def _hand_off(self, core: RaftCore) -> bool:
        """Take the core's next Ready and start its way to disk; True if a write failed (hand
        out nothing more until the next wake-up)."""
        # Read before the Ready exists: a round it opens starts no later than this (the lease
        # is timed from here, never from the end of the write — ``raft/lease.py``).
        before = self._clock()
        rd = core.ready()
        if core.role is Role.LEADER:
            self._lease.observe(rd, before)
        else:
            self._lease.clear()
        hs_version = core.hard_state_version
        # A leader's AppendEntries may leave while its own disk write is under way
        # (dissertation §10.2.1): they are requests, not answers, and the leader counts
        # itself towards a commit only once the write is done (advance). Anything sent with
        # a new term or vote — or made while an earlier one is still being written — waits.
        early = (
            rd.hard_state is None
            and rd.snapshot is None
            and self._gate.durable_version >= hs_version
        )
        # Flush waiters registered so far are covered by this job and the ones before it.
        job = PersistJob(rd, hs_version, early, self._flush_waiters)
        self._flush_waiters = []
        self._jobs.append(job)
        if early:
            self._send_all(rd)
            # Sent: the job need not keep them (snapshot chunks) while it waits its turn.
            rd.messages = []
        if rd.snapshot is not None:
            # No answer leaves until the snapshot is on disk: the core's stable index already
            # covers it (cleared when the job is finished, or failed).
            self._gate.snapshot_busy = True
        if not rd.needs_persist():
            job.done = True  # nothing to write: it only keeps its place in the order
        elif self._write_inline(rd):
            async with self._storage_lock:
                try:
                    write_ready(self.storage, rd)
                    self.storage.sync()
                except DiskFullError as exc:
                    job.error = exc
            job.done = True
        else:
            assert self._worker is not None
            if not self._lock_held:
                await self._storage_lock.acquire()
                self._lock_held = True
            self._inflight_writes += 1
            self._worker.submit(job)
            return False
        return self._finish_jobs(core)

    def _on_persisted(self, batch: list[PersistJob], error: BaseException | None) -> None:
        """Called in the event loop by the persist thread, once per batch."""
        for job in batch:
            job.done = True
        if error is not None and not batch:
            self._persist_error = error
        self._wake.set()

    # ------------------------------------------------------------------ finishing
    def _finish_jobs(self, core: RaftCore) -> bool:
        """Finish every job at the head of the queue that is done; True if a write failed
        (the loop then hands nothing out until its next wake-up, not in a busy loop)."""
        if self._persist_error is not None:
            raise self._persist_error
        failed = False
        while self._jobs and self._jobs[0].done:
            job = self._jobs.popleft()
            if job.submitted:
                self._inflight_writes -= 1
            error = job.error
            if error is None and self._tainted:
                error = DiskFullError("an earlier write failed: the disk is full")
            if error is None:
                self._on_durable(core, job)
            elif isinstance(error, DiskFullError):
                self._tainted = True
                self._on_disk_full(job, error)
                failed = True
            else:
                raise error  # a failed fsync: fail-stop
        if not self._jobs:
            self._tainted = False
        if self._inflight_writes == 0:
            if self._lock_held:
                self._lock_held = False
                self._storage_lock.release()
            if self._worker is not None:
                self._worker.resume()  # after a full disk: every job it had is back
        return failed

    def _on_durable(self, core: RaftCore, job: PersistJob) -> None:
        rd = job.rd
        if rd.needs_persist():
            self._disk_full = False
        if rd.snapshot is not None:
            self._gate.snapshot_busy = False
            self.state_machine.restore(rd.snapshot[1])
            self._applied = rd.snapshot[0].last_index
            self._resolve_overtaken(rd.snapshot[0].last_index)
        core.advance(rd)
        # Everything this Ready handed out is durable now (or was already).
        self._gate.durable_version = max(self._gate.durable_version, job.hs_version)
        self._gate.release(core)
        for w in job.waiters:
            if not w.done():
                w.set_result(None)
        if not job.early:
            self._send_all(rd)
        self._after_persist(rd)

    def _on_disk_full(self, job: PersistJob, exc: DiskFullError) -> None:
        """Nothing of the job may be vouched for: fail the RPCs waiting on it (their senders
        retry later), keep the writes pending in the core, refuse new proposals until a write
        succeeds. Reads and elections go on as long as the small hard-state file can be written.
        """
        rd = job.rd
        if not self._disk_full:
            log.error(
                "disk full on %s: refusing writes until space is freed (%s)", self.node_id, exc
            )
        self._disk_full = True
        core = self.core
        if rd.snapshot is not None:
            self._gate.snapshot_busy = False
        if rd.hard_state is not None:
            core.mark_hard_state_unpersisted()
        if rd.entries:
            core.log.mark_unstable(rd.entries[0].index)
        for w in job.waiters:
            if not w.done():
                w.set_exception(exc)
        self._gate.fail_all(exc)
        if not job.early:
            # Requests that needed the write (votes, a new term) are not sent: the core
            # learns they failed, so it does not wait for answers to them.
            for out in rd.messages:
                core.step_failure(out)
        if rd.hard_state is None and rd.snapshot is None:
            # The rest of this Ready (applies, reads) does not depend on the failed write.
            self._after_persist(rd)
        # Retry the write after a pause, not in a busy loop.
        asyncio.get_running_loop().call_later(self.config.heartbeat_interval, self._wake.set)

    def _settle_flush_waiters(self, core: RaftCore) -> None:
        """Waiters registered while the core had nothing new to write need only what is on
        its way already: the last job covers them (or nothing is pending at all)."""
        if not self._flush_waiters or self._disk_full or core.has_unpersisted():
            return
        if self._jobs:
            self._jobs[-1].waiters.extend(self._flush_waiters)
        else:
            for w in self._flush_waiters:
                if not w.done():
                    w.set_result(None)
        self._flush_waiters = []
