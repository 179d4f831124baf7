"""String commands: GET, MGET, STRLEN, SET (NX XX GET EX PX EXAT PXAT KEEPTTL), SETNX, SETEX,
PSETEX, GETSET, GETDEL, GETEX, MSET, MSETNX, INCR, INCRBY, DECR, DECRBY, INCRBYFLOAT, APPEND.

Rule: each command is one ``Call`` whose ``simulate`` is the reference semantics (Redis's, on
the states of its keys) and whose ``mode`` picks the cheapest route that keeps them: a READ
shares a read barrier; a BATCH is unconditional batch ops that share a log entry with other
writes (a plain SET, SET GET as get+set, GETDEL as get+delete, MSET); a WRITE is one proposal
of its own (SET NX and SETNX, a create-only set; INCR, the cache's counter command); anything
that must read a key before deciding how to write it (SET XX; NX with GET, KEEPTTL or EXAT)
runs as a transaction (``raftcache.resp.txn``). SET KEEPTTL is a ``keep_ttl`` set and SET
EXAT/PXAT a set followed by a ``ttl`` op in the same batch (command version 2; transactions
until a rolling upgrade has enabled it). SETEX and PSETEX are SET EX / PX. GETEX with an
option is a get and a ``ttl`` op in one batch (atomic: one log entry; a transaction before
version 2); without one it is a GET. MSETNX is one batch of create-only sets (``if_absent``):
the batch applies all or nothing, so either every key is set or none is. INCRBYFLOAT and
APPEND compute the new value from the old one, so they are transactions (read, then a write
conditioned on the version read); both keep the key's TTL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from raftcache.cache.commands import BatchOp, DeleteOp, GetOp, SetOp
from raftcache.cache.commands_v2 import IncrOp, TtlOp
from raftcache.cache.errors import PreconditionFailedError
from raftcache.cache.hashes import format_float
from raftcache.cache.hashes import parse_float as read_float
from raftcache.cache.results import BatchItem
from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.backend import Backend
from raftcache.resp.calls import Call, Entry, Mode, Reply, View
from raftcache.resp.errors import (
    NOT_FLOAT,
    NOT_INTEGER,
    OVERFLOW,
    SYNTAX,
    invalid_expire,
    wrong_args,
)
from raftcache.resp.protocol import OK, RespError
from raftcache.vocabulary import INT64_MAX, INT64_MIN

_COUNTER: Final = re.compile(rb"-?[0-9]{1,32}")  # what the cache's INCR accepts


class Get(Call):
    """GET key."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, key: str) -> None:
        self.keys = (key,)

    def simulate(self, view: View) -> Reply:
        return _value(view.string(self.keys[0]))


class MGet(Call):
    """MGET key [key ...]."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def simulate(self, view: View) -> Reply:
        # Redis answers nil for a key holding another type, not WRONGTYPE.
        return [None if (e := view.get(key)) is None or e.is_hash else e.value for key in self.keys]


class StrLen(Call):
    """STRLEN key."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, key: str) -> None:
        self.keys = (key,)

    def simulate(self, view: View) -> Reply:
        found = view.string(self.keys[0])
        return 0 if found is None else len(found.value)


