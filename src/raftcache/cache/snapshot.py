"""The snapshot format of the cache state machine, and its streaming encoder and decoder.

Rule: a snapshot is a msgpack map whose FIRST key is ``format``; the decoder refuses any
format it does not know rather than guess. Format 1::

    {"format": 1,
     "index": <log index of the last applied command>,
     "counters": {"evictions", "expirations", "bytes_peak", "sessions_dropped"},
     "sessions": [[client_id, last_active, [[seq, result], ...]], ...],   # activity order
     "entries": [run, run, ...]}                                         # LRU order

``counters`` also holds ``digest``, the digest of the entries (``raftcache.cache.digest``;
absent in snapshots of older releases), and a snapshot of a cluster with divergence alarms has
``"alarms": [[node, reason, index, raised_at], ...]`` (``raftcache.cache.alarms``) before
``"entries"``, and one whose script table (command format 4) is not empty has ``"scripts":
[body, ...]`` (``raftcache.cache.scripts``), in the table's order. Plus, only while a
replicated restore is being staged, ``"restore": [...]`` before ``"entries"``
(``raftcache.cache.restore``; a reader ignores fields it does not use, and a snapshot without a
staged restore is byte for byte what it always was).

A run is a flat array ``key, record, key, record, ...`` of at most ``RUN_ENTRIES`` entries and
(unless one entry alone is larger) ``RUN_BYTES`` of records. A record is the store's own
``bytes`` (``raftcache.cache.entries``: 16-byte header of version and expires_at, then the
value): restoring adopts those objects as they are, without re-encoding.

Why runs: the encoder runs in a worker thread and every msgpack call holds the GIL, so bounded
calls keep the event loop responsive; and both sides can stream — the encoder hands out chunks
as it goes (``write_snapshot``) and the decoder reads run by run from a file-like object
(``read_snapshot``), so neither needs the whole snapshot in memory as one ``bytes``.

Two replicas in the same state produce byte-identical snapshots (dict orders are part of the
state; floats are packed as float64).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import msgpack  # type: ignore[import-untyped, unused-ignore]

from raftcache.cache.entries import HEADER_SIZE

FORMAT_VERSION = 1
RUN_ENTRIES = 1024
RUN_BYTES = 1 << 20
_MAX_BUFFER = (1 << 31) - 1  # one run holds at least one entry, whatever its size


class SnapshotFormatError(ValueError):
    """The bytes are not a cache snapshot this version can restore."""


class SupportsRead(Protocol):
    """A binary file-like object."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(slots=True)
class SnapshotState:
    """Everything a snapshot holds, decoded (or captured, before encoding)."""

    index: int
    counters: dict[str, int]
    sessions: list[Any]
    records: dict[str, bytes]
    restore: list[Any] | None = None
    alarms: list[Any] | None = None
    scripts: list[Any] | None = None


def write_snapshot(state: SnapshotState, write: Callable[[bytes], object]) -> None:
    """Encode ``state`` as a series of ``write(chunk)`` calls. Safe in a worker thread if
    nothing else touches ``state`` (the machine hands over copies)."""
    packer = msgpack.Packer(use_bin_type=True)
    fields: list[tuple[str, Any]] = [
        ("format", FORMAT_VERSION),
        ("index", state.index),
        ("counters", state.counters),
        ("sessions", state.sessions),
    ]
    if state.restore is not None:
        fields.append(("restore", state.restore))
    if state.alarms:
        fields.append(("alarms", state.alarms))
    if state.scripts:
        fields.append(("scripts", state.scripts))
    write(packer.pack_map_header(len(fields) + 1))
    for name, value in fields:
        write(packer.pack(name) + packer.pack(value))
    runs = list(_runs(state.records))  # (start, stop) offsets: small, and gives the count
    write(packer.pack("entries") + packer.pack_array_header(len(runs)))
    items = iter(state.records.items())
    for start, stop in runs:
        run: list[Any] = []
        for _ in range(stop - start):
            run.extend(next(items))
        write(packer.pack(run))


def _runs(records: dict[str, bytes]) -> list[tuple[int, int]]:
    bounds: list[tuple[int, int]] = []
    start = size = 0
    for position, record in enumerate(records.values()):
        if position > start and (position - start >= RUN_ENTRIES or size >= RUN_BYTES):
            bounds.append((start, position))
            start, size = position, 0
        size += len(record)
    if len(records) > start:
        bounds.append((start, len(records)))
    return bounds


def encode_snapshot(state: SnapshotState) -> bytes:
    """The snapshot of ``state`` as one ``bytes``."""
    out = io.BytesIO()
    write_snapshot(state, out.write)
    # getvalue() hands over the buffer without a copy when nothing else references it.
    return out.getvalue()


def read_snapshot(stream: SupportsRead) -> SnapshotState:
    """Decode a snapshot from a binary stream, run by run; raises ``SnapshotFormatError`` on
    an unknown format or a malformed body."""
    unpacker = msgpack.Unpacker(
        stream, raw=False, use_list=True, strict_map_key=True, max_buffer_size=_MAX_BUFFER
    )
    try:
        fields = unpacker.read_map_header()
        if fields < 1 or unpacker.unpack() != "format":
            raise SnapshotFormatError("not a cache snapshot (format must come first)")
        version = unpacker.unpack()
        if version != FORMAT_VERSION:
            raise SnapshotFormatError(
                f"cache snapshot format {version!r} is not supported "
                f"(this version reads format {FORMAT_VERSION})"
            )
        body: dict[str, Any] = {}
        records: dict[str, bytes] = {}
        for _ in range(fields - 1):
            name = unpacker.unpack()
            if name == "entries":
                for _ in range(unpacker.read_array_header()):
                    pairs = iter(unpacker.unpack())
                    records.update(zip(pairs, pairs, strict=True))
            else:
                body[name] = unpacker.unpack()
        state = SnapshotState(
            int(body["index"]),
            {str(k): int(v) for k, v in body["counters"].items()},
            list(body["sessions"]),
            records,
            body.get("restore"),
            body.get("alarms"),
            body.get("scripts"),
        )
        _expect_end(unpacker)
    except SnapshotFormatError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise SnapshotFormatError(f"malformed cache snapshot: {exc!r}") from None
    _check_records(records)
    return state


def _expect_end(unpacker: Any) -> None:
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return
    raise SnapshotFormatError("trailing data after the cache snapshot")


def decode_snapshot(data: bytes) -> SnapshotState:
    """``read_snapshot`` over bytes held in memory."""
    return read_snapshot(io.BytesIO(data))


def _check_records(records: dict[str, bytes]) -> None:
    for key, record in records.items():
        if not isinstance(key, str) or not isinstance(record, bytes):
            raise SnapshotFormatError(f"malformed cache snapshot entry {key!r}")
        if len(record) < HEADER_SIZE:
            raise SnapshotFormatError(f"truncated record for key {key!r}")
