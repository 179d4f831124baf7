"""The entry store: keys → records, with LRU order, key order, expiry order and byte accounting.

Rule: this is the one place that mutates entries, and it keeps four views consistent:
``_records`` (a plain dict whose insertion order IS the LRU order, oldest first: a write or a
touch pops the key and re-inserts it), ``_keys`` (a SortedList, for prefix scans),
``_by_expiry`` (an ``ExpiryIndex``: keys with a TTL in ``(expires_at, key)`` order, one compact
``bytes`` per key — ``raftcache.cache.expiry_index``) and ``bytes``.
It is as deterministic as its callers: it reads no clock (every ``now`` is a parameter).
Each key is ONE ``str`` object shared by ``_records`` and ``_keys`` (see ``_indexed``).

Why a plain dict and not an ``OrderedDict``: it is ~40 MB smaller at 1 M keys, and ``copy()`` is
~5x faster (the snapshot takes one on the event loop). Its weakness is finding the oldest key:
``next(iter(d))`` walks over the holes left by earlier deletions (up to the whole table, ~30 µs
per eviction at 1 M keys, measured). So ``_front`` caches a prefix of the LRU order (the next
eviction victims, refilled ``_FRONT_BATCH`` at a time): invariant — its keys, in order, are the
first keys of ``_records``. Appending keeps that true; so any removal or re-insertion of a key
from ``_records`` also removes it from ``_front``.

Eviction (``settle``), after a write that leaves ``len > max_keys`` or ``bytes > max_bytes``:
first entries expired as of the command's ``now`` in ``(expires_at, key)`` order (counted in
``expirations``), then least recently used ones (counted in ``evictions``), until within bounds.

Digest (``raftcache.cache.digest``): ``digest`` is the sum of every entry's hash, kept in step
by the two places where a record enters or leaves ``_records`` — ``put`` (subtract the old
record's hash, add the new one's) and ``_unlink`` (subtract) — and recomputed by ``load``.
``touch`` moves a record without changing it, so it costs nothing. Invariant:
``digest == full_digest(records())``, checked by ``check_invariants`` and at every snapshot.

Counting: an entry leaves the store in exactly one way — overwritten or deleted while live,
expired (removed by EXPIRE, by eviction, or overwritten/deleted after its ``expires_at``:
``expirations``), or evicted while live (``evictions``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from itertools import islice

from sortedcontainers import SortedList  # type: ignore[import-untyped, unused-ignore]

from raftcache.cache.digest import MASK, entry_hash, full_digest
from raftcache.cache.entries import (
    NEVER,
    entry_size,
    pack_record,
    record_expires_at,
    record_header,
    record_value_size,
)
from raftcache.cache.expiry_index import ExpiryIndex

_FRONT_BATCH = 256


class EntryStore:
    """Records by key with LRU order, sorted keys, expiry index and bounds (see module doc)."""

    __slots__ = (
        "_by_expiry",
        "_front",
        "_keys",
        "_records",
        "bytes",
        "bytes_peak",
        "digest",
        "evictions",
        "expirations",
        "max_bytes",
        "max_keys",
    )

    def __init__(self, *, max_keys: int | None = None, max_bytes: int | None = None) -> None:
        if (max_keys is not None and max_keys < 1) or (max_bytes is not None and max_bytes < 1):
            raise ValueError("max_keys and max_bytes must be positive (or None for no bound)")
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self._records: dict[str, bytes] = {}
        self._keys = SortedList()
        self._by_expiry = ExpiryIndex()
        self._front: dict[str, None] = {}
        self.bytes = 0
        self.bytes_peak = 0
        self.evictions = 0
        self.expirations = 0
        #: The incremental digest of the entries (module docstring).
        self.digest = 0

    def __len__(self) -> int:
        return len(self._records)

    # --- reads ------------------------------------------------------------------------------

    def live(self, key: str, now: float) -> bytes | None:
        """The record of ``key`` if present and not expired at ``now``."""
        record = self._records.get(key)
        if record is None or record_expires_at(record) <= now:
            return None
        return record

    def version(self, key: str, now: float) -> int:
        """The version of ``key`` as seen at ``now``; 0 when missing or expired."""
        record = self.live(key, now)
        return 0 if record is None else record_header(record)[0]

    def list_keys(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[str], str | None]:
        """Up to ``limit`` live keys starting with ``prefix``, after ``after``, in key order;
        plus the cursor for the next page (the last key returned) or None if none remain."""
        if after is not None and after >= prefix:
            candidates = self._keys.irange(minimum=after, inclusive=(False, True))
        else:
            candidates = self._keys.irange(minimum=prefix)
        records = self._records
        keys: list[str] = []
        for key in candidates:
            if not key.startswith(prefix):
                break
            if record_expires_at(records[key]) <= now:
                continue
            if len(keys) == limit:
                return keys, keys[-1]
            keys.append(key)
        return keys, None

    def random_key(self, draw: Callable[[int], int], now: float, tries: int = 16) -> str | None:
        """A live key drawn uniformly at random (``draw(n)``: an int in ``[0, n)``), or None
        when none is live. A rank in the sorted index is O(log n); a drawn key that expired
        is drawn again, and after ``tries`` expired draws the first live key in key order
        is returned (a store full of expired keys)."""
        keys, records = self._keys, self._records
        for _ in range(tries):
            if not keys:
                return None
            key: str = keys[draw(len(keys))]
            if record_expires_at(records[key]) > now:
                return key
        return next((k for k in keys if record_expires_at(records[k]) > now), None)

    def expired_keys(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` keys expired at ``now``, earliest expiry first."""
        return self._by_expiry.expired(now, limit)

    def records(self) -> dict[str, bytes]:
        """A copy of key → record in LRU order (oldest first); records are immutable."""
        return self._records.copy()

    # --- writes -----------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        version: int,
        expires_at: float,
        now: float,
        is_hash: bool = False,
    ) -> None:
        """Write ``key`` as most recently used (``is_hash``: ``value`` is a hash's encoded
        fields); ``settle(now)`` must follow the command."""
        old = self._records.pop(key, None)
        if old is None:
            self._keys.add(key)
            self.bytes += entry_size(key, len(value))
        else:
            key = self._indexed(key)
            self._front.pop(key, None)
            old_expires_at = record_expires_at(old)
            if old_expires_at <= now:
                self.expirations += 1
            if old_expires_at != NEVER:
                self._by_expiry.remove(old_expires_at, key)
            self.bytes += len(value) - record_value_size(old)
            self.digest -= entry_hash(key, old)
        if expires_at != NEVER:
            self._by_expiry.add(expires_at, key)
        record = self._records[key] = pack_record(value, version, expires_at, is_hash)
        self.digest = (self.digest + entry_hash(key, record)) & MASK

    def remove(self, key: str, now: float) -> bool:
        """Delete ``key``; True if it was live at ``now`` (an expired one counts as expired)."""
        record = self._records.pop(key, None)
        if record is None:
            return False
        self._unlink(key, record)
        if record_expires_at(record) <= now:
            self.expirations += 1
            return False
        return True

    def touch(self, key: str, now: float) -> bool:
        """Make ``key`` most recently used if live at ``now``; True if it was."""
        record = self.live(key, now)
        if record is None:
            return False
        del self._records[key]
        key = self._indexed(key)
        self._front.pop(key, None)
        self._records[key] = record
        return True

    def expire(self, keys: Iterable[str], now: float) -> int:
        """Remove those of ``keys`` expired at ``now``; returns how many."""
        removed = 0
        for key in keys:
            record = self._records.get(key)
            if record is not None and record_expires_at(record) <= now:
                del self._records[key]
                self._unlink(key, record)
                removed += 1
        self.expirations += removed
        return removed

    def flush(self, prefix: str, now: float) -> int:
        """Remove every key starting with ``prefix`` ("" = all); returns how many were live.
        Key by key through ``remove`` (so subclasses see each removal): O(k log n)."""
        keys = list(self._keys.irange(minimum=prefix)) if prefix else list(self._keys)
        removed = 0
        for key in keys:
            if not key.startswith(prefix):
                break
            removed += self.remove(key, now)
        return removed

    def settle(self, now: float) -> None:
        """Evict down to the bounds (expired entries first) and update ``bytes_peak``."""
        if self._over():
            self._shed(now)
        if self.bytes > self.bytes_peak:
            self.bytes_peak = self.bytes

    def fits(self, key: str, value_size: int) -> bool:
        """Whether an entry of this size could be stored at all under ``max_bytes``."""
        return self.max_bytes is None or entry_size(key, value_size) <= self.max_bytes

    def load(
        self, records: dict[str, bytes], bytes_peak: int, evictions: int, expirations: int
    ) -> None:
        """Replace the whole content with ``records`` (LRU order) and replicated counters."""
        self._records = records
        self._keys = SortedList(records)
        self._by_expiry = ExpiryIndex(
            (expires_at, key)
            for key, record in records.items()
            if (expires_at := record_expires_at(record)) != NEVER
        )
        self._front = {}
        self.bytes = sum(entry_size(k, record_value_size(r)) for k, r in records.items())
        self.bytes_peak = max(bytes_peak, self.bytes)
        self.evictions = evictions
        self.expirations = expirations
        self.digest = full_digest(records)

    def full_digest(self) -> int:
        """The digest recomputed from the entries (O(n); ``digest`` is the kept one)."""
        return full_digest(self._records)

    # --- internals --------------------------------------------------------------------------

    def _unlink(self, key: str, record: bytes) -> None:
        """Drop ``key`` from every index; its record is already out of ``_records``."""
        self._keys.remove(key)
        expires_at = record_expires_at(record)
        if expires_at != NEVER:
            self._by_expiry.remove(expires_at, key)
        self._front.pop(key, None)
        self.bytes -= entry_size(key, record_value_size(record))
        self.digest = (self.digest - entry_hash(key, record)) & MASK

    def _indexed(self, key: str) -> str:
        """The ``str`` object the sorted index holds for ``key`` (a stored key).

        Why: a command brings its own copy of every key (msgpack makes new objects), and
        re-inserting that copy into ``_records`` (an overwrite, a touch: the LRU move) would
        leave the index holding the old object and the dict the new one — two objects per
        key, 64 bytes more for a key of up to 15 bytes (measured: 86% of 200,000 keys after
        as many overwrites and touches). Re-inserting the index's object keeps one. A lookup
        in the SortedList's own sublists (two C bisects, ~1 µs at 1 M keys): its public
        ``bisect_left`` + ``__getitem__`` walks a positional index and costs three times that.
        """
        keys = self._keys
        position = bisect_left(keys._maxes, key)
        if position == len(keys._maxes):  # not indexed (cannot happen): keep the copy
            return key
        sublist = keys._lists[position]
        indexed: str = sublist[bisect_left(sublist, key)]
        # Equal unless the index were out of step: then the copy, never a different key.
        return indexed if indexed == key else key

    def _over(self) -> bool:
        return (self.max_keys is not None and len(self._records) > self.max_keys) or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        )

    def _shed(self, now: float) -> None:
        first_expired = self._by_expiry.first_expired
        while self._over() and (key := first_expired(now)) is not None:
            self._unlink(key, self._records.pop(key))
            self.expirations += 1
        while self._over():
            key = self._oldest_key()
            self._unlink(key, self._records.pop(key))
            self.evictions += 1

    def _oldest_key(self) -> str:
        front = self._front
        if not front:
            front = self._front = dict.fromkeys(islice(self._records, _FRONT_BATCH))
        key = next(iter(front))
        del front[key]
        return key

    def check_invariants(self) -> None:
        """Assert that the four views agree (for tests; O(n))."""
        records = self._records
        assert list(self._keys) == sorted(records), "key index out of step"
        shared = all(a is b for a, b in zip(self._keys, sorted(records), strict=True))
        assert shared, "a key is held as two objects (index and dict)"
        expiring = sorted(
            (record_expires_at(r), k) for k, r in records.items() if record_expires_at(r) != NEVER
        )
        assert list(self._by_expiry) == expiring, "expiry index out of step"
        assert list(self._front) == list(islice(records, len(self._front))), "front not a prefix"
        assert self.bytes == sum(entry_size(k, record_value_size(r)) for k, r in records.items())
        assert self.bytes_peak >= self.bytes
        assert self.digest == full_digest(records), "incremental digest out of step"
