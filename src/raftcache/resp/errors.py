"""Error replies of the Redis front-end, and the one mapping from domain errors to them.

Rule: command code raises ``RespError`` for what the client got wrong, and lets cache and Raft
errors through untouched; ``reply_for`` turns any exception into the reply a Redis client
expects, in this one place. Codes follow Redis where Redis has one (``ERR``, ``NOAUTH``,
``WRONGPASS``, ``EXECABORT``, ``TRYAGAIN`` for "nothing happened, retry later"); the codes Redis
lacks are ``DIVERGED`` (this replica is quarantined by a divergence alarm and serves no reads:
ask another node) and ``INDETERMINATE``: a write was appended to the log but its outcome is
unknown (leadership was lost, the node stopped, the leader did not answer, or it timed out), so
a blind retry might apply it twice. A write that may have been appended is never ``TRYAGAIN``:
Redis Cluster clients (redis-py's ``RedisCluster``) retry ``TRYAGAIN`` by themselves.
"""

from __future__ import annotations

import logging

from raftcache.cache.alarms import ReplicaDivergedError
from raftcache.cache.errors import (
    CounterOverflowError,
    HashValueError,
    InvalidCommandError,
    NoScriptError,
    NotACounterError,
    PreconditionFailedError,
    StaleSequenceError,
    ValueTooLargeError,
    WrongTypeError,
)
from raftcache.cache.formats import CommandVersionNotEnabledError
from raftcache.raft.errors import (
    IndeterminateError,
    NodeStoppedError,
    NotLeaderError,
    ProposalDroppedError,
    StoppedAfterAppendError,
)
from raftcache.resp.protocol import RespError

log = logging.getLogger("raftcache.resp")

SYNTAX: RespError = RespError("ERR syntax error")
NOT_INTEGER: RespError = RespError("ERR value is not an integer or out of range")
NOT_FLOAT: RespError = RespError("ERR value is not a valid float")
WRONGTYPE: RespError = RespError(
    "WRONGTYPE Operation against a key holding the wrong kind of value"
)
OVERFLOW: RespError = RespError("ERR increment or decrement would overflow")
NOAUTH: RespError = RespError("NOAUTH Authentication required.")
WRONGPASS: RespError = RespError("WRONGPASS invalid username-password pair or user is disabled.")


class UnavailableError(Exception):
    """Nothing happened and a retry later may succeed: no leader known within the wait, the
    leader unreachable, a proposal dropped, a node stopping."""


class IndeterminateWriteError(Exception):
    """A write may or may not have been applied (forwarded and unanswered, or timed out)."""


def wrong_args(name: str) -> RespError:
    """Redis's reply to a command called with the wrong number of arguments."""
    return RespError(f"ERR wrong number of arguments for '{name.lower()}' command")


def no_permission(name: str) -> RespError:
    """Redis's reply to a write from a connection authenticated with the read-only token."""
    return RespError(f"NOPERM this user has no permissions to run the '{name.lower()}' command")


def unknown_command(name: bytes, args: list[bytes]) -> RespError:
    """Redis's reply to an unknown command (the first arguments quoted, for the user)."""
    shown = " ".join(f"'{_printable(a)}'" for a in args[:8])
    return RespError(f"ERR unknown command '{_printable(name)}', with args beginning with: {shown}")


def _printable(raw: bytes) -> str:
    text = raw[:128].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else "?" for c in text)


def invalid_expire(command: str) -> RespError:
    """The reply to a TTL that is not positive or out of range."""
    return RespError(f"ERR invalid expire time in '{command.lower()}' command")


def reply_for(exc: BaseException, *, is_write: bool) -> RespError:
    """The error reply for an exception a command raised.

    Args:
        exc: what the command raised.
        is_write: whether the command may have changed state (a timeout on a read means
            nothing happened: TRYAGAIN; on a write the outcome is unknown: INDETERMINATE).
    """
    if isinstance(exc, RespError):
        return exc
    if isinstance(exc, WrongTypeError):
        return WRONGTYPE
    if isinstance(exc, HashValueError):
        return RespError(f"ERR {exc}")
    if isinstance(exc, CommandVersionNotEnabledError):  # a rolling upgrade not finished
        return RespError(f"ERR {exc}")
    if isinstance(exc, NotACounterError):
        return NOT_INTEGER
    if isinstance(exc, CounterOverflowError):
        return OVERFLOW
    if isinstance(exc, ValueTooLargeError):
        return RespError(f"ERR value too large for this cache: {exc}")
    if isinstance(exc, StaleSequenceError):
        return RespError(f"ERR {exc}")
    if isinstance(exc, InvalidCommandError):
        return RespError(f"ERR {exc}" if str(exc) else "ERR invalid command")
    if isinstance(exc, ReplicaDivergedError):
        return RespError(f"DIVERGED {exc}")
    if isinstance(exc, NoScriptError):
        return RespError(str(exc))
    if isinstance(exc, CommandVersionNotEnabledError):  # a rolling upgrade not finished
        return RespError(f"ERR {exc}")
    if isinstance(exc, PreconditionFailedError):
        # Commands turn expected precondition failures into their own replies; one that
        # escapes is a write that raced with another client.
        return RespError("ERR the key changed concurrently, try again")
    return _cluster_error(exc, is_write)


def _cluster_error(exc: BaseException, is_write: bool) -> RespError:
    if isinstance(exc, StoppedAfterAppendError) and is_write:
        # Appended before the node stopped: the others may commit it. TRYAGAIN would say
        # "nothing happened", and RedisCluster clients retry it on their own (an INCR twice).
        return RespError(f"INDETERMINATE {exc}")
    if isinstance(exc, UnavailableError | ProposalDroppedError | NodeStoppedError | NotLeaderError):
        return RespError(f"TRYAGAIN {exc or type(exc).__name__}")
    if isinstance(exc, IndeterminateWriteError | IndeterminateError):
        return RespError(f"INDETERMINATE {exc or 'the write may or may not have been applied'}")
    if isinstance(exc, TimeoutError):
        if is_write:
            return RespError("INDETERMINATE timed out: the write may or may not have been applied")
        return RespError("TRYAGAIN timed out waiting for the cluster")
    # A bug: answer the client, keep serving, and leave a trace for the operator.
    log.error("unexpected error in a RESP command", exc_info=exc)
    return RespError(f"ERR internal error: {type(exc).__name__}")


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
Unavailable = UnavailableError
Indeterminate = IndeterminateWriteError
