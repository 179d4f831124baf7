"""The backup bundle: the backups of every data group of a sharded cluster, in one file.

Rule: a bundle is handled as one backup and verified whole before any of it is trusted — its
magic and format version, its manifest, its length, every group's part (SHA-256, then the part
verified as the backup file it is) and the checksum of the whole file — and
``BundleFormatError`` names the first problem found and the group it is in. Format 1::

    RAFTCACHE-BUNDLE/1\\n                          magic line, with the bundle format version
    {"format": 1, "groups": G,                    the manifest: one line of JSON
     "created_at": <unix seconds>,
     "parts": [{"group": "g0", "index": I, "term": T,
                "bytes": N, "sha256": "<64 hex>"}, …]}\\n
    <N bytes: g0's backup file>                   raftcache.cache.backup, exactly as
    …                                             ``snapshot save --group g0`` writes it
    <the backup file of g(G-1)>
    \\nsha256:<64 hex digits>\\n                    SHA-256 of every byte before this line

The parts are every data group's, ``g0`` … ``g(G-1)`` in order, each exactly once: a bundle is
restored into a cluster of the same ``G`` (the slot → group function depends on ``G`` alone).
A part keeps its own header and checksum, so each is self-verifying and can be cut out and
restored alone; the manifest repeats its index, term, size and SHA-256 so a damaged part is
named before it is parsed, and the trailer covers the manifest too. Each part is consistent at
its own group's log index: a bundle is not one cluster-wide point in time.

Pure: no clock, no I/O beyond the file-like objects handed in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from raftcache.cache.backup import (
    TRAILER_SIZE,
    BackupFormatError,
    BackupInfo,
    backup_trailer,
    read_json_head,
    verify_backup,
)
from raftcache.cache.snapshot import SupportsRead
from raftcache.slots import MAX_GROUPS

BUNDLE_FORMAT = 1
BUNDLE_MAGIC_PREFIX = b"RAFTCACHE-BUNDLE/"
BUNDLE_MAGIC = BUNDLE_MAGIC_PREFIX + b"%d\n" % BUNDLE_FORMAT
#: A manifest line is at most this long (about 150 bytes a group, for up to 16384 groups).
MAX_MANIFEST_BYTES = 4 << 20
_COPY_CHUNK = 1 << 20


class BundleFormatError(BackupFormatError):
    """The bytes are not a bundle this version can restore; the message says why."""


class SupportsWrite(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True, slots=True)
class BundlePart:
    """One group's entry in the manifest: its backup's log position, size and SHA-256."""

    group: str
    index: int
    term: int
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "index": self.index,
            "term": self.term,
            "bytes": self.size,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """The manifest of a bundle (see the module docstring)."""

    created_at: float
    parts: tuple[BundlePart, ...]

    @property
    def groups(self) -> int:
        return len(self.parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": BUNDLE_FORMAT,
            "groups": self.groups,
            "created_at": self.created_at,
            "parts": [p.to_json() for p in self.parts],
        }


def part_group(number: int) -> str:
    """The id of the ``number``-th data group, as parts and the ``?group=`` parameter name it."""
    return f"g{number}"


def is_bundle(data: bytes) -> bool:
    """Whether ``data`` (the start of a file) claims to be a bundle, of any format."""
    return data.startswith(BUNDLE_MAGIC_PREFIX)


def bundle_head(info: BundleInfo) -> bytes:
    """The magic and manifest lines of a bundle of ``info``."""
    for number, part in enumerate(info.parts):
        if part.group != part_group(number):
            raise ValueError(f"part {number} is {part.group!r}, not {part_group(number)!r}")
    line = json.dumps(info.to_json(), separators=(",", ":"), sort_keys=True).encode()
    return BUNDLE_MAGIC + line + b"\n"


def write_bundle(out: SupportsWrite, info: BundleInfo, parts: Sequence[SupportsRead]) -> str:
    """Write the bundle of ``info`` to ``out``, each part copied from its stream in turn; the
    SHA-256 (hex) of the whole file. The parts are not checked here: verify the result."""
    if len(parts) != info.groups:
        raise ValueError(f"{len(parts)} parts for a manifest of {info.groups}")
    head = bundle_head(info)
    digest = hashlib.sha256(head)
    out.write(head)
    for stream in parts:
        while chunk := stream.read(_COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    trailer = backup_trailer(digest.digest())
    digest.update(trailer)
    out.write(trailer)
    return digest.hexdigest()


def encode_bundle(created_at: float, backups: Sequence[bytes]) -> bytes:
    """The bundle of ``backups`` (every group's backup file, ``g0`` first), in memory."""
    parts = []
    for number, data in enumerate(backups):
        backup, _ = verify_backup(data)
        sha = hashlib.sha256(data).hexdigest()
        parts.append(BundlePart(part_group(number), backup.index, backup.term, len(data), sha))
    head = bundle_head(BundleInfo(created_at, tuple(parts)))
    body = head + b"".join(backups)
    return body + backup_trailer(hashlib.sha256(body).digest())


def parse_manifest(data: bytes) -> tuple[BundleInfo, int]:
    """Parse the magic and manifest lines at the start of ``data``; the manifest and the
    offset of the first part. Raises ``BundleFormatError``."""
    raw, offset = read_json_head(
        data,
        BUNDLE_MAGIC_PREFIX,
        BUNDLE_FORMAT,
        "bundle",
        "manifest",
        MAX_MANIFEST_BYTES,
        BundleFormatError,
    )
    return _manifest_from_json(raw), offset


def _manifest_from_json(raw: dict[str, Any]) -> BundleInfo:
    groups, created_at, parts = raw.get("groups"), raw.get("created_at"), raw.get("parts")
    if type(groups) is not int or not 1 <= groups <= MAX_GROUPS:
        raise BundleFormatError(f"bundle manifest field 'groups' must be in 1..{MAX_GROUPS}")
    if not isinstance(created_at, int | float) or isinstance(created_at, bool):
        raise BundleFormatError("bundle manifest field 'created_at' is malformed")
    if not isinstance(parts, list):
        raise BundleFormatError("bundle manifest field 'parts' must be a list")
    found = [_part_from_json(p) for p in parts]
    names = [p.group for p in found]
    expected = [part_group(n) for n in range(groups)]
    if names != expected:
        missing = [g for g in expected if g not in names]
        if missing:
            raise BundleFormatError(
                f"the bundle of {groups} groups is missing group {', '.join(missing)}"
            )
        raise BundleFormatError(
            f"the bundle's parts must be the groups {_span(expected)} once each, in order; "
            f"it lists {', '.join(names)}"
        )
    return BundleInfo(float(created_at), tuple(found))


def _span(groups: Sequence[str]) -> str:
    return groups[0] if len(groups) == 1 else f"{groups[0]} … {groups[-1]}"


def _part_from_json(raw: Any) -> BundlePart:
    if not isinstance(raw, dict):
        raise BundleFormatError("malformed bundle manifest (a part is not a JSON object)")
    group, sha = raw.get("group"), raw.get("sha256")
    if not isinstance(group, str):
        raise BundleFormatError("malformed bundle manifest (a part names no group)")
    ints: dict[str, int] = {}
    for name in ("index", "term", "bytes"):
        value = raw.get(name)
        if type(value) is not int or value < 0:
            raise BundleFormatError(
                f"bundle manifest: group {group}'s field {name!r} must be an integer >= 0"
            )
        ints[name] = value
    if not isinstance(sha, str) or len(sha) != 64 or sha.strip("0123456789abcdef"):
        raise BundleFormatError(f"bundle manifest: group {group}'s 'sha256' is malformed")
    return BundlePart(group, ints["index"], ints["term"], ints["bytes"], sha)


@dataclass(frozen=True, slots=True)
class VerifiedPart:
    """A part of a verified bundle: its manifest entry, its backup's header, the backup file
    and (a view of) its cache snapshot."""

    part: BundlePart
    backup: BackupInfo
    data: bytes
    snapshot: memoryview


def verify_bundle(data: bytes) -> tuple[BundleInfo, list[VerifiedPart]]:
    """Verify a whole bundle held in memory; its manifest and every group's verified part.

    Raises ``BundleFormatError`` naming the problem: not a bundle, an unsupported format, a
    malformed manifest or one missing a group, a truncated file, trailing bytes, a part whose
    checksum or header does not match the manifest (naming its group), or a checksum mismatch
    of the whole file.
    """
    info, offset = parse_manifest(data)
    expected = offset + sum(p.size for p in info.parts) + TRAILER_SIZE
    if len(data) < expected:
        raise BundleFormatError(
            f"truncated bundle: {len(data)} bytes, the manifest announces {expected}"
        )
    if len(data) > expected:
        raise BundleFormatError(f"{len(data) - expected} unexpected bytes after the bundle's end")
    verified: list[VerifiedPart] = []
    for part in info.parts:
        piece = data[offset : offset + part.size]
        offset += part.size
        if hashlib.sha256(piece).hexdigest() != part.sha256:
            raise BundleFormatError(f"group {part.group}'s backup checksum mismatch: corrupt")
        try:
            backup, snapshot = verify_backup(piece)
        except BackupFormatError as exc:
            raise BundleFormatError(f"group {part.group}'s backup: {exc}") from None
        if (backup.index, backup.term) != (part.index, part.term):
            raise BundleFormatError(
                f"group {part.group}'s backup is of index {backup.index} (term {backup.term}); "
                f"the manifest says index {part.index} (term {part.term})"
            )
        verified.append(VerifiedPart(part, backup, piece, snapshot))
    body_end = len(data) - TRAILER_SIZE
    if data[body_end:] != backup_trailer(hashlib.sha256(memoryview(data)[:body_end]).digest()):
        raise BundleFormatError("bundle checksum mismatch: the file is corrupt")
    return info, verified
