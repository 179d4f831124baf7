"""RaftLog: the in-memory view of a node's log, after its latest snapshot.

Rule: the log is ``snapshot (index, term)`` followed by contiguous ``entries``. Entries at
index > ``stable_index`` have not been persisted yet; the driver persists them (``unstable()``)
and reports back with ``stable_to``, passing the ``mark`` the hand-off had. Nothing here
touches disk.

Why a mark and not only (index, term): writes are handed out while earlier ones are still
being written. If a follower hands out entries 6..10 of term 5 (write A), then a leader of term
6 overwrites from 8 (write B), then a leader of term 7 — whose log holds 8..10 of term 5 —
overwrites from 8 again (write C), then when A completes the log holds (10, 5) again, yet the
disk will hold B's entry 8 until C lands. Trusting (10, 5) would let the node acknowledge
entries its disk does not hold (the ABA that etcd-io/raft closed with a leader-term mark).
So every suffix cut is remembered with the hand-off count at which it happened, and a write
vouches only for indexes below every cut made after it was handed out.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftcache.protocol.messages import LogEntry


class RaftLog:
    def __init__(self, snapshot_index: int, snapshot_term: int, entries: Sequence[LogEntry]):
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.entries: list[LogEntry] = list(entries)
        for offset, entry in enumerate(self.entries):
            assert entry.index == snapshot_index + 1 + offset, "recovered log is not contiguous"
        #: Highest index known to be on stable storage.
        self.stable_index = self.last_index()
        #: Lowest index changed since the last ``unstable()`` hand-off (None if none).
        self._dirty_from: int | None = None
        #: Hand-offs so far: the mark of the latest one (``stable_to`` takes it back).
        self.mark = 0
        #: (mark current when it happened, first index removed) of every suffix cut that a
        #: write still in flight may not know about; pruned as writes complete, in order.
        self._cuts: list[tuple[int, int]] = []

    # -- queries -------------------------------------------------------------------------
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snapshot_term

    def first_index(self) -> int:
        """Index of the first entry held in memory (snapshot_index + 1)."""
        return self.snapshot_index + 1

    def term_at(self, index: int) -> int | None:
        """Term of the entry at ``index``; 0 for index 0; None when compacted or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if index < self.snapshot_index or index > self.last_index():
            return 0 if index == 0 else None
        return self.entries[index - self.snapshot_index - 1].term

    def entry(self, index: int) -> LogEntry:
        return self.entries[index - self.snapshot_index - 1]

    def slice(self, lo: int, hi: int, max_count: int, max_bytes: int) -> list[LogEntry]:
        """Entries in [lo, hi], at most ``max_count`` and about ``max_bytes`` (at least one)."""
        start = lo - self.snapshot_index - 1
        stop = min(hi - self.snapshot_index, start + max_count)
        out = self.entries[start:stop]
        if max_bytes > 0 and len(out) > 1:
            total = 0
            for i, e in enumerate(out):
                total += len(e.command) + 24
                if total > max_bytes and i > 0:
                    return out[:i]
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def first_index_of_term(self, index: int) -> int:
        """The first index at or before ``index`` holding the same term (conflict hint)."""
        term = self.term_at(index)
        while index - 1 > self.snapshot_index and self.term_at(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int:
        """The last index holding ``term``, or 0 if the log has none."""
        for e in reversed(self.entries):
            if e.term == term:
                return e.index
            if e.term < term:
                break
        if self.snapshot_term == term:
            return self.snapshot_index
        return 0

    # -- mutation ------------------------------------------------------------------------
    def append(self, entries: Sequence[LogEntry]) -> None:
        """Append entries that directly follow the last one (a leader's own proposals)."""
        if not entries:
            return
        assert entries[0].index == self.last_index() + 1, "append must be contiguous"
        self._mark_dirty(entries[0].index)
        self.entries.extend(entries)

    def truncate_and_append(self, entries: Sequence[LogEntry]) -> None:
        """Follower path: drop our suffix from the first entry's index, then append."""
        first = entries[0].index
        assert self.snapshot_index < first <= self.last_index() + 1
        if first <= self.last_index():
            self._cuts.append((self.mark, first))
        del self.entries[first - self.snapshot_index - 1 :]
        self.stable_index = min(self.stable_index, first - 1)
        self._mark_dirty(first)
        self.entries.extend(entries)

    def _mark_dirty(self, index: int) -> None:
        if self._dirty_from is None or index < self._dirty_from:
            self._dirty_from = index

    def unstable(self) -> list[LogEntry]:
        """Entries to persist (overwrite semantics from the first one) and clear the mark."""
        if self._dirty_from is None:
            return []
        start = self._dirty_from
        self._dirty_from = None
        self.mark += 1
        if start <= self.snapshot_index:
            start = self.snapshot_index + 1
        return self.entries[start - self.snapshot_index - 1 :]

    def mark_unstable(self, index: int) -> None:
        """A write handed off by ``unstable()`` failed (e.g. disk full): hand it out again."""
        self._mark_dirty(max(index, self.snapshot_index + 1))

    def has_unstable(self) -> bool:
        return self._dirty_from is not None

    def stable_to(self, index: int, term: int, mark: int) -> None:
        """The write handed out with ``mark`` (entries up to ``index`` of ``term``) is durable:
        the log is stable up to ``index``, less whatever was cut since that hand-off."""
        limit = index
        for cut_mark, first in self._cuts:
            if cut_mark >= mark:
                limit = min(limit, first - 1)
        # Completions arrive in hand-off order: cuts older than this write concern no later one.
        self._cuts = [c for c in self._cuts if c[0] >= mark]
        if limit == index and self.term_at(index) != term:
            return  # not ours any more (a cut this write was told about)
        if limit > self.stable_index and limit <= self.last_index():
            self.stable_index = limit

    def compact(self, index: int, term: int) -> None:
        """Forget entries ≤ ``index`` (covered by a snapshot)."""
        if index <= self.snapshot_index:
            return
        if self.term_at(index) == term:
            del self.entries[: index - self.snapshot_index]
            self.stable_index = max(self.stable_index, index)
        else:
            if self.entries:
                self._cuts.append((self.mark, self.snapshot_index + 1))
            self.entries = []
            self._dirty_from = None
            # The whole log is gone: nothing beyond the snapshot is stable any more (the old,
            # larger value would count new entries appended there as persisted before they are).
            self.stable_index = index
        self.snapshot_index, self.snapshot_term = index, term
