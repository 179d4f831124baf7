"""Cache commands: what the leader proposes, and their msgpack encoding in the Raft log.

Rule: a command carries everything its outcome depends on — including the leader's wall-clock
``now`` (seconds since the epoch) — so every replica computes the same result from the log
alone. Validation lives in the command classes (``__post_init__``), so the encoders reject a
bad argument before anything is proposed, and ``decode`` rejects a malformed entry with
``InvalidCommandError`` (which the machine turns into an error result, identically everywhere).

Wire format: a msgpack map with short keys. ``o`` the op (``set``, ``del``, ``incr``,
``batch``, ``expire``, ``touch``), ``n`` now, ``k`` key, ``v`` value (bin), ``t`` ttl seconds,
``iv`` if_version, ``ia`` if_absent, ``b`` by, ``ks`` keys, ``ops`` batch ops (maps with
``o`` in ``get``/``set``/``del``), ``c``/``s`` the session's client id and seq. Optional keys
are omitted when they hold their default.

Command version 2 (``raftcache.cache.commands_v2``, ``raftcache.cache.formats``) adds ``f`` the
entry's command version (omitted when 1), the ops ``ttl`` (``t`` ttl or ``at`` epoch seconds,
``cd`` condition), ``flush`` (``p`` prefix) and ``format``, the batch ops ``incr`` and ``ttl``,
and ``kt`` keep_ttl on sets. Command version 3 (``raftcache.cache.commands_v3``) adds the ops
``check`` and ``alarm`` (``id`` node id, ``r`` reason, ``x`` clear). Command version 4
(``raftcache.cache.commands_v4``) adds ``eval`` (``sc`` script, ``ks`` keys, ``as`` args, ``il``
and ``ml`` its budget, ``sl`` its slot, ``ro`` read-only), ``script.load`` and ``script.flush``;
command version 6 (``raftcache.cache.commands_pubsub``) the op ``pub`` (``ch`` channel, ``m``
message, both bin).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]

from raftcache.cache.checks import Session
from raftcache.cache.command_types import (
    MAX_BATCH_OPS,
    MAX_KEYS_PER_COMMAND,
    BatchCommand,
    BatchOp,
    Command,
    DeleteCommand,
    DeleteOp,
    ExpireCommand,
    GetOp,
    IncrCommand,
    SetCommand,
    SetOp,
    TouchCommand,
    required_command_version,
    required_format,
)
from raftcache.cache.commands_pubsub import (
    PublishCommand,
    publish_from_wire,
    publish_to_wire,
)
from raftcache.cache.commands_v2 import (
    FlushCommand,
    FormatCommand,
    IncrOp,
    TtlCommand,
    TtlOp,
    command_version_of,
    incr_op_from_wire,
    incr_op_to_wire,
    ttl_op_from_wire,
    ttl_op_to_wire,
)
from raftcache.cache.commands_v3 import (
    AlarmCommand,
    CheckCommand,
    alarm_from_wire,
    alarm_to_wire,
    check_to_wire,
)
from raftcache.cache.commands_v4 import (
    SCRIPT_OPS,
    EvalCommand,
    ScriptFlushCommand,
    ScriptLoadCommand,
    scripting_from_wire,
    scripting_to_wire,
)
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.formats import (
    BASE_COMMAND_VERSION,
    COMMAND_VERSION,
    CommandVersion,
    UnsupportedCommandVersionError,
)
from raftcache.cache.hashes import HashOp, hash_op_from_wire, hash_op_to_wire
from raftcache.cache.restore_commands import (
    RESTORE_OPS,
    restore_from_wire,
    restore_to_wire,
)
from raftcache.vocabulary import INT64_MAX, INT64_MIN, MAX_CLIENT_ID_CHARS

#: The one client-id limit (``raftcache.vocabulary``), under the name this module exported.
MAX_CLIENT_ID_LENGTH = MAX_CLIENT_ID_CHARS

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_BATCH_OPS",
    "MAX_CLIENT_ID_LENGTH",
    "MAX_KEYS_PER_COMMAND",
    "AlarmCommand",
    "BatchCommand",
    "BatchOp",
    "CheckCommand",
    "Command",
    "DeleteCommand",
    "DeleteOp",
    "ExpireCommand",
    "FlushCommand",
    "FormatCommand",
    "GetOp",
    "IncrCommand",
    "IncrOp",
    "PublishCommand",
    "Session",
    "SetCommand",
    "SetOp",
    "TouchCommand",
    "TtlCommand",
    "TtlOp",
    "decode",
    "decode_entry",
    "encode",
    "encode_alarm",
    "encode_batch",
    "encode_check",
    "encode_decr",
    "encode_delete",
    "encode_expire",
    "encode_flush",
    "encode_format",
    "encode_incr",
    "encode_publish",
    "encode_set",
    "encode_touch",
    "encode_ttl",
    "required_command_version",
    "required_format",
    "to_wire",
]

# --- encoding -------------------------------------------------------------------------------


def _put_session(wire: dict[str, Any], session: Session | None) -> None:
    if session is not None:
        wire["c"] = session.client_id
        wire["s"] = session.seq


def _op_to_wire(op: BatchOp) -> dict[str, Any]:
    if isinstance(op, GetOp):
        return {"o": "get", "k": op.key}
    if isinstance(op, IncrOp):
        return incr_op_to_wire(op)
    if isinstance(op, TtlOp):
        return ttl_op_to_wire(op)
    if isinstance(op, HashOp):
        return hash_op_to_wire(op)
    if isinstance(op, DeleteOp):
        wire: dict[str, Any] = {"o": "del", "k": op.key}
        if op.if_version is not None:
            wire["iv"] = op.if_version
        return wire
    wire = {"o": "set", "k": op.key, "v": op.value}
    _put_write_options(wire, op.ttl, op.if_version, op.if_absent)
    if op.keep_ttl:
        wire["kt"] = True
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
    """The msgpack map of ``cmd`` (before packing), with ``f`` when its format is above 1."""
    wire = _to_wire(cmd)
    needed = required_command_version(cmd)
    if needed > BASE_COMMAND_VERSION:
        wire["f"] = needed
    return wire


def _to_wire(cmd: Command) -> dict[str, Any]:
    if isinstance(cmd, SetCommand):
        wire: dict[str, Any] = {"o": "set", "n": cmd.now, "k": cmd.key, "v": cmd.value}
        _put_write_options(wire, cmd.ttl, cmd.if_version, cmd.if_absent)
        if cmd.keep_ttl:
            wire["kt"] = True
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
    elif isinstance(cmd, TtlCommand):
        wire = {**ttl_op_to_wire(cmd.op), "n": cmd.now}
    elif isinstance(cmd, FlushCommand):
        wire = {"o": "flush", "n": cmd.now, "p": cmd.prefix}
    elif isinstance(cmd, FormatCommand):
        return {"o": "format", "n": cmd.now}  # its "f" is the format it enables
    elif isinstance(cmd, CheckCommand):
        return check_to_wire(cmd)
    elif isinstance(cmd, AlarmCommand):
        return alarm_to_wire(cmd)
    elif isinstance(cmd, EvalCommand | ScriptLoadCommand | ScriptFlushCommand):
        return scripting_to_wire(cmd)
    elif isinstance(cmd, PublishCommand):
        return publish_to_wire(cmd)
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
    keep_ttl: bool = False,
) -> bytes:
    """SET command bytes; raises ``InvalidCommandError`` on a bad argument. ``keep_ttl`` (format
    2) keeps the live key's expiry."""
    return encode(SetCommand(now, key, value, ttl, if_version, if_absent, session, keep_ttl))


