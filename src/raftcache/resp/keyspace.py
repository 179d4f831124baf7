"""Generic key commands: DEL, UNLINK, EXISTS, TOUCH, TYPE, EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT,
PERSIST, TTL, PTTL, EXPIRETIME, PEXPIRETIME, RENAME, RENAMENX, COPY, OBJECT.

Rule: as in ``raftcache.resp.strings``, ``simulate`` is the semantics and ``mode`` the route.
DEL is a batch of deletes; EXISTS and TYPE are reads. The expiry
commands are the cache's TTL-only change (a batch ``ttl`` op, command version 2): the value is
not rewritten, the key gets a new version, and they share log entries with other writes. Until
a rolling upgrade has enabled format 2 (and for the rare EXPIRE with two conditions, such as
XX LT) they fall back to transactions that rewrite the value with the new TTL, conditioned on
the version they read. TTL, PTTL, EXPIRETIME and PEXPIRETIME read the expiry, which only a
full read (not a value read) returns. TOUCH is a read like EXISTS: a read refreshes its keys'
recency (the path GET takes), even on a ``CLIENT NO-TOUCH`` connection, as in Redis. RENAME,
RENAMENX and COPY are transactions over their two keys (the value and the TTL move together);
OBJECT ENCODING and REFCOUNT are reads.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from raftcache.cache.commands import BatchOp, DeleteOp
from raftcache.cache.commands_v2 import TtlOp
from raftcache.cache.results import BatchItem
from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Mode, Reply, View
from raftcache.resp.errors import SYNTAX, invalid_expire
from raftcache.resp.protocol import OK, RespError, Simple
from raftcache.resp.state import ClientState
from raftcache.resp.values import HashValue
from raftcache.vocabulary import INT64_MAX, INT64_MIN

_STRING: Final = Simple("string")
_NONE: Final = Simple("none")
_HASH: Final = Simple("hash")


class Delete(Call):
    """DEL key [key ...] (and UNLINK): how many of the keys existed."""

    mode = Mode.BATCH
    in_multi = True
    writes = True
    splits = True  # on a sharded store, each group's keys are deleted apart

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = self.pinned = keys

    def simulate(self, view: View) -> Reply:
        return sum(view.remove(key) for key in self.keys)

    def batch_ops(self) -> list[BatchOp]:
        return [DeleteOp(key) for key in self.keys]

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return sum(bool(result) for result in results)


class Exists(Call):
    """EXISTS key [key ...]: how many of the keys exist (a key named twice counts twice)."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def simulate(self, view: View) -> Reply:
        return sum(view.get(key) is not None for key in self.keys)


class Touch(Exists):
    """TOUCH key [key ...]: how many of the keys exist; the read refreshes their recency (also
    on a ``CLIENT NO-TOUCH`` connection, which then runs it alone: ``run_server``)."""

    always_touches = True

    async def run_server(self, ctx: ClientState) -> Reply:
        values = await ctx.server.reads.submit(self.keys, ctx.consistency, touch=True)
        return self.reply_values(values)