class Set(Call):
    """SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]; also SETNX
    and GETSET, which are SETs with fixed options and their own replies."""

    in_multi = True
    writes = True

    def __init__(
        self,
        key: str,
        value: bytes,
        *,
        nx: bool = False,
        xx: bool = False,
        get: bool = False,
        ttl: float | None = None,
        at: float | None = None,
        keepttl: bool = False,
        as_setnx: bool = False,
    ) -> None:
        self.keys = self.pinned = (key,)
        self.value = value
        self.nx, self.xx, self.get, self.keepttl = nx, xx, get, keepttl
        self.ttl, self.at = ttl, at
        self.as_setnx = as_setnx
        if xx or (nx and (get or keepttl or at is not None)):
            self.mode = Mode.TXN  # reads the key before deciding how to write it
        elif nx:
            self.mode = Mode.WRITE  # a create-only set: its own proposal, its own condition
        else:
            self.mode = Mode.BATCH
            if keepttl or at is not None:  # a keep_ttl set / a set then a ttl op: version 2
                self.needs_command_version, self.fallback_mode = 2, Mode.TXN

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        old = view.string(key) if self.get else view.get(key)  # SET replaces a hash; GET reads
        if (self.nx and old is not None) or (self.xx and old is None):
            return 0 if self.as_setnx else (None if not self.get else _value(old))
        if self.keepttl:
            expires_at = None if old is None else old.expires_at
        elif self.at is not None:
            expires_at = self.at
        else:
            expires_at = None if self.ttl is None else view.now + self.ttl
        view.put(key, self.value, expires_at)
        return 1 if self.as_setnx else (_value(old) if self.get else OK)

    def batch_ops(self) -> list[BatchOp]:
        key = self.keys[0]
        ops: list[BatchOp] = [GetOp(key)] if self.get else []
        ops.append(SetOp(key, self.value, ttl=self.ttl, keep_ttl=self.keepttl))
        if self.at is not None:  # EXAT/PXAT: an instant already past deletes the key
            ops.append(TtlOp(key, at=self.at))
        return ops

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return results[0] if self.get else OK

    async def run(self, backend: Backend) -> Reply:
        try:  # only SET NX and SETNX run here
            await backend.set(self.keys[0], self.value, ttl=self.ttl, if_absent=True)
        except PreconditionFailedError:
            return 0 if self.as_setnx else None
        return 1 if self.as_setnx else OK


def _value(entry: Entry | None) -> bytes | None:
    return None if entry is None else entry.value


class GetDel(Call):
    """GETDEL key: a get and a delete in one batch."""

    mode = Mode.BATCH
    in_multi = True
    writes = True

    def __init__(self, key: str) -> None:
        self.keys = self.pinned = (key,)

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        old = _value(view.string(key))
        view.remove(key)
        return old

    def batch_ops(self) -> list[BatchOp]:
        return [GetOp(self.keys[0]), DeleteOp(self.keys[0])]

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return results[0]


class MSet(Call):
    """MSET key value [key value ...]: one batch, so all are set at once."""

    mode = Mode.BATCH
    in_multi = True
    writes = True

    def __init__(self, pairs: list[tuple[str, bytes]]) -> None:
        self.pairs = pairs
        self.keys = self.pinned = tuple(k for k, _ in pairs)

    def simulate(self, view: View) -> Reply:
        for key, value in self.pairs:
            view.put(key, value)
        return OK

    def batch_ops(self) -> list[BatchOp]:
        return [SetOp(key, value) for key, value in self.pairs]

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return OK


class GetEx(Call):
    """GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]: the value, and the key's new
    expiry (an instant already past deletes the key, as in Redis); no option is a GET."""

    in_multi = True

    def __init__(
        self, key: str, *, ttl: float | None = None, at: float | None = None, persist: bool = False
    ) -> None:
        self.keys = (key,)
        self.ttl, self.at, self.persist = ttl, at, persist
        if ttl is None and at is None and not persist:
            self.mode = Mode.READ
        else:  # a get then a ttl op in one batch (version 2); a transaction before
            self.mode, self.writes, self.pinned = Mode.BATCH, True, (key,)
            self.needs_command_version, self.fallback_mode = 2, Mode.TXN

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        old = view.string(key)
        if old is None or self.mode is Mode.READ:
            return _value(old)
        if self.persist:
            view.put(key, old.value, None)
        elif self.at is not None:
            view.put(key, old.value, self.at)
        elif self.ttl is not None:
            view.put(key, old.value, view.now + self.ttl)
        return old.value

    def batch_ops(self) -> list[BatchOp]:
        key = self.keys[0]
        return [GetOp(key), TtlOp(key, ttl=self.ttl, at=self.at)]  # neither: PERSIST

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return results[0]


class MSetNx(Call):
    """MSETNX key value [key value ...]: 1 if every key was missing and all were set, 0 (and
    nothing set) if any existed. One batch of create-only sets: all or nothing. A key named
    twice gets its last value, as in Redis."""

    mode = Mode.WRITE
    in_multi = True
    writes = True

    def __init__(self, pairs: list[tuple[str, bytes]]) -> None:
        self.pairs = list(dict(pairs).items())  # first position, last value
        self.keys = self.pinned = tuple(key for key, _ in self.pairs)

    def simulate(self, view: View) -> Reply:
        if any(view.get(key) is not None for key in self.keys):
            return 0
        for key, value in self.pairs:
            view.put(key, value)
        return 1

    async def run(self, backend: Backend) -> Reply:
        try:
            await backend.batch([SetOp(key, value, if_absent=True) for key, value in self.pairs])
        except PreconditionFailedError:
            return 0  # one existed: the batch applied nothing
        return 1


