"""The ready loop: the one task that turns the core's ``Ready`` into effects, and the ticker.

Rule: for every Ready, in this order — persist (and sync) → ``core.advance`` → send the messages
that had to wait for the write → apply committed entries → resolve reads. Requests that carry
no new term, vote or snapshot may leave before the write (dissertation §10.2.1): the leader
counts itself towards a commit only after ``advance``. An answer leaves only once what it
vouches for is durable (``AnswerGate``, flush waiters). A storage failure stops the node
(fail-stop), except a full disk, which refuses writes until space is freed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from raftcache.raft.core import Role
from raftcache.raft.errors import (
    IndeterminateError,
    NodeStoppedError,
    NotLeaderError,
    ProposalDroppedError,
)
from raftcache.raft.messages import (
    EntryKind,
    LogEntry,
)
from raftcache.raft.node_base import NodeBase
from raftcache.raft.ready import Ready
from raftcache.storage.base import DiskFullError

log = logging.getLogger("raftcache.raft")


class ReadyLoopMixin(NodeBase):
    async def _ticker(self) -> None:
        interval = self.config.tick_interval
        next_at = self._clock() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - self._clock()))
            # No catch-up after a stall: a late tick only makes timers slower (the safe side).
            next_at = max(next_at + interval, self._clock())
            self.core.tick()
            self._wake.set()

    async def _ready_loop(self) -> None:
        core = self.core
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._pending_install is not None:
                    await self._install_received(core, *self._pending_install)
                while core.has_ready():
                    # Waiters registered so far are covered by this Ready; keep them reachable
                    # in self._flush_waiters until the sync succeeded (fail-stop fails them).
                    waiters = list(self._flush_waiters)
                    rd = core.ready()
                    hs_version = core.hard_state_version
                    # A leader's AppendEntries may leave while its own disk write is under way
                    # (dissertation §10.2.1): they are requests, not answers, and the leader
                    # counts itself towards a commit only once the write is done (advance).
                    # Anything sent with a new term or vote must wait for the write.
                    early = rd.hard_state is None and rd.snapshot is None
                    if early:
                        self._send_all(rd)
                    if rd.needs_persist():
                        self._persisting = True
                        self._gate.snapshot_busy = rd.snapshot is not None
                        try:
                            async with self._storage_lock:
                                if self._persist_in_thread(rd):
                                    await asyncio.to_thread(self._persist, rd)
                                else:
                                    self._persist(rd)
                            self._disk_full = False
                        except DiskFullError as exc:
                            self._on_disk_full(rd, waiters, exc)
                            break
                        finally:
                            self._persisting = False
                            self._gate.snapshot_busy = False
                    if rd.snapshot is not None:
                        self.state_machine.restore(rd.snapshot[1])
                        self._applied = rd.snapshot[0].last_index
                        self._resolve_overtaken(rd.snapshot[0].last_index)
                    core.advance(rd)
                    # Everything this Ready handed out is durable now (or was already).
                    self._gate.durable_version = max(self._gate.durable_version, hs_version)
                    self._gate.release(core)
                    del self._flush_waiters[: len(waiters)]
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
                    if not early:
                        self._send_all(rd)
                    self._after_persist(rd)
                if self._flush_waiters and not self._disk_full and not core.has_unpersisted():
                    for w in self._flush_waiters:
                        if not w.done():
                            w.set_result(None)
                    self._flush_waiters = []
                self._changed.set()
                self._changed = asyncio.Event()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # fail-stop: a storage failure or a broken invariant
            log.critical("raft node %s failed: %r; stopping", self.node_id, exc)
            self._failed = exc
            self._failed_event.set()
            self._running = False
            self._fail_all(NodeStoppedError(f"node failed: {exc!r}"))
            raise

    def _on_disk_full(
        self, rd: Ready, waiters: list[asyncio.Future[None]], exc: DiskFullError
    ) -> None:
        """Nothing of ``rd`` may be vouched for: fail the RPCs waiting on it (their senders
        retry later), keep the writes pending in the core, refuse new proposals until a write
        succeeds. Reads and elections go on as long as the small hard-state file can be written.
        """
        if not self._disk_full:
            log.error(
                "disk full on %s: refusing writes until space is freed (%s)", self.node_id, exc
            )
        self._disk_full = True
        core = self.core
        if rd.hard_state is not None:
            core.mark_hard_state_unpersisted()
        if rd.entries:
            core.log.mark_unstable(rd.entries[0].index)
        del self._flush_waiters[: len(waiters)]
        for w in waiters:
            if not w.done():
                w.set_exception(exc)
        self._gate.fail_all(exc)
        if not (rd.hard_state is None and rd.snapshot is None):
            return  # requests needing the write (votes, new term) are not sent
        # The rest of this Ready (applies, reads) does not depend on the failed write.
        self._after_persist(rd)
        # Retry the write after a pause, not in a busy loop.
        asyncio.get_running_loop().call_later(self.config.heartbeat_interval, self._wake.set)

    def _persist_in_thread(self, rd: Ready) -> bool:
        cfg = self.config
        return cfg.persist_in_thread and (
            rd.snapshot is not None or len(rd.entries) > cfg.persist_inline_max_entries
        )

    def _persist(self, rd: Ready) -> None:
        """Write and sync one Ready (maybe in a worker thread: touches only the storage)."""
        if rd.snapshot is not None:
            self.storage.save_snapshot(*rd.snapshot)
        if rd.hard_state is not None:
            self.storage.set_hard_state(*rd.hard_state)
        if rd.entries:
            self.storage.append(rd.entries)
        self.storage.sync()

    def _send_all(self, rd: Ready) -> None:
        for out in rd.messages:
            self._send(out)

    def _after_persist(self, rd: Ready) -> None:
        now = self._clock()
        if self.role is Role.LEADER:
            self._round_times.setdefault(rd.round, now)
            t = self._round_times.get(rd.confirmed_round)
            if t is not None:
                lease = self.config.election_timeout_min * (1 - self.config.lease_clock_drift)
                self._lease_until = max(self._lease_until, t + lease)
                for r in [r for r in self._round_times if r < rd.confirmed_round]:
                    del self._round_times[r]
        else:
            self._lease_until = 0.0
            self._round_times.clear()
        if rd.committed:
            self._apply(rd.committed)
        for read_id, index in rd.reads:
            fut = self._reads.pop(read_id, None)
            if fut is not None and not fut.done():
                self._reads_waiting_apply.append((index, fut))
        for read_id in rd.dropped_reads:
            fut = self._reads.pop(read_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(NotLeaderError(self.leader_id))
        self._resolve_reads()
        self._sync_addresses()
        self._maybe_auto_snapshot()

    def _sync_addresses(self) -> None:
        conf = self.configuration
        if conf is self._last_config:
            return
        self._last_config = conf
        for node_id in conf.all_ids():
            addr = conf.address_of(node_id)
            if (
                addr is not None
                and node_id != self.node_id
                and node_id not in self._address_overrides
            ):
                self.network.set_peer_address(node_id, addr)

    def _apply(self, entries: list[LogEntry]) -> None:
        apply_entry, sm = self._apply_entry, self.state_machine
        for e in entries:
            result: Any = None
            if e.kind == EntryKind.COMMAND:
                result = apply_entry(e.index, e.command) if apply_entry else sm.apply(e.command)
            self._applied = e.index
            prop = self._proposals.pop(e.index, None)
            if prop is not None and not prop.future.done():
                if prop.term == e.term:
                    prop.future.set_result(result)
                else:
                    prop.future.set_exception(
                        ProposalDroppedError("the entry was overwritten by a new leader")
                    )

    def _resolve_overtaken(self, index: int) -> None:
        """A snapshot replaced entries we proposed: their outcome is unknown to us."""
        for i in [i for i in self._proposals if i <= index]:
            prop = self._proposals.pop(i)
            if not prop.future.done():
                prop.future.set_exception(IndeterminateError("outcome unknown (snapshot)"))

    def _resolve_reads(self) -> None:
        if not self._reads_waiting_apply:
            return
        applied = self.last_applied
        keep = []
        for index, fut in self._reads_waiting_apply:
            if fut.done():
                continue
            if index <= applied:
                fut.set_result(index)
            else:
                keep.append((index, fut))
        self._reads_waiting_apply = keep
