"""The segmented, append-only log of FileStorage: ``log/<first index>-<salt>.seg`` files.

A segment's name is its first index (20 digits), a dash and its **salt** (16 hex digits): a
random 64-bit number chosen when the segment is created and mixed into the CRC of every record
in it (``records``), so that only records this writer wrote pass their CRC — a record-shaped
string inside a client's value does not. The name is written once (created with ``O_EXCL``,
made durable by the directory fsync of the next ``sync``, never renamed), so no damage to the
file's data can lose the salt. Segments named ``<first index>.seg`` (no salt; written before
the salt existed) are still read and appended to, with the plain CRC and the rules below (so a
forged record in a torn value can still stop the node there, until they are rotated away); new
segments always get a salt.

Rules, each there to keep recovery unambiguous:

* Only the last segment may hold unsynced data. Rotation (at ``segment_size``) waits until the
  last segment is fully synced, so a crash can tear only the tail of the last segment; damage
  anywhere else is corruption.
* One ``pwrite`` per ``append`` batch; one fsync of the last segment (plus the directory if a
  segment was created) per ``sync`` — group commit.
* Discarding a conflicting suffix unlinks later segments newest first, each unlink made durable
  before the next, then truncates and fsyncs the segment that keeps a prefix: a crash leaves a
  prefix of the old log, never a hole and never stale records after new ones.
* Compaction after a snapshot at (L, T): if the log holds L with term T, whole segments ending
  at or before L are unlinked and entries ≤ L left in the first kept segment are skipped
  logically (the snapshot's last_index is the log's start). Otherwise the whole log goes,
  newest segment first. ``recover`` finishes a compaction a crash interrupted: a segment whose
  successor starts at or before L+1 holds only entries the snapshot covers.
* Every record carries its sync boundary, ``batch_start``: the size of its segment when the
  last fsync of it returned (0 in a new segment; kept in ``Segment.synced``). Everything before
  it was durable when the record was written, so one intact record proves that much of the file
  was synced — at no cost in fsyncs or writes (see ``records``).
* Recovery of the last segment, given its first invalid record at offset D and B = the largest
  ``batch_start`` of any intact record after D (records before D cannot exceed D; "intact"
  includes the salted CRC, so a client cannot plant one):
  D < B is damage to synced data → ``StorageCorruptError`` naming the file and D. D ≥ B is a torn
  *unsynced* tail — after a power cut the pages of an unsynced write reach the disk in any
  order, so intact records may follow the damage — truncated at D (dropping those records, all
  written after the last *proven* sync), with a WARNING giving the offset, the bytes and the
  intact records dropped.
* Residual ambiguity (inherent with one fsync per batch and no extra write): only the *next*
  batch's records prove a batch synced. If damage (bit rot, not a torn write: a synced batch's
  bytes are the same in every version of a page it shares with the next batch) hits the last
  synced batch and nothing intact of a later batch survives, it looks exactly like a torn write
  of that batch (D ≥ B): it is truncated with the same WARNING, and this node forgets entries
  it may have acknowledged, as if its disk had lost them (docs/storage.md says what that
  risks). Refusing instead would stop the node on every ordinary torn write. (The v1 rule had
  the same blind spot for the final record.)
* Version-1 records (no ``batch_start``) keep the v1 rule: an invalid record followed by an
  intact v1 record is corruption — where a v1 record can be at all: in an unsalted segment,
  before any v2 record (after one, or in a salted segment, v1-shaped bytes never count: the new
  writer writes only v2). Non-last segments were fully synced before rotation, so any
  damage in them is corruption; so are a hole between segments and a log that does not join
  the snapshot.
* Recovery makes what it returns durable before anyone acts on it: it fsyncs the last segment
  (after truncating a torn tail) and ``log/`` once. A previous process may have died before its
  sync, leaving entries only in the page cache; this also lets ``Segment.synced`` start at the
  recovered size. Startup cost: two fsyncs; the write path is unchanged (one per ``sync``).
* With ``fsync=False`` the boundary still moves at each ``sync`` (a claim nothing backs: such a
  storage promises nothing across a power cut, and may then refuse to start, as before).
"""

