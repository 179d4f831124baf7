"""COMMAND GETKEYS / GETKEYSANDFLAGS and the key-specs of COMMAND INFO, for every command.

Every keyed command of the table has a generator of well-formed invocations here; for random
ones, the keys GETKEYS reports (found by the key-specs) are the keys the parser gives the call
— what cluster redirects and CROSSSLOT check (``raftcache.resp.cluster``) — and, for a command
without ``movablekeys``, the keys a cluster client computes from the legacy first/last/step
triple (redis-py's ``CommandsParser``). A fixed table pins GETKEYS's answer for each command,
and every keyless command gets Redis's "no key arguments". No server: the COMMAND call runs on
a context holding only the table.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from raftcache.resp import keyspecs
from raftcache.resp.args import Limits, arity_ok
from raftcache.resp.commands import TABLE
from raftcache.resp.introspect import parse_command
from raftcache.resp.keyspecs import Index, KeyNum, KeySpec, Keyword, Range, legacy_range, one
from raftcache.resp.protocol import RespError, Simple

_KEYS = ["k", "{t}a", "{t}b", "user:1", "é", "GET", "EX", "0", "2", "STREAMS", "a b"]
_SHA = b"e0e1f9fabfc9d4800c877a703b823ac0578ff8db"

Gen = Callable[[random.Random], list[bytes]]


def _k(rng: random.Random) -> bytes:
    return rng.choice(_KEYS).encode()


def _ks(rng: random.Random, least: int = 1) -> list[bytes]:
    return [_k(rng) for _ in range(rng.randint(least, 5))]


def _v(rng: random.Random) -> bytes:
    return rng.choice([b"v", b"", b"GET", b"1", b"k"])


def _key_then(*tail: bytes) -> Gen:
    return lambda rng: [_k(rng), *tail]


def _option(*choices: list[bytes]) -> Gen:
    """One key, a value, then one of ``choices`` of options."""
    return lambda rng: [_k(rng), _v(rng), *rng.choice(choices)]


def _pairs(rng: random.Random) -> list[bytes]:
    return [w for _ in range(rng.randint(1, 4)) for w in (_k(rng), _v(rng))]


def _hash_pairs(rng: random.Random) -> list[bytes]:
    return [_k(rng), *(w for _ in range(rng.randint(1, 3)) for w in (b"f", _v(rng)))]


def _expire(rng: random.Random) -> list[bytes]:
    return [_k(rng), b"100", *rng.choice([[], [b"NX"], [b"XX"], [b"GT"], [b"LT"]])]


def _two(rng: random.Random) -> list[bytes]:
    first = _k(rng)
    return [first, rng.choice([k.encode() for k in _KEYS if k.encode() != first])]


def _copy(rng: random.Random) -> list[bytes]:
    return [*_two(rng), *rng.choice([[], [b"REPLACE"], [b"DB", b"0"], [b"DB", b"0", b"REPLACE"]])]


def _script(head: bytes) -> Gen:
    def gen(rng: random.Random) -> list[bytes]:
        keys = [_k(rng) for _ in range(rng.randint(0, 4))]
        argv = [_v(rng) for _ in range(rng.randint(0, 3))]
        return [head, str(len(keys)).encode(), *keys, *argv]

    return gen


_SET_OPTIONS: tuple[list[bytes], ...] = (
    [],
    [b"NX"],
    [b"XX"],
    [b"GET"],
    [b"EX", b"10"],
    [b"PX", b"5"],
    [b"KEEPTTL"],
)
_GETEX_OPTIONS: tuple[list[bytes], ...] = (
    [],
    [b"EX", b"10"],
    [b"PXAT", b"99999999999"],
    [b"PERSIST"],
)

#: A generator of well-formed arguments (the name excluded) for every keyed command.
GENERATORS: dict[str, Gen] = {
    "GET": _key_then(),
    "MGET": _ks,
    "STRLEN": _key_then(),
    "SET": _option(*_SET_OPTIONS, [b"XX", b"GET", b"EX", b"5"]),
    "SETEX": lambda rng: [_k(rng), b"10", _v(rng)],
    "PSETEX": lambda rng: [_k(rng), b"10", _v(rng)],
    "SETNX": _option([]),
    "GETSET": _option([]),
    "GETEX": lambda rng: [_k(rng), *rng.choice(_GETEX_OPTIONS)],
    "GETDEL": _key_then(),
    "MSET": _pairs,
    "MSETNX": _pairs,
    "INCR": _key_then(),
    "DECR": _key_then(),
    "INCRBY": _key_then(b"3"),
    "DECRBY": _key_then(b"3"),
    "INCRBYFLOAT": _key_then(b"1.5"),
    "APPEND": _option([]),
    "HSET": _hash_pairs,
    "HMSET": _hash_pairs,
    "HSETNX": _key_then(b"f", b"v"),
    "HDEL": lambda rng: [_k(rng), *_ks(rng)],
    "HINCRBY": _key_then(b"f", b"2"),
    "HINCRBYFLOAT": _key_then(b"f", b"2.5"),
    "HGET": _key_then(b"f"),
    "HMGET": lambda rng: [_k(rng), *_ks(rng)],
    "HGETALL": _key_then(),
    "HKEYS": _key_then(),
    "HVALS": _key_then(),
    "HLEN": _key_then(),
    "HEXISTS": _key_then(b"f"),
    "HSTRLEN": _key_then(b"f"),
    "HRANDFIELD": lambda rng: [_k(rng), *rng.choice([[], [b"2"], [b"-3", b"WITHVALUES"]])],
    "HSCAN": lambda rng: [_k(rng), b"0", *rng.choice([[], [b"MATCH", b"f*"], [b"COUNT", b"5"]])],
    "DEL": _ks,
    "UNLINK": _ks,
    "EXISTS": _ks,
    "TOUCH": _ks,
    "TYPE": _key_then(),
    "EXPIRE": _expire,
    "PEXPIRE": _expire,
    "EXPIREAT": _expire,
    "PEXPIREAT": _expire,
    "PERSIST": _key_then(),
    "TTL": _key_then(),
    "PTTL": _key_then(),
    "EXPIRETIME": _key_then(),
    "PEXPIRETIME": _key_then(),
    "RENAME": _two,
    "RENAMENX": _two,
    "COPY": _copy,
    "OBJECT": lambda rng: [rng.choice([b"ENCODING", b"refcount"]), _k(rng)],
    "EVAL": _script(b"return KEYS"),
    "EVALSHA": _script(_SHA),
    "EVAL_RO": _script(b"return KEYS"),
    "EVALSHA_RO": _script(_SHA),
    "WATCH": _ks,
}

#: A well-formed invocation (the name excluded) of every keyless command.
KEYLESS: dict[str, list[bytes]] = {
    "RANDOMKEY": [],
    "KEYS": [b"*"],
    "SCAN": [b"0"],
    "DBSIZE": [],
    "FLUSHDB": [],
    "FLUSHALL": [b"ASYNC"],
    "TIME": [],
    "INFO": [b"server"],
    "COMMAND": [b"COUNT"],
    "CONFIG": [b"GET", b"save"],
    "PING": [],
    "ECHO": [b"x"],
    "HELLO": [b"3"],
    "AUTH": [b"secret"],
    "SELECT": [b"0"],
    "CLIENT": [b"ID"],
    "QUIT": [],
    "RESET": [],
    "WAIT": [b"0", b"0"],
    "SCRIPT": [b"FLUSH"],
    "ROLE": [],
    "PUBLISH": [b"channel", b"message"],
    "SUBSCRIBE": [b"channel"],
    "PSUBSCRIBE": [b"chan*"],
    "UNSUBSCRIBE": [],
    "PUNSUBSCRIBE": [],
    "PUBSUB": [b"CHANNELS"],
    "SENTINEL": [b"MASTERS"],
    "CLUSTER": [b"INFO"],
    "READONLY": [],
    "READWRITE": [],
    "MULTI": [],
    "EXEC": [],
    "DISCARD": [],
    "UNWATCH": [],
}

#: GETKEYS's answer, pinned for one invocation of every keyed command.
EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "GET": (["k"], ["k"]),
    "MGET": (["a", "b", "a"], ["a", "b", "a"]),
    "STRLEN": (["k"], ["k"]),
    "SET": (["k", "v", "EX", "10", "GET"], ["k"]),
    "SETEX": (["k", "10", "v"], ["k"]),
    "PSETEX": (["k", "10", "v"], ["k"]),
    "SETNX": (["k", "v"], ["k"]),
    "GETSET": (["k", "v"], ["k"]),
    "GETEX": (["k", "PERSIST"], ["k"]),
    "GETDEL": (["k"], ["k"]),
    "MSET": (["a", "1", "b", "2"], ["a", "b"]),
    "MSETNX": (["a", "1", "b", "2", "c", "3"], ["a", "b", "c"]),
    "INCR": (["k"], ["k"]),
    "DECR": (["k"], ["k"]),
    "INCRBY": (["k", "2"], ["k"]),
    "DECRBY": (["k", "2"], ["k"]),
    "INCRBYFLOAT": (["k", "2.5"], ["k"]),
    "APPEND": (["k", "v"], ["k"]),
    "HSET": (["h", "f", "v", "g", "w"], ["h"]),
    "HMSET": (["h", "f", "v"], ["h"]),
    "HSETNX": (["h", "f", "v"], ["h"]),
    "HDEL": (["h", "f", "g"], ["h"]),
    "HINCRBY": (["h", "f", "1"], ["h"]),
    "HINCRBYFLOAT": (["h", "f", "1.5"], ["h"]),
    "HGET": (["h", "f"], ["h"]),
    "HMGET": (["h", "f", "g"], ["h"]),
    "HGETALL": (["h"], ["h"]),
    "HKEYS": (["h"], ["h"]),
    "HVALS": (["h"], ["h"]),
    "HLEN": (["h"], ["h"]),
    "HEXISTS": (["h", "f"], ["h"]),
    "HSTRLEN": (["h", "f"], ["h"]),
    "HRANDFIELD": (["h", "2", "WITHVALUES"], ["h"]),
    "HSCAN": (["h", "0", "MATCH", "*"], ["h"]),
    "DEL": (["a", "b"], ["a", "b"]),
    "UNLINK": (["a"], ["a"]),
    "EXISTS": (["a", "b", "c"], ["a", "b", "c"]),
    "TOUCH": (["a", "b"], ["a", "b"]),
    "TYPE": (["k"], ["k"]),
    "EXPIRE": (["k", "10", "NX"], ["k"]),
    "PEXPIRE": (["k", "10"], ["k"]),
    "EXPIREAT": (["k", "10"], ["k"]),
    "PEXPIREAT": (["k", "10", "GT"], ["k"]),
    "PERSIST": (["k"], ["k"]),
    "TTL": (["k"], ["k"]),
    "PTTL": (["k"], ["k"]),
    "EXPIRETIME": (["k"], ["k"]),
    "PEXPIRETIME": (["k"], ["k"]),
    "RENAME": (["a", "b"], ["a", "b"]),
    "RENAMENX": (["a", "b"], ["a", "b"]),
    "COPY": (["a", "b", "REPLACE"], ["a", "b"]),
    "OBJECT": (["ENCODING", "k"], ["k"]),
    "EVAL": (["return 1", "2", "a", "b", "x"], ["a", "b"]),
    "EVALSHA": ([_SHA.decode(), "1", "a", "x", "y"], ["a"]),
    "EVAL_RO": (["return 1", "0", "x"], []),
    "EVALSHA_RO": ([_SHA.decode(), "3", "a", "b", "c"], ["a", "b", "c"]),
    "WATCH": (["a", "b"], ["a", "b"]),
}


def command(*words: str | bytes) -> Any:
    """The reply to ``COMMAND <words>`` (the arity checked as the connection checks it)."""
    raw = [w.encode() if isinstance(w, str) else w for w in words]
    assert arity_ok(TABLE["COMMAND"], 1 + len(raw))
    ctx = SimpleNamespace(server=SimpleNamespace(commands=TABLE))
    return parse_command(raw, Limits()).run_server(ctx)


def getkeys(name: str, argv: list[bytes]) -> Any:
    return command("GETKEYS", name, *argv)


def router_keys(name: str, argv: list[bytes]) -> list[str]:
    """The keys the parser gives the call: what ``cluster.redirect`` routes by."""
    return list(TABLE[name].parse(argv, Limits()).keys)


def legacy_keys(name: str, argv: list[bytes]) -> list[bytes]:
    """The keys redis-py's ``CommandsParser`` computes from COMMAND's first/last/step."""
    spec, words = TABLE[name], [name.encode(), *argv]
    last = spec.last_key if spec.last_key >= 0 else len(words) + spec.last_key
    return [words[i] for i in range(spec.first_key, last + 1, spec.step)]


def _distinct(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def test_every_command_is_covered_keyed_or_keyless() -> None:
    keyed = {name for name, spec in TABLE.items() if spec.key_specs}
    assert set(GENERATORS) == keyed
    assert set(EXPECTED) == keyed
    assert set(KEYLESS) == set(TABLE) - keyed


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_getkeys_finds_the_keys_the_router_routes_by(name: str) -> None:
    rng = random.Random(name)
    spec = TABLE[name]
    for _ in range(40):
        argv = GENERATORS[name](rng)
        assert arity_ok(spec, 1 + len(argv)), argv
        found = getkeys(name, argv)
        assert isinstance(found, list), (argv, found)
        # The same keys, first seen in the same order (a call may drop a repeated key:
        # MSETNX's pairs are a mapping; GETKEYS, as Redis's, names it at each position).
        got = [k.decode() for k in found]
        assert _distinct(got) == _distinct(router_keys(name, argv)), argv
        if "movablekeys" not in spec.flags:
            assert found == legacy_keys(name, argv), argv


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_getkeys_answers_the_table(name: str) -> None:
    argv, expected = EXPECTED[name]
    assert getkeys(name, [a.encode() for a in argv]) == [k.encode() for k in expected]
    assert getkeys(name.lower(), [a.encode() for a in argv]) == [k.encode() for k in expected]


@pytest.mark.parametrize("name", sorted(KEYLESS))
def test_a_keyless_command_has_no_key_arguments(name: str) -> None:
    assert router_keys(name, KEYLESS[name]) == []
    reply = getkeys(name, KEYLESS[name])
    assert isinstance(reply, RespError)
    assert str(reply) == "ERR The command has no key arguments"


def _error(reply: Any) -> str:
    assert isinstance(reply, RespError), reply
    return str(reply)


def test_getkeys_errors_are_redis_texts() -> None:
    assert _error(command("GETKEYS", "NOSUCH", "k")) == "ERR Invalid command specified"
    assert _error(command("GETKEYS", "GET")) == (
        "ERR Invalid number of arguments specified for command"
    )
    assert _error(command("GETKEYS", "GET", "a", "b")) == (
        "ERR Invalid number of arguments specified for command"
    )
    assert _error(command("GETKEYS", "RENAME", "a")) == (
        "ERR Invalid number of arguments specified for command"
    )
    # Redis checks "no keys" before the arity.
    assert _error(command("GETKEYS", "PING", "a", "b", "c")) == (
        "ERR The command has no key arguments"
    )
    assert _error(command("GETKEYS")) == (
        "ERR wrong number of arguments for 'command|getkeys' command"
    )
    assert _error(command("GETKEYSANDFLAGS")) == (
        "ERR wrong number of arguments for 'command|getkeysandflags' command"
    )
    # Arguments the key-specs cannot place: Redis's "Invalid arguments" error...
    assert _error(command("GETKEYS", "OBJECT", "HELP")) == (
        "ERR Invalid arguments specified for command"
    )
    # ...except for a script, whose keys are optional (no_mandatory_keys): none.
    assert command("GETKEYS", "EVAL", "return 1", "5", "a") == []
    assert command("GETKEYS", "EVAL", "return 1", "-1", "a") == []
    assert command("GETKEYS", "EVALSHA_RO", _SHA, "two", "a", "b") == []
    assert _error(command("NOSUCH")) == "ERR unknown subcommand 'NOSUCH'. Try COMMAND HELP."


def _flags(*names: str) -> set[Simple]:
    return {Simple(name) for name in names}


def test_getkeysandflags_gives_each_key_its_flags() -> None:
    assert command("GETKEYSANDFLAGS", "SET", "k", "v") == [[b"k", _flags("OW", "update")]]
    assert command("GETKEYSANDFLAGS", "SET", "k", "v", "get") == [
        [b"k", _flags("RW", "access", "update")]
    ]
    # SET's GET is an option, not the key or the value.
    assert command("GETKEYSANDFLAGS", "SET", "GET", "GET") == [[b"GET", _flags("OW", "update")]]
    assert command("GETKEYSANDFLAGS", "RENAME", "a", "b") == [
        [b"a", _flags("RW", "access", "delete")],
        [b"b", _flags("OW", "update")],
    ]
    assert command("GETKEYSANDFLAGS", "MSET", "a", "1", "b", "2") == [
        [b"a", _flags("OW", "update")],
        [b"b", _flags("OW", "update")],
    ]
    assert command("GETKEYSANDFLAGS", "DEL", "a") == [[b"a", _flags("RM", "delete")]]
    assert command("GETKEYSANDFLAGS", "EVAL_RO", "return 1", "1", "a", "x") == [
        [b"a", _flags("RO", "access")]
    ]


def test_command_info_reports_key_specs_and_movable_keys() -> None:
    (eval_ro,) = command("INFO", "eval_ro")
    assert eval_ro[:6] == [b"eval_ro", -3, eval_ro[2], 0, 0, 0]
    assert {"movablekeys", "no_mandatory_keys", "readonly"} <= eval_ro[2]
    assert eval_ro[8] == [
        {
            "notes": "We cannot tell how the keys will be used so we assume the worst, RO and "
            "ACCESS",
            "flags": _flags("RO", "access"),
            "begin_search": {"type": "index", "spec": {"index": 2}},
            "find_keys": {"type": "keynum", "spec": {"keynumidx": 0, "firstkey": 1, "keystep": 1}},
        }
    ]
    (mset, rename, ping) = command("INFO", "MSET", "rename", "ping")
    assert mset[3:6] == [1, -1, 2]
    assert mset[8] == [
        {
            "flags": _flags("OW", "update"),
            "begin_search": {"type": "index", "spec": {"index": 1}},
            "find_keys": {"type": "range", "spec": {"lastkey": -1, "keystep": 2, "limit": 0}},
        }
    ]
    assert rename[3:6] == [1, 2, 1]
    assert [s["begin_search"]["spec"]["index"] for s in rename[8]] == [1, 2]
    assert ping[3:6] == [0, 0, 0]
    assert ping[8] == []
    movable = {entry[0] for entry in command() if "movablekeys" in entry[2]}
    assert movable == {b"eval", b"evalsha", b"eval_ro", b"evalsha_ro"}


def _range(pos: int, lastkey: int, step: int = 1, *flags: str) -> KeySpec:
    return KeySpec(flags or ("RO",), Index(pos), Range(lastkey, step))


def test_the_legacy_triple_is_derived_as_redis_derives_it() -> None:
    assert legacy_range(()) == (0, 0, 0, False)
    assert legacy_range((one(1, "RO"),)) == (1, 1, 1, False)
    assert legacy_range((_range(1, -1, 2),)) == (1, -1, 2, False)
    assert legacy_range((one(1, "RW"), one(2, "OW"))) == (1, 2, 1, False)
    assert legacy_range((one(1, "RO"), _range(2, -1))) == (1, -1, 1, False)
    # A gap, a step in a second spec, a key count or a keyword: movable keys.
    assert legacy_range((one(1, "RO"), one(3, "RO"))) == (1, 1, 1, True)
    assert legacy_range((one(1, "RO"), _range(2, -1, 2))) == (1, 1, 1, True)
    assert legacy_range((KeySpec(("RO",), Index(2), KeyNum(0, 1)),)) == (0, 0, 0, True)
    keyword = KeySpec(("RO",), Keyword("STREAMS", 1), Range(-1, 1, 2))
    assert legacy_range((keyword,)) == (0, 0, 0, True)
    assert legacy_range((one(1, "RO", "incomplete"),)) == (1, 1, 1, True)


def test_keyword_and_limit_specs_find_keys_as_redis_does() -> None:
    """Not used by a raftcache command yet, but part of the key-spec language: XREAD-like
    ``STREAMS k1 k2 id1 id2`` (a keyword, then the first half of the rest)."""
    streams = KeySpec(("RO",), Keyword("STREAMS", 1), Range(-1, 1, 2))
    argv = [b"XREAD", b"COUNT", b"2", b"streams", b"s1", b"s2", b"0", b"0"]
    assert [k.pos for k in keyspecs.find_keys([streams], argv) or []] == [4, 5]
    assert keyspecs.find_keys([streams], [b"XREAD", b"COUNT", b"2"]) == []  # no keyword
    from_end = KeySpec(("RW",), Keyword("STORE", -2), Range(0))
    argv = [b"SORT", b"src", b"STORE", b"dst"]
    assert [k.pos for k in keyspecs.find_keys([from_end], argv) or []] == [3]
