"""The backup file: a cache snapshot with its provenance and a checksum, self-verifying.

Rule: a backup is never trusted before it has been verified whole — magic, format version,
header, length and checksum — and ``BackupFormatError`` names the first problem found, so an
operator is told *what* is wrong with a file (truncated, corrupt, foreign, too new). Format 1::

    RAFTCACHE-BACKUP/1\\n                          magic line, with the file format version
    {"format": 1, "snapshot_format": 1,           one line of JSON (at most 4 KiB)
     "index": I, "term": T, "node": "n1",
     "created_at": <unix seconds>, "snapshot_bytes": N}\\n
    <N bytes: the cache snapshot>                 raftcache.cache.snapshot, as replicas hold it
    \\nsha256:<64 hex digits>\\n                    SHA-256 of every byte before this line

``index``/``term``: the log position the snapshot's state reflects (everything committed up to
``index``, and nothing after). ``node`` and ``created_at`` are for the operator only. The
checksum sits at the end so a writer can stream the file; the declared length makes a
truncated file distinguishable from a corrupt one.

Pure: no clock, no I/O beyond the file-like objects handed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from raftcache.cache.snapshot import FORMAT_VERSION as SNAPSHOT_FORMAT
from raftcache.cache.snapshot import SupportsRead

BACKUP_FORMAT = 1
MAGIC_PREFIX = b"RAFTCACHE-BACKUP/"
MAGIC = MAGIC_PREFIX + b"%d\n" % BACKUP_FORMAT
MAX_HEADER_BYTES = 4096
TRAILER_PREFIX = b"\nsha256:"
TRAILER_SIZE = len(TRAILER_PREFIX) + 64 + 1
_READ_CHUNK = 1 << 20


class BackupFormatError(ValueError):
    """The bytes are not a backup this version can restore; the message says why."""


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """The header of a backup file (see the module docstring)."""

    index: int
    term: int
    node: str
    created_at: float
    snapshot_bytes: int
    snapshot_format: int = SNAPSHOT_FORMAT

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BACKUP_FORMAT,
            "snapshot_format": self.snapshot_format,
            **self.provenance(),
        }

    def provenance(self) -> dict[str, Any]:
        """Where and when the backup was taken, as the API and the CLI show it."""
        return {
            "index": self.index,
            "term": self.term,
            "node": self.node,
            "created_at": self.created_at,
            "snapshot_bytes": self.snapshot_bytes,
        }


def backup_head(info: BackupInfo) -> bytes:
    """The magic and header lines of a backup of ``info``."""
    line = json.dumps(info.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + line + b"\n"


def backup_trailer(digest: bytes) -> bytes:
    """The checksum line, from the SHA-256 digest of every byte before it."""
    return TRAILER_PREFIX + digest.hex().encode() + b"\n"


def encode_backup(
    info: BackupInfo, snapshot: bytes, chunk_size: int = _READ_CHUNK
) -> Iterator[bytes]:
    """The backup file of ``snapshot`` as a series of chunks (checksum computed on the way)."""
    if len(snapshot) != info.snapshot_bytes:
        raise ValueError("info.snapshot_bytes does not match the snapshot")
    digest = hashlib.sha256()
    head = backup_head(info)
    digest.update(head)
    yield head
    view = memoryview(snapshot)
    for start in range(0, len(view), chunk_size):
        piece = view[start : start + chunk_size]
        digest.update(piece)
        yield bytes(piece)
    yield backup_trailer(digest.digest())


def check_magic(
    data: bytes, prefix: bytes, version: int, what: str, error: type[BackupFormatError]
) -> int:
    """Check the magic line ``<prefix><version>\\n`` at the start of ``data`` (a raftcache
    ``what`` of format ``version``); the offset after it. Raises ``error`` naming the problem."""
    if not data.startswith(prefix):
        raise error(f"not a raftcache {what} (the file does not start with its magic)")
    magic_end = data.find(b"\n", 0, len(prefix) + 12)
    if magic_end < 0:
        raise error(f"not a raftcache {what} (malformed magic line)")
    found = data[len(prefix) : magic_end]
    if found != b"%d" % version:
        shown = found.decode("ascii", "replace")[:12]
        raise error(
            f"{what} format {shown!r} is not supported (this version reads format {version})"
        )
    return magic_end + 1


def read_json_head(
    data: bytes,
    prefix: bytes,
    version: int,
    what: str,
    line: str,
    max_bytes: int,
    error: type[BackupFormatError],
) -> tuple[dict[str, Any], int]:
    """The magic line (``check_magic``) then one JSON object line of at most ``max_bytes``
    naming the same ``format`` — a backup's header, a bundle's manifest (``line``); the object
    and the offset after it. Raises ``error`` naming the problem."""
    start = check_magic(data, prefix, version, what, error)
    end = data.find(b"\n", start, start + max_bytes)
    if end < 0:
        raise error(f"truncated or malformed {what} {line}")
    try:
        raw = json.loads(data[start:end])
    except ValueError:
        raise error(f"malformed {what} {line} (not JSON)") from None
    if not isinstance(raw, dict):
        raise error(f"malformed {what} {line} (not a JSON object)")
    if raw.get("format") != version:
        raise error(f"{what} {line} names format {raw.get('format')!r}")
    return raw, end + 1


def parse_head(data: bytes) -> tuple[BackupInfo, int]:
    """Parse the magic and header lines at the start of ``data``; the header and the offset
    of the snapshot. Raises ``BackupFormatError``."""
    raw, offset = read_json_head(
        data, MAGIC_PREFIX, BACKUP_FORMAT, "backup", "header", MAX_HEADER_BYTES, BackupFormatError
    )
    return _info_from_json(raw), offset


def _info_from_json(raw: dict[str, Any]) -> BackupInfo:
    if raw.get("snapshot_format") != SNAPSHOT_FORMAT:
        raise BackupFormatError(
            f"cache snapshot format {raw.get('snapshot_format')!r} is not supported "
            f"(this version reads format {SNAPSHOT_FORMAT})"
        )
    ints: dict[str, int] = {}
    for name in ("index", "term", "snapshot_bytes"):
        value = raw.get(name)
        if type(value) is not int or value < 0:
            raise BackupFormatError(f"backup header field {name!r} must be an integer >= 0")
        ints[name] = value
    node, created_at = raw.get("node"), raw.get("created_at")
    if not isinstance(node, str) or not isinstance(created_at, int | float):
        raise BackupFormatError("backup header fields 'node' and 'created_at' are malformed")
    return BackupInfo(ints["index"], ints["term"], node, float(created_at), ints["snapshot_bytes"])


def verify_backup(data: bytes) -> tuple[BackupInfo, memoryview]:
    """Verify a whole backup held in memory; its header and (a view of) its snapshot bytes.

    Raises ``BackupFormatError`` naming the problem: not a backup, an unsupported format, a
    malformed header, a truncated file, trailing bytes, or a checksum mismatch.
    """
    info, offset = parse_head(data)
    expected = offset + info.snapshot_bytes + TRAILER_SIZE
    if len(data) < expected:
        raise BackupFormatError(
            f"truncated backup: {len(data)} bytes, the header announces {expected}"
        )
    if len(data) > expected:
        raise BackupFormatError(f"{len(data) - expected} unexpected bytes after the backup's end")
    body_end = offset + info.snapshot_bytes
    _check_trailer(bytes(data[body_end:]), hashlib.sha256(memoryview(data)[:body_end]).digest())
    return info, memoryview(data)[offset:body_end]


def verify_backup_stream(stream: SupportsRead) -> BackupInfo:
    """Verify a backup read from a binary file-like object without holding it in memory."""
    head = stream.read(len(MAGIC_PREFIX) + 12 + MAX_HEADER_BYTES)
    info, offset = parse_head(head)
    digest = hashlib.sha256(head[:offset])
    pending = head[offset:]  # snapshot (and maybe trailer) bytes already read
    remaining = info.snapshot_bytes
    while True:
        take = pending[:remaining]
        digest.update(take)
        remaining -= len(take)
        pending = pending[len(take) :]
        if remaining == 0:
            break
        pending = stream.read(min(_READ_CHUNK, remaining))
        if not pending:
            raise BackupFormatError(f"truncated backup: the snapshot ends {remaining} bytes early")
    trailer = pending + stream.read(TRAILER_SIZE + 1 - len(pending))
    if len(trailer) > TRAILER_SIZE:
        raise BackupFormatError("unexpected bytes after the backup's end")
    _check_trailer(trailer, digest.digest())
    return info


def _check_trailer(trailer: bytes, digest: bytes) -> None:
    if len(trailer) < TRAILER_SIZE:
        raise BackupFormatError("truncated backup: the checksum line is missing or cut short")
    if not trailer.startswith(TRAILER_PREFIX) or not trailer.endswith(b"\n"):
        raise BackupFormatError("malformed backup: no checksum line at the end")
    if trailer != backup_trailer(digest):
        raise BackupFormatError("backup checksum mismatch: the file is corrupt")