class Type(Call):
    """TYPE key: ``string``, ``hash`` or ``none``."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, key: str) -> None:
        self.keys = (key,)

    def simulate(self, view: View) -> Reply:
        entry = view.get(self.keys[0])
        return _NONE if entry is None else _HASH if entry.is_hash else _STRING


class Expire(Call):
    """EXPIRE/PEXPIRE key amount [NX | XX | GT | LT], and the absolute EXPIREAT/PEXPIREAT.

    Args:
        key: the key.
        seconds: the new TTL, or with ``absolute`` the expiry as epoch seconds.
        absolute: whether ``seconds`` is an instant rather than a duration.
        conditions: any of ``"NX"`` (only without a TTL), ``"XX"`` (only with one), ``"GT"``
            (only to a later expiry; none counts as infinite), ``"LT"`` (only to an earlier).
    """

    mode = Mode.BATCH
    needs_command_version = 2
    fallback_mode = Mode.TXN
    in_multi = True
    writes = True

    def __init__(
        self, key: str, seconds: float, *, absolute: bool, conditions: frozenset[str]
    ) -> None:
        self.keys = self.pinned = (key,)
        self.seconds = seconds
        self.absolute = absolute
        self.conditions = conditions
        condition = _one_condition(conditions)
        if condition is None and conditions:
            self.mode = Mode.TXN  # two conditions (XX with LT): no single ttl op says it
            self.needs_command_version = 1
        self.condition = condition

    def batch_ops(self) -> list[BatchOp]:
        key = self.keys[0]
        if self.absolute:
            return [TtlOp(key, at=self.seconds, condition=self.condition)]
        return [TtlOp(key, ttl=self.seconds, condition=self.condition)]

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return int(bool(results[0]))

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        entry = view.get(key)
        if entry is None:
            return 0
        when = self.seconds if self.absolute else view.now + self.seconds
        current = entry.expires_at
        conds = self.conditions
        if (
            ("NX" in conds and current is not None)
            or ("XX" in conds and current is None)
            or ("GT" in conds and (current is None or when <= current))
            or ("LT" in conds and current is not None and when >= current)
        ):
            return 0
        view.put(key, entry.value, when)  # an instant already past deletes the key
        return 1


class Persist(Call):
    """PERSIST key: remove the TTL; 1 if there was one."""

    mode = Mode.BATCH
    needs_command_version = 2
    fallback_mode = Mode.TXN
    in_multi = True
    writes = True

    def __init__(self, key: str) -> None:
        self.keys = self.pinned = (key,)

    def batch_ops(self) -> list[BatchOp]:
        return [TtlOp(self.keys[0])]

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return int(bool(results[0]))

    def simulate(self, view: View) -> Reply:
        key = self.keys[0]
        entry = view.get(key)
        if entry is None or entry.expires_at is None:
            return 0
        view.put(key, entry.value, None)
        return 1


class _KeyTime(Call):
    """A read of one key's expiry, in seconds or (``millis``) milliseconds."""

    mode = Mode.TXN
    in_multi = True

    def __init__(self, key: str, *, millis: bool) -> None:
        self.keys = self.pinned = (key,)
        self.millis = millis


class Ttl(_KeyTime):
    """TTL and PTTL: time left (-2 missing, -1 no expiry); TTL rounds to the nearest second."""

    def simulate(self, view: View) -> Reply:
        left = view.pttl(self.keys[0])
        return left if self.millis or left < 0 else (left + 500) // 1000


class ExpireTime(_KeyTime):
    """EXPIRETIME and PEXPIRETIME: the absolute expiry as Unix seconds (rounded to the nearest,
    as Redis does) or milliseconds; -1 without one, -2 if the key is missing."""

    def simulate(self, view: View) -> Reply:
        entry = view.get(self.keys[0])
        if entry is None:
            return -2
        if entry.expires_at is None:
            return -1
        at = max(0, round(entry.expires_at * 1000))
        return at if self.millis else (at + 500) // 1000


class Rename(Call):
    """RENAME src dst (``OK``; ``ERR no such key``) and RENAMENX (1, or 0 when ``dst`` exists):
    ``dst`` takes ``src``'s value and TTL, ``src`` is deleted. A transaction over both keys (on
    a sharded store they must share a group: ``CROSSSLOT`` otherwise)."""

    mode = Mode.TXN
    in_multi = True
    writes = True

    def __init__(self, src: str, dst: str, *, nx: bool) -> None:
        self.keys = self.pinned = (src, dst) if src != dst else (src,)
        self.src, self.dst, self.nx = src, dst, nx

    def simulate(self, view: View) -> Reply:
        entry = view.get(self.src)
        if entry is None:
            raise RespError("ERR no such key")
        if self.src == self.dst:
            return 0 if self.nx else OK
        if self.nx and view.get(self.dst) is not None:
            return 0
        view.remove(self.src)
        view.put(self.dst, entry.value, entry.expires_at)
        return 1 if self.nx else OK