from __future__ import annotations

import bisect
import logging
import os
import re
import secrets
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

from raftcache.protocol.messages import LogEntry
from raftcache.storage.base import DiskFullError, SnapshotMeta, StorageCorruptError
from raftcache.storage.base import StorageFailedError as Failed
from raftcache.storage.fsio import FileOps, read_file, sync_dir, sync_file, write_all, write_error
from raftcache.storage.records import (
    SALT_BITS,
    ScanResult,
    crc_seed,
    encode_batch,
    scan,
    scan_after,
)

log = logging.getLogger(__name__)

# <first index>-<salt>.seg; <first index>.seg (no salt) from before salts, still read.
_NAME = re.compile(r"^(\d{20})(?:-([0-9a-f]{16}))?\.seg$")


def segment_name(start: int, salt: int | None) -> str:
    """The file name of the segment starting at ``start`` (``salt`` None: an old, unsalted one)."""
    if salt is None:
        return f"{start:020d}.seg"
    return f"{start:020d}-{salt:016x}.seg"


def parse_segment_name(name: str) -> tuple[int, int | None] | None:
    """(first index, salt or None) of a segment file name; None if ``name`` is not one."""
    m = _NAME.match(name)
    if m is None:
        return None
    salt = m.group(2)
    return int(m.group(1)), None if salt is None else int(salt, 16)


def new_salt() -> int:
    """A fresh segment's salt: unpredictable to clients (``secrets``), so they cannot compute
    the CRC of a record they would plant in a value."""
    return secrets.randbits(SALT_BITS)


@dataclass(slots=True)
class Segment:
    """One segment file: its first index, its salt (None: an old unsalted segment) and the CRC
    seed derived from it, the offset and term of every record in it, its size, and ``synced``:
    its size when an fsync of it last returned (the ``batch_start`` of records written now; see
    the module rules)."""

    start: int
    path: str
    salt: int | None
    offsets: array[int] = field(default_factory=lambda: array("q"))
    terms: array[int] = field(default_factory=lambda: array("q"))
    size: int = 0
    synced: int = 0
    seed: int = field(init=False)

    def __post_init__(self) -> None:
        self.seed = crc_seed(self.salt)

    @property
    def end(self) -> int:
        """Index of the last record (start - 1 when empty)."""
        return self.start + len(self.offsets) - 1


