"""The cache commands as values: what a leader may propose, each validated on construction.

Rule: a command carries everything its outcome depends on, including the leader's ``now``;
``__post_init__`` refuses any bad field with ``InvalidCommandError``, so neither an encoder nor
``decode`` (``raftcache.cache.commands``, which also holds the wire format) can produce an
invalid one. The commands of command version 2 live in ``raftcache.cache.commands_v2``, the
hash ops of version 5 in ``raftcache.cache.hashes``;
``required_command_version`` says which command version a command needs
(``raftcache.cache.formats``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from raftcache.cache.checks import (
    Session,
    check_condition,
    check_int,
    check_key,
    check_now,
    check_write,
)
from raftcache.cache.commands_pubsub import PUBSUB_VERSION, PublishCommand
from raftcache.cache.commands_v2 import FlushCommand, FormatCommand, IncrOp, TtlCommand, TtlOp
from raftcache.cache.commands_v3 import DIVERGENCE_VERSION, AlarmCommand, CheckCommand
from raftcache.cache.commands_v4 import (
    SCRIPTING_VERSION,
    EvalCommand,
    ScriptFlushCommand,
    ScriptLoadCommand,
)
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.formats import BASE_COMMAND_VERSION, CommandVersion
from raftcache.cache.hashes import HASH_VERSION, HashOp
from raftcache.cache.restore_commands import RestoreCommand, RestoreCommit
from raftcache.vocabulary import INT64_MAX, INT64_MIN

MAX_BATCH_OPS = 10_000  # one log entry; the HTTP layer enforces a (smaller) limit of its own
MAX_KEYS_PER_COMMAND = 100_000  # EXPIRE / TOUCH batches


@dataclass(frozen=True, slots=True)
class GetOp:
    """Batch op: read ``key`` (as of the batch's ``now``); result ``bytes | None``."""

    key: str

    def __post_init__(self) -> None:
        check_key(self.key)


@dataclass(frozen=True, slots=True)
class SetOp:
    """Batch op: write ``key``; result the new version. Conditions as in ``SetCommand``."""

    key: str
    value: bytes
    ttl: float | None = None
    if_version: int | None = None
    if_absent: bool = False
    keep_ttl: bool = False  # format 2

    def __post_init__(self) -> None:
        check_write(self.key, self.value, self.ttl, self.if_version, self.if_absent)
        _check_keep_ttl(self.keep_ttl, self.ttl)


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Batch op: delete ``key``; result whether a live key was deleted."""

    key: str
    if_version: int | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        check_condition(self.if_version, False)


def _check_keep_ttl(keep_ttl: object, ttl: object) -> None:
    if not isinstance(keep_ttl, bool):
        raise InvalidCommandError("keep_ttl must be a bool")
    if keep_ttl and ttl is not None:
        raise InvalidCommandError("keep_ttl and ttl cannot be combined")


BatchOp: TypeAlias = GetOp | SetOp | DeleteOp | IncrOp | TtlOp | HashOp
_BATCH_OPS = (GetOp, SetOp, DeleteOp, IncrOp, TtlOp, HashOp)


@dataclass(frozen=True, slots=True)
class SetCommand:
    """SET: ``if_version`` = compare-and-set on the version (0 = must be missing);
    ``if_absent`` = create only. A ``ttl`` sets ``expires_at = now + ttl``; none clears it,
    unless ``keep_ttl`` (format 2) keeps the live key's expiry."""

    now: float
    key: str
    value: bytes
    ttl: float | None = None
    if_version: int | None = None
    if_absent: bool = False
    session: Session | None = None
    keep_ttl: bool = False

    def __post_init__(self) -> None:
        check_now(self.now)
        check_write(self.key, self.value, self.ttl, self.if_version, self.if_absent)
        _check_keep_ttl(self.keep_ttl, self.ttl)


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    """DELETE, honouring ``if_version``."""

    now: float
    key: str
    if_version: int | None = None
    session: Session | None = None

    def __post_init__(self) -> None:
        check_now(self.now)
        check_key(self.key)
        check_condition(self.if_version, False)


@dataclass(frozen=True, slots=True)
class IncrCommand:
    """INCR (``by`` > 0) or DECR (``by`` < 0) of an ASCII-decimal int64 counter."""

    now: float
    key: str
    by: int = 1
    session: Session | None = None

    def __post_init__(self) -> None:
        check_now(self.now)
        check_key(self.key)
        check_int(self.by, "by", INT64_MIN, INT64_MAX)


@dataclass(frozen=True, slots=True)
class BatchCommand:
    """Get/set/delete ops applied atomically, in order, as one log entry (all or nothing)."""

    now: float
    ops: tuple[BatchOp, ...]
    session: Session | None = None

    def __post_init__(self) -> None:
        check_now(self.now)
        if not isinstance(self.ops, tuple) or len(self.ops) > MAX_BATCH_OPS:
            raise InvalidCommandError(f"ops must be a tuple of at most {MAX_BATCH_OPS} ops")
        for op in self.ops:
            if not isinstance(op, _BATCH_OPS):
                raise InvalidCommandError(f"not a batch op: {op!r}")


@dataclass(frozen=True, slots=True)
class ExpireCommand:
    """Leader-proposed: remove those of ``keys`` that are expired as of ``now``."""

    now: float
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        check_now(self.now)
        _check_keys(self.keys)


@dataclass(frozen=True, slots=True)
class TouchCommand:
    """Leader-proposed access batch: move the live ones of ``keys`` to most recently used."""

    now: float
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        check_now(self.now)
        _check_keys(self.keys)


def _check_keys(keys: object) -> None:
    if not isinstance(keys, tuple) or len(keys) > MAX_KEYS_PER_COMMAND:
        raise InvalidCommandError(f"keys must be a tuple of at most {MAX_KEYS_PER_COMMAND} keys")
    for key in keys:
        check_key(key)


Command: TypeAlias = (
    SetCommand
    | DeleteCommand
    | IncrCommand
    | BatchCommand
    | ExpireCommand
    | TouchCommand
    | RestoreCommand  # restore.begin/chunk/commit/abort: see raftcache.cache.restore_commands
    | TtlCommand
    | FlushCommand
    | FormatCommand
    | CheckCommand  # format 3: raftcache.cache.commands_v3
    | AlarmCommand
    | EvalCommand  # format 4: raftcache.cache.commands_v4
    | ScriptLoadCommand
    | ScriptFlushCommand
    | PublishCommand  # format 6: raftcache.cache.commands_pubsub
)


def required_command_version(cmd: Command) -> CommandVersion:
    """The command version ``cmd`` needs (``raftcache.cache.formats``)."""
    if isinstance(cmd, SetCommand | DeleteCommand | IncrCommand | ExpireCommand | TouchCommand):
        return 2 if isinstance(cmd, SetCommand) and cmd.keep_ttl else BASE_COMMAND_VERSION
    if isinstance(cmd, BatchCommand):
        needed = BASE_COMMAND_VERSION
        for op in cmd.ops:
            if type(op) is HashOp:
                return HASH_VERSION
            if isinstance(op, IncrOp | TtlOp) or (isinstance(op, SetOp) and op.keep_ttl):
                needed = 2
        return needed
    if isinstance(cmd, FormatCommand):
        return cmd.version
    if isinstance(cmd, CheckCommand | AlarmCommand):
        return DIVERGENCE_VERSION
    if isinstance(cmd, EvalCommand | ScriptLoadCommand | ScriptFlushCommand):
        return SCRIPTING_VERSION
    if isinstance(cmd, PublishCommand):
        return PUBSUB_VERSION
    if isinstance(cmd, RestoreCommit):
        return cmd.needs  # 2, or what the backup's content needs
    return 2  # TTL, FLUSH and the other restore commands


#: Its earlier name, kept working.
required_format = required_command_version
