"""Typed errors of the cache layer, raised by ``CacheService`` (and by command encoders).

Rule: the state machine never raises for a bad command; it returns a ``CommandError`` result
(replicas must all reach the same outcome from the same log). ``CacheService`` turns those
results into the exceptions below. Raft-layer errors (``NotLeaderError``,
``IndeterminateError``, ``ProposalDroppedError``, ``TimeoutError``...) are never wrapped.

``ValueTooLargeError`` and ``StaleSequenceError`` subclass ``InvalidCommandError``: a caller that
maps only ``InvalidCommandError`` to a client error still answers them sensibly (an HTTP server
should prefer 413 for the first and 409 for the second).
"""

from __future__ import annotations


class CacheError(Exception):
    """Base of the cache layer's errors."""


class PreconditionFailedError(CacheError):
    """A compare-and-set (``if_version``) or create-only (``if_absent``) condition failed.

    Attributes:
        current_version: the key's version when the command was applied (0 if missing).
        op_index: for a batch, the position of the op whose condition failed; else None.
    """

    def __init__(self, current_version: int, op_index: int | None = None) -> None:
        where = "" if op_index is None else f" (batch op {op_index})"
        super().__init__(f"precondition failed{where}: current version is {current_version}")
        self.current_version = current_version
        self.op_index = op_index


class NotACounterError(CacheError):
    """INCR/DECR on a value that is not an ASCII decimal int64."""


class CounterOverflowError(CacheError):
    """INCR/DECR whose result would fall outside the signed 64-bit range."""


class WrongTypeError(CacheError):
    """An operation on a key holding the other kind of value: a hash op on a string, or a
    string read or change (GET, INCR...) of a hash (``raftcache.cache.hashes``)."""


class HashValueError(CacheError):
    """HINCRBY/HINCRBYFLOAT on a field that is not a number, or whose result would overflow
    or not be finite; the message is Redis's (``hash value is not an integer``...)."""


class InvalidCommandError(CacheError):
    """A malformed command or request argument (a bug or a bad request, never retried)."""


class ValueTooLargeError(InvalidCommandError):
    """An entry (key + value) larger than the machine's ``max_bytes``: it could never fit."""


class StaleSequenceError(InvalidCommandError):
    """A session write whose ``seq`` is older than the window of remembered results."""


class NoScriptError(CacheError):
    """EVALSHA of a SHA-1 the script table does not hold (never loaded, flushed, or dropped)."""

    def __init__(self) -> None:
        super().__init__("NOSCRIPT No matching script. Please use EVAL.")


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
PreconditionFailed = PreconditionFailedError
NotACounter = NotACounterError
CounterOverflow = CounterOverflowError
InvalidCommand = InvalidCommandError
ValueTooLarge = ValueTooLargeError
StaleSequence = StaleSequenceError
