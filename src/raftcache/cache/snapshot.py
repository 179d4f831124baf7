"""The snapshot format of the cache state machine, and its (thread-friendly) encoder.

Rule: a snapshot is a msgpack map carrying a ``format`` number; ``decode_snapshot`` refuses any
format it does not know rather than guess. Format 1::

    {"format": 1,
     "index": <log index of the last applied command>,
     "counters": {"evictions", "expirations", "bytes_peak", "sessions_dropped"},
     "sessions": [[client_id, last_active, [[seq, result], ...]], ...],   # activity order
     "entries": [run, run, ...]}                                         # LRU order

A run is a flat array ``key, record, key, record, ...`` of up to ``RUN_LENGTH`` entries, and a
record is the store's own ``bytes`` (``raftcache.cache.entries``: 16-byte header of version and
expires_at, then the value): restoring adopts those objects as they are, without re-encoding.
Runs exist so that the encoder packs a bounded slice per C call: it runs in a worker thread,
and each call holds the GIL, so short calls keep the event loop responsive.

Two replicas in the same state produce byte-identical snapshots (dict orders are part of the
state; floats are packed as float64).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, islice
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from raftcache.cache.entries import HEADER_SIZE

FORMAT_VERSION = 1
RUN_LENGTH = 1024


class SnapshotFormatError(ValueError):
    """The bytes are not a cache snapshot this version can restore."""


@dataclass(slots=True)
class SnapshotState:
    """Everything a snapshot holds, decoded (or captured, before encoding)."""

    index: int
    counters: dict[str, int]
    sessions: list[Any]
    records: dict[str, bytes]


def encode_snapshot(state: SnapshotState) -> bytes:
    """The snapshot bytes of ``state``; safe to run in a worker thread if nothing else touches
    ``state`` (the machine hands over copies)."""
    out = io.BytesIO()
    packer = msgpack.Packer(use_bin_type=True)
    out.write(packer.pack_map_header(5))
    for name, value in (
        ("format", FORMAT_VERSION),
        ("index", state.index),
        ("counters", state.counters),
        ("sessions", state.sessions),
    ):
        out.write(packer.pack(name))
        out.write(packer.pack(value))
    out.write(packer.pack("entries"))
    records = state.records
    out.write(packer.pack_array_header(-(-len(records) // RUN_LENGTH)))
    items = iter(records.items())
    while run := list(chain.from_iterable(islice(items, RUN_LENGTH))):
        out.write(packer.pack(run))
    # getvalue() hands over the buffer without a copy when nothing else references it.
    return out.getvalue()


def decode_snapshot(data: bytes) -> SnapshotState:
    """Parse snapshot bytes; raises ``SnapshotFormatError`` on an unknown format or a
    malformed body."""
    try:
        snap = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise SnapshotFormatError(f"undecodable cache snapshot: {exc}") from None
    if not isinstance(snap, dict) or "format" not in snap:
        raise SnapshotFormatError("not a cache snapshot (no format field)")
    if snap["format"] != FORMAT_VERSION:
        raise SnapshotFormatError(
            f"cache snapshot format {snap['format']!r} is not supported "
            f"(this version reads format {FORMAT_VERSION})"
        )
    try:
        records: dict[str, bytes] = {}
        for run in snap["entries"]:
            pairs = iter(run)
            records.update(zip(pairs, pairs, strict=True))
        counters = {str(k): int(v) for k, v in snap["counters"].items()}
        state = SnapshotState(int(snap["index"]), counters, list(snap["sessions"]), records)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotFormatError(f"malformed cache snapshot: {exc!r}") from None
    _check_records(records)
    return state


def _check_records(records: dict[str, bytes]) -> None:
    for key, record in records.items():
        if not isinstance(key, str) or not isinstance(record, bytes):
            raise SnapshotFormatError(f"malformed cache snapshot entry {key!r}")
        if len(record) < HEADER_SIZE:
            raise SnapshotFormatError(f"truncated record for key {key!r}")


def deferred_encoder(state: SnapshotState) -> Callable[[], bytes]:
    """A zero-argument function producing the snapshot of ``state`` (for a worker thread)."""

    def encode() -> bytes:
        return encode_snapshot(state)

    return encode
