"""The ``hardstate`` file: the current term and vote, replaced atomically on every change.

Rule: the file is never edited in place. A new version is written to ``hardstate.tmp``,
fsynced, renamed over ``hardstate`` and the directory fsynced (``fsio.atomic_write``), so a
crash leaves either the old or the new state, never a mix. Format (little-endian):

    magic b"RCHS" | version u16 | reserved u16 | payload length u32 | crc32 u32 | payload
    payload = msgpack [term, voted_for]

Since the rename is atomic, any damage found later is corruption, not a torn write.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from raftcache.storage.base import StorageCorruptError, StorageFormatError
from raftcache.storage.codec import pack, unpack

HARDSTATE_NAME = "hardstate"
MAGIC = b"RCHS"
VERSION = 1
_HEADER = struct.Struct("<4sHHII")


def encode_hard_state(term: int, voted_for: str | None) -> bytes:
    payload = pack([term, voted_for])
    return _HEADER.pack(MAGIC, VERSION, 0, len(payload), zlib.crc32(payload)) + payload


def decode_hard_state(data: bytes, path: str) -> tuple[int, str | None]:
    """(term, voted_for) from the file's bytes; corruption or an unknown version raises."""
    if len(data) < _HEADER.size:
        raise StorageCorruptError(f"{path} at offset 0: truncated header ({len(data)} bytes)")
    magic, version, _reserved, length, crc = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StorageCorruptError(f"{path} at offset 0: bad magic {magic!r}")
    if version != VERSION:
        raise StorageFormatError(f"{path}: unknown hard state format version {version}")
    payload = data[_HEADER.size :]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise StorageCorruptError(f"{path} at offset {_HEADER.size}: payload fails its CRC")
    try:
        obj: Any = unpack(payload)
    except ValueError as exc:
        raise StorageCorruptError(f"{path}: undecodable payload ({exc})") from exc
    if (
        not isinstance(obj, list)
        or len(obj) != 2
        or not isinstance(obj[0], int)
        or not (obj[1] is None or isinstance(obj[1], str))
    ):
        raise StorageCorruptError(f"{path}: payload is not [term, voted_for]")
    return obj[0], obj[1]
