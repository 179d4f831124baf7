"""One simulated member of a lockstep cluster: a pure core, its durable store, its state machine.

Rule: ``Node.flush`` is the driver's ready loop (persist → advance → send → apply, as
``RaftNode`` does it), ``Node.restart`` is a crash (only ``DurableStore`` survives), and the
state machine is the list of applied entries itself, whose snapshot is that whole list, so the
applied sequences of any two nodes stay comparable index by index.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import orjson

from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.core import RaftCore
from raftcache.raft.messages import EntryKind, LogEntry
from raftcache.raft.ready import Outbound, Ready
from raftcache.storage.base import RecoveredState, SnapshotMeta

#: Ready cycles a node may need in a row before we call it a spin (the driver would loop forever).
MAX_READY_CYCLES = 50

#: One applied entry: (index, term, kind, command). Internal entries are kept too, so that the
#: applied sequences of two nodes are comparable index by index.
Applied = tuple[int, int, int, bytes]


def encode_applied(applied: Sequence[Applied]) -> bytes:
    """The state machine's snapshot: its whole applied history, so prefixes stay comparable."""
    return orjson.dumps([[i, t, k, c.hex()] for i, t, k, c in applied])


def decode_applied(data: bytes) -> list[Applied]:
    return [(i, t, k, bytes.fromhex(c)) for i, t, k, c in orjson.loads(data)]


class DurableStore:
    """What survives a crash: hard state, the log after the snapshot, and the snapshot."""

    def __init__(self) -> None:
        self.term = 0
        self.voted_for: str | None = None
        self.snapshot: tuple[SnapshotMeta, bytes] | None = None
        self.entries: list[LogEntry] = []

    @property
    def snapshot_index(self) -> int:
        return self.snapshot[0].last_index if self.snapshot else 0

    def last_index(self) -> int:
        return self.snapshot_index + len(self.entries)

    def term_at(self, index: int) -> int | None:
        if self.snapshot is not None and index == self.snapshot[0].last_index:
            return self.snapshot[0].last_term
        pos = index - self.snapshot_index - 1
        return self.entries[pos].term if 0 <= pos < len(self.entries) else None

    def persist(self, rd: Ready) -> None:
        """Apply a Ready in the driver's order: snapshot, hard state, entries."""
        if rd.snapshot is not None:
            self.save_snapshot(*rd.snapshot)
        if rd.hard_state is not None:
            self.term, self.voted_for = rd.hard_state
        if rd.entries:
            self.append(rd.entries)

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Overwrite semantics: the stored suffix from the first new index is replaced."""
        first = entries[0].index
        assert self.snapshot_index < first <= self.last_index() + 1, (
            f"append at {first} does not fit a log of ({self.snapshot_index}, {self.last_index()}]"
        )
        for offset, e in enumerate(entries):
            assert e.index == first + offset, "persisted batch is not contiguous"
        del self.entries[first - self.snapshot_index - 1 :]
        self.entries.extend(LogEntry(e.term, e.index, bytes(e.command), e.kind) for e in entries)

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        assert meta.last_index >= self.snapshot_index, "a snapshot older than the stored one"
        if self.term_at(meta.last_index) == meta.last_term:
            del self.entries[: meta.last_index - self.snapshot_index]
        else:
            self.entries = []
        self.snapshot = (meta, bytes(data))

    def recovered(self) -> RecoveredState:
        return RecoveredState(
            self.term,
            self.voted_for,
            self.snapshot[0] if self.snapshot else None,
            [LogEntry(e.term, e.index, bytes(e.command), e.kind) for e in self.entries],
        )


class Node:
    """One member: a core, its durable store and its state machine (the applied sequence)."""

    def __init__(self, node_id: str, cfg: RaftConfig, bootstrap: Configuration, seed: int) -> None:
        self.id = node_id
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.rng = random.Random(f"{seed}/{node_id}")
        self.store = DurableStore()
        self.incarnation = 0
        self.applied: list[Applied] = []
        self.reads: list[tuple[int, int]] = []
        self.dropped_reads: list[int] = []
        self.core = self._boot()

    def _boot(self) -> RaftCore:
        snap = self.store.snapshot
        recovered = self.store.recovered()
        return RaftCore(
            self.id, self.cfg, recovered, self.bootstrap, self.rng, snap[1] if snap else None
        )

    def restart(self) -> None:
        """Crash and restart: only the durable store survives; the state machine restarts
        from the snapshot and will replay the log tail once it learns the commit index."""
        self.incarnation += 1
        self.core = self._boot()
        snap = self.store.snapshot
        self.applied = decode_applied(snap[1]) if snap else []
        self.reads, self.dropped_reads = [], []

    def flush(self) -> list[Outbound]:
        """Run the driver's ready loop until quiet; returns the messages to send."""
        out: list[Outbound] = []
        for _ in range(MAX_READY_CYCLES):
            if not self.core.has_ready():
                return out
            rd = self.core.ready()
            self.store.persist(rd)
            if rd.snapshot is not None:
                self.applied = decode_applied(rd.snapshot[1])
            self.core.advance(rd)
            out.extend(rd.messages)
            self._apply(rd.committed)
            self.reads.extend(rd.reads)
            self.dropped_reads.extend(rd.dropped_reads)
        raise AssertionError(f"{self.id}: has_ready() stays true: the driver would spin")

    def _apply(self, entries: Iterable[LogEntry]) -> None:
        for e in entries:
            expected = self.applied[-1][0] + 1 if self.applied else 1
            assert e.index == expected, f"{self.id} applies {e.index}, expected {expected}"
            self.applied.append((e.index, e.term, int(e.kind), bytes(e.command)))

    def take_snapshot(self) -> int:
        """Snapshot the applied state and compact, as ``RaftNode.take_snapshot`` does."""
        core = self.core
        index = core.applied
        if index <= core.log.snapshot_index:
            return core.log.snapshot_index
        assert len(self.applied) == index, "state machine and core disagree on applied"
        term = core.log.term_at(index)
        assert term is not None
        meta = SnapshotMeta(index, term, core.config_for_snapshot(index))
        data = encode_applied(self.applied)
        self.store.save_snapshot(meta, data)
        core.snapshot_taken(meta, data)
        return index

    def commands(self) -> list[bytes]:
        """The commands the state machine applied, in order (internal entries left out)."""
        return [c for _, _, k, c in self.applied if k == EntryKind.COMMAND]
