"""The commands of a replicated restore, and their msgpack form in the Raft log.

Rule: a restore replaces the cache's contents with a backup's as ONE atomic step in the log, yet
a backup may be far larger than one log entry. So the leader proposes a sequence:

- ``restore.begin`` {size, sha256 of the snapshot, the backup's index and term} — its result is
  its own log index, which is the restore's id from then on (deterministic on every replica,
  and unique: nothing else can ever have that index). A begin drops any restore still staged;
- ``restore.chunk`` {id, seq, data} — staged in the replicated state, nothing visible changes;
- ``restore.commit`` {id} — checks size and checksum, decodes the snapshot and swaps it in,
  all within the apply of this one entry: the restore happens at the commit's index;
- ``restore.abort`` {id} — drops the staged data (a restore that failed half-way).

Wire keys: ``o`` the op, ``n`` the leader's now, ``id`` the restore id, ``sz`` size, ``h``
SHA-256 hex, ``bi``/``bt`` backup index/term, ``q`` chunk sequence number (from 0), ``d`` data.
These ops belong to command version 2 (``raftcache.cache.formats``): their entries carry
``"f": 2``, and ``Backups`` has the leader raise the cluster's format first, which it does only
once every node says it can apply them — an older node never meets one. A commit swaps in
whatever the backup holds, so it needs the version of its content too (``nv``, ``needs``:
4 with scripts, 5 with hashes): its entry carries that ``"f"``, and a build that cannot read
hashes fails stop on it instead of loading them as strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from raftcache.cache.checks import check_int, check_now
from raftcache.cache.errors import InvalidCommandError
from raftcache.vocabulary import INT64_MAX

#: The largest chunk the machine accepts; the leader proposes smaller ones (see backup_service).
MAX_CHUNK_BYTES = 4 * 1024 * 1024
MAX_RESTORE_BYTES = 1 << 40
RESTORE_OPS = frozenset({"restore.begin", "restore.chunk", "restore.commit", "restore.abort"})


@dataclass(frozen=True, slots=True)
class RestoreBegin:
    """Start staging a restore of ``size`` snapshot bytes whose SHA-256 is ``sha256``."""

    now: float
    size: int
    sha256: str
    backup_index: int = 0
    backup_term: int = 0

    def __post_init__(self) -> None:
        check_now(self.now)
        check_int(self.size, "size", 0, MAX_RESTORE_BYTES)
        if not isinstance(self.sha256, str) or len(self.sha256) != 64:
            raise InvalidCommandError("sha256 must be 64 hex digits")
        try:
            bytes.fromhex(self.sha256)
        except ValueError:
            raise InvalidCommandError("sha256 must be 64 hex digits") from None
        check_int(self.backup_index, "backup_index", 0, INT64_MAX)
        check_int(self.backup_term, "backup_term", 0, INT64_MAX)


@dataclass(frozen=True, slots=True)
class RestoreChunk:
    """The ``seq``-th piece of the snapshot of restore ``restore_id``."""

    now: float
    restore_id: int
    seq: int
    data: bytes

    def __post_init__(self) -> None:
        check_now(self.now)
        check_int(self.restore_id, "restore id", 0, INT64_MAX)
        check_int(self.seq, "seq", 0, INT64_MAX)
        if not isinstance(self.data, bytes) or len(self.data) > MAX_CHUNK_BYTES:
            raise InvalidCommandError(f"chunk data must be at most {MAX_CHUNK_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class RestoreCommit:
    """Swap the staged snapshot of ``restore_id`` in, atomically; ``needs``: the command
    version its content needs (module docstring)."""

    now: float
    restore_id: int
    needs: int = 2

    def __post_init__(self) -> None:
        check_now(self.now)
        check_int(self.restore_id, "restore id", 0, INT64_MAX)
        check_int(self.needs, "needs", 2, 1 << 16)


@dataclass(frozen=True, slots=True)
class RestoreAbort:
    """Drop the staged data of ``restore_id`` (a no-op if another restore is staged)."""

    now: float
    restore_id: int

    def __post_init__(self) -> None:
        check_now(self.now)
        check_int(self.restore_id, "restore id", 0, INT64_MAX)


RestoreCommand: TypeAlias = RestoreBegin | RestoreChunk | RestoreCommit | RestoreAbort


def restore_to_wire(cmd: RestoreCommand) -> dict[str, Any]:
    """The msgpack map of ``cmd`` (before packing)."""
    if isinstance(cmd, RestoreBegin):
        return {
            "o": "restore.begin",
            "n": cmd.now,
            "sz": cmd.size,
            "h": cmd.sha256,
            "bi": cmd.backup_index,
            "bt": cmd.backup_term,
        }
    if isinstance(cmd, RestoreChunk):
        return {
            "o": "restore.chunk",
            "n": cmd.now,
            "id": cmd.restore_id,
            "q": cmd.seq,
            "d": cmd.data,
        }
    if isinstance(cmd, RestoreCommit):
        wire: dict[str, Any] = {"o": "restore.commit", "n": cmd.now, "id": cmd.restore_id}
        if cmd.needs > 2:
            wire["nv"] = cmd.needs
        return wire
    return {"o": "restore.abort", "n": cmd.now, "id": cmd.restore_id}


def restore_from_wire(wire: Mapping[str, Any]) -> RestoreCommand:
    """Parse a restore op's map (``o`` in ``RESTORE_OPS``); raises ``InvalidCommandError``,
    ``KeyError`` or ``TypeError`` on a malformed one (``commands.decode`` maps all three)."""
    op, now = wire["o"], wire["n"]
    if op == "restore.begin":
        return RestoreBegin(now, wire["sz"], wire["h"], wire.get("bi", 0), wire.get("bt", 0))
    if op == "restore.chunk":
        return RestoreChunk(now, wire["id"], wire["q"], wire["d"])
    if op == "restore.commit":
        return RestoreCommit(now, wire["id"], wire.get("nv", 2))
    if op == "restore.abort":
        return RestoreAbort(now, wire["id"])
    raise InvalidCommandError(f"unknown op {op!r}")
