"""The commands of command version 2 (``raftcache.cache.formats``): TTL-only changes, flush,
counters inside batches, and the FORMAT entry that enables them.

Rule: as in ``commands``, a command carries everything its outcome depends on and validates
itself in ``__post_init__``. These classes only exist in builds that know format 2; their log
entries carry ``"f": 2`` so that a node capped below it fails stop instead of guessing.

- ``TtlCommand`` / batch ``TtlOp``: change a key's expiry without rewriting its value. ``ttl``
  (seconds from the command's ``now``) or ``at`` (epoch seconds), or neither to remove the
  expiry (PERSIST). ``condition`` is Redis's EXPIRE option: ``nx`` (only without an expiry),
  ``xx`` (only with one), ``gt`` (only later; none counts as infinite), ``lt`` (only earlier).
  A new expiry at or before ``now`` deletes the key. A change makes the key's version the
  entry's index (see docs/cache.md, "TTL-only changes", for why it bumps the version).
- ``FlushCommand``: delete every key starting with ``prefix`` ("" = all) in one entry.
- ``IncrOp``: INCR inside a batch; its result is the new value.
- ``FormatCommand``: raise the cluster's command version to ``version``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from raftcache.cache.checks import (
    Session,
    check_condition,
    check_int,
    check_key,
    check_now,
)
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.formats import BASE_COMMAND_VERSION, COMMAND_VERSION, CommandVersion
from raftcache.vocabulary import INT64_MAX, INT64_MIN

TTL_CONDITIONS = ("nx", "xx", "gt", "lt")
MAX_PREFIX_CHARS = 4096


def _check_expiry(ttl: object, at: object, condition: object) -> None:
    for name, x in (("ttl", ttl), ("at", at)):
        if x is None:
            continue
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise InvalidCommandError(f"{name} must be a finite number of seconds")
    if ttl is not None and at is not None:
        raise InvalidCommandError("give ttl or at, not both")
    if condition is not None:
        if condition not in TTL_CONDITIONS:
            raise InvalidCommandError(f"condition must be one of {', '.join(TTL_CONDITIONS)}")
        if ttl is None and at is None:
            raise InvalidCommandError("a condition needs a new expiry (ttl or at)")


@dataclass(frozen=True, slots=True)
class TtlOp:
    """Batch op: change ``key``'s expiry (see the module docstring); result whether it changed."""

    key: str
    ttl: float | None = None
    at: float | None = None
    condition: str | None = None
    if_version: int | None = None

    def __post_init__(self) -> None:
        check_key(self.key)
        _check_expiry(self.ttl, self.at, self.condition)
        check_condition(self.if_version, False)


@dataclass(frozen=True, slots=True)
class IncrOp:
    """Batch op: add ``by`` to the counter at ``key`` (as ``IncrCommand``); result the value."""

    key: str
    by: int = 1

    def __post_init__(self) -> None:
        check_key(self.key)
        check_int(self.by, "by", INT64_MIN, INT64_MAX)


@dataclass(frozen=True, slots=True)
class TtlCommand:
    """The TTL-only change of one key; result ``TtlResult(changed, version)``."""

    now: float
    op: TtlOp
    session: Session | None = None

    def __post_init__(self) -> None:
        check_now(self.now)
        if not isinstance(self.op, TtlOp):
            raise InvalidCommandError("op must be a TtlOp")


@dataclass(frozen=True, slots=True)
class FlushCommand:
    """Delete every key starting with ``prefix`` ("" = every key); result how many live
    keys it deleted."""

    now: float
    prefix: str = ""
    session: Session | None = None

    def __post_init__(self) -> None:
        check_now(self.now)
        if not isinstance(self.prefix, str) or len(self.prefix) > MAX_PREFIX_CHARS:
            raise InvalidCommandError(
                f"prefix must be a string of at most {MAX_PREFIX_CHARS} chars"
            )


@dataclass(frozen=True, slots=True)
class FormatCommand:
    """Raise the cluster's command version to ``version`` (the FORMAT command); result the
    cluster's command version."""

    now: float
    version: CommandVersion

    def __post_init__(self) -> None:
        check_now(self.now)
        check_int(self.version, "format", BASE_COMMAND_VERSION + 1, 2**31)

    @property
    def format(self) -> CommandVersion:
        """``version`` under its earlier name."""
        return self.version


# --- wire -----------------------------------------------------------------------------------


def ttl_op_to_wire(op: TtlOp) -> dict[str, Any]:
    """The map of a TTL op (``o`` is ``ttl``; optional fields omitted)."""
    wire: dict[str, Any] = {"o": "ttl", "k": op.key}
    if op.ttl is not None:
        wire["t"] = op.ttl
    if op.at is not None:
        wire["at"] = op.at
    if op.condition is not None:
        wire["cd"] = op.condition
    if op.if_version is not None:
        wire["iv"] = op.if_version
    return wire


def ttl_op_from_wire(wire: dict[str, Any]) -> TtlOp:
    return TtlOp(wire["k"], wire.get("t"), wire.get("at"), wire.get("cd"), wire.get("iv"))


def incr_op_to_wire(op: IncrOp) -> dict[str, Any]:
    return {"o": "incr", "k": op.key, "b": op.by}


def incr_op_from_wire(wire: dict[str, Any]) -> IncrOp:
    return IncrOp(wire["k"], wire["b"])


def command_version_of(value: object) -> CommandVersion:
    """The ``f`` field of an entry (absent = 1), checked to be an int."""
    if value is None:
        return BASE_COMMAND_VERSION
    if type(value) is not int or value < BASE_COMMAND_VERSION:
        raise InvalidCommandError("f must be an integer >= 1")
    return value


assert COMMAND_VERSION >= 2  # this module is format 2
