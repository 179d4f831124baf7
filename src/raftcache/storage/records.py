"""The log record format, and the scanner that tells a torn tail from corruption.

Rule: a record is self-describing and self-checking:

    magic b"RC" | version u8 | type u8 | payload length u32 | crc32 u32 | payload
    payload = msgpack [term, index, kind, command]

(little-endian; the CRC is zlib.crc32 over the first 8 header bytes and the payload, so a
damaged length field is caught too). A segment file is a plain sequence of records; its name
gives the index of the first one.

The scanner reports where the valid prefix of a segment ends and why. Whether an invalid
record is a torn write (truncate and carry on) or corruption (refuse to start) is decided by
``find_valid_record`` — see ``SegmentLog.recover``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.raft.messages import LogEntry
from raftcache.storage.base import StorageCorruptError, StorageFormatError
from raftcache.storage.codec import pack, unpack

MAGIC = b"RC"
VERSION = 1
TYPE_ENTRY = 0
_PREFIX = struct.Struct("<2sBBI")  # magic, version, type, payload length
_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _CRC.size  # 12
# A limit on everything: a length field beyond this is damage, not a real record.
MAX_PAYLOAD = 256 * 1024 * 1024


def encode_batch(entries: Sequence[LogEntry]) -> tuple[bytes, list[int]]:
    """All records of ``entries`` as one buffer (one write per batch) and each one's offset."""
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    for e in entries:
        payload = pack([e.term, e.index, int(e.kind), e.command])
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"entry {e.index} is too large ({len(payload)} bytes)")
        prefix = _PREFIX.pack(MAGIC, VERSION, TYPE_ENTRY, len(payload))
        parts.append(prefix)
        parts.append(_CRC.pack(zlib.crc32(payload, zlib.crc32(prefix))))
        parts.append(payload)
        offsets.append(pos)
        pos += HEADER_SIZE + len(payload)
    return b"".join(parts), offsets


@dataclass(slots=True)
class ScanResult:
    """The valid prefix of one segment and, if it stops early, where and why."""

    entries: list[LogEntry] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    valid_size: int = 0
    bad_offset: int | None = None
    reason: str = ""


def _check(buf: bytes | memoryview, pos: int) -> tuple[int, str]:
    """(record end, "") if a v1 record with a good CRC starts at ``pos``, else (0, reason)."""
    remaining = len(buf) - pos
    if remaining < HEADER_SIZE:
        return 0, f"short header ({remaining} of {HEADER_SIZE} bytes)"
    magic, version, rtype, length = _PREFIX.unpack_from(buf, pos)
    if magic != MAGIC:
        return 0, "bad magic"
    if version != VERSION or rtype != TYPE_ENTRY:
        return 0, f"unknown record version {version} / type {rtype}"
    if length > MAX_PAYLOAD:
        return 0, f"implausible length {length}"
    end = pos + HEADER_SIZE + length
    if end > len(buf):
        return 0, f"short payload ({len(buf) - pos - HEADER_SIZE} of {length} bytes)"
    (crc,) = _CRC.unpack_from(buf, pos + _PREFIX.size)
    actual = zlib.crc32(buf[pos + HEADER_SIZE : end], zlib.crc32(buf[pos : pos + _PREFIX.size]))
    if crc != actual:
        return 0, "CRC mismatch"
    return end, ""


def _decode(payload: bytes | memoryview, where: str) -> LogEntry:
    try:
        obj: Any = unpack(payload)
    except ValueError as exc:
        raise StorageCorruptError(f"{where}: undecodable record payload ({exc})") from exc
    if (
        not isinstance(obj, list)
        or len(obj) != 4
        or not all(isinstance(x, int) for x in obj[:3])
        or not isinstance(obj[3], bytes)
    ):
        # The CRC matched, so this is not bit rot: it was written wrong. Refuse it all the same.
        raise StorageCorruptError(f"{where}: record payload is not [term, index, kind, command]")
    return LogEntry(obj[0], obj[1], obj[3], obj[2])


def scan(buf: bytes, path: str, first_index: int) -> ScanResult:
    """Decode records from the start of ``buf`` while they are valid.

    A valid record whose index is not the next expected one is corruption (a CRC cannot be
    torn into a plausible wrong index), and so is a record of an unknown version: both raise.
    """
    result = ScanResult()
    view = memoryview(buf)
    pos = 0
    expected = first_index
    while pos < len(buf):
        end, reason = _check(view, pos)
        if not end:
            if reason.startswith("unknown record version"):
                raise StorageFormatError(
                    f"{path} at offset {pos}: {reason}; written by a newer raftcache?"
                )
            result.bad_offset, result.reason = pos, reason
            break
        entry = _decode(view[pos + HEADER_SIZE : end], f"{path} at offset {pos}")
        if entry.index != expected:
            raise StorageCorruptError(
                f"{path} at offset {pos}: record has index {entry.index}, expected {expected}"
            )
        result.entries.append(entry)
        result.offsets.append(pos)
        expected += 1
        pos = end
    result.valid_size = pos
    return result


def find_valid_record(buf: bytes, start: int, min_index: int) -> int | None:
    """Offset of the first intact record after ``start`` whose index is ≥ ``min_index``.

    Used after a bad record: valid data *after* damage means the damage is not a torn tail.
    The index condition keeps a record-shaped byte string inside some command (a cached copy
    of a segment file, say) from turning a torn write into a false alarm.
    """
    view = memoryview(buf)
    pos = buf.find(MAGIC, start + 1)
    while pos != -1:
        end = _check(view, pos)[0]
        if end:
            try:
                if _decode(view[pos + HEADER_SIZE : end], "").index >= min_index:
                    return pos
            except StorageCorruptError:
                pass
        pos = buf.find(MAGIC, pos + 1)
    return None
