"""The key-level operations of the cache machine: counters, TTL-only changes, hashes, batches.

Rule: pure functions over an ``EntryStore`` and a command's ``now`` and index — no clock, no
I/O — shared by the single-key commands and the batch ops, so that INCR and a batch's ``incr``
(or TTL and a batch's ``ttl``) can never disagree. Each mutation goes through the store's
``put``/``remove`` so that every view of the store (and the watch recorder) follows.

A batch is all or nothing: ``check_batch`` first simulates every op in order on a shadow of the
keys it touches — sizes, conditions, counters, expiry changes — and only if none fails does
``apply_batch`` run them on the store. Both use the same helpers, so the simulation and the
real run agree. Hash ops (``raftcache.cache.hashes``) are checked and run the same way; a
string op that reads or changes the value of a hash key (get, incr) is ``WRONG_TYPE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from raftcache.cache.commands import BatchCommand, DeleteOp, GetOp, SetCommand, SetOp
from raftcache.cache.commands_v2 import IncrOp, TtlOp
from raftcache.cache.entries import HEADER_SIZE, NEVER, record_header, record_is_hash
from raftcache.cache.hashes import (
    Fields,
    HashOp,
    HashResult,
    apply_hash_op,
    decode_fields,
    encode_fields,
    wrong_type,
)
from raftcache.cache.results import BatchItem, CommandError, ErrorCode
from raftcache.cache.store import EntryStore
from raftcache.vocabulary import INT64_MAX, INT64_MIN

# ASCII decimal, optional minus; the int64 range is checked after parsing.
_COUNTER = re.compile(rb"-?[0-9]{1,32}")


def precondition_failed(current: int, op_index: int | None = None) -> CommandError:
    return CommandError(
        ErrorCode.PRECONDITION_FAILED,
        f"precondition failed: current version is {current}",
        current,
        op_index,
    )


def too_large(key: str, value_size: int, op_index: int | None = None) -> CommandError:
    return CommandError(
        ErrorCode.VALUE_TOO_LARGE,
        f"entry {key!r} with a {value_size}-byte value exceeds max_bytes",
        op_index=op_index,
    )


def condition_holds(current: int, if_version: int | None, if_absent: bool) -> bool:
    return (if_version is None or current == if_version) and not (if_absent and current != 0)


def expires_at_of(now: float, ttl: float | None) -> float:
    return NEVER if ttl is None else float(now + ttl)


def counter_value(
    key: str, value: bytes | None, by: int, op_index: int | None = None
) -> int | CommandError:
    """The counter after adding ``by`` to ``value`` (None = missing = 0), or the error."""
    base = 0
    if value is not None:
        if _COUNTER.fullmatch(value) is None:
            return CommandError(
                ErrorCode.NOT_A_COUNTER, f"{key!r} is not a counter", op_index=op_index
            )
        base = int(value)
        if not INT64_MIN <= base <= INT64_MAX:
            return CommandError(
                ErrorCode.NOT_A_COUNTER, f"{key!r} is outside int64", op_index=op_index
            )
    result = base + by
    if not INT64_MIN <= result <= INT64_MAX:
        return CommandError(
            ErrorCode.COUNTER_OVERFLOW, f"{key!r} would overflow int64", op_index=op_index
        )
    return result


def new_expiry(current: float, op: TtlOp, now: float) -> float | None:
    """The expiry ``op`` gives a live key whose expiry is ``current`` (NEVER for none), or
    None when it changes nothing (its condition fails, or PERSIST of a key without one)."""
    if op.ttl is None and op.at is None:
        return NEVER if current != NEVER else None
    when = float(op.at) if op.at is not None else float(now + op.ttl)  # type: ignore[operator]
    cond = op.condition
    if (
        (cond == "nx" and current != NEVER)
        or (cond == "xx" and current == NEVER)
        or (cond == "gt" and when <= current)  # no expiry counts as infinite
        or (cond == "lt" and when >= current)
    ):
        return None
    return when


def apply_ttl(store: EntryStore, index: int, op: TtlOp, now: float) -> tuple[bool, int]:
    """Change ``op.key``'s expiry: (changed, version after; 0 when missing or deleted). The
    caller checked ``if_version``. A new expiry at or before ``now`` deletes the key."""
    record = store.live(op.key, now)
    if record is None:
        return False, 0
    version, current = record_header(record)
    when = new_expiry(current, op, now)
    if when is None:
        return False, version
    if when <= now:
        store.remove(op.key, now)
        return True, 0
    # A TTL change is a write of the entry: new version, most recently used (docs/cache.md).
    store.put(op.key, record[HEADER_SIZE:], index, when, now, record_is_hash(record))
    return True, index


@dataclass(slots=True)
class _Shadow:
    """A key's state as the ops of a batch before the current one would leave it."""

    value: bytes | None  # None: missing
    version: int
    expires_at: float
    is_hash: bool = False