class IncrBy(Call):
    """INCR, INCRBY, DECR, DECRBY: the cache's counter command (keeps the key's expiry)."""

    mode = Mode.WRITE
    in_multi = True
    writes = True

    def __init__(self, key: str, by: int) -> None:
        self.keys = self.pinned = (key,)
        self.by = by

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        old = view.string(key)
        base = 0
        if old is not None:
            if _COUNTER.fullmatch(old.value) is None:
                raise NOT_INTEGER
            base = int(old.value)
            if not INT64_MIN <= base <= INT64_MAX:
                raise NOT_INTEGER
        result = base + self.by
        if not INT64_MIN <= result <= INT64_MAX:
            raise OVERFLOW
        view.put(key, b"%d" % result, None if old is None else old.expires_at)
        return result

    async def run(self, backend: Backend) -> Reply:
        return await backend.incr(self.keys[0], self.by)

    def multi_ops(self) -> list[BatchOp] | None:
        return [IncrOp(self.keys[0], self.by)]  # command version 2: a batch op

    def multi_reply(self, results: Sequence[BatchItem]) -> Reply:
        return results[0]


class IncrByFloat(Call):
    """INCRBYFLOAT key increment: the value as a float plus ``increment``, stored in Redis's
    human form (fixed notation, no trailing zeros); keeps the key's TTL. A transaction: the
    cache's counter is an int64."""

    mode = Mode.TXN
    in_multi = True
    writes = True

    def __init__(self, key: str, by: float) -> None:
        self.keys = self.pinned = (key,)
        self.by = by

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        old = view.string(key)
        base = 0.0 if old is None else parse_float(old.value)
        result = base + self.by
        if not math.isfinite(result):
            raise RespError("ERR increment would produce NaN or Infinity")
        text = format_float(result)
        view.put(key, text, None if old is None else old.expires_at)
        return text


