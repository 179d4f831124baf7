"""Exactly-once client sessions (Raft dissertation §6.3), as part of the replicated state.

Rule: everything here is driven by applied commands only (their ``now`` stamps and log order),
so every replica holds the same table and a snapshot carries it.

A write may carry ``Session(client_id, seq)``. Per client the table keeps the results of the
``window`` highest seqs applied (default 16) and the ``now`` of its last command:
- ``seq`` among the remembered ones → the remembered result is returned; nothing is applied.
- window full and ``seq`` below all remembered ones → a STALE_SEQUENCE error: it may have been
  applied and forgotten, so applying it could apply it twice.
- otherwise → applied, and its result remembered (dropping the lowest if the window is full).

Invariant: a seq that was applied and is no longer remembered is lower than every remembered
one (only the lowest is ever dropped, and once the window is full, only seqs above its lowest
are admitted). Hence "not remembered and not below the lowest" means "never applied".

What a client must do: use a fresh ``client_id`` per process (seqs restart at a new id), use
increasing seqs, and keep at most ``window`` writes outstanding; then every retry is answered
from the table (a pipelining client whose writes reach the log out of order is also safe).

Expiry: a session idle for more than ``ttl_s`` (judged by the ``now`` of the command being
applied, so identically on every replica) is forgotten; its client's next write starts a new
session. The table also holds at most ``max_sessions``; creating one more first sweeps idle
sessions, then forgets the least recently active one. Sweeps walk sessions in order of last
activity and stop at the first live one (with leaders' clocks not perfectly in step, an idle
session behind a live one waits for a later sweep: still deterministic, just later). A client
retrying after its session was forgotten may be applied twice, so ``ttl_s`` must exceed any
client's retry horizon by far.
"""

from __future__ import annotations

from typing import Any

from raftcache.cache.results import (
    CommandError,
    ErrorCode,
    Result,
    result_from_wire,
    result_to_wire,
)

DEFAULT_TTL_S = 600.0
DEFAULT_MAX_SESSIONS = 10_000
DEFAULT_WINDOW = 16


class _ClientSession:
    """One client's remembered results (seq → result) and the ``now`` of its last command."""

    __slots__ = ("last_active", "results")

    def __init__(self, last_active: float) -> None:
        self.last_active = last_active
        self.results: dict[int, Result] = {}


class SessionTable:
    """The replicated table of client sessions (see the module docstring for the rules)."""

    __slots__ = ("_sessions", "dropped", "max_sessions", "ttl_s", "window")

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if not ttl_s > 0 or max_sessions < 1 or window < 1:
            raise ValueError("session ttl_s, max_sessions and window must be positive")
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.window = window
        self.dropped = 0  # sessions forgotten, idle or for room (replicated)
        # Insertion order = order of last activity (a session is re-inserted when active).
        self._sessions: dict[str, _ClientSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def check(self, client_id: str, seq: int, now: float) -> Result | None:
        """The answer to a write of ``(client_id, seq)`` at ``now`` without applying it (a
        remembered result or a stale-sequence error), or None when it must be applied."""
        session = self._sessions.pop(client_id, None)
        if session is None:
            return None
        if now - session.last_active > self.ttl_s:
            self.dropped += 1
            return None
        session.last_active = now
        self._sessions[client_id] = session  # most recently active
        results = session.results
        cached = results.get(seq)
        if cached is not None:
            return cached
        lowest = min(results) if len(results) >= self.window else -1
        if seq < lowest:
            return CommandError(
                ErrorCode.STALE_SEQUENCE,
                f"seq {seq} of client {client_id} is below the session window (lowest {lowest})",
            )
        return None

    def record(self, client_id: str, seq: int, now: float, result: Result) -> None:
        """Remember ``result`` as the outcome of ``(client_id, seq)`` applied at ``now``."""
        session = self._sessions.get(client_id)
        if session is None:
            self.sweep(now)
            while len(self._sessions) >= self.max_sessions:
                del self._sessions[next(iter(self._sessions))]
                self.dropped += 1
            session = self._sessions[client_id] = _ClientSession(now)
        session.last_active = now
        results = session.results
        results[seq] = result
        if len(results) > self.window:
            del results[min(results)]

    def sweep(self, now: float) -> int:
        """Forget sessions idle for more than ``ttl_s`` at ``now``, oldest activity first,
        stopping at the first live one. Returns how many were forgotten."""
        sessions = self._sessions
        forgotten = 0
        while sessions:
            client_id = next(iter(sessions))
            if now - sessions[client_id].last_active <= self.ttl_s:
                break
            del sessions[client_id]
            forgotten += 1
        self.dropped += forgotten
        return forgotten

    def to_wire(self) -> list[Any]:
        """A msgpack-able copy, in activity order: ``[[client_id, last_active, [[seq,
        result]...]]...]``. Cheap enough to take on the event loop (bounded by
        ``max_sessions * window``), and independent of later changes."""
        return [
            [client_id, s.last_active, [[seq, result_to_wire(r)] for seq, r in s.results.items()]]
            for client_id, s in self._sessions.items()
        ]

    def load_wire(self, wire: list[Any], dropped: int) -> None:
        """Replace the table with one produced by ``to_wire``."""
        sessions: dict[str, _ClientSession] = {}
        for client_id, last_active, results in wire:
            session = _ClientSession(float(last_active))
            for seq, result in results:
                session.results[int(seq)] = result_from_wire(result)
            sessions[str(client_id)] = session
        self._sessions = sessions
        self.dropped = dropped
