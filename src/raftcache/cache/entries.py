"""The compact per-entry record and the public ``Item`` view of it.

Rule: an entry is ONE immutable ``bytes`` object, ``header + value``, where the 16-byte header
is the version (uint64) and ``expires_at`` (float64 seconds, ``+inf`` for "never"), little
endian. Why not a small object? At 1 M keys a ``__slots__`` object plus a boxed ``int`` version
costs ~90 bytes more per key than the 16-byte header (measured: 259 MB vs 343 MB for 1 M keys
with 100-byte values). Immutability also makes a snapshot copy of the map consistent without
copying any entry. The price is one slice copy of the value per read.

Size accounting (``max_bytes``, ``stats()["bytes"]``) counts ``len(key as UTF-8) + len(value)``:
the payload a client stored, not Python's overhead.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

HEADER = struct.Struct("<Qd")
HEADER_SIZE = HEADER.size
NEVER = math.inf

_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


@dataclass(frozen=True, slots=True)
class Item:
    """A live entry as seen by a reader.

    Attributes:
        value: the stored bytes.
        version: the log index of the entry's last write.
        expires_at: when it stops being visible (seconds since the epoch), None for never.
    """

    value: bytes
    version: int
    expires_at: float | None


def pack_record(value: bytes, version: int, expires_at: float) -> bytes:
    """The record for ``value`` written at ``version``, expiring at ``expires_at`` (or NEVER)."""
    return _pack_header(version, expires_at) + value


def record_header(record: bytes) -> tuple[int, float]:
    """(version, expires_at) of a record; ``expires_at`` is NEVER for no TTL."""
    header: tuple[int, float] = _unpack_header(record)
    return header


def record_expires_at(record: bytes) -> float:
    """When the record stops being visible (NEVER for no TTL)."""
    expires_at: float = _unpack_header(record)[1]
    return expires_at


def record_value_size(record: bytes) -> int:
    """Length of the value held by ``record``."""
    return len(record) - HEADER_SIZE


def record_item(record: bytes) -> Item:
    """The public view of ``record``."""
    version, expires_at = _unpack_header(record)
    return Item(record[HEADER_SIZE:], version, None if expires_at == NEVER else expires_at)


def key_size(key: str) -> int:
    """Bytes of ``key`` in UTF-8 (cheap for the common ASCII key)."""
    return len(key) if key.isascii() else len(key.encode("utf-8"))


def entry_size(key: str, value_size: int) -> int:
    """The accounted size of an entry: UTF-8 key bytes plus value bytes."""
    return key_size(key) + value_size
