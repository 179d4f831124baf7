"""The Redis commands a Lua script may call (``redis.call``), run inside the state machine.

Rule: each command is a pure function ``fn(keyspace, args) -> Reply`` over a ``Keyspace`` — the
machine's entry store at one entry's index and ``now`` — with Redis's replies and error texts.
It reads no clock (``now`` is the entry's), so every replica computes the same reply and the
same writes. A write gets the entry's index as its version, as every write of that entry does.

The table is open: ``script_command(name, arity, writes=...)`` registers a function, so a
command added to the machine later (hashes, APPEND...) becomes callable from scripts with one
decorated function in the module that adds it (imported by ``raftcache.cache.machine``).
``Keyspace`` tells value types apart (``kind``), so the string commands here answer
``WRONGTYPE`` on a hash as Redis does, and TYPE, EXISTS, EXPIRE and PERSIST work on any type;
the hash commands themselves are not callable from scripts yet.
A name in ``REFUSED`` answers Redis's "not allowed from script" (non-deterministic commands,
and those that make no sense inside a script); any other unknown name answers Redis's
"Unknown Redis command called from script".

Keys: a key is non-empty UTF-8 of at most ``MAX_KEY_BYTES`` bytes, as on the RESP port. On a
sharded store a script is bound to the slot of its KEYS (``Keyspace.slot``): touching a key of
another slot is refused as Redis Cluster refuses it ("non local key"), since that key lives in
another Raft group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from raftcache.cache.checks import parse_int64
from raftcache.cache.entries import (
    HEADER_SIZE,
    NEVER,
    record_header,
    record_is_hash,
    record_value,
)
from raftcache.cache.keyops import incr
from raftcache.cache.results import CommandError, ErrorCode
from raftcache.cache.scripting import Reply, ScriptCommandError, Status
from raftcache.cache.store import EntryStore
from raftcache.slots import key_slot
from raftcache.vocabulary import INT64_MIN

#: The longest key, in UTF-8 bytes (the RESP port's and the HTTP API's limit).
MAX_KEY_BYTES: Final = 1024
#: ``Keyspace.slot`` of a script with no KEYS on a sharded store: it may touch no key.
NO_KEYS: Final = -1

NOT_INTEGER: Final = "ERR value is not an integer or out of range"
WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"
OVERFLOW: Final = "ERR increment or decrement would overflow"
SYNTAX: Final = "ERR syntax error"


class Keyspace:
    """The store as one script sees it: at the entry's ``index`` and ``now``.

    Args:
        store: the machine's entry store.
        index: the entry's log index: the version of every write.
        now: the entry's ``now`` (the leader's clock, from the log).
        slot: None, any key; a slot, only keys of that slot; ``NO_KEYS``, no key at all.
        read_only: refuse the commands that write (EVAL_RO, EVALSHA_RO).
    """

    __slots__ = ("index", "now", "read_only", "slot", "store", "wrote")

    def __init__(
        self, store: EntryStore, index: int, now: float, slot: int | None, read_only: bool = False
    ) -> None:
        self.store = store
        self.index = index
        self.now = now
        self.slot = slot
        self.read_only = read_only
        self.wrote = False

    def key(self, raw: bytes) -> str:
        """A key argument, checked (module docstring)."""
        if not raw or len(raw) > MAX_KEY_BYTES:
            raise ScriptCommandError(f"ERR keys must be 1 to {MAX_KEY_BYTES} bytes long")
        try:
            key = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ScriptCommandError("ERR keys must be valid UTF-8") from None
        if self.slot is not None and key_slot(key) != self.slot:
            raise ScriptCommandError(
                "ERR Script attempted to access a non local key in a cluster node"
            )
        return key

    def get(self, key: str) -> bytes | None:
        """A string key's value (None: missing); a hash answers ``WRONGTYPE``, as in Redis."""
        record = self.store.live(key, self.now)
        if record is None:
            return None
        if record_is_hash(record):
            raise ScriptCommandError(WRONGTYPE)
        return record[HEADER_SIZE:]

    def kind(self, key: str) -> str:
        """Redis's TYPE of a live key: ``none``, ``string`` or ``hash``."""
        record = self.store.live(key, self.now)
        if record is None:
            return "none"
        return "hash" if record_is_hash(record) else "string"

    def set_expiry(self, key: str, expires_at: float) -> bool:
        """Give a live key of any type a new expiry (NEVER: none), its value and type kept;
        False when it is missing. An expiry at or before ``now`` deletes it."""
        record = self.store.live(key, self.now)
        if record is None:
            return False
        if expires_at <= self.now:
            return self.remove(key)
        self.store.put(
            key,
            record_value(record),
            self.index,
            expires_at,
            self.now,
            is_hash=record_is_hash(record),
        )
        self.wrote = True
        return True

    def expires_at(self, key: str) -> float | None:
        """The live key's expiry (NEVER: none), None when it is missing."""
        record = self.store.live(key, self.now)
        return None if record is None else record_header(record)[1]

    def put(self, key: str, value: bytes, expires_at: float = NEVER) -> None:
        """Write ``key`` (an expiry at or before ``now`` deletes it, as Redis does)."""
        if expires_at <= self.now:
            self.remove(key)
            return
        self.check_fits(key, value)
        self.store.put(key, value, self.index, expires_at, self.now)
        self.wrote = True

    def check_fits(self, key: str, value: bytes) -> None:
        """Refuse (Redis's ``OOM``) an entry larger than the store's ``max_bytes``: a node
        option, not replicated — every replica must run with the same one (docs/resp.md)."""
        if not self.store.fits(key, len(value)):
            raise ScriptCommandError(
                f"OOM entry {key!r} with a {len(value)}-byte value exceeds max_bytes"
            )

    def remove(self, key: str) -> bool:
        removed = self.store.remove(key, self.now)
        self.wrote = self.wrote or removed
        return removed