class Append(Call):
    """APPEND key value: the length after appending (a missing key counts as empty); keeps the
    key's TTL. A transaction: the cache has no append."""

    mode = Mode.TXN
    in_multi = True
    writes = True

    def __init__(self, key: str, value: bytes, max_value_bytes: int) -> None:
        self.keys = self.pinned = (key,)
        self.value = value
        self.max_value_bytes = max_value_bytes

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        old = view.string(key)
        value = self.value if old is None else old.value + self.value
        if len(value) > self.max_value_bytes:
            raise RespError("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
        view.put(key, value, None if old is None else old.expires_at)
        return len(value)


def parse_float(raw: bytes) -> float:
    """A float as Redis's INCRBYFLOAT reads one, else ``ERR value is not a valid float``."""
    value = read_float(raw)
    if value is None:
        raise NOT_FLOAT
    return value


# --- parsers ------------------------------------------------------------------------------


def parse_get(argv: Sequence[bytes], limits: Limits) -> Call:
    return Get(args.key(argv[0]))


def parse_mget(argv: Sequence[bytes], limits: Limits) -> Call:
    return MGet(args.keys(argv, limits))


def parse_strlen(argv: Sequence[bytes], limits: Limits) -> Call:
    return StrLen(args.key(argv[0]))


def parse_getdel(argv: Sequence[bytes], limits: Limits) -> Call:
    return GetDel(args.key(argv[0]))


def parse_setnx(argv: Sequence[bytes], limits: Limits) -> Call:
    return Set(args.key(argv[0]), args.value(argv[1], limits), nx=True, as_setnx=True)


def parse_getset(argv: Sequence[bytes], limits: Limits) -> Call:
    return Set(args.key(argv[0]), args.value(argv[1], limits), get=True)


def _pairs(name: str, argv: Sequence[bytes], limits: Limits) -> list[tuple[str, bytes]]:
    if len(argv) % 2:
        raise wrong_args(name)
    if len(argv) // 2 > limits.max_keys_per_command:
        raise RespError(f"ERR at most {limits.max_keys_per_command} keys per command")
    return [(args.key(argv[i]), args.value(argv[i + 1], limits)) for i in range(0, len(argv), 2)]


def parse_mset(argv: Sequence[bytes], limits: Limits) -> Call:
    return MSet(_pairs("mset", argv, limits))


def parse_msetnx(argv: Sequence[bytes], limits: Limits) -> Call:
    return MSetNx(_pairs("msetnx", argv, limits))


def _expiry(name: str, raw: bytes) -> int:
    """A SET/SETEX/GETEX expiry amount: an integer (else "not an integer"), positive and
    within Redis's range (else "invalid expire time in '<name>' command")."""
    amount = args.integer(raw)
    if amount <= 0 or amount > INT64_MAX // 1000:
        raise invalid_expire(name)
    return amount


def parse_setex(argv: Sequence[bytes], limits: Limits) -> Call:
    seconds = _expiry("setex", argv[1])
    return Set(args.key(argv[0]), args.value(argv[2], limits), ttl=float(seconds))


def parse_psetex(argv: Sequence[bytes], limits: Limits) -> Call:
    millis = _expiry("psetex", argv[1])
    return Set(args.key(argv[0]), args.value(argv[2], limits), ttl=millis / 1000)


def parse_getex(argv: Sequence[bytes], limits: Limits) -> Call:
    """GETEX's options, with Redis's rules: one expiry option at most, PERSIST with none."""
    key = args.key(argv[0])
    ttl: float | None = None
    at: float | None = None
    persist = False
    i = 1
    while i < len(argv):
        option = args.upper(argv[i])
        if option == "PERSIST" and ttl is None and at is None:
            persist = True
        elif option in _TTL_OPTIONS and i + 1 < len(argv) and not persist:
            if ttl is not None or at is not None:
                raise SYNTAX
            seconds = _expiry("getex", argv[i + 1]) * _TTL_OPTIONS[option]
            if option.endswith("AT"):
                at = seconds
            else:
                ttl = seconds
            i += 1
        else:
            raise SYNTAX
        i += 1
    return GetEx(key, ttl=ttl, at=at, persist=persist)


def parse_incrbyfloat(argv: Sequence[bytes], limits: Limits) -> Call:
    by = parse_float(argv[1])
    if not math.isfinite(by):
        raise RespError("ERR increment would produce NaN or Infinity")
    return IncrByFloat(args.key(argv[0]), by)


def parse_append(argv: Sequence[bytes], limits: Limits) -> Call:
    return Append(args.key(argv[0]), args.value(argv[1], limits), limits.max_value_bytes)


def parse_incr(argv: Sequence[bytes], limits: Limits) -> Call:
    return IncrBy(args.key(argv[0]), 1)


def parse_decr(argv: Sequence[bytes], limits: Limits) -> Call:
    return IncrBy(args.key(argv[0]), -1)


def parse_incrby(argv: Sequence[bytes], limits: Limits) -> Call:
    return IncrBy(args.key(argv[0]), args.integer(argv[1]))


def parse_decrby(argv: Sequence[bytes], limits: Limits) -> Call:
    by = -args.integer(argv[1])
    if by > INT64_MAX:
        raise RespError("ERR decrement would overflow")
    return IncrBy(args.key(argv[0]), by)


_TTL_OPTIONS: Final = {"EX": 1.0, "PX": 0.001, "EXAT": 1.0, "PXAT": 0.001}


def parse_set(argv: Sequence[bytes], limits: Limits) -> Call:
    """SET's options, with Redis's rules: NX/XX exclusive, one expiry option at most."""
    key, value = args.key(argv[0]), args.value(argv[1], limits)
    flags: set[str] = set()
    ttl: float | None = None
    at: float | None = None
    i = 2
    while i < len(argv):
        option = args.upper(argv[i])
        if option in ("NX", "XX", "GET", "KEEPTTL") and option not in flags:
            flags.add(option)
        elif option in _TTL_OPTIONS and i + 1 < len(argv) and ttl is None and at is None:
            seconds = _expiry("set", argv[i + 1]) * _TTL_OPTIONS[option]
            if option.endswith("AT"):
                at = seconds
            else:
                ttl = seconds
            flags.add("EXPIRY")
            i += 1
        else:
            raise SYNTAX
        i += 1
    if {"NX", "XX"} <= flags or {"KEEPTTL", "EXPIRY"} <= flags:
        raise SYNTAX
    return Set(
        key,
        value,
        nx="NX" in flags,
        xx="XX" in flags,
        get="GET" in flags,
        ttl=ttl,
        at=at,
        keepttl="KEEPTTL" in flags,
    )