class SegmentLog:
    """The log part of FileStorage. Callers validate indices (``checks.check_batch``)."""

    def __init__(self, directory: str, ops: FileOps, *, fsync: bool, segment_size: int) -> None:
        if segment_size <= 0:
            raise ValueError("segment_size must be positive")
        self._dir = directory
        self._ops = ops
        self._fsync = fsync
        self._segment_size = segment_size
        self._segments: list[Segment] = []
        self._fd: int | None = None  # write fd of self._segments[-1], opened on demand
        self._dirty = False  # the last segment holds data not yet fsynced
        self._dir_dirty = False  # a segment was created since the last directory fsync
        self._snapshot_index = 0
        self._snapshot_term = 0

    # -- queries -------------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self._snapshot_index + 1

    @property
    def last_index(self) -> int:
        end = self._segments[-1].end if self._segments else 0
        return max(end, self._snapshot_index)

    @property
    def segment_paths(self) -> list[str]:
        return [s.path for s in self._segments]

    def term_at(self, index: int) -> int | None:
        """Term of ``index`` if the log (or the snapshot, for its last index) knows it."""
        if index == self._snapshot_index:
            return self._snapshot_term
        if index < self.first_index or index > self.last_index:
            return None
        return self._physical_term(index)

    def _physical_term(self, index: int) -> int | None:
        k = bisect.bisect_right(self._segments, index, key=lambda s: s.start) - 1
        if k < 0 or index > self._segments[k].end:
            return None
        seg = self._segments[k]
        return seg.terms[index - seg.start]

    # -- recovery ------------------------------------------------------------------------------

    def recover(self, snapshot: SnapshotMeta | None) -> list[LogEntry]:
        """Rebuild the index from disk and return the entries after the snapshot."""
        self.close()
        self._segments = []
        self._dirty = self._dir_dirty = False
        last, term = (snapshot.last_index, snapshot.last_term) if snapshot else (0, 0)
        self._snapshot_index, self._snapshot_term = last, term
        entries: list[LogEntry] = []
        names = self._drop_obsolete(self._list_segments(), last)
        for k, (start, salt) in enumerate(names):
            entries.extend(self._recover_segment(start, salt, is_last=k == len(names) - 1))
        if self._segments:
            # The last segment's name may never have been made durable (a process that died
            # before its first sync): the entries returned here must not vanish later.
            self._dir_dirty = True
        first = self._segments[0].start if self._segments else last + 1
        if first > last + 1:
            what = f"the snapshot ends at {last}" if last else "there is no snapshot"
            raise StorageCorruptError(
                f"{self._segments[0].path} at offset 0: the log starts at index {first} but "
                f"{what}: entries {last + 1}..{first - 1} are missing"
            )
        if first <= last:  # a compaction was interrupted by a crash: finish it
            if self._physical_term(last) == term:
                self._unlink_oldest(sum(1 for s in self._segments if s.end <= last))
                entries = entries[last + 1 - first :]
            else:
                self._unlink_newest_first(len(self._segments))
                entries = []
        self._sync_dir_if_dirty()
        return entries

    def _list_segments(self) -> list[tuple[int, int | None]]:
        """(first index, salt) of every segment file, by first index. (Two files with the same
        first index, which no sequence of operations leaves, fail the join check.)"""
        found = []
        for name in os.listdir(self._dir):
            parsed = parse_segment_name(name)
            if parsed is not None:
                found.append(parsed)
        return sorted(found, key=lambda p: (p[0], -1 if p[1] is None else p[1]))

    def _drop_obsolete(
        self, names: list[tuple[int, int | None]], last: int
    ) -> list[tuple[int, int | None]]:
        """Unlink segments holding only snapshot-covered entries (judged by names alone, so
        damage inside them, which no longer matters, cannot stop recovery)."""
        keep = []
        for k, (start, salt) in enumerate(names):
            if last and k + 1 < len(names) and names[k + 1][0] <= last + 1:
                self._unlink(os.path.join(self._dir, segment_name(start, salt)))
                self._dir_dirty = True
            else:
                keep.append((start, salt))
        return keep

    def _recover_segment(self, start: int, salt: int | None, *, is_last: bool) -> list[LogEntry]:
        path = os.path.join(self._dir, segment_name(start, salt))
        if self._segments and start != self._segments[-1].end + 1:
            prev = self._segments[-1]
            raise StorageCorruptError(
                f"{path} at offset 0: starts at index {start} but {prev.path} ends at "
                f"{prev.end}: the log has a hole or an overlap"
            )
        buf = read_file(path) or b""
        res = scan(buf, path, start, salt)
        if res.bad_offset is not None:
            self._judge_damage(path, buf, res, start, salt, is_last=is_last)  # raises unless torn
        if not res.entries:
            if not is_last:
                raise StorageCorruptError(f"{path} at offset 0: empty segment followed by others")
            self._unlink(path)
            self._dir_dirty = True
            return []
        seg = Segment(
            start, path, salt, array("q", res.offsets), array("q", (e.term for e in res.entries))
        )
        seg.size = seg.synced = res.valid_size
        self._segments.append(seg)
        if is_last:
            self._make_durable(seg, truncate=res.bad_offset is not None)
        return res.entries

    def _judge_damage(
        self, path: str, buf: bytes, res: ScanResult, start: int, salt: int | None, *, is_last: bool
    ) -> None:
        """Raise StorageCorruptError unless the damage at ``res.bad_offset`` is a torn unsynced
        tail of the last segment (module rules); if it is, log what will be dropped."""
        bad = res.bad_offset
        assert bad is not None
        where = f"{path} at offset {bad}: {res.reason}"
        if not is_last:
            raise StorageCorruptError(
                f"{where}, in a segment that is not the last (it was fully synced before the "
                "next one was started): the log is corrupt, refusing to start"
            )
        tail = scan_after(buf, bad, start + len(res.entries), salt, v1_ok=not res.has_v2)
        if tail.has_v1:
            first_v1 = next(r.offset for r in tail.records if r.batch_start is None)
            raise StorageCorruptError(
                f"{where}, an intact record follows at offset {first_v1} (version-1 records "
                "carry no sync boundary to tell a torn write from damage): the log is corrupt, "
                "refusing to start"
            )
        boundary, witness = tail.boundary()
        if bad < boundary:
            assert witness is not None
            raise StorageCorruptError(
                f"{where}, but the intact record at offset {witness.offset} was written after "
                f"this file was synced up to offset {boundary}: synced data is damaged, the log "
                "is corrupt, refusing to start"
            )
        dropped = (
            f", and {len(tail.records)} intact record(s) after it (indexes "
            f"{min(tail.indexes)}..{max(tail.indexes)})"
            if tail.records
            else ""
        )
        log.warning(
            "%s: torn unsynced tail at offset %d (%s): truncating %d bytes — the damaged record%s;"
            " this file is proven synced only up to offset %d, so the dropped data was written "
            "after the last proven sync",
            path,
            bad,
            res.reason,
            len(buf) - bad,
            dropped,
            boundary,
        )

    def _make_durable(self, seg: Segment, *, truncate: bool) -> None:
        """Cut the recovered last segment to its valid prefix if needed, and fsync it."""
        fd = self._open_fd()
        try:
            if truncate:
                self._ops.truncate(fd, seg.size)
        except OSError as exc:
            raise Failed(f"could not truncate the torn tail of {seg.path}: {exc}") from exc
        if self._fsync:
            sync_file(self._ops, fd, seg.path)

    # -- writes --------------------------------------------------------------------------------

    def append(self, entries: Sequence[LogEntry]) -> None:
        """Write one batch (already validated) with a single pwrite; discard a suffix first."""
        first = entries[0].index
        if first <= self.last_index:
            self._truncate_from(first)
        rotate = self._must_rotate()
        # Encoded before any file is touched (an oversized entry raises ValueError and changes
        # nothing); the batch goes to a new segment (durable size 0, a new salt) or after the
        # last one (its salt, or none if it is an old unsalted one).
        salt = new_salt() if rotate or not self._segments else None
        if salt is not None:
            data, rel = encode_batch(entries, 0, crc_seed(salt))
        else:
            data, rel = encode_batch(entries, self._segments[-1].synced, self._segments[-1].seed)
        created = self._prepare_segment(first, salt)
        seg, fd = self._segments[-1], self._fd
        assert fd is not None
        offset = seg.size
        try:
            write_all(self._ops, fd, data, offset, seg.path)
        except DiskFullError:
            self._undo_write(offset, created)
            raise
        seg.offsets.extend([offset + r for r in rel])
        seg.terms.extend([e.term for e in entries])
        seg.size = offset + len(data)
        self._dirty = True

    def sync(self) -> None:
        if self._dirty and self._fsync:
            assert self._fd is not None
            sync_file(self._ops, self._fd, self._segments[-1].path)
        self._dirty = False
        if self._segments:
            # Only after the fsync returned: records written from now on vouch for this size.
            self._segments[-1].synced = self._segments[-1].size
        self._sync_dir_if_dirty()

    def compact(self, meta: SnapshotMeta) -> None:
        """Drop what a snapshot at ``meta`` covers; call only once the snapshot is durable."""
        if self.term_at(meta.last_index) == meta.last_term:
            self._unlink_oldest(sum(1 for s in self._segments if s.end <= meta.last_index))
        else:
            self._unlink_newest_first(len(self._segments))
        self._snapshot_index, self._snapshot_term = meta.last_index, meta.last_term
        self._sync_dir_if_dirty()

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._ops.close(fd)

    def _must_rotate(self) -> bool:
        """The next batch starts a new segment: the last one is full *and* fully synced (only
        the last segment may hold unsynced data: module rule)."""
        if not self._segments:
            return False
        return self._segments[-1].size >= self._segment_size and not self._dirty

    def _prepare_segment(self, first: int, salt: int | None) -> bool:
        """Make sure the last segment can take a batch starting at ``first``: the last one, or
        (``salt`` given: rotation, or no segment yet) a new one with that salt; True if
        created."""
        assert first == self.last_index + 1, (first, self.last_index)
        if salt is None:
            self._open_fd()
            return False
        self.close()
        path = os.path.join(self._dir, segment_name(first, salt))
        try:
            fd = self._ops.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except OSError as exc:
            raise write_error(exc, path) from exc
        self._segments.append(Segment(first, path, salt))
        self._fd = fd
        self._dir_dirty = True
        return True

    def _undo_write(self, offset: int, created: bool) -> None:
        """After ENOSPC: remove the partial batch so the files match the index again."""
        seg = self._segments[-1]
        try:
            if created:
                self.close()
                self._ops.unlink(seg.path)
                self._segments.pop()
            else:
                assert self._fd is not None
                self._ops.truncate(self._fd, offset)
        except OSError as exc:
            raise Failed(f"could not remove a partial write from {seg.path}: {exc}") from exc

    def _truncate_from(self, index: int) -> None:
        """Discard entries ≥ ``index`` (a follower's conflicting suffix), durably."""
        self._unlink_newest_first(sum(1 for s in self._segments if s.start >= index))
        if not self._segments or self._segments[-1].end < index:
            return
        seg = self._segments[-1]
        k = index - seg.start
        offset = seg.offsets[k]
        fd = self._open_fd()
        try:
            self._ops.truncate(fd, offset)
        except OSError as exc:
            raise Failed(f"could not truncate {seg.path}: {exc}") from exc
        if self._fsync:
            # Durable before new records go in: a crash must never show new records followed
            # by leftovers of the discarded suffix. (The directory too, if this segment is new.)
            sync_file(self._ops, fd, seg.path)
            self._sync_dir_if_dirty()
        self._dirty = not self._fsync
        del seg.offsets[k:]
        del seg.terms[k:]
        seg.size = offset
        # The fsync above made everything up to ``offset`` durable (the whole file is flushed).
        seg.synced = offset if self._fsync else min(seg.synced, offset)

    def _unlink_newest_first(self, count: int) -> None:
        for _ in range(count):
            self.close()  # the fd, if any, belongs to the last segment
            self._unlink(self._segments.pop().path)
            self._dirty = False  # only the last segment can be dirty, and it is gone
            if self._fsync:
                sync_dir(self._ops, self._dir)  # one at a time: a crash leaves a prefix

    def _unlink_oldest(self, count: int) -> None:
        if count == len(self._segments):
            self.close()
            self._dirty = False
        for seg in self._segments[:count]:
            self._unlink(seg.path)
        del self._segments[:count]
        self._dir_dirty = self._dir_dirty or count > 0

    def _unlink(self, path: str) -> None:
        try:
            self._ops.unlink(path)
        except OSError as exc:
            raise Failed(f"could not remove {path}: {exc}") from exc

    def _open_fd(self) -> int:
        if self._fd is None:
            path = self._segments[-1].path
            try:
                self._fd = self._ops.open(path, os.O_WRONLY)
            except OSError as exc:
                raise write_error(exc, path) from exc
        return self._fd

    def _sync_dir_if_dirty(self) -> None:
        if self._dir_dirty and self._fsync:
            sync_dir(self._ops, self._dir)
        self._dir_dirty = False