def _shadow_of(store: EntryStore, key: str, now: float) -> _Shadow:
    record = store.live(key, now)
    if record is None:
        return _Shadow(None, 0, NEVER)
    version, expires_at = record_header(record)
    return _Shadow(record[HEADER_SIZE:], version, expires_at, record_is_hash(record))


def _check_hash_op(
    store: EntryStore, index: int, op: HashOp, shadow: _Shadow, position: int
) -> CommandError | None:
    """Run a hash op on its key's shadow; the error it meets, if any."""
    if shadow.value is not None and not shadow.is_hash:
        return wrong_type(op.key, position)
    fields = None if shadow.value is None else decode_fields(shadow.value)
    outcome = apply_hash_op(fields, op, position)
    if isinstance(outcome, CommandError):
        return outcome
    after, result = outcome
    if not _hash_changed(op, result):
        return None
    if after is None:
        shadow.value, shadow.version, shadow.expires_at, shadow.is_hash = None, 0, NEVER, False
        return None
    encoded = encode_fields(after)
    if not store.fits(op.key, len(encoded)):
        return too_large(op.key, len(encoded), position)
    shadow.value, shadow.version, shadow.is_hash = encoded, index, True
    return None


def _hash_changed(op: HashOp, result: HashResult) -> bool:
    """Whether a hash op with this result changed its key: a read or a create-only set of an
    existing field does not, nor a del that removed nothing."""
    if op.action == "read":
        return False
    if op.action == "del" or op.nx:
        return result != 0
    return True


def apply_hash(store: EntryStore, index: int, op: HashOp, now: float) -> HashResult:
    """Run a checked hash op on the store (its errors were found by ``check_batch``); its
    result. A change gives the key the entry's version and keeps its expiry; a read is a
    replicated access, as a batch get."""
    record = store.live(op.key, now)
    fields: Fields | None = None if record is None else decode_fields(record[HEADER_SIZE:])
    outcome = apply_hash_op(fields, op)
    assert not isinstance(outcome, CommandError), outcome
    after, result = outcome
    if not _hash_changed(op, result):
        if record is not None:
            store.touch(op.key, now)
        return result
    if after is None:
        store.remove(op.key, now)
    else:
        expires_at = NEVER if record is None else record_header(record)[1]
        store.put(op.key, encode_fields(after), index, expires_at, now, True)
    return result


