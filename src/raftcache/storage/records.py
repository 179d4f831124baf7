"""The log record format, and the scanners recovery uses to judge a damaged segment.

Rule: a record is self-describing and self-checking. Version 2 (written since the torn-tail
rule of ``segments``) is::

    magic b"RC" | version u8 = 2 | type u8 | payload length u32 | batch_start u64 | crc32 u32
    | payload            payload = msgpack [term, index, kind, command]

(little-endian; the CRC is zlib.crc32 over the 16 header bytes before it and the payload, so a
damaged length or batch_start is caught too). ``batch_start`` is the sync boundary: the offset
in this segment up to which an fsync had *returned* before this record was written — every byte
before it was durable. The first record after a sync has ``batch_start`` equal to its own
offset; every record has ``batch_start`` at or before its own offset.

Version 1 (older data directories) is the same without ``batch_start`` (a 12-byte header). It
is still read, so an upgraded node starts on its old segments; it is never written again. A
segment may hold v1 records followed by v2 records (an old segment the new code appended to).

A segment file is a plain sequence of records; its name gives the index of the first one.
``scan`` reports where the valid prefix of a segment ends and why; ``scan_after`` looks past a
bad record for intact ones. What that means — torn unsynced tail or corruption — is decided by
``SegmentLog.recover`` (see ``segments``).
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
VERSION = 2  # written
VERSION_1 = 1  # still read: no batch_start
TYPE_ENTRY = 0
_HEAD = struct.Struct("<2sBBI")  # magic, version, type, payload length: common to v1 and v2
_PREFIX = struct.Struct("<2sBBIQ")  # v2: ... and batch_start
_CRC = struct.Struct("<I")
HEADER_SIZE = _PREFIX.size + _CRC.size  # 20 (v2)
HEADER_SIZE_V1 = _HEAD.size + _CRC.size  # 12
# A limit on everything: a length field beyond this is damage, not a real record.
MAX_PAYLOAD = 256 * 1024 * 1024


def encode_batch(entries: Sequence[LogEntry], batch_start: int) -> tuple[bytes, list[int]]:
    """All records of ``entries`` as one buffer (one write per batch) and each one's offset
    relative to the buffer. ``batch_start``: the segment's durable size when this is written."""
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    for e in entries:
        payload = pack([e.term, e.index, int(e.kind), e.command])
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"entry {e.index} is too large ({len(payload)} bytes)")
        prefix = _PREFIX.pack(MAGIC, VERSION, TYPE_ENTRY, len(payload), batch_start)
        parts.append(prefix)
        parts.append(_CRC.pack(zlib.crc32(payload, zlib.crc32(prefix))))
        parts.append(payload)
        offsets.append(pos)
        pos += HEADER_SIZE + len(payload)
    return b"".join(parts), offsets


@dataclass(slots=True)
class Record:
    """An intact record (header and CRC good) at ``offset``: where it ends, its version and, for
    v2, its ``batch_start`` (None for v1)."""

    offset: int
    end: int
    version: int
    batch_start: int | None


@dataclass(slots=True)
class ScanResult:
    """The valid prefix of one segment and, if it stops early, where and why."""

    entries: list[LogEntry] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    valid_size: int = 0
    bad_offset: int | None = None
    reason: str = ""


@dataclass(slots=True)
class TailScan:
    """Intact records found after a bad one (see ``scan_after``)."""

    records: list[Record] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)

    @property
    def has_v1(self) -> bool:
        return any(r.version == VERSION_1 for r in self.records)

    def boundary(self) -> tuple[int, Record | None]:
        """The largest ``batch_start`` among the v2 records, and the record that carries it
        ((0, None) if there is none)."""
        best: tuple[int, Record | None] = (0, None)
        for r in self.records:
            if r.batch_start is not None and r.batch_start > best[0]:
                best = (r.batch_start, r)
        return best


