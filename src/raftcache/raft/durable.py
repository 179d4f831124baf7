"""AnswerGate: an AppendEntries answer leaves as soon as what it vouches for is durable.

Rule (persist before you answer, made precise): a successful answer claims the log up to its
``match_index``, in the answering term, is on stable storage; any answer reports the term, so
the hard state current when it was made must be durable too. Nothing else has to be: a
heartbeat acknowledging entries written long ago does not wait for the fsync of someone
else's new entries (waiting behind the driver's whole ``_flush`` would put every follower's
fsync on the leader's heartbeat and commit-update round trips).

An answer is *invalidated* instead when the node's term moves on before it is durable: its
entries may then be truncated by a newer leader, so it must not leave as a success. The driver
answers it with a rejection in the new term instead (always safe: it claims nothing).

While a received snapshot is adopted but not yet on disk the log's ``stable_index`` already
covers it, so no answer is released then (the driver falls back to its full flush).

A gate serves exactly one core (``bind``): hard-state versions count from 0 in every core, so a
gate that outlived a restart would take the new core's first term change for durable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from raftcache.raft.core import RaftCore


@dataclass(slots=True)
class _Waiter:
    index: int
    version: int
    term: int
    future: asyncio.Future[bool]


class AnswerGate:
    """Holds answers until their claims are durable; the ready loop calls ``release``."""

    def __init__(self) -> None:
        #: The core's ``hard_state_version`` of the last Ready that is on stable storage.
        self.durable_version = 0
        self._core: RaftCore | None = None
        #: The driver is writing a Ready that carries a snapshot (no answer leaves meanwhile).
        self.snapshot_busy = False
        self._waiters: list[_Waiter] = []

    def bind(self, core: RaftCore) -> None:
        """Serve ``core`` from now on; a gate is never moved to another core."""
        if self._core is not None or self.durable_version != 0 or self._waiters:
            raise RuntimeError("an answer gate serves one core: make a new one per run")
        self._core = core

    def _state(self, core: RaftCore, index: int, version: int, term: int) -> bool | None:
        """True: answerable; False: invalidated (the term moved on); None: not yet."""
        # Explicit checks, not asserts: they must hold under ``python -O`` too.
        if core is not self._core:
            raise RuntimeError("answer gate asked about a core it does not serve")
        if self.durable_version > core.hard_state_version:
            raise RuntimeError("answer gate: durable hard state ahead of the core's")
        if core.term != term:
            return False
        if self.snapshot_busy or core.snapshot_pending():
            return None
        if self.durable_version >= version and core.log.stable_index >= index:
            return True
        return None

    def check_or_wait(self, core: RaftCore, index: int, term: int) -> bool | asyncio.Future[bool]:
        """At once (True/False) when decided, else a future the ready loop resolves."""
        version = core.hard_state_version
        state = self._state(core, index, version, term)
        if state is not None:
            return state
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(index, version, term, future))
        return future

    def release(self, core: RaftCore) -> None:
        """Resolve every waiter whose claims are durable now (or that was invalidated)."""
        if not self._waiters:
            return
        keep = []
        for w in self._waiters:
            if w.future.done():
                continue
            state = self._state(core, w.index, w.version, w.term)
            if state is None:
                keep.append(w)
            else:
                w.future.set_result(state)
        self._waiters = keep

    def fail_all(self, exc: BaseException) -> None:
        """Nothing may be vouched for (disk full, node stopped): fail every waiting answer."""
        for w in self._waiters:
            if not w.future.done():
                w.future.set_exception(exc)
        self._waiters = []
