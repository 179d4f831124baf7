"""The replicated restore inside the state machine: staging the chunks, then the atomic swap.

Rule: everything here is replicated state driven by the log alone (see ``restore_commands``):
staged chunks live in the machine — and in its snapshots, so a replica that installs a snapshot
taken half-way through a restore still has them — until the commit swaps them in, an abort or a
new begin drops them, or the leader's housekeeping (EXPIRE) finds them idle for
``RESTORE_IDLE_S`` (a leader that died half-way leaves nothing behind for ever).

What a commit does to the cache (docs/operations.md, "Restore semantics"):
- every key of the cache is replaced by the backup's keys, in the backup's LRU order;
- each restored key's version becomes the commit's log index (like the keys of a batch), so a
  compare-and-set holding a version from before the restore cannot succeed on restored data;
- expiry times are absolute: a key that has expired by the commit's ``now`` is not restored;
  a key larger than ``max_bytes`` on its own is skipped; beyond ``max_keys``/``max_bytes`` the
  least recently used are evicted, as after any write;
- client sessions (exactly-once) and the statistics counters stay those of the running cluster:
  a write applied before the restore and retried after it is still answered from the session
  table, not applied again on top of the restored data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftcache.cache.entries import HEADER_SIZE, pack_record, record_header, record_is_hash
from raftcache.cache.restore_commands import (
    RestoreAbort,
    RestoreBegin,
    RestoreChunk,
    RestoreCommit,
)
from raftcache.cache.results import CommandError, ErrorCode

#: A staged restore with no new chunk for this long (by the leader's stamps) is dropped.
RESTORE_IDLE_S = 600.0


@dataclass(slots=True)
class Staged:
    """A restore being staged (replicated state)."""

    restore_id: int
    size: int
    sha256: str
    backup_index: int
    backup_term: int
    last_active: float
    next_seq: int = 0
    received: int = 0
    chunks: list[bytes] = field(default_factory=list)

    def to_wire(self) -> list[Any]:
        return [
            self.restore_id,
            self.size,
            self.sha256,
            self.backup_index,
            self.backup_term,
            self.last_active,
            self.next_seq,
            # A copy of the list (its bytes are immutable): a snapshot captures it on the loop
            # and encodes it later, while more chunks may be appended.
            list(self.chunks),
        ]

    @classmethod
    def from_wire(cls, wire: list[Any]) -> Staged:
        restore_id, size, sha, bi, bt, last_active, next_seq, chunks = wire
        if not isinstance(chunks, list) or not all(isinstance(c, bytes) for c in chunks):
            raise ValueError("malformed staged restore")
        staged = cls(int(restore_id), int(size), str(sha), int(bi), int(bt), float(last_active))
        staged.next_seq = int(next_seq)
        staged.chunks = chunks
        staged.received = sum(map(len, chunks))
        return staged


def _refused(message: str) -> CommandError:
    return CommandError(ErrorCode.INVALID_COMMAND, f"restore: {message}")


class RestoreStaging:
    """The staging area of at most one restore (see the module docstring)."""

    def __init__(self) -> None:
        self.staged: Staged | None = None

    @property
    def staged_bytes(self) -> int:
        return 0 if self.staged is None else self.staged.received

    def begin(self, index: int, cmd: RestoreBegin) -> int:
        """Stage a new restore (dropping any other); its id is ``index``."""
        self.staged = Staged(
            index, cmd.size, cmd.sha256, cmd.backup_index, cmd.backup_term, cmd.now
        )
        return index

    def _current(self, restore_id: int) -> Staged | CommandError:
        staged = self.staged
        if staged is None or staged.restore_id != restore_id:
            # Replaced by a newer restore, aborted, or dropped as idle.
            return _refused(f"restore {restore_id} is not in progress")
        return staged

    def chunk(self, cmd: RestoreChunk) -> int | CommandError:
        """Stage one chunk; returns the bytes staged so far."""
        staged = self._current(cmd.restore_id)
        if isinstance(staged, CommandError):
            return staged
        if cmd.seq != staged.next_seq:
            return _refused(f"chunk {cmd.seq} out of order (expected {staged.next_seq})")
        if staged.received + len(cmd.data) > staged.size:
            return _refused(f"chunks exceed the announced {staged.size} bytes")
        staged.chunks.append(cmd.data)
        staged.received += len(cmd.data)
        staged.next_seq += 1
        staged.last_active = cmd.now
        return staged.received

    def take(self, cmd: RestoreCommit) -> bytes | CommandError:
        """The complete, checksum-verified snapshot of the restore, unstaged; or why not."""
        staged = self._current(cmd.restore_id)
        if isinstance(staged, CommandError):
            return staged
        self.staged = None  # a failed commit leaves nothing staged either
        if staged.received != staged.size:
            return _refused(f"{staged.received} of {staged.size} bytes staged at commit")
        data = b"".join(staged.chunks)
        if hashlib.sha256(data).hexdigest() != staged.sha256:
            return _refused("checksum mismatch of the staged snapshot")
        return data

    def abort(self, cmd: RestoreAbort) -> bool:
        """Drop the restore if it is the one staged; True if it was."""
        if self.staged is not None and self.staged.restore_id == cmd.restore_id:
            self.staged = None
            return True
        return False

    def sweep(self, now: float) -> None:
        """Drop a staged restore idle for ``RESTORE_IDLE_S`` (run by EXPIRE)."""
        if self.staged is not None and now - self.staged.last_active >= RESTORE_IDLE_S:
            self.staged = None

    def to_wire(self) -> list[Any] | None:
        return None if self.staged is None else self.staged.to_wire()


def restamp(
    records: dict[str, bytes], version: int, now: float, fits: Callable[[str, int], bool]
) -> tuple[dict[str, bytes], int, int]:
    """The backup's records as the store will hold them: version ``version``, same expiry,
    LRU order kept; without the expired (at ``now``) and the ones that can never fit.
    Returns (records, expired count, too-large count)."""
    out: dict[str, bytes] = {}
    expired = too_large = 0
    for key, record in records.items():
        _, expires_at = record_header(record)
        if expires_at <= now:
            expired += 1
            continue
        value = record[HEADER_SIZE:]
        if not fits(key, len(value)):
            too_large += 1
            continue
        out[key] = pack_record(value, version, expires_at, record_is_hash(record))
    return out, expired, too_large