def encode_delete(
    key: str, *, now: float, if_version: int | None = None, session: Session | None = None
) -> bytes:
    """DELETE command bytes; raises ``InvalidCommandError`` on a bad argument."""
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


def encode_ttl(
    key: str,
    *,
    now: float,
    ttl: float | None = None,
    at: float | None = None,
    condition: str | None = None,
    if_version: int | None = None,
    session: Session | None = None,
) -> bytes:
    """TTL-only change bytes (format 2): neither ``ttl`` nor ``at`` removes the expiry."""
    return encode(TtlCommand(now, TtlOp(key, ttl, at, condition, if_version), session))


def encode_flush(prefix: str = "", *, now: float, session: Session | None = None) -> bytes:
    """FLUSH bytes (format 2): delete every key starting with ``prefix``."""
    return encode(FlushCommand(now, prefix, session))


def encode_format(version: CommandVersion, *, now: float) -> bytes:
    """FORMAT bytes: raise the cluster's command version to ``version``."""
    return encode(FormatCommand(now, version))


def encode_check(*, now: float) -> bytes:
    """CHECK bytes (format 3): every replica records its digest at this entry's index."""
    return encode(CheckCommand(now))


def encode_alarm(node_id: str, reason: str = "", *, now: float, clear: bool = False) -> bytes:
    """ALARM bytes (format 3): raise (or ``clear``) ``node_id``'s divergence alarm."""
    return encode(AlarmCommand(now, node_id, reason, clear))


def encode_publish(channel: bytes, message: bytes, *, now: float) -> bytes:
    """PUBLISH bytes (format 6): every replica delivers ``message`` on ``channel``."""
    return encode(PublishCommand(now, channel, message))


def encode_expire(keys: Iterable[str], *, now: float) -> bytes:
    """EXPIRE command bytes (leader-proposed removal of expired keys)."""
    return encode(ExpireCommand(now, tuple(keys)))


