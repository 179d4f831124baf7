"""Cache commands: what the leader proposes, and their msgpack encoding in the Raft log.

Rule: a command carries everything its outcome depends on — including the leader's wall-clock
``now`` (seconds since the epoch) — so every replica computes the same result from the log
alone. Validation lives in the command classes (``__post_init__``), so the encoders reject a
bad argument before anything is proposed, and ``decode`` rejects a malformed entry with
``InvalidCommand`` (which the machine turns into an error result, identically everywhere).

Wire format: a msgpack map with short keys. ``o`` the op (``set``, ``del``, ``incr``,
``batch``, ``expire``, ``touch``), ``n`` now, ``k`` key, ``v`` value (bin), ``t`` ttl seconds,
``iv`` if_version, ``ia`` if_absent, ``b`` by, ``ks`` keys, ``ops`` batch ops (maps with
``o`` in ``get``/``set``/``del``), ``c``/``s`` the session's client id and seq. Optional keys
are omitted when they hold their default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack  # type: ignore[import-untyped, unused-ignore]

from raftcache.cache.errors import InvalidCommand
from raftcache.cache.restore_commands import (
    RESTORE_OPS,
    RestoreCommand,
    restore_from_wire,
    restore_to_wire,
)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_BATCH_OPS = 10_000  # one log entry; the HTTP layer enforces a (smaller) limit of its own
MAX_KEYS_PER_COMMAND = 100_000  # EXPIRE / TOUCH batches
MAX_CLIENT_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Session:
    """A client session: writes with the same ``client_id`` and ``seq`` apply at most once.

    A client uses a fresh ``client_id`` per process and increasing ``seq`` values, with at most
    ``session_window`` writes outstanding (see ``raftcache.cache.sessions``).
    """

    client_id: str
    seq: int

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise InvalidCommand("client_id must be a non-empty string")
        if len(self.client_id) > MAX_CLIENT_ID_LENGTH:
            raise InvalidCommand(f"client_id longer than {MAX_CLIENT_ID_LENGTH} characters")
        _check_int(self.seq, "seq", 0, INT64_MAX)


def _check_key(key: object, what: str = "key") -> None:
    if not isinstance(key, str) or not key:
        raise InvalidCommand(f"{what} must be a non-empty string")


def _check_int(x: object, what: str, low: int, high: int) -> None:
    # bool is an int subclass: True must not pass for a version or a delta.
    if type(x) is not int or not low <= x <= high:
        raise InvalidCommand(f"{what} must be an integer in [{low}, {high}]")


def _check_now(now: object) -> None:
    if not isinstance(now, int | float) or isinstance(now, bool) or not math.isfinite(now):
        raise InvalidCommand("now must be a finite number")


def _check_ttl(ttl: object) -> None:
    if ttl is None:
        return
    if not isinstance(ttl, int | float) or isinstance(ttl, bool):
        raise InvalidCommand("ttl must be a number of seconds")
    if not (math.isfinite(ttl) and ttl > 0):
        raise InvalidCommand("ttl must be a finite number of seconds > 0")


def _check_condition(if_version: object, if_absent: object) -> None:
    if if_version is not None:
        _check_int(if_version, "if_version", 0, INT64_MAX)
    if not isinstance(if_absent, bool):
        raise InvalidCommand("if_absent must be a bool")


def _check_write(
    key: object, value: object, ttl: object, if_version: object, if_absent: object
) -> None:
    _check_key(key)
    if not isinstance(value, bytes):
        raise InvalidCommand("value must be bytes")
    _check_ttl(ttl)
    _check_condition(if_version, if_absent)


@dataclass(frozen=True, slots=True)
class GetOp:
    """Batch op: read ``key`` (as of the batch's ``now``); result ``bytes | None``."""

    key: str

    def __post_init__(self) -> None:
        _check_key(self.key)


@dataclass(frozen=True, slots=True)
class SetOp:
    """Batch op: write ``key``; result the new version. Conditions as in ``SetCommand``."""

    key: str
    value: bytes
    ttl: float | None = None
    if_version: int | None = None
    if_absent: bool = False

    def __post_init__(self) -> None:
        _check_write(self.key, self.value, self.ttl, self.if_version, self.if_absent)


@dataclass(frozen=True, slots=True)
class DeleteOp:
    """Batch op: delete ``key``; result whether a live key was deleted."""

    key: str
    if_version: int | None = None

    def __post_init__(self) -> None:
        _check_key(self.key)
        _check_condition(self.if_version, False)


BatchOp: TypeAlias = GetOp | SetOp | DeleteOp


@dataclass(frozen=True, slots=True)
class SetCommand:
    """SET: ``if_version`` = compare-and-set on the version (0 = must be missing);
    ``if_absent`` = create only. A ``ttl`` sets ``expires_at = now + ttl``; none clears it."""

    now: float
    key: str
    value: bytes
    ttl: float | None = None
    if_version: int | None = None
    if_absent: bool = False
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_now(self.now)
        _check_write(self.key, self.value, self.ttl, self.if_version, self.if_absent)


@dataclass(frozen=True, slots=True)
class DeleteCommand:
    """DELETE, honouring ``if_version``."""

    now: float
    key: str
    if_version: int | None = None
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_now(self.now)
        _check_key(self.key)
        _check_condition(self.if_version, False)


@dataclass(frozen=True, slots=True)
class IncrCommand:
    """INCR (``by`` > 0) or DECR (``by`` < 0) of an ASCII-decimal int64 counter."""

    now: float
    key: str
    by: int = 1
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_now(self.now)
        _check_key(self.key)
        _check_int(self.by, "by", INT64_MIN, INT64_MAX)


@dataclass(frozen=True, slots=True)
class BatchCommand:
    """Get/set/delete ops applied atomically, in order, as one log entry (all or nothing)."""

    now: float
    ops: tuple[BatchOp, ...]
    session: Session | None = None

    def __post_init__(self) -> None:
        _check_now(self.now)
        if not isinstance(self.ops, tuple) or len(self.ops) > MAX_BATCH_OPS:
            raise InvalidCommand(f"ops must be a tuple of at most {MAX_BATCH_OPS} ops")
        for op in self.ops:
            if not isinstance(op, GetOp | SetOp | DeleteOp):
                raise InvalidCommand(f"not a batch op: {op!r}")


@dataclass(frozen=True, slots=True)
class ExpireCommand:
    """Leader-proposed: remove those of ``keys`` that are expired as of ``now``."""

    now: float
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_now(self.now)
        _check_keys(self.keys)


@dataclass(frozen=True, slots=True)
class TouchCommand:
    """Leader-proposed access batch: move the live ones of ``keys`` to most recently used."""

    now: float
    keys: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_now(self.now)
        _check_keys(self.keys)


def _check_keys(keys: object) -> None:
    if not isinstance(keys, tuple) or len(keys) > MAX_KEYS_PER_COMMAND:
        raise InvalidCommand(f"keys must be a tuple of at most {MAX_KEYS_PER_COMMAND} keys")
    for key in keys:
        _check_key(key)


Command: TypeAlias = (
    SetCommand
    | DeleteCommand
    | IncrCommand
    | BatchCommand
    | ExpireCommand
    | TouchCommand
    | RestoreCommand  # restore.begin/chunk/commit/abort: see raftcache.cache.restore_commands
)


# --- encoding -------------------------------------------------------------------------------


def _put_session(wire: dict[str, Any], session: Session | None) -> None:
    if session is not None:
        wire["c"] = session.client_id
        wire["s"] = session.seq


def _op_to_wire(op: BatchOp) -> dict[str, Any]:
    if isinstance(op, GetOp):
        return {"o": "get", "k": op.key}
    if isinstance(op, DeleteOp):
        wire: dict[str, Any] = {"o": "del", "k": op.key}
        if op.if_version is not None:
            wire["iv"] = op.if_version
        return wire
    wire = {"o": "set", "k": op.key, "v": op.value}
    _put_write_options(wire, op.ttl, op.if_version, op.if_absent)
    return wire


def _put_write_options(
    wire: dict[str, Any], ttl: float | None, if_version: int | None, if_absent: bool
) -> None:
    if ttl is not None:
        wire["t"] = ttl
    if if_version is not None:
        wire["iv"] = if_version
    if if_absent:
        wire["ia"] = True


def to_wire(cmd: Command) -> dict[str, Any]:
    """The msgpack map of ``cmd`` (before packing)."""
    if isinstance(cmd, SetCommand):
        wire: dict[str, Any] = {"o": "set", "n": cmd.now, "k": cmd.key, "v": cmd.value}
        _put_write_options(wire, cmd.ttl, cmd.if_version, cmd.if_absent)
    elif isinstance(cmd, DeleteCommand):
        wire = {"o": "del", "n": cmd.now, "k": cmd.key}
        if cmd.if_version is not None:
            wire["iv"] = cmd.if_version
    elif isinstance(cmd, IncrCommand):
        wire = {"o": "incr", "n": cmd.now, "k": cmd.key, "b": cmd.by}
    elif isinstance(cmd, BatchCommand):
        wire = {"o": "batch", "n": cmd.now, "ops": [_op_to_wire(op) for op in cmd.ops]}
    elif isinstance(cmd, ExpireCommand):
        return {"o": "expire", "n": cmd.now, "ks": list(cmd.keys)}
    elif isinstance(cmd, TouchCommand):
        return {"o": "touch", "n": cmd.now, "ks": list(cmd.keys)}
    else:
        return restore_to_wire(cmd)
    _put_session(wire, cmd.session)
    return wire


def encode(cmd: Command) -> bytes:
    """The log-entry bytes of ``cmd``."""
    data: bytes = msgpack.packb(to_wire(cmd), use_bin_type=True)
    return data


def encode_set(
    key: str,
    value: bytes,
    *,
    now: float,
    ttl: float | None = None,
    if_version: int | None = None,
    if_absent: bool = False,
    session: Session | None = None,
) -> bytes:
    """SET command bytes; raises ``InvalidCommand`` on a bad argument."""
    return encode(SetCommand(now, key, value, ttl, if_version, if_absent, session))


def encode_delete(
    key: str, *, now: float, if_version: int | None = None, session: Session | None = None
) -> bytes:
    """DELETE command bytes; raises ``InvalidCommand`` on a bad argument."""
    return encode(DeleteCommand(now, key, if_version, session))


def encode_incr(key: str, by: int = 1, *, now: float, session: Session | None = None) -> bytes:
    """INCR command bytes (a negative ``by`` decrements)."""
    return encode(IncrCommand(now, key, by, session))


def encode_decr(key: str, by: int = 1, *, now: float, session: Session | None = None) -> bytes:
    """DECR command bytes: INCR by ``-by``."""
    return encode(IncrCommand(now, key, -by, session))


def encode_batch(ops: Iterable[BatchOp], *, now: float, session: Session | None = None) -> bytes:
    """BATCH command bytes for ``ops`` (``GetOp``/``SetOp``/``DeleteOp``)."""
    return encode(BatchCommand(now, tuple(ops), session))


def encode_expire(keys: Iterable[str], *, now: float) -> bytes:
    """EXPIRE command bytes (leader-proposed removal of expired keys)."""
    return encode(ExpireCommand(now, tuple(keys)))


def encode_touch(keys: Iterable[str], *, now: float) -> bytes:
    """TOUCH command bytes (leader-proposed LRU access batch)."""
    return encode(TouchCommand(now, tuple(keys)))


# --- decoding -------------------------------------------------------------------------------


def decode(data: bytes) -> Command:
    """Parse and validate log-entry bytes; raises ``InvalidCommand`` if malformed."""
    try:
        wire = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidCommand(f"undecodable command: {exc}") from None
    if not isinstance(wire, dict):
        raise InvalidCommand("a command must be a map")
    try:
        return _from_wire(wire)
    except (KeyError, TypeError) as exc:
        raise InvalidCommand(f"malformed command: {exc!r}") from None


def _session_from_wire(wire: Mapping[str, Any]) -> Session | None:
    client_id = wire.get("c")
    if client_id is None:
        return None
    return Session(client_id, wire["s"])


def _from_wire(wire: Mapping[str, Any]) -> Command:
    op = wire["o"]
    now = wire["n"]
    if op == "set":
        return SetCommand(
            now,
            wire["k"],
            wire["v"],
            wire.get("t"),
            wire.get("iv"),
            wire.get("ia", False),
            _session_from_wire(wire),
        )
    if op == "del":
        return DeleteCommand(now, wire["k"], wire.get("iv"), _session_from_wire(wire))
    if op == "incr":
        return IncrCommand(now, wire["k"], wire["b"], _session_from_wire(wire))
    if op == "batch":
        ops = wire["ops"]
        if not isinstance(ops, list):
            raise InvalidCommand("ops must be a list")
        return BatchCommand(now, tuple(map(_op_from_wire, ops)), _session_from_wire(wire))
    if op == "expire":
        return ExpireCommand(now, _keys_from_wire(wire["ks"]))
    if op == "touch":
        return TouchCommand(now, _keys_from_wire(wire["ks"]))
    if op in RESTORE_OPS:
        return restore_from_wire(wire)
    raise InvalidCommand(f"unknown op {op!r}")


def _keys_from_wire(keys: object) -> tuple[str, ...]:
    if not isinstance(keys, list):
        raise InvalidCommand("keys must be a list")
    return tuple(keys)


def _op_from_wire(wire: object) -> BatchOp:
    if not isinstance(wire, dict):
        raise InvalidCommand("a batch op must be a map")
    op = wire["o"]
    if op == "get":
        return GetOp(wire["k"])
    if op == "set":
        return SetOp(wire["k"], wire["v"], wire.get("t"), wire.get("iv"), wire.get("ia", False))
    if op == "del":
        return DeleteOp(wire["k"], wire.get("iv"))
    raise InvalidCommand(f"unknown batch op {op!r}")
