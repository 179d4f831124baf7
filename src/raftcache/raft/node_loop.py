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

from raftcache.protocol.messages import (
    EntryKind,
    LogEntry,
)
from raftcache.raft.core import RaftCore
from raftcache.raft.errors import (
    IndeterminateError,
    NodeStoppedError,
    NotLeaderError,
    ProposalDroppedError,
)
from raftcache.raft.node_base import NodeBase
from raftcache.raft.node_persist import PersistMixin
from raftcache.raft.ready import Ready

log = logging.getLogger("raftcache.raft")


class ReadyLoopMixin(PersistMixin, NodeBase):
    async def _ticker(self) -> None:
        """Tick the core each time the node's clock has advanced by ``tick_interval``.

        Two ticks are never less than ``tick_interval`` apart on the node's clock — not even
        after a stall (no catch-up): a follower's promise not to vote for E ticks must span
        (E - 1) intervals of its clock (``raft/lease.py``). Late ticks only slow the timers.
        The sleep is on the loop's clock, the test on the node's (they differ when a test
        gives the node a drifting clock), so a short sleep may be followed by another."""
        interval = self.config.tick_interval
        loop = asyncio.get_running_loop()
        core = self.core
        next_at = self._clock() + interval
        while self._core is core:  # one ticker per run: never tick another run's core
            now = self._clock()
            if now < next_at:
                await asyncio.sleep(max(next_at - now, interval / 64))
                continue
            next_at = now + interval
            core.tick()
            self._deadlines.sweep(loop.time())
            self._wake.set()

    async def _ready_loop(self) -> None:
        core = self.core
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._finish_jobs(core):
                    self._end_cycle(core)
                    continue  # a write failed: retry on a later wake-up
                if self._pending_install is not None and not self._jobs:
                    await self._install_received(core, *self._pending_install)
                while core.has_ready() and not self._hold_hand_off():
                    if await self._hand_off(core):
                        break  # a write failed: retry on a later wake-up
                self._end_cycle(core)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # fail-stop: a storage failure or a broken invariant
            log.critical("raft node %s failed: %r; stopping", self.node_id, exc)
            self._failed = exc
            self._failed_event.set()
            self._running = False
            self._fail_all(NodeStoppedError(f"node failed: {exc!r}"))
            raise

    def _end_cycle(self, core: RaftCore) -> None:
        self._settle_flush_waiters(core)
        self._changed.set()
        self._changed = asyncio.Event()

    def _send_all(self, rd: Ready) -> None:
        for out in rd.messages:
            self._send(out)

    def _after_persist(self, rd: Ready) -> None:
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
                self._applied_bytes += len(e.command)
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
