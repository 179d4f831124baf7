"""The log record format, and the scanners recovery uses to judge a damaged segment.

Rule: a record is self-describing and self-checking, and a record found after damage can prove
a sync boundary only if this writer wrote it. Version 2, the one written (its ``batch_start``
is what the torn-tail rule of ``segments`` reads), is::

    magic b"RC" | version u8 = 2 | type u8 | payload length u32 | batch_start u64 | crc32 u32
    | payload            payload = msgpack [term, index, kind, command]

(little-endian). The CRC is zlib.crc32 over the segment's **salt** (8 bytes, little-endian),
the 16 header bytes before the CRC and the payload — ``crc32(payload, crc32(header,
crc_seed(salt)))`` — so a damaged length or batch_start is caught too. The salt is a random
64-bit number chosen when the segment is created and kept in its file name (``segments``), where
damage to a record cannot lose it. Why: a command is client data, and a client can put
record-shaped bytes with any index and ``batch_start`` and a matching plain CRC inside a value;
if that value's write is torn, such bytes found after the damage would "prove" a sync boundary
nobody made (or, as a v1 record, invoke the v1 rule) and stop the node for good. Without the
salt a client cannot compute the CRC: each record-shaped string it plants passes by chance only,
with probability 2**-32. Segments named without a salt (written before it existed) are checked
with the plain CRC (seed 0, the same bytes as before) and keep that exposure until they are
rotated away.

``batch_start`` is the sync boundary: the offset in this segment up to which an fsync had
*returned* before this record was written — every byte before it was durable. The first record
after a sync has ``batch_start`` equal to its own offset; every record has ``batch_start`` at or
before its own offset.

Version 1 (older data directories) is the same without ``batch_start`` (a 12-byte header) and
without salt. It is still read, so an upgraded node starts on its old segments; it is never
written again. A segment may hold v1 records followed by v2 records (an old segment the new code
appended to), never the other way round: a v1-shaped record after a v2 record, or anywhere in a
salted segment (always written by the new code), is not a record (in the valid prefix it is
damage; after damage it is ignored).

A segment file is a plain sequence of records; its name gives the index of the first one (and
the salt). ``scan`` reports where the valid prefix of a segment ends and why; ``scan_after``
looks past a bad record for intact ones. What that means — torn unsynced tail or corruption —
is decided by ``SegmentLog.recover`` (see ``segments``).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.protocol.messages import LogEntry
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
SALT_BITS = 64


def crc_seed(salt: int | None) -> int:
    """The CRC of a record in a segment with ``salt`` starts from this value (0, the plain CRC,
    for a segment without salt): as if the salt's 8 bytes preceded the header."""
    if salt is None:
        return 0
    return zlib.crc32(salt.to_bytes(SALT_BITS // 8, "little"))


def encode_batch(
    entries: Sequence[LogEntry], batch_start: int, seed: int = 0
) -> tuple[bytes, list[int]]:
    """All records of ``entries`` as one buffer (one write per batch) and each one's offset
    relative to the buffer. ``batch_start``: the segment's durable size when this is written;
    ``seed``: ``crc_seed`` of the segment's salt."""
    parts: list[bytes] = []
    offsets: list[int] = []
    pos = 0
    for e in entries:
        payload = pack([e.term, e.index, int(e.kind), e.command])
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"entry {e.index} is too large ({len(payload)} bytes)")
        prefix = _PREFIX.pack(MAGIC, VERSION, TYPE_ENTRY, len(payload), batch_start)
        parts.append(prefix)
        parts.append(_CRC.pack(zlib.crc32(payload, zlib.crc32(prefix, seed))))
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
    has_v2: bool = False  # the prefix holds a v2 record (no v1 record can follow it)


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


def _check(buf: bytes | memoryview, pos: int, seed: int, v1_ok: bool) -> Record | str:
    """The intact record (v1 or v2, good CRC from ``seed``) starting at ``pos``, or why there is
    none. ``v1_ok``: a v1 record can be one here (an unsalted segment, no v2 record before)."""
    remaining = len(buf) - pos
    if remaining < HEADER_SIZE_V1:
        return f"short header ({remaining} of {HEADER_SIZE_V1} bytes)"
    magic, version, rtype, length = _HEAD.unpack_from(buf, pos)
    if magic != MAGIC:
        return "bad magic"
    if version not in (VERSION, VERSION_1) or rtype != TYPE_ENTRY:
        return f"unknown record version {version} / type {rtype}"
    if version == VERSION_1 and not v1_ok:
        # Only an old writer wrote v1, only in old (unsalted) segments, and never after v2.
        return "version-1 record where only version 2 can be"
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
    actual = zlib.crc32(buf[pos + header : end], zlib.crc32(buf[pos : pos + covered], seed))
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


def scan(buf: bytes, path: str, first_index: int, salt: int | None = None) -> ScanResult:
    """Decode records from the start of ``buf`` (a segment with ``salt``) while they are valid.

    A valid record whose index is not the next expected one is corruption (a CRC cannot be
    torn into a plausible wrong index), and so is one whose ``batch_start`` lies after its own
    offset (no writer produces that); both raise. A record of an unknown version raises
    ``StorageFormatError``. A v1 record in a salted segment or after a v2 record ends the
    valid prefix like any damage.
    """
    result = ScanResult()
    view = memoryview(buf)
    seed = crc_seed(salt)
    pos = 0
    expected = first_index
    while pos < len(buf):
        rec = _check(view, pos, seed, salt is None and not result.has_v2)
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
        result.has_v2 = result.has_v2 or rec.version == VERSION
        result.entries.append(entry)
        result.offsets.append(pos)
        expected += 1
        pos = rec.end
    result.valid_size = pos
    return result


def scan_after(
    buf: bytes, bad_offset: int, min_index: int, salt: int | None = None, *, v1_ok: bool = True
) -> TailScan:
    """Every intact record after the bad record at ``bad_offset`` whose index is ≥ ``min_index``.

    Intact records follow one another, so after one is found the search goes on at its end; a
    byte-wise search for the magic resumes only after damage. What keeps record-shaped bytes
    that are not records of this segment (a command holding a forged record or a copy of a
    segment file) from counting: above all the CRC, which starts from the segment's ``salt``
    that no client knows; then the index (a copy carries old indices) and, for v2, a
    ``batch_start`` at or before the record's own offset; and a v1 record counts only in an
    unsalted segment, before any v2 record (``v1_ok``: none in the valid prefix either).
    """
    out = TailScan()
    view = memoryview(buf)
    seed = crc_seed(salt)
    v1_ok = v1_ok and salt is None
    pos = buf.find(MAGIC, bad_offset + 1)
    while pos != -1:
        rec = _check(view, pos, seed, v1_ok)
        if not isinstance(rec, str) and (rec.batch_start is None or rec.batch_start <= pos):
            try:
                index = _decode(_payload(view, rec), "").index
            except StorageCorruptError:
                index = -1
            if index >= min_index:
                out.records.append(rec)
                out.indexes.append(index)
                v1_ok = v1_ok and rec.version == VERSION_1
                pos = buf.find(MAGIC, rec.end)  # at rec.end itself when records follow
                continue
        pos = buf.find(MAGIC, pos + 1)
    return out
