"""Backups of a running cluster and restores into one, over the Raft node (async).

Rule: a backup is taken on the leader at a linearizable point — after a ReadIndex barrier, the
machine's state is captured on the event loop in one step (``prepare_snapshot``), so it holds
every write acknowledged before the backup was asked for and none that was not applied at its
``index``. A restore is validated whole (file checksum and format, then the snapshot decoded)
before anything is proposed, then replicated as ``restore.begin``, chunks and ``restore.commit``
(``raftcache.cache.restore_commands``): the cache changes at the commit and nowhere else, on
every replica, durably. A restore that fails half-way proposes ``restore.abort`` (best effort:
the staged chunks are otherwise dropped by the next restore or by housekeeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from raftcache.cache.backup import BackupInfo, verify_backup
from raftcache.cache.commands import encode
from raftcache.cache.commands_v4 import SCRIPTING_VERSION
from raftcache.cache.entries import record_is_hash
from raftcache.cache.errors import CacheError
from raftcache.cache.formats import CommandVersion
from raftcache.cache.hashes import HASH_VERSION
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.restore_commands import (
    RestoreAbort,
    RestoreBegin,
    RestoreChunk,
    RestoreCommit,
)
from raftcache.cache.results import CommandError, RestoreResult
from raftcache.cache.snapshot import SnapshotState, read_snapshot

log = logging.getLogger(__name__)

#: Snapshot bytes per ``restore.chunk`` entry: well inside what one Raft message carries.
CHUNK_BYTES = 512 * 1024


class RestoreFailedError(CacheError):
    """The cluster refused a step of a verified restore (e.g. another restore replaced it);
    the cache is unchanged."""


class BackupRaftPort(Protocol):
    """What backups need from ``RaftNode``."""

    async def read_index(self, timeout: float | None = None) -> int: ...

    async def propose(self, command: bytes, timeout: float | None = None) -> Any: ...


class Backups:
    """Take backups from, and restore them into, the cluster this node belongs to.

    Args:
        node: the local Raft node (must be the leader for either operation).
        machine: the cache state machine it applies to.
        clock: wall-clock seconds (stamped into the restore commands; the commit's ``now``
            decides which restored keys have already expired).
        chunk_bytes: snapshot bytes per ``restore.chunk``.
    """

    def __init__(
        self,
        node: BackupRaftPort,
        machine: CacheStateMachine,
        clock: Callable[[], float],
        *,
        chunk_bytes: int = CHUNK_BYTES,
        ensure_command_version: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._node = node
        # The restore commands are of command version 2 (raftcache.cache.formats): the cluster
        # must run it before the first one is proposed.
        self._ensure_command_version = ensure_command_version
        self._machine = machine
        self._clock = clock
        self._chunk_bytes = chunk_bytes

    async def capture(self) -> tuple[BackupInfo, bytes]:
        """A consistent snapshot of the cache (leader only: ``NotLeaderError`` elsewhere)."""
        await self._node.read_index()
        index = self._machine.last_index
        encode_snapshot = self._machine.prepare_snapshot()  # the state as of ``index``
        term = _term_at(self._node, index)
        snapshot = await asyncio.to_thread(encode_snapshot)
        node_id = str(getattr(self._node, "node_id", ""))
        return BackupInfo(index, term, node_id, self._clock(), len(snapshot)), snapshot

    async def restore(self, data: bytes) -> tuple[BackupInfo, RestoreResult]:
        """Verify the backup file ``data`` and replace the cache's contents with it.

        Raises ``BackupFormatError`` / ``SnapshotFormatError`` (nothing proposed) for a bad
        file, ``RestoreFailedError`` when the cluster refused a step, and the Raft errors of
        ``propose`` (``NotLeaderError`` before anything was proposed means nothing happened).
        """
        info, body = verify_backup(data)
        # Decode it once here, so that a file whose checksum is right but whose snapshot is
        # not (a bug, a hand-made file) is refused before the cluster stages a byte of it.
        state = await asyncio.to_thread(read_snapshot, io.BytesIO(body))
        needs = content_version(state)
        sha256 = hashlib.sha256(body).hexdigest()
        begin = RestoreBegin(self._clock(), len(body), sha256, info.index, info.term)
        if self._ensure_command_version is not None:
            # Every node must read what the backup holds (scripts, hashes) before the commit
            # that swaps it in, whose entry says so ("f"): an older node would fail stop on it.
            await self._ensure_command_version(needs)
        restore_id = await self._propose(encode(begin))
        assert type(restore_id) is int, restore_id
        try:
            size = self._chunk_bytes
            for seq, start in enumerate(range(0, len(body), size)):
                piece = bytes(body[start : start + size])
                await self._propose(encode(RestoreChunk(self._clock(), restore_id, seq, piece)))
            commit = RestoreCommit(self._clock(), restore_id, needs)
            result = await self._propose(encode(commit))
        except BaseException:
            self._abort_later(restore_id)
            raise
        assert isinstance(result, RestoreResult), result
        log.info(
            "restored a backup",
            extra={"backup_index": info.index, "keys": result.keys, "version": result.version},
        )
        return info, result

    async def _propose(self, command: bytes) -> Any:
        result = await self._node.propose(command)
        if isinstance(result, CommandError):
            raise RestoreFailedError(result.message)
        return result

    def _abort_later(self, restore_id: int) -> None:
        """Propose ``restore.abort`` in the background (the caller may be cancelled)."""

        async def abort() -> None:
            with contextlib.suppress(Exception):
                await self._node.propose(encode(RestoreAbort(self._clock(), restore_id)))

        task = asyncio.get_running_loop().create_task(abort())
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)


_PENDING: set[asyncio.Task[None]] = set()


def content_version(state: SnapshotState) -> CommandVersion:
    """The command version a backup's content needs on every node: 2 (restores), 4 when it
    holds Lua scripts, 5 when it holds hashes."""
    if any(map(record_is_hash, state.records.values())):
        return HASH_VERSION
    if state.scripts:
        return SCRIPTING_VERSION
    return 2


def _term_at(node: object, index: int) -> int:
    """The term of the log entry at ``index``; the node's current term if it cannot tell."""
    with contextlib.suppress(Exception):
        term = node.core.log.term_at(index)  # type: ignore[attr-defined]
        if isinstance(term, int):
            return term
    return int(getattr(node, "current_term", 0))


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
RestoreFailed = RestoreFailedError