class Copy(Call):
    """COPY src dst [DB 0] [REPLACE]: 1 if ``dst`` now holds ``src``'s value and TTL, 0 if
    ``src`` is missing or ``dst`` exists without REPLACE. Only database 0 exists."""

    mode = Mode.TXN
    in_multi = True
    writes = True

    def __init__(self, src: str, dst: str, *, replace: bool) -> None:
        self.keys = self.pinned = (src, dst)
        self.src, self.dst, self.replace = src, dst, replace

    def simulate(self, view: View) -> Reply:
        entry = view.get(self.src)
        if entry is None or (not self.replace and view.get(self.dst) is not None):
            return 0
        view.put(self.dst, entry.value, entry.expires_at)
        return 1


_OBJECT_HELP: Final = (
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Not tracked: the cache evicts by LRU order (the error says so).",
    "IDLETIME <key>",
    "    Not tracked: the LRU order is replicated, with no access clock (the error says so).",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key> (always 1).",
    "HELP",
    "    Print this help.",
)


class Object(Call):
    """OBJECT ENCODING|REFCOUNT key: what Redis would answer for the value (``int``, ``embstr``
    or ``raw``; nil for a missing key); IDLETIME and FREQ answer that they are not tracked;
    HELP lists them."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, subcommand: str, key: str) -> None:
        self.keys = (key,)
        self.subcommand = subcommand

    def simulate(self, view: View) -> Reply:
        entry = view.get(self.keys[0])
        if entry is None:
            return None
        if self.subcommand == "REFCOUNT":
            return 1
        if isinstance(entry.value, HashValue):
            return hash_encoding(entry.value.fields())
        return string_encoding(entry.value)


class ObjectHelp(Call):
    """OBJECT HELP."""

    def run_server(self, ctx: ClientState) -> Reply:
        return [Simple(line) for line in _OBJECT_HELP]


def string_encoding(value: bytes) -> str:
    """Redis's encoding of a string value: ``int`` (an int64 in canonical form of at most 20
    characters), ``embstr`` (at most 44 bytes), else ``raw``."""
    if (
        len(value) <= 20
        and _CANONICAL_INT.fullmatch(value)
        and INT64_MIN <= int(value) <= INT64_MAX
    ):
        return "int"
    return "embstr" if len(value) <= 44 else "raw"


_CANONICAL_INT: Final = re.compile(rb"0|-?[1-9][0-9]*")


def hash_encoding(fields: dict[bytes, bytes]) -> str:
    """Redis's encoding of a hash with its default limits: ``listpack`` up to 128 fields of
    at most 64 bytes each (names and values), else ``hashtable``."""
    small = len(fields) <= 128 and all(len(f) <= 64 and len(v) <= 64 for f, v in fields.items())
    return "listpack" if small else "hashtable"


# --- parsers ------------------------------------------------------------------------------


def parse_del(argv: Sequence[bytes], limits: Limits) -> Call:
    return Delete(args.keys(argv, limits))


def parse_exists(argv: Sequence[bytes], limits: Limits) -> Call:
    return Exists(args.keys(argv, limits))


def parse_touch(argv: Sequence[bytes], limits: Limits) -> Call:
    return Touch(args.keys(argv, limits))


def parse_expiretime(argv: Sequence[bytes], limits: Limits) -> Call:
    return ExpireTime(args.key(argv[0]), millis=False)


def parse_pexpiretime(argv: Sequence[bytes], limits: Limits) -> Call:
    return ExpireTime(args.key(argv[0]), millis=True)


def parse_type(argv: Sequence[bytes], limits: Limits) -> Call:
    return Type(args.key(argv[0]))


def parse_rename(argv: Sequence[bytes], limits: Limits) -> Call:
    return Rename(args.key(argv[0]), args.key(argv[1]), nx=False)


def parse_renamenx(argv: Sequence[bytes], limits: Limits) -> Call:
    return Rename(args.key(argv[0]), args.key(argv[1]), nx=True)


def parse_copy(argv: Sequence[bytes], limits: Limits) -> Call:
    src, dst = args.key(argv[0]), args.key(argv[1])
    replace = False
    i = 2
    while i < len(argv):
        option = args.upper(argv[i])
        if option == "REPLACE":
            replace = True
        elif option == "DB" and i + 1 < len(argv):
            if args.integer(argv[i + 1]) != 0:
                raise RespError("ERR DB index is out of range")  # only database 0 exists
            i += 1
        else:
            raise SYNTAX
        i += 1
    if src == dst:
        raise RespError("ERR source and destination objects are the same")
    return Copy(src, dst, replace=replace)


def parse_object(argv: Sequence[bytes], limits: Limits) -> Call:
    subcommand = args.upper(argv[0])
    if subcommand == "HELP" and len(argv) == 1:
        return ObjectHelp()
    if subcommand in ("ENCODING", "REFCOUNT") and len(argv) == 2:
        return Object(subcommand, args.key(argv[1]))
    if subcommand == "IDLETIME" and len(argv) == 2:
        raise RespError(
            "ERR idle time is not tracked: the cache's LRU is a replicated order, not a clock"
        )
    if subcommand == "FREQ" and len(argv) == 2:
        raise RespError(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. "
            "Please note that when switching between policies at runtime LRU and LFU data "
            "will take some time to adjust."
        )
    raise RespError(
        f"ERR unknown subcommand or wrong number of arguments for '{args.text(argv[0])}'. "
        "Try OBJECT HELP."
    )


def parse_persist(argv: Sequence[bytes], limits: Limits) -> Call:
    return Persist(args.key(argv[0]))


def parse_ttl(argv: Sequence[bytes], limits: Limits) -> Call:
    return Ttl(args.key(argv[0]), millis=False)


def parse_pttl(argv: Sequence[bytes], limits: Limits) -> Call:
    return Ttl(args.key(argv[0]), millis=True)


def _expire_parser(name: str, unit: float, absolute: bool) -> args.Parser:
    def parse(argv: Sequence[bytes], limits: Limits) -> Call:
        amount = args.integer(argv[1])
        # Redis refuses amounts whose millisecond form overflows int64.
        if abs(amount) > INT64_MAX * unit / 1000:
            raise invalid_expire(name)
        return Expire(
            args.key(argv[0]),
            amount * unit,
            absolute=absolute,
            conditions=_expire_conditions(argv[2:]),
        )

    return parse


def _one_condition(conditions: frozenset[str]) -> str | None:
    """The single ttl-op condition equivalent to Redis's set of EXPIRE options, or None (also
    for "no condition"). XX+GT is GT (GT already fails without an expiry); XX+LT has none."""
    if conditions == {"XX", "GT"}:
        return "gt"
    if len(conditions) == 1:
        return next(iter(conditions)).lower()
    return None


def _expire_conditions(options: Sequence[bytes]) -> frozenset[str]:
    chosen: set[str] = set()
    for raw in options:
        option = args.upper(raw)
        if option not in ("NX", "XX", "GT", "LT"):
            raise RespError(f"ERR Unsupported option {args.text(raw)}")
        chosen.add(option)
    if "NX" in chosen and len(chosen) > 1:
        raise RespError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if {"GT", "LT"} <= chosen:
        raise RespError("ERR GT and LT options at the same time are not compatible")
    return frozenset(chosen)


parse_expire = _expire_parser("expire", 1.0, absolute=False)
parse_pexpire = _expire_parser("pexpire", 0.001, absolute=False)
parse_expireat = _expire_parser("expireat", 1.0, absolute=True)
parse_pexpireat = _expire_parser("pexpireat", 0.001, absolute=True)
