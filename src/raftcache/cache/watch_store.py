"""The recording entry store: an ``EntryStore`` that notes every change for the watch history.

Rule: the store is where every change of the cache happens, so recording there catches all of
them whatever command made them — writes, deletes, expiry, and the evictions a write causes —
and the machine needs only one hook: ``commit(index)`` after each entry (and after a snapshot
is restored). Recording must not change what the store does: every override calls the base
method and only looks at the result.

How a removal is classified (every removal goes through ``_unlink``): an entry already expired
at the operation's ``now`` is an ``expire``; otherwise it is a ``delete`` inside ``remove`` and
an ``evict`` inside ``settle`` (``expire`` only removes expired entries).

A wholesale replacement (``load``: a snapshot, a replicated restore) cannot be described change
by change: the entry is committed as a history reset. So is an entry with more changes than the
history's ``max_changes`` (a FLUSH of a large keyspace; ``flush`` removes key by key through
``remove``, so a smaller one is a series of ``delete`` changes), and an entry after which the
store holds a number of keys the recorded changes do not explain — a mutation this class does
not know of (a future command) — so a watcher never misses a change silently: it re-reads.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftcache.cache.entries import record_expires_at
from raftcache.cache.store import EntryStore
from raftcache.cache.watch import DELETE, EVICT, EXPIRE, SET, Change, WatchHistory


class RecordingStore(EntryStore):
    """An ``EntryStore`` feeding ``history`` (see the module docstring)."""

    __slots__ = ("_expected", "_history", "_now", "_pending", "_removing", "_replaced")

    def __init__(
        self,
        history: WatchHistory,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        super().__init__(max_keys=max_keys, max_bytes=max_bytes)
        self._history = history
        self._pending: list[Change] = []
        self._now = 0.0
        self._removing = False
        self._replaced = False
        self._expected = 0

    @property
    def history(self) -> WatchHistory:
        return self._history

    def commit(self, index: int) -> None:
        """Hand the changes of entry ``index`` (or of a restore at ``index``) to the history."""
        pending, self._pending = self._pending, []
        # An entry with more changes than the history may hold (a FLUSH of a large keyspace)
        # is a reset too: cheaper for everyone than a stream of that size, and bounded.
        too_many = len(pending) > self._history.max_changes
        if self._replaced or too_many or self._expected != len(self._records):
            self._replaced = False
            self._expected = len(self._records)
            self._history.reset(index)
        else:
            self._history.record(index, pending)

    # --- overrides: call the base, record what happened ----------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        version: int,
        expires_at: float,
        now: float,
        is_hash: bool = False,
    ) -> None:
        records = self._records
        if key not in records:
            self._expected += 1
        super().put(key, value, version, expires_at, now, is_hash)
        self._pending.append((SET, key, records[key]))

    def remove(self, key: str, now: float) -> bool:
        self._now, self._removing = now, True
        try:
            return super().remove(key, now)
        finally:
            self._removing = False

    def expire(self, keys: Iterable[str], now: float) -> int:
        self._now = now
        return super().expire(keys, now)

    def settle(self, now: float) -> None:
        self._now = now
        super().settle(now)

    def load(
        self, records: dict[str, bytes], bytes_peak: int, evictions: int, expirations: int
    ) -> None:
        super().load(records, bytes_peak, evictions, expirations)
        self._pending = []
        self._expected = len(records)
        self._replaced = True

    def _unlink(self, key: str, record: bytes) -> None:
        super()._unlink(key, record)
        self._expected -= 1
        if record_expires_at(record) <= self._now:
            kind = EXPIRE
        else:
            kind = DELETE if self._removing else EVICT
        self._pending.append((kind, key, None))
