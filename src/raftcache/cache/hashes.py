"""Hashes (command version 5): a key whose value is a map of fields to values, as Redis's hashes.

Rule: a hash is stored as ONE entry like any other (``raftcache.cache.entries``): its record's
value is the msgpack map of its fields (bytes → bytes, in insertion order), and the record's
header says it is a hash (``entries.HASH_FLAG``). So everything that handles entries as records —
LRU order, expiry and TTL changes, eviction by bytes, snapshots, backups and the replicated
restore, the divergence digest, the watch history — carries hashes unchanged, and the accounted
size of a hash is its key plus that encoding: the fields and values plus 2 bytes of framing
each (up to 5 for one over 255 bytes), and 1–5 for the map. Every replica encodes the same
map the same way (one insertion order, the same packer), so records stay byte-identical.

A hash is changed by ``HashOp`` batch ops (so a hash write shares a log entry with other writes
and rides in MULTI's one batch): ``set`` (HSET; with ``nx``, HSETNX), ``del`` (HDEL; removing
the last field removes the key, as Redis does), ``incr`` (HINCRBY), ``incrf`` (HINCRBYFLOAT)
and ``read`` (the whole hash, a replicated read for MULTI). ``apply_hash_op`` is the one pure
function that computes an op's outcome — the batch check and the batch run share it. Cost: a
change decodes and re-encodes the whole hash, O(fields); meant for the small hashes caches hold
(objects, sessions), not for millions of fields.

Type errors: a hash op on a string key, and a string op that reads or changes the value of a
hash key (GET, INCR…), are ``WRONG_TYPE``; SET and DELETE replace or remove a key of any type,
and TTL changes keep the type — as in Redis.
"""

from __future__ import annotations

import decimal
import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import msgpack  # type: ignore[import-untyped, unused-ignore]

from raftcache.cache.checks import check_key
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.results import CommandError, ErrorCode
from raftcache.vocabulary import INT64_MAX, INT64_MIN

#: The command version of the hash ops.
HASH_VERSION: Final = 5
HASH_ACTIONS: Final = ("set", "del", "incr", "incrf", "read")
MAX_FIELDS_PER_OP: Final = 100_000

Fields: TypeAlias = dict[bytes, bytes]
#: A hash op's result: set/del → how many fields were added/removed; incr → the new int;
#: incrf → the new value (bytes, Redis's form); read → the flat [field, value, ...] list or
#: None when the key is missing.
HashResult: TypeAlias = int | bytes | tuple[bytes, ...] | None


@dataclass(frozen=True, slots=True)
class HashOp:
    """Batch op on the hash at ``key`` (module docstring). ``fields`` names the fields (set:
    with ``values`` alongside; del; incr/incrf: exactly one), ``by`` is the increment (an int
    for incr, a finite float for incrf), ``nx`` makes a set of one field create-only."""

    key: str
    action: str
    fields: tuple[bytes, ...] = ()
    values: tuple[bytes, ...] = ()
    by: int | float = 0
    nx: bool = False

    def __post_init__(self) -> None:
        check_key(self.key)
        action, fields, values = self.action, self.fields, self.values
        if action not in HASH_ACTIONS:
            raise InvalidCommandError(f"hash action must be one of {', '.join(HASH_ACTIONS)}")
        if not isinstance(fields, tuple) or not isinstance(values, tuple):
            raise InvalidCommandError("hash fields and values must be tuples")
        if len(fields) > MAX_FIELDS_PER_OP or not all(type(f) is bytes for f in fields):
            raise InvalidCommandError(f"hash fields must be at most {MAX_FIELDS_PER_OP} bytes")
        if not all(type(v) is bytes for v in values):
            raise InvalidCommandError("hash values must be bytes")
        if action == "set":
            if not fields or len(values) != len(fields):
                raise InvalidCommandError("a hash set needs as many values as fields (>= 1)")
            if not isinstance(self.nx, bool) or (self.nx and len(fields) != 1):
                raise InvalidCommandError("a create-only hash set names one field")
        elif values or self.nx:
            raise InvalidCommandError(f"a hash {action} takes no values")
        if action == "del" and not fields:
            raise InvalidCommandError("a hash del names at least one field")
        if action in ("incr", "incrf") and len(fields) != 1:
            raise InvalidCommandError(f"a hash {action} names one field")
        if action == "read" and fields:
            raise InvalidCommandError("a hash read takes no fields")
        by = self.by
        if action == "incr" and (type(by) is not int or not INT64_MIN <= by <= INT64_MAX):
            raise InvalidCommandError("a hash incr's by must be an int64")
        if action == "incrf" and (type(by) is not float or not math.isfinite(by)):
            raise InvalidCommandError("a hash incrf's by must be a finite float")

    @property
    def writes(self) -> bool:
        return self.action != "read"


