"""The state digest: one order-independent 64-bit number summarising a replica's entries.

Rule: ``digest = Σ entry_hash(key, record) mod 2**64`` over every stored entry, where
``entry_hash`` is a checksum of the key's UTF-8 bytes, a 0xFF separator (a byte UTF-8 never
produces, so the pair is unambiguous) and the record (``raftcache.cache.entries``: version,
expires_at and value). A sum is order-independent and can be kept *incrementally*: a write adds
the new record's hash and subtracts the old one's, O(1) per change, so ``EntryStore.digest``
always equals ``full_digest(store.records())``. Two replicas that applied the same log hold the
same entries and so the same digest; that is what the divergence check compares
(``raftcache.cache.divergence``, docs/divergence.md).

What it covers: keys, values, versions and expiry instants — everything a read can return.
What it does not: the LRU order, sessions and the replicated counters (evictions, ...): they
change no answer to a read, and a divergence in them shows up in the entries soon enough
(an eviction order that differs evicts different keys).

The checksum is CRC-32 (high half) and Adler-32 (low half), both in C in ``zlib``: about half
the cost of an 8-byte BLAKE2b per entry (measured: 0.27 µs vs 0.53 µs for a 100-byte value),
and this runs on every write. Like etcd's CRC-32 ``HashKV``, it guards against accidents —
non-deterministic apply, a bug, state changed behind Raft's back, a corrupted snapshot — not
against an adversary, who could as well rewrite the digest of the replica it controls.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass

MASK = (1 << 64) - 1
_SEPARATOR = b"\xff"
_crc32 = zlib.crc32
_adler32 = zlib.adler32


def entry_hash(key: str, record: bytes) -> int:
    """The 64-bit checksum of one entry (``key`` and its record bytes)."""
    data = key.encode("utf-8", "surrogatepass") + _SEPARATOR + record
    return _crc32(data) << 32 | _adler32(data)


def full_digest(records: Mapping[str, bytes]) -> int:
    """The digest of ``records`` computed from scratch (O(n))."""
    total = 0
    for key, record in records.items():
        total += entry_hash(key, record)
    return total & MASK


def digest_hex(digest: int) -> str:
    """How a digest is shown (``/v1/status``, logs): 16 hex digits."""
    return f"{digest:016x}"


@dataclass(frozen=True, slots=True)
class DigestMark:
    """A replica's digest right after it applied the CHECK entry at ``index``."""

    index: int
    digest: int


class DigestRing:
    """The last ``size`` digests recorded at CHECK entries, by index (node-local, derived).

    A leader asks for a digest at the index of the CHECK it proposed; a replica that is
    slower answers "not yet" and one that is far ahead (it skipped the entry by installing a
    snapshot past it, or the ring has moved on) answers "unknown". Both are no verdict.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._marks: dict[int, int] = {}

    def record(self, index: int, digest: int) -> None:
        self._marks[index] = digest
        while len(self._marks) > self.size:
            del self._marks[next(iter(self._marks))]

    def at(self, index: int) -> int | None:
        return self._marks.get(index)

    def clear(self) -> None:
        self._marks.clear()

    def latest(self) -> DigestMark | None:
        if not self._marks:
            return None
        index = next(reversed(self._marks))
        return DigestMark(index, self._marks[index])

    def marks(self) -> list[DigestMark]:
        """The recorded digests, oldest first."""
        return [DigestMark(i, d) for i, d in self._marks.items()]