def _check(buf: bytes | memoryview, pos: int) -> Record | str:
    """The intact record (v1 or v2, good CRC) starting at ``pos``, or why there is none."""
    remaining = len(buf) - pos
    if remaining < HEADER_SIZE_V1:
        return f"short header ({remaining} of {HEADER_SIZE_V1} bytes)"
    magic, version, rtype, length = _HEAD.unpack_from(buf, pos)
    if magic != MAGIC:
        return "bad magic"
    if version not in (VERSION, VERSION_1) or rtype != TYPE_ENTRY:
        return f"unknown record version {version} / type {rtype}"
    if version == VERSION:
        if remaining < HEADER_SIZE:
            return f"short header ({remaining} of {HEADER_SIZE} bytes)"
        batch_start: int | None = _PREFIX.unpack_from(buf, pos)[4]
        covered = _PREFIX.size
    else:
        batch_start, covered = None, _HEAD.size
    header = covered + _CRC.size
    if length > MAX_PAYLOAD:
        return f"implausible length {length}"
    end = pos + header + length
    if end > len(buf):
        return f"short payload ({len(buf) - pos - header} of {length} bytes)"
    (crc,) = _CRC.unpack_from(buf, pos + covered)
    actual = zlib.crc32(buf[pos + header : end], zlib.crc32(buf[pos : pos + covered]))
    if crc != actual:
        return "CRC mismatch"
    return Record(pos, end, version, batch_start)


def _payload(buf: bytes | memoryview, rec: Record) -> bytes | memoryview:
    header = HEADER_SIZE if rec.version == VERSION else HEADER_SIZE_V1
    return buf[rec.offset + header : rec.end]


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
    torn into a plausible wrong index), and so is one whose ``batch_start`` lies after its own
    offset (no writer produces that); both raise. A record of an unknown version raises
    ``StorageFormatError``.
    """
    result = ScanResult()
    view = memoryview(buf)
    pos = 0
    expected = first_index
    while pos < len(buf):
        rec = _check(view, pos)
        if isinstance(rec, str):
            if rec.startswith("unknown record version"):
                raise StorageFormatError(
                    f"{path} at offset {pos}: {rec}; written by a newer raftcache?"
                )
            result.bad_offset, result.reason = pos, rec
            break
        where = f"{path} at offset {pos}"
        entry = _decode(_payload(view, rec), where)
        if entry.index != expected:
            raise StorageCorruptError(
                f"{where}: record has index {entry.index}, expected {expected}"
            )
        if rec.batch_start is not None and rec.batch_start > pos:
            raise StorageCorruptError(
                f"{where}: record claims its sync batch began at offset {rec.batch_start}, "
                "after the record itself"
            )
        result.entries.append(entry)
        result.offsets.append(pos)
        expected += 1
        pos = rec.end
    result.valid_size = pos
    return result


def scan_after(buf: bytes, bad_offset: int, min_index: int) -> TailScan:
    """Every intact record after the bad record at ``bad_offset`` whose index is ≥ ``min_index``.

    Intact records follow one another, so after one is found the search goes on at its end; a
    byte-wise search for the magic resumes only after damage. Two conditions keep record-shaped
    bytes that are not records of this segment (a command holding a copy of a segment file,
    say) from counting: the index (a copy carries old indices) and, for v2, a ``batch_start`` at
    or before the record's own offset.
    """
    out = TailScan()
    view = memoryview(buf)
    pos = buf.find(MAGIC, bad_offset + 1)
    while pos != -1:
        rec = _check(view, pos)
        if not isinstance(rec, str) and (rec.batch_start is None or rec.batch_start <= pos):
            try:
                index = _decode(_payload(view, rec), "").index
            except StorageCorruptError:
                index = -1
            if index >= min_index:
                out.records.append(rec)
                out.indexes.append(index)
                pos = buf.find(MAGIC, rec.end)  # at rec.end itself when records follow
                continue
        pos = buf.find(MAGIC, pos + 1)
    return out
