"""Results of applied cache commands, and their msgpack form for the session table.

Rule: results are immutable values. The same object may be returned to the proposer and kept
in the session table (to answer a retried write), so nothing may mutate it after apply.

Per command: SET → ``int`` (the new version); DELETE → ``bool`` (whether a live key was
deleted); INCR → ``IncrResult``; BATCH → ``tuple`` of per-op results (get → ``bytes | None``,
set → ``int``, delete → ``bool``, incr → ``int`` the value, ttl → ``bool`` changed, hash →
``raftcache.cache.hashes.HashResult``); EXPIRE,
TOUCH and FLUSH → ``int`` (keys affected); TTL → ``TtlResult``; FORMAT → ``int`` (the
cluster's format). Any command may instead return a ``CommandError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

from raftcache.cache.commands_v4 import ScriptResult
from raftcache.cache.digest import DigestMark
from raftcache.cache.errors import (
    CacheError,
    CounterOverflowError,
    HashValueError,
    InvalidCommandError,
    NotACounterError,
    PreconditionFailedError,
    StaleSequenceError,
    ValueTooLargeError,
    WrongTypeError,
)
from raftcache.cache.formats import CommandVersionNotEnabledError


class ErrorCode(StrEnum):
    """Why a command was not applied (it changed nothing)."""

    PRECONDITION_FAILED = "precondition_failed"
    NOT_A_COUNTER = "not_a_counter"
    COUNTER_OVERFLOW = "counter_overflow"
    VALUE_TOO_LARGE = "value_too_large"
    INVALID_COMMAND = "invalid_command"
    STALE_SEQUENCE = "stale_sequence"
    WRONG_TYPE = "wrong_type"  # command version 5: a hash where a string is needed, or back
    HASH_VALUE = "hash_value"  # HINCRBY/HINCRBYFLOAT on a field that is no number, overflow
    COMMAND_VERSION_NOT_ENABLED = "format_not_enabled"  # the value is on the wire
    FORMAT_NOT_ENABLED = "format_not_enabled"  # its earlier name: an alias of the same member


@dataclass(frozen=True, slots=True)
class CommandError:
    """A command that was rejected as a whole; the state is exactly as before it.

    Attributes:
        code: the reason.
        message: a human-readable detail.
        version: for PRECONDITION_FAILED, the key's current version (0 if missing).
        op_index: for a batch, the position of the offending op.
    """

    code: ErrorCode
    message: str
    version: int = 0
    op_index: int | None = None

    def to_exception(self) -> CacheError:
        """The typed exception ``CacheService`` raises for this result."""
        if self.code is ErrorCode.PRECONDITION_FAILED:
            return PreconditionFailedError(self.version, self.op_index)
        if self.code is ErrorCode.COMMAND_VERSION_NOT_ENABLED:  # ``version``: the one needed
            return CommandVersionNotEnabledError(self.version, None, reason=self.message)
        kind = _EXCEPTIONS.get(self.code, InvalidCommandError)
        return kind(self.message)


_EXCEPTIONS: dict[ErrorCode, type[CacheError]] = {
    ErrorCode.NOT_A_COUNTER: NotACounterError,
    ErrorCode.COUNTER_OVERFLOW: CounterOverflowError,
    ErrorCode.VALUE_TOO_LARGE: ValueTooLargeError,
    ErrorCode.INVALID_COMMAND: InvalidCommandError,
    ErrorCode.STALE_SEQUENCE: StaleSequenceError,
    ErrorCode.WRONG_TYPE: WrongTypeError,
    ErrorCode.HASH_VALUE: HashValueError,
}


@dataclass(frozen=True, slots=True)
class IncrResult:
    """The outcome of INCR/DECR: the counter's new value and the entry's new version."""

    value: int
    version: int


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """The outcome of RESTORE.COMMIT (``raftcache.cache.restore``); never a session result.

    Attributes:
        keys: keys the cache holds right after the restore.
        expired: backup keys not restored because they had expired by the commit's time.
        too_large: backup keys not restored because one alone exceeds ``max_bytes``.
        evicted: restored keys evicted at once to fit ``max_keys``/``max_bytes``.
        version: the commit's log index: the version of every restored key.
    """

    keys: int
    expired: int
    too_large: int
    evicted: int
    version: int


@dataclass(frozen=True, slots=True)
class TtlResult:
    """The outcome of a TTL-only change: whether the expiry changed, and the key's version
    after it (0 when the key is missing, or was deleted by an expiry in the past)."""

    changed: bool
    version: int


#: A batch op's result; a hash op's read is the tuple of its fields and values.
BatchItem: TypeAlias = bytes | int | bool | tuple[bytes, ...] | None
Result: TypeAlias = (
    int
    | bool
    | IncrResult
    | TtlResult
    | tuple[BatchItem, ...]
    | CommandError
    | RestoreResult
    | DigestMark  # CHECK (format 3)
    | ScriptResult  # EVAL (format 4)
    | str  # SCRIPT LOAD: the script's SHA-1
)


def result_to_wire(result: Result) -> Any:
    """A msgpack-able form of ``result`` (used by snapshots of the session table).

    Scalars stay as they are (msgpack keeps ``bool`` and ``int`` apart); a batch becomes a list;
    the two structured results become maps with disjoint keys.
    """
    if isinstance(result, CommandError):
        return {
            "e": result.code.value,
            "m": result.message,
            "v": result.version,
            "i": result.op_index,
        }
    if isinstance(result, IncrResult):
        return {"n": result.value, "v": result.version}
    if isinstance(result, TtlResult):
        return {"c": result.changed, "v": result.version}
    if isinstance(result, tuple):
        return list(result)
    return result


def result_from_wire(obj: Any) -> Result:
    """Inverse of ``result_to_wire``; raises ``ValueError`` on a shape it never produces."""
    if isinstance(obj, dict):
        if "e" in obj:
            return CommandError(ErrorCode(obj["e"]), str(obj["m"]), int(obj["v"]), obj["i"])
        if "c" in obj:
            return TtlResult(bool(obj["c"]), int(obj["v"]))
        return IncrResult(int(obj["n"]), int(obj["v"]))
    if isinstance(obj, list):
        return tuple(obj)
    if isinstance(obj, bool | int):
        return obj
    raise ValueError(f"not a cache result: {obj!r}")