def check_batch(store: EntryStore, index: int, cmd: BatchCommand) -> CommandError | None:
    """The first op that would fail, as an error naming it; None if the batch applies."""
    now = cmd.now
    shadows: dict[str, _Shadow] = {}
    for position, op in enumerate(cmd.ops):
        shadow = shadows.get(op.key)
        if isinstance(op, GetOp):  # a string read: of a hash, WRONG_TYPE
            if shadow is not None:
                is_hash = shadow.is_hash
            else:
                record = store.live(op.key, now)
                is_hash = record is not None and record_is_hash(record)
            if is_hash:
                return wrong_type(op.key, position)
            continue
        if shadow is None:
            shadow = shadows[op.key] = _shadow_of(store, op.key, now)
        if isinstance(op, HashOp):
            error = _check_hash_op(store, index, op, shadow, position)
            if error is not None:
                return error
            continue
        if isinstance(op, IncrOp):
            if shadow.is_hash:
                return wrong_type(op.key, position)
            value = counter_value(op.key, shadow.value, op.by, position)
            if isinstance(value, CommandError):
                return value
            encoded = b"%d" % value
            if not store.fits(op.key, len(encoded)):
                return too_large(op.key, len(encoded), position)
            shadow.value, shadow.version = encoded, index
            continue
        if_absent = isinstance(op, SetOp) and op.if_absent
        if isinstance(op, SetOp) and not store.fits(op.key, len(op.value)):
            return too_large(op.key, len(op.value), position)
        if not condition_holds(shadow.version, op.if_version, if_absent):
            return precondition_failed(shadow.version, position)
        if isinstance(op, SetOp):
            if not op.keep_ttl or shadow.value is None:
                shadow.expires_at = expires_at_of(now, op.ttl)
            shadow.value, shadow.version, shadow.is_hash = op.value, index, False
        elif isinstance(op, DeleteOp):
            shadow.value, shadow.version, shadow.expires_at = None, 0, NEVER
            shadow.is_hash = False
        elif shadow.value is not None:  # a TTL op on a live key
            when = new_expiry(shadow.expires_at, op, now)
            if when is not None and when <= now:
                shadow.value, shadow.version, shadow.expires_at = None, 0, NEVER
            elif when is not None:
                shadow.version, shadow.expires_at = index, when
    return None


def apply_batch(store: EntryStore, index: int, cmd: BatchCommand) -> tuple[BatchItem, ...]:
    """Run a checked batch: get → value or None, set → version, delete → bool, incr → the new
    value, ttl → whether the expiry changed."""
    now = cmd.now
    results: list[BatchItem] = []
    for op in cmd.ops:
        if type(op) is GetOp:
            record = store.live(op.key, now)
            if record is not None:
                store.touch(op.key, now)
            results.append(None if record is None else record[HEADER_SIZE:])
        elif type(op) is SetOp:
            store.put(op.key, op.value, index, set_expiry(store, op, now), now)
            results.append(index)
        elif type(op) is DeleteOp:
            results.append(store.remove(op.key, now))
        elif type(op) is IncrOp:
            results.append(apply_incr(store, index, op.key, op.by, now))
        elif type(op) is HashOp:
            results.append(apply_hash(store, index, op, now))
        else:
            assert isinstance(op, TtlOp)
            results.append(apply_ttl(store, index, op, now)[0])
    store.settle(now)
    return tuple(results)


def set_expiry(store: EntryStore, op: SetOp | SetCommand, now: float) -> float:
    """The expiry a set (SET or a batch's set) writes: its ``ttl``'s, or with ``keep_ttl``
    the live key's."""
    if op.keep_ttl:
        record = store.live(op.key, now)
        return NEVER if record is None else record_header(record)[1]
    return expires_at_of(now, op.ttl)


def incr(
    store: EntryStore, index: int, key: str, by: int, now: float, op_index: int | None = None
) -> int | CommandError:
    """INCR: add ``by`` to the counter at ``key`` (missing = 0) and write it, keeping the
    key's expiry; the new value, or the error (nothing written)."""
    record = store.live(key, now)
    if record is not None and record_is_hash(record):
        return wrong_type(key, op_index)
    value = counter_value(key, None if record is None else record[HEADER_SIZE:], by, op_index)
    if isinstance(value, CommandError):
        return value
    encoded = b"%d" % value
    if not store.fits(key, len(encoded)):
        return too_large(key, len(encoded), op_index)
    expires_at = NEVER if record is None else record_header(record)[1]
    store.put(key, encoded, index, expires_at, now)
    return value


def apply_incr(store: EntryStore, index: int, key: str, by: int, now: float) -> int:
    """INCR of a checked counter (its errors were found by the caller): the new value."""
    value = incr(store, index, key, by, now)
    assert not isinstance(value, CommandError), value
    return value