# --- encoding -------------------------------------------------------------------------------


def encode_fields(fields: Fields) -> bytes:
    """The stored value of a hash: the msgpack map of its fields, in insertion order."""
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def decode_fields(value: bytes) -> Fields:
    """The fields of a stored hash value (a fresh dict the caller may change)."""
    fields: Fields = msgpack.unpackb(value, raw=True, strict_map_key=False, use_list=False)
    return fields


def hash_op_to_wire(op: HashOp) -> dict[str, Any]:
    wire: dict[str, Any] = {"o": "hash", "k": op.key, "a": op.action}
    if op.fields:
        wire["fs"] = list(op.fields)
    if op.values:
        wire["vs"] = list(op.values)
    if op.action in ("incr", "incrf"):
        wire["b"] = op.by
    if op.nx:
        wire["nx"] = True
    return wire


def hash_op_from_wire(wire: dict[str, Any]) -> HashOp:
    return HashOp(
        wire["k"],
        wire["a"],
        tuple(wire.get("fs", ())),
        tuple(wire.get("vs", ())),
        wire.get("b", 0),
        wire.get("nx", False),
    )


# --- applying -------------------------------------------------------------------------------


def wrong_type(key: str, op_index: int | None = None) -> CommandError:
    return CommandError(
        ErrorCode.WRONG_TYPE,
        f"{key!r} holds the wrong kind of value for this operation",
        op_index=op_index,
    )


def _hash_error(message: str, op_index: int | None) -> CommandError:
    return CommandError(ErrorCode.HASH_VALUE, message, op_index=op_index)


# What Redis's string2ll / string2ld accept (an int64 in canonical form; a float strtold reads).
_INT: Final = re.compile(rb"0|-?[1-9][0-9]{0,19}")
_FLOAT: Final = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INFINITY: Final = frozenset((b"inf", b"+inf", b"-inf", b"infinity", b"+infinity", b"-infinity"))


def parse_float(raw: bytes) -> float | None:
    """A float as Redis reads one for INCRBYFLOAT/HINCRBYFLOAT (the whole of ``raw``, no
    spaces, no NaN), or None."""
    if len(raw) <= 5 * 1024 and (_FLOAT.fullmatch(raw) or raw.lower() in _INFINITY):
        return float(raw)
    return None


def format_float(value: float) -> bytes:
    """``value`` as Redis writes an INCRBYFLOAT result: fixed notation, no exponent, no trailing
    zeros (``10.6``, ``5200``) — the shortest decimal that reads back as ``value``."""
    text = format(decimal.Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return b"0" if text in ("-0", "") else text.encode()


def apply_hash_op(
    fields: Fields | None, op: HashOp, op_index: int | None = None
) -> tuple[Fields | None, HashResult] | CommandError:
    """The fields after ``op`` (None: the key is missing or removed) and its result, given the
    key's ``fields`` before (None: missing); or the error (nothing changes). ``fields`` is
    changed in place when not None: pass a copy when the outcome may be discarded."""
    action = op.action
    if action == "read":
        if fields is None:
            return None, None
        return fields, tuple(x for pair in fields.items() for x in pair)
    if action == "del":
        if fields is None:
            return None, 0
        removed = sum(fields.pop(f, None) is not None for f in op.fields)
        return (fields or None), removed
    current = {} if fields is None else fields
    if action == "set":
        if op.nx:
            if op.fields[0] in current:
                return fields, 0
            current[op.fields[0]] = op.values[0]
            return current, 1
        added = 0
        for field, value in zip(op.fields, op.values, strict=True):
            added += field not in current
            current[field] = value
        return current, added
    field = op.fields[0]
    old = current.get(field)
    if action == "incr":
        base = 0
        if old is not None:
            if _INT.fullmatch(old) is None or not INT64_MIN <= int(old) <= INT64_MAX:
                return _hash_error("hash value is not an integer", op_index)
            base = int(old)
        number = base + int(op.by)
        if not INT64_MIN <= number <= INT64_MAX:
            return _hash_error("increment or decrement would overflow", op_index)
        current[field] = b"%d" % number
        return current, number
    real = 0.0 if old is None else parse_float(old)
    if real is None:
        return _hash_error("hash value is not a float", op_index)
    total = real + float(op.by)
    if not math.isfinite(total):
        return _hash_error("increment would produce NaN or Infinity", op_index)
    text = format_float(total)
    current[field] = text
    return current, text