def encode_touch(keys: Iterable[str], *, now: float) -> bytes:
    """TOUCH command bytes (leader-proposed LRU access batch)."""
    return encode(TouchCommand(now, tuple(keys)))


# --- decoding -------------------------------------------------------------------------------


_KNOWN_OPS = frozenset(
    {
        "set",
        "del",
        "incr",
        "batch",
        "expire",
        "touch",
        "ttl",
        "flush",
        "format",
        "check",
        "alarm",
        "pub",
        *RESTORE_OPS,
        *SCRIPT_OPS,
    }
)


def decode(data: bytes, max_command_version: CommandVersion = COMMAND_VERSION) -> Command:
    """Parse and validate log-entry bytes.

    Raises ``UnsupportedCommandVersionError`` for an entry this node must not apply — one of a
    command version above ``max_command_version`` or with an op it does not know, written by a
    newer release — and ``InvalidCommandError`` for one that is malformed (which no correct
    leader proposes).
    """
    return decode_entry(data, max_command_version)[0]


def decode_entry(
    data: bytes, max_command_version: CommandVersion = COMMAND_VERSION
) -> tuple[Command, CommandVersion]:
    """``decode``, with the command version the entry needs (checked to be the one it
    declares, so the machine does not work it out again for every entry)."""
    try:
        wire = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidCommandError(f"undecodable command: {exc}") from None
    if not isinstance(wire, dict):
        raise InvalidCommandError("a command must be a map")
    declared = command_version_of(wire.get("f"))
    op = wire.get("o")
    ceiling = max_command_version
    if declared > ceiling or (isinstance(op, str) and op not in _KNOWN_OPS):
        raise UnsupportedCommandVersionError(
            f"a committed command ({op!r}, command format {declared}) needs a newer "
            f"raftcache than this node (which applies command formats up to {ceiling}): "
            "upgrade this node; it stops rather than skip the entry and diverge"
        )
    try:
        cmd = _from_wire(wire)
    except (KeyError, TypeError) as exc:
        raise InvalidCommandError(f"malformed command: {exc!r}") from None
    needed = required_command_version(cmd)
    if needed != declared:
        raise InvalidCommandError(f"command declares format {declared}, needs {needed}")
    return cmd, needed


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
            wire.get("kt", False),
        )
    if op == "del":
        return DeleteCommand(now, wire["k"], wire.get("iv"), _session_from_wire(wire))
    if op == "incr":
        return IncrCommand(now, wire["k"], wire["b"], _session_from_wire(wire))
    if op == "batch":
        ops = wire["ops"]
        if not isinstance(ops, list):
            raise InvalidCommandError("ops must be a list")
        return BatchCommand(now, tuple(map(_op_from_wire, ops)), _session_from_wire(wire))
    if op == "expire":
        return ExpireCommand(now, _keys_from_wire(wire["ks"]))
    if op == "touch":
        return TouchCommand(now, _keys_from_wire(wire["ks"]))
    if op in RESTORE_OPS:
        return restore_from_wire(wire)
    if op == "ttl":
        return TtlCommand(now, ttl_op_from_wire(dict(wire)), _session_from_wire(wire))
    if op == "flush":
        return FlushCommand(now, wire.get("p", ""), _session_from_wire(wire))
    if op == "format":
        return FormatCommand(now, wire["f"])
    if op == "check":
        return CheckCommand(now)
    if op == "alarm":
        return alarm_from_wire(dict(wire))
    if op in SCRIPT_OPS:
        return scripting_from_wire(dict(wire))
    if op == "pub":
        return publish_from_wire(dict(wire))
    raise InvalidCommandError(f"unknown op {op!r}")


def _keys_from_wire(keys: object) -> tuple[str, ...]:
    if not isinstance(keys, list):
        raise InvalidCommandError("keys must be a list")
    return tuple(keys)


def _op_from_wire(wire: object) -> BatchOp:
    if not isinstance(wire, dict):
        raise InvalidCommandError("a batch op must be a map")
    op = wire["o"]
    if op == "get":
        return GetOp(wire["k"])
    if op == "set":
        return SetOp(
            wire["k"],
            wire["v"],
            wire.get("t"),
            wire.get("iv"),
            wire.get("ia", False),
            wire.get("kt", False),
        )
    if op == "del":
        return DeleteOp(wire["k"], wire.get("iv"))
    if op == "incr":
        return incr_op_from_wire(wire)
    if op == "ttl":
        return ttl_op_from_wire(wire)
    if op == "hash":
        return hash_op_from_wire(wire)
    if isinstance(op, str):  # a batch op of a newer release, as an unknown op: fail stop
        raise UnsupportedCommandVersionError(
            f"a committed batch holds an op this node does not know ({op!r}): it needs a "
            "newer raftcache than this node: upgrade this node; it stops rather than skip "
            "the entry and diverge"
        )
    raise InvalidCommandError(f"malformed batch op {op!r}")