Command = Callable[[Keyspace, Sequence[bytes]], Reply]


@dataclass(frozen=True, slots=True)
class ScriptCommand:
    """A command scripts may call: Redis's arity (the name counted; -N: at least N)."""

    name: str
    arity: int
    writes: bool
    run: Command


#: Name (lower case) → command. Filled by ``script_command``.
SCRIPT_COMMANDS: dict[str, ScriptCommand] = {}

#: Commands a script may not call: their reply depends on more than the log, or they act
#: on scripts, connections or the server.
REFUSED: Final = frozenset(
    {
        "time",
        "randomkey",
        "eval",
        "evalsha",
        "eval_ro",
        "evalsha_ro",
        "script",
        "multi",
        "exec",
        "discard",
        "watch",
        "unwatch",
        "wait",
        "keys",
        "scan",
        "flushdb",
        "flushall",
        "dbsize",
        "info",
        "client",
        "config",
        "auth",
        "hello",
        "subscribe",
        "publish",
        "cluster",
        "select",
        "quit",
        "reset",
    }
)


def script_command(name: str, arity: int, *, writes: bool) -> Callable[[Command], Command]:
    """Register ``fn`` as the script command ``name`` (see the module docstring)."""

    def register(fn: Command) -> Command:
        SCRIPT_COMMANDS[name.lower()] = ScriptCommand(name.lower(), arity, writes, fn)
        return fn

    return register


def dispatch(keyspace: Keyspace, args: Sequence[bytes]) -> Reply:
    """Run one ``redis.call``: ``args[0]`` names the command. Raises ``ScriptCommandError``
    with Redis's text."""
    name = args[0].decode("latin-1").lower()
    command = SCRIPT_COMMANDS.get(name)
    if command is None:
        if name in REFUSED:
            raise ScriptCommandError("ERR This Redis command is not allowed from script")
        raise ScriptCommandError("ERR Unknown Redis command called from script")
    words = len(args)
    if (command.arity > 0 and words != command.arity) or words < -command.arity:
        raise ScriptCommandError(f"ERR wrong number of arguments for '{name}' command")
    if command.writes and keyspace.read_only:
        raise ScriptCommandError("ERR Write commands are not allowed from read-only scripts.")
    return command.run(keyspace, args[1:])


# --- strings --------------------------------------------------------------------------------


def _int(raw: bytes) -> int:
    number = parse_int64(raw)
    if number is None:
        raise ScriptCommandError(NOT_INTEGER)
    return number


