"""Hash commands: HSET, HMSET, HSETNX, HDEL, HINCRBY, HINCRBYFLOAT, HGET, HMGET, HGETALL, HKEYS,
HVALS, HLEN, HEXISTS, HSTRLEN, HRANDFIELD, HSCAN.

Rule: as in ``raftcache.resp.strings``, ``simulate`` is the semantics (Redis's, on the key's
fields) and ``mode`` the route. A write is one batch ``hash`` op (``raftcache.cache.hashes``,
command version 5): unconditional, so hash writes share log entries with other writes and ride in
MULTI's one batch; its outcome is computed by the cache's own ``apply_hash_op``, the function the
replicas run, so the engine's simulation and the log cannot disagree. A read takes the whole hash
in the read group's one barrier (``HashValue``) and answers from it; inside a MULTI that writes,
it is a replicated ``read`` op. A hash op on a string key answers ``WRONGTYPE``, as a string
command on a hash does.

HSCAN answers every field in one reply with cursor 0, whatever COUNT says: a hash is one entry,
read whole anyway, and Redis itself does so for its small (listpack) hashes, whose COUNT is a
hint. HRANDFIELD draws with the node's own random source (a read changes no state).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

from raftcache.cache.commands import BatchOp
from raftcache.cache.hashes import HASH_VERSION, HashOp, apply_hash_op, encode_fields
from raftcache.cache.results import BatchItem, CommandError
from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Mode, Reply, View
from raftcache.resp.errors import SYNTAX, wrong_args
from raftcache.resp.globs import compile_glob
from raftcache.resp.protocol import OK, RespError
from raftcache.resp.strings import parse_float
from raftcache.resp.values import HashValue

_RANDOM: Final = random.SystemRandom()  # HRANDFIELD's draws: node-local, not replicated


def _run_op(view: View, op: HashOp) -> BatchItem:
    """``op`` on ``view`` (the engine's route): the cache's own outcome, written back."""
    key = op.key
    fields = view.hash(key)  # WRONGTYPE on a string
    outcome = apply_hash_op(fields, op)
    if isinstance(outcome, CommandError):
        raise RespError(f"ERR {outcome.message}")
    after, result = outcome
    if op.action == "read":
        return result
    entry = view.get(key)
    if after is None:
        if entry is not None:
            view.remove(key)
    elif entry is None or not isinstance(entry.value, HashValue) or after != entry.value.fields():
        view.put(key, HashValue(encode_fields(after)), None if entry is None else entry.expires_at)
    return result


class HashWrite(Call):
    """A hash write: one batch ``hash`` op; ``reply`` maps its result to the command's reply."""

    mode = Mode.BATCH
    in_multi = True
    writes = True
    needs_command_version = HASH_VERSION

    def __init__(self, op: HashOp, *, ok: bool = False) -> None:
        self.keys = self.pinned = (op.key,)
        self.op = op
        self.ok = ok  # HMSET answers OK

    def simulate(self, view: View) -> Reply:
        return self._reply(_run_op(view, self.op))

    def batch_ops(self) -> list[BatchOp]:
        return [self.op]

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        return self._reply(results[0])

    def _reply(self, result: BatchItem) -> Reply:
        return OK if self.ok else result


class HashRead(Call):
    """A read of one hash: ``answer`` computes the reply from its fields (None: missing)."""

    mode = Mode.READ
    in_multi = True

    def __init__(self, key: str) -> None:
        self.keys = (key,)

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        raise NotImplementedError(type(self).__name__)

    def simulate(self, view: View) -> Reply:
        return self.answer(view.hash(self.keys[0]))

    def multi_ops(self) -> list[BatchOp] | None:
        return [HashOp(self.keys[0], "read")]  # a replicated read (command version 5)

    def multi_reply(self, results: Sequence[BatchItem]) -> Reply:
        found = results[0]
        if not isinstance(found, tuple):
            return self.answer(None)
        return self.answer(dict(zip(found[::2], found[1::2], strict=True)))


class HGet(HashRead):
    """HGET key field."""

    def __init__(self, key: str, field: bytes) -> None:
        super().__init__(key)
        self.field = field

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return None if fields is None else fields.get(self.field)


class HMGet(HashRead):
    """HMGET key field [field ...]."""

    def __init__(self, key: str, fields: tuple[bytes, ...]) -> None:
        super().__init__(key)
        self.fields = fields

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        found = fields or {}
        return [found.get(field) for field in self.fields]


class HGetAll(HashRead):
    """HGETALL key: a map (RESP3) or flat array (RESP2) of fields and values."""

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return fields or {}


class HKeys(HashRead):
    """HKEYS key."""

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return list(fields or ())


class HVals(HashRead):
    """HVALS key."""

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return list((fields or {}).values())


class HLen(HashRead):
    """HLEN key."""

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return len(fields or ())


class HExists(HashRead):
    """HEXISTS key field."""

    def __init__(self, key: str, field: bytes) -> None:
        super().__init__(key)
        self.field = field

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return int(self.field in (fields or ()))


class HStrLen(HashRead):
    """HSTRLEN key field."""

    def __init__(self, key: str, field: bytes) -> None:
        super().__init__(key)
        self.field = field

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        return len((fields or {}).get(self.field, b""))


class HRandField(HashRead):
    """HRANDFIELD key [count [WITHVALUES]]: one field (nil if missing) or, with ``count``,
    up to ``count`` distinct ones (a negative count: ``-count`` draws, repeats allowed)."""

    def __init__(self, key: str, count: int | None, with_values: bool) -> None:
        super().__init__(key)
        self.count, self.with_values = count, with_values

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        names = list(fields or ())
        if self.count is None:
            return _RANDOM.choice(names) if names else None
        if not names or self.count == 0:
            return []
        if self.count > 0:
            chosen = _RANDOM.sample(names, min(self.count, len(names)))
        else:
            chosen = [_RANDOM.choice(names) for _ in range(-self.count)]
        if not self.with_values:
            return chosen
        assert fields is not None
        return [x for name in chosen for x in (name, fields[name])]


class HScan(HashRead):
    """HSCAN key cursor [MATCH pattern] [COUNT n] [NOVALUES]: every (matching) field in one
    reply, with cursor 0 (module docstring)."""

    def __init__(self, key: str, pattern: str | None, no_values: bool) -> None:
        super().__init__(key)
        self.pattern, self.no_values = pattern, no_values

    def answer(self, fields: dict[bytes, bytes] | None) -> Reply:
        regex = None if self.pattern is None else compile_glob(self.pattern)[1]
        found: list[bytes] = []
        for name, value in (fields or {}).items():
            if regex is not None and not regex.fullmatch(name.decode("utf-8", "surrogateescape")):
                continue
            found += (name,) if self.no_values else (name, value)
        return [b"0", found]


# --- parsers ------------------------------------------------------------------------------


def _field(raw: bytes, limits: Limits) -> bytes:
    return args.value(raw, limits)


def _hset_op(name: str, argv: Sequence[bytes], limits: Limits) -> HashOp:
    rest = argv[1:]
    if len(rest) % 2:
        raise wrong_args(name)
    if len(rest) // 2 > limits.max_keys_per_command:
        raise RespError(f"ERR at most {limits.max_keys_per_command} fields per command")
    names = tuple(_field(rest[i], limits) for i in range(0, len(rest), 2))
    values = tuple(args.value(rest[i], limits) for i in range(1, len(rest), 2))
    return HashOp(args.key(argv[0]), "set", names, values)


def parse_hset(argv: Sequence[bytes], limits: Limits) -> Call:
    return HashWrite(_hset_op("hset", argv, limits))


def parse_hmset(argv: Sequence[bytes], limits: Limits) -> Call:
    return HashWrite(_hset_op("hmset", argv, limits), ok=True)


def parse_hsetnx(argv: Sequence[bytes], limits: Limits) -> Call:
    field, value = _field(argv[1], limits), args.value(argv[2], limits)
    return HashWrite(HashOp(args.key(argv[0]), "set", (field,), (value,), nx=True))


def parse_hdel(argv: Sequence[bytes], limits: Limits) -> Call:
    if len(argv) - 1 > limits.max_keys_per_command:
        raise RespError(f"ERR at most {limits.max_keys_per_command} fields per command")
    fields = tuple(_field(raw, limits) for raw in argv[1:])
    return HashWrite(HashOp(args.key(argv[0]), "del", fields))


def parse_hincrby(argv: Sequence[bytes], limits: Limits) -> Call:
    by = args.integer(argv[2])
    return HashWrite(HashOp(args.key(argv[0]), "incr", (_field(argv[1], limits),), by=by))


def parse_hincrbyfloat(argv: Sequence[bytes], limits: Limits) -> Call:
    by = parse_float(argv[2])
    if by != by or by in (float("inf"), float("-inf")):
        raise RespError("ERR value is NaN or Infinity")
    return HashWrite(HashOp(args.key(argv[0]), "incrf", (_field(argv[1], limits),), by=by))


def parse_hget(argv: Sequence[bytes], limits: Limits) -> Call:
    return HGet(args.key(argv[0]), _field(argv[1], limits))


def parse_hmget(argv: Sequence[bytes], limits: Limits) -> Call:
    return HMGet(args.key(argv[0]), tuple(_field(raw, limits) for raw in argv[1:]))


def parse_hgetall(argv: Sequence[bytes], limits: Limits) -> Call:
    return HGetAll(args.key(argv[0]))


def parse_hkeys(argv: Sequence[bytes], limits: Limits) -> Call:
    return HKeys(args.key(argv[0]))


def parse_hvals(argv: Sequence[bytes], limits: Limits) -> Call:
    return HVals(args.key(argv[0]))


def parse_hlen(argv: Sequence[bytes], limits: Limits) -> Call:
    return HLen(args.key(argv[0]))


def parse_hexists(argv: Sequence[bytes], limits: Limits) -> Call:
    return HExists(args.key(argv[0]), _field(argv[1], limits))


def parse_hstrlen(argv: Sequence[bytes], limits: Limits) -> Call:
    return HStrLen(args.key(argv[0]), _field(argv[1], limits))


def parse_hrandfield(argv: Sequence[bytes], limits: Limits) -> Call:
    key = args.key(argv[0])
    if len(argv) == 1:
        return HRandField(key, None, False)
    count = args.integer(argv[1])
    if len(argv) > 3 or (len(argv) == 3 and args.upper(argv[2]) != "WITHVALUES"):
        raise SYNTAX
    if abs(count) > 1_000_000:
        raise RespError("ERR value is out of range")
    return HRandField(key, count, len(argv) == 3)


def parse_hscan(argv: Sequence[bytes], limits: Limits) -> Call:
    key = args.key(argv[0])
    if not argv[1].isdigit():
        raise RespError("ERR invalid cursor")
    pattern: str | None = None
    no_values = False
    i = 2
    while i < len(argv):
        option = args.upper(argv[i])
        if option == "NOVALUES":
            no_values = True
            i += 1
            continue
        if i + 1 >= len(argv):
            raise SYNTAX
        if option == "MATCH":
            pattern = args.text(argv[i + 1])
        elif option == "COUNT":
            if args.integer(argv[i + 1]) < 1:
                raise SYNTAX
        else:
            raise SYNTAX
        i += 2
    return HScan(key, pattern, no_values)
