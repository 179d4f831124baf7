"""The watch history: a bounded ring of the recent changes of the cache, by log index.

Rule: the history is fed by the state machine as it applies entries (``RecordingStore`` records
each change, the machine's one hook hands them over per entry), so it is as deterministic as the
machine: every replica — followers included — holds the same changes for the same indices and
can serve watches. It is never replicated, never in snapshots, and reads no clock.

Versions: a change's version is the log index of the entry that made it (the cache's own
versions are log indices too). One entry may make several changes (a batch; an EXPIRE; the
evictions a write causes) and they all share its version. "Watch from version N" means "every
change with version > N", in log order — so passing the last version seen resumes with no gap
and no duplicate, *provided the changes of one version are delivered together* (the server
sends one event per entry, never part of one).

What is kept: ``(index, changes)`` for each entry that changed something, oldest first, bounded
by ``max_changes`` changes and ``max_bytes`` bytes (key + record + a fixed overhead per change;
the newest entry is always kept, however large). ``floor`` is the oldest version one can watch
from: every change with a version > ``floor`` is still here. Dropping the oldest entry raises
``floor`` to its index; a wholesale replacement of the state (a snapshot installed, a replicated
restore of a backup, or a change the recording store could not follow) restarts the history at
that index (``reset``): it cannot be described change by change, so watchers from before it
must re-read (``HistoryCompactedError``).

Change kinds: ``set`` (a write: SET, INCR, a batch's set; carries the new record), ``delete``
(a live key deleted), ``expire`` (an expired entry removed: by EXPIRE, by eviction's first pass,
or deleted after its expiry), ``evict`` (a live entry evicted by the LRU bounds).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

SET: Final = "set"
DELETE: Final = "delete"
EXPIRE: Final = "expire"
EVICT: Final = "evict"
KINDS: Final = (SET, DELETE, EXPIRE, EVICT)

#: ``(kind, key, record)``: ``record`` is the store's immutable record (16-byte header + value,
#: ``raftcache.cache.entries``) for a ``set``, None otherwise. A plain tuple: one is made per
#: change on the apply path.
Change: TypeAlias = tuple[str, str, bytes | None]

DEFAULT_MAX_CHANGES: Final = 100_000
DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: Bytes charged per change beyond its key and record: the tuple, list slot and key object.
CHANGE_OVERHEAD: Final = 96
#: Compact the backing lists once this many dropped slots sit at their head.
_COMPACT_AT: Final = 1024


class HistoryCompactedError(Exception):
    """The changes after ``after`` are no longer all here.

    Attributes:
        after: the version asked for.
        floor: the oldest version one can watch from now.
        current: the last version applied (what a re-read reflects at least).
    """

    def __init__(self, after: int, floor: int, current: int) -> None:
        super().__init__(
            f"changes after version {after} are gone (history starts after version {floor}); "
            f"re-read and watch from version {current}"
        )
        self.after = after
        self.floor = floor
        self.current = current


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """What ``WatchHistory.read`` found.

    Attributes:
        entries: ``(version, changes)`` in log order, only changes under the prefix, only
            entries with at least one such change.
        cursor: the version read up to: every change with a version <= cursor was scanned
            (pass it as ``after`` next time). It may pass entries that held no matching change.
        epoch: the history's epoch when read (it changes on every ``reset``).
    """

    entries: list[tuple[int, tuple[Change, ...]]]
    cursor: int
    epoch: int


def change_size(change: Change) -> int:
    """The bytes a change is charged in the history."""
    record = change[2]
    return len(change[1]) + (0 if record is None else len(record)) + CHANGE_OVERHEAD


def matches(change: Change, prefix: str) -> bool:
    """Whether ``change`` concerns a key under ``prefix``."""
    return change[1].startswith(prefix)


class WatchHistory:
    """The ring of recent changes (see the module docstring).

    Args:
        max_changes: at most this many changes are kept (>= 1).
        max_bytes: at most this many bytes of changes are kept (>= 1), as ``change_size``.
        start: the version the history starts after (the state it begins from).
    """

    def __init__(
        self,
        max_changes: int = DEFAULT_MAX_CHANGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        start: int = 0,
    ) -> None:
        if max_changes < 1 or max_bytes < 1:
            raise ValueError("max_changes and max_bytes must be at least 1")
        self.max_changes = max_changes
        self.max_bytes = max_bytes
        self._indices: list[int] = []
        self._entries: list[tuple[Change, ...]] = []
        self._sizes: list[int] = []
        self._head = 0  # slots before it were dropped (compacted lazily)
        self.changes = 0
        self.bytes = 0
        self.floor = start
        self.last_index = start
        self.epoch = 0
        self.resets = 0
        self._listeners: list[Callable[[], None]] = []

    def __len__(self) -> int:
        """Entries held."""
        return len(self._indices) - self._head

    # --- feeding (from the state machine) -----------------------------------------------------

    def record(self, index: int, changes: list[Change]) -> None:
        """Entry ``index`` was applied and made ``changes`` (possibly none). An index that does
        not follow the last one (a state machine fed out of order, which Raft never does) resets
        the history instead of raising: this runs inside the apply of an entry, where an
        exception would stop the node."""
        if index <= self.last_index:
            self.reset(index)
            return
        self.last_index = index
        if changes:
            # change_size, inlined: this runs for every applied entry.
            size = CHANGE_OVERHEAD * len(changes)
            for _, key, record in changes:
                size += len(key) if record is None else len(key) + len(record)
            self._indices.append(index)
            self._entries.append(tuple(changes))
            self._sizes.append(size)
            self.changes += len(changes)
            self.bytes += size
            if self.changes > self.max_changes or self.bytes > self.max_bytes:
                self._trim()
        if self._listeners:
            self._notify()

    def reset(self, index: int) -> None:
        """The whole state was replaced as of ``index``: forget everything before it."""
        self._indices, self._entries, self._sizes = [], [], []
        self._head = self.changes = self.bytes = 0
        self.floor = self.last_index = index
        self.epoch += 1
        self.resets += 1
        self._notify()

    def _trim(self) -> None:
        held = len(self._indices)
        while held - self._head > 1 and (
            self.changes > self.max_changes or self.bytes > self.max_bytes
        ):
            head = self._head
            self.changes -= len(self._entries[head])
            self.bytes -= self._sizes[head]
            self.floor = self._indices[head]
            self._entries[head] = ()  # let the records go now, not at the next compaction
            self._head = head + 1
        if self._head >= _COMPACT_AT and self._head * 2 >= len(self._indices):
            head = self._head
            del self._indices[:head], self._entries[:head], self._sizes[:head]
            self._head = 0

    # --- reading (watchers) -------------------------------------------------------------------

    def read(self, after: int, prefix: str = "", max_entries: int = 256) -> HistoryRead:
        """Entries with a version > ``after`` holding changes under ``prefix``, oldest first,
        scanning at most ``max_entries`` stored entries. Raises ``HistoryCompactedError`` if some
        change after ``after`` is gone."""
        if after < self.floor:
            raise HistoryCompactedError(after, self.floor, self.last_index)
        if after >= self.last_index:
            return HistoryRead([], after, self.epoch)
        indices, entries = self._indices, self._entries
        start = bisect_right(indices, after, lo=self._head)
        stop = min(start + max(1, max_entries), len(indices))
        found: list[tuple[int, tuple[Change, ...]]] = []
        for position in range(start, stop):
            changes = entries[position]
            if prefix:
                changes = tuple(c for c in changes if c[1].startswith(prefix))
            if changes:
                found.append((indices[position], changes))
        # Scanned to the end: every entry up to last_index was seen (those without changes are
        # not stored). Stopped early: up to the last entry scanned.
        cursor = self.last_index if stop == len(indices) else indices[stop - 1]
        return HistoryRead(found, cursor, self.epoch)

    # --- wake-ups -----------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every recorded entry and every reset (it must be cheap and
        must not touch the history)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[], None]) -> None:
        """Stop calling ``listener`` (no error if it was not subscribed)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def stats(self) -> dict[str, int]:
        """Sizes and bounds, for ``/v1/stats``."""
        return {
            "entries": len(self),
            "changes": self.changes,
            "bytes": self.bytes,
            "max_changes": self.max_changes,
            "max_bytes": self.max_bytes,
            "oldest_version": self.floor,
            "last_version": self.last_index,
            "resets": self.resets,
        }


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
HistoryCompacted = HistoryCompactedError