@script_command("get", 2, writes=False)
def _get(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return ks.get(ks.key(args[0]))


@script_command("mget", -2, writes=False)
def _mget(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return [_string_or_nil(ks, ks.key(raw)) for raw in args]


def _string_or_nil(ks: Keyspace, key: str) -> bytes | None:
    """MGET's view of a key: nil for a key of another type, as Redis answers."""
    return ks.get(key) if ks.kind(key) == "string" else None


@script_command("strlen", 2, writes=False)
def _strlen(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    value = ks.get(ks.key(args[0]))
    return 0 if value is None else len(value)


@script_command("exists", -2, writes=False)
def _exists(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return sum(ks.kind(ks.key(raw)) != "none" for raw in args)


@script_command("type", 2, writes=False)
def _type(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return Status(ks.kind(ks.key(args[0])))


@script_command("ping", -1, writes=False)
def _ping(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    if len(args) > 1:
        raise ScriptCommandError("ERR wrong number of arguments for 'ping' command")
    return args[0] if args else Status("PONG")


def _expiry_arg(ks: Keyspace, unit: str, raw: bytes, command: str) -> float:
    """The instant of an EX/PX/EXAT/PXAT option (a positive integer)."""
    number = _int(raw)
    if number <= 0:
        raise ScriptCommandError(f"ERR invalid expire time in '{command}' command")
    if unit == "EX":
        return ks.now + number
    if unit == "PX":
        return ks.now + number / 1000
    return float(number) if unit == "EXAT" else number / 1000


@script_command("set", -3, writes=True)
def _set(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    key, value = ks.key(args[0]), args[1]
    condition = expiry_unit = None
    get = keep_ttl = False
    expires_at = NEVER
    position = 2
    while position < len(args):
        option = args[position].decode("latin-1").upper()
        if option in ("NX", "XX") and condition is None:
            condition = option
        elif option == "GET" and not get:
            get = True
        elif option == "KEEPTTL" and expiry_unit is None and not keep_ttl:
            keep_ttl = True
        elif option in ("EX", "PX", "EXAT", "PXAT") and expiry_unit is None and not keep_ttl:
            position += 1
            if position == len(args):
                raise ScriptCommandError(SYNTAX)
            expiry_unit = option
            expires_at = _expiry_arg(ks, option, args[position], "set")
        else:
            raise ScriptCommandError(SYNTAX)
        position += 1
    # Without GET, SET replaces a key of any type (as in Redis); with GET a hash is WRONGTYPE.
    exists = ks.kind(key) != "none"
    old = ks.get(key) if get else None
    if (condition == "NX" and exists) or (condition == "XX" and not exists):
        return old if get else None
    if keep_ttl:
        current = ks.expires_at(key)
        expires_at = NEVER if current is None else current
    ks.put(key, value, expires_at)
    return old if get else Status("OK")


@script_command("setnx", 3, writes=True)
def _setnx(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    key = ks.key(args[0])
    if ks.kind(key) != "none":
        return 0
    ks.put(key, args[1])
    return 1


def _setex(unit: str, command: str) -> Command:
    def run(ks: Keyspace, args: Sequence[bytes]) -> Reply:
        key = ks.key(args[0])
        ks.put(key, args[2], _expiry_arg(ks, unit, args[1], command))
        return Status("OK")

    return run


script_command("setex", 4, writes=True)(_setex("EX", "setex"))
script_command("psetex", 4, writes=True)(_setex("PX", "psetex"))


@script_command("getset", 3, writes=True)
def _getset(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    key = ks.key(args[0])
    old = ks.get(key)
    ks.put(key, args[1])
    return old


@script_command("getdel", 2, writes=True)
def _getdel(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    key = ks.key(args[0])
    old = ks.get(key)
    if old is not None:
        ks.remove(key)
    return old


@script_command("mset", -3, writes=True)
def _mset(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    if len(args) % 2:
        raise ScriptCommandError("ERR wrong number of arguments for 'mset' command")
    pairs = [(ks.key(args[i]), args[i + 1]) for i in range(0, len(args), 2)]
    for key, value in pairs:  # all or nothing: no key is written unless every one fits
        ks.check_fits(key, value)
    for key, value in pairs:
        ks.put(key, value)
    return Status("OK")


@script_command("del", -2, writes=True)
def _del(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return sum(ks.remove(ks.key(raw)) for raw in args)


script_command("unlink", -2, writes=True)(_del)


def _add(ks: Keyspace, raw_key: bytes, by: int) -> Reply:
    """The machine's own INCR (``keyops.incr``: keeps the TTL), with Redis's error texts."""
    value = incr(ks.store, ks.index, ks.key(raw_key), by, ks.now)
    if isinstance(value, CommandError):
        if value.code is ErrorCode.COUNTER_OVERFLOW:
            raise ScriptCommandError(OVERFLOW)
        if value.code is ErrorCode.WRONG_TYPE:
            raise ScriptCommandError(WRONGTYPE)
        if value.code is ErrorCode.VALUE_TOO_LARGE:
            raise ScriptCommandError(f"OOM {value.message}")
        raise ScriptCommandError(NOT_INTEGER)
    ks.wrote = True
    return value


@script_command("incr", 2, writes=True)
def _incr(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return _add(ks, args[0], 1)


@script_command("decr", 2, writes=True)
def _decr(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return _add(ks, args[0], -1)


@script_command("incrby", 3, writes=True)
def _incrby(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    return _add(ks, args[0], _int(args[1]))


@script_command("decrby", 3, writes=True)
def _decrby(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    by = _int(args[1])
    if by == INT64_MIN:
        raise ScriptCommandError("ERR decrement would overflow")
    return _add(ks, args[0], -by)


# --- expiry ---------------------------------------------------------------------------------


def _expire(unit: str, command: str) -> Command:
    """EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT with NX/XX/GT/LT, as Redis 7."""

    def run(ks: Keyspace, args: Sequence[bytes]) -> Reply:
        key = ks.key(args[0])
        number = _int(args[1])
        flags = {raw.decode("latin-1").upper() for raw in args[2:]}
        if not flags <= {"NX", "XX", "GT", "LT"}:
            raise ScriptCommandError(f"ERR Unsupported option {args[2].decode('latin-1')}")
        if "NX" in flags and flags & {"XX", "GT", "LT"}:
            raise ScriptCommandError(
                "ERR NX and XX, GT or LT options at the same time are not compatible"
            )
        if {"GT", "LT"} <= flags:
            raise ScriptCommandError("ERR GT and LT options at the same time are not compatible")
        scale = 1.0 if unit in ("EX", "EXAT") else 1000.0
        at = (ks.now if unit in ("EX", "PX") else 0.0) + number / scale
        if not math.isfinite(at):
            raise ScriptCommandError(f"ERR invalid expire time in '{command}' command")
        current = ks.expires_at(key)
        if current is None:
            return 0
        if ("NX" in flags and current != NEVER) or ("XX" in flags and current == NEVER):
            return 0
        if ("GT" in flags and at <= current) or ("LT" in flags and at >= current):
            return 0
        ks.set_expiry(key, at)  # any type: a hash keeps its fields
        return 1

    return run


script_command("expire", -3, writes=True)(_expire("EX", "expire"))
script_command("pexpire", -3, writes=True)(_expire("PX", "pexpire"))
script_command("expireat", -3, writes=True)(_expire("EXAT", "expireat"))
script_command("pexpireat", -3, writes=True)(_expire("PXAT", "pexpireat"))


@script_command("persist", 2, writes=True)
def _persist(ks: Keyspace, args: Sequence[bytes]) -> Reply:
    key = ks.key(args[0])
    current = ks.expires_at(key)
    if current is None or current == NEVER:
        return 0
    ks.set_expiry(key, NEVER)
    return 1


def _ttl(scale: int) -> Command:
    def run(ks: Keyspace, args: Sequence[bytes]) -> Reply:
        current = ks.expires_at(ks.key(args[0]))
        if current is None:
            return -2
        if current == NEVER:
            return -1
        return max(0, round((current - ks.now) * scale))

    return run


script_command("ttl", 2, writes=False)(_ttl(1))
script_command("pttl", 2, writes=False)(_ttl(1000))


def _expiretime(scale: int) -> Command:
    def run(ks: Keyspace, args: Sequence[bytes]) -> Reply:
        current = ks.expires_at(ks.key(args[0]))
        if current is None:
            return -2
        return -1 if current == NEVER else int(current * scale)

    return run


script_command("expiretime", 2, writes=False)(_expiretime(1))
script_command("pexpiretime", 2, writes=False)(_expiretime(1000))
