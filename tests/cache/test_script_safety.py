"""Hostile Lua scripts against the state machine: whatever a script does, no exception leaves
``apply_entry`` (that would stop every replica, again at every replay), the process neither
aborts nor hangs, and three replicas applying the same entry reach the same reply, state and
digest. Each test here failed before its fix: the process aborted (Lua's panic), hung, raised
out of the machine, or the replicas answered differently."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import orjson
import pytest

from raftcache.cache import scripting
from raftcache.cache.commands import encode, encode_format
from raftcache.cache.commands_v4 import EvalCommand, ScriptResult, reply_to_json
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.scripting import ErrorReply
from tests.cache.test_scripting import NOW, Replicas

FILL = "local t = {} for i = 1, 1e8 do t[i] = string.rep('x', i % 50) .. i end"


def _error(reply: object, *words: str) -> str:
    assert isinstance(reply, ErrorReply), reply
    for word in words:
        assert word in reply.text, reply.text
    return reply.text


def test_a_script_out_of_memory_fails_alike_and_the_machines_go_on() -> None:
    # Before: the process aborted (Lua panic: an allocation refused outside a protected call),
    # or hung (one refused inside redis.call's Python callback unwound through Python).
    r = Replicas()
    limit = 1 << 20
    for body in (
        FILL,
        f"pcall(function() {FILL} end) pcall(redis.call, 'MGET', 'a', 'b') return 1",
        f"pcall(function() {FILL} end) return redis.call('MGET', 'a', 'b')",
        f"pcall(function() {FILL} end) return redis.sha1hex('abc')",
        f"local t = {{}} pcall(function() {FILL} end) return t",  # the reply itself
    ):
        _error(r.eval(body, memory=limit), f"memory limit of {limit} bytes")
    # KEYS and ARGV beyond the limit: the script fails, nothing aborts.
    args = tuple(b"%0340d" % i for i in range(300))
    _error(r.eval("return #ARGV", args=args, memory=1 << 16), "memory limit")
    assert r.eval("return #ARGV", args=args) == 300
    assert r.eval("return redis.call('SET', 'after', 'ok')") is not None
    r.same_state()


def test_cyclic_deep_or_endless_replies_answer_an_error() -> None:
    # Before: RecursionError (cycles, deep nesting) or an endless list (__index) out of the
    # machine.
    r = Replicas()
    depth = scripting.MAX_REPLY_DEPTH
    _error(r.eval("local t = {} t[1] = t return t"), f"nests more than {depth} levels")
    _error(r.eval("local t = {} for i = 1, 5000 do t = {t} end return t"), "nests")
    deepest = f"local t = 7 for i = 1, {depth} do t = {{t}} end return t"
    reply = r.eval(deepest)
    for _ in range(depth):
        assert isinstance(reply, list)
        assert len(reply) == 1
        reply = reply[0]
    assert reply == 7
    endless = "return setmetatable({}, {__index = function() return ('x'):rep(1e5) end})"
    assert r.eval(endless) == []  # raw access: no metamethod runs
    # A wide cycle stops at the value cap or the instruction budget, never runs away.
    _error(r.eval("local t = {} for i = 1, 8 do t[i] = t end return t"), "ERR")
    r.same_state()


def test_a_reply_holds_at_most_max_reply_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripting, "MAX_REPLY_VALUES", 1000)
    r = Replicas()
    assert r.eval("local t = {} for i = 1, 999 do t[i] = i end return t") == list(range(1, 1000))
    _error(r.eval("local t = {} for i = 1, 1000 do t[i] = i end return t"), "1000 values")


def test_numbers_beyond_int64_answer_an_error_not_a_500() -> None:
    # Before: 2^70 came back as a Python int orjson cannot encode (HTTP 500), 0/0 as 0.
    r = Replicas()
    _error(r.eval("return 2^70"), "64-bit integer")
    _error(r.eval("return {1, 2^63}"), "64-bit integer")
    _error(r.eval("return 0/0"), "nan")
    _error(r.eval("return -1/0"), "64-bit integer")
    assert r.eval("return -2^63") == -(2**63)
    assert r.eval("return 2^63 - 1024") == 2**63 - 1024
    assert r.eval("return {-3.7, 3.7, -0.5}") == [-3, 3, 0]  # truncated, as Redis does
    for body in ("return 2^62", "return 2^70", "return {0/0}"):
        orjson.dumps(reply_to_json(r.eval(body)))  # type: ignore[arg-type]


def test_an_error_value_never_shows_an_address() -> None:
    # Before: ``ERR <Lua function at 0x...>``, different on every replica.
    r = Replicas()
    for body, shown in (
        ("error(function() end)", "(error object is a function value)"),
        ("error(setmetatable({}, {}))", "ERR unknown error"),
        ("error()", "(error object is a nil value)"),
        ("error(12)", "ERR user_script:1: 12 "),
    ):
        assert "0x" not in _error(r.eval(body), shown)


@pytest.mark.parametrize(
    "body",
    [
        "local t = {} for i = 1, 20 do t[{}] = i end for _ in pairs(t) do end",
        "local t = {a = 1} t[function() end] = 2 for _ in pairs(t) do end",
        "local t = {a = 1, b = 2} t[{}] = 3 return next(t)",
        "local t = {a = 1, b = 2} t[{}] = 3 return next(t, 'a')",  # resuming checks too
        "local t = {a = 1} t[{}] = 3 table.foreach(t, function() end)",
    ],
)
def test_iterating_a_table_keyed_by_addresses_is_refused(body: str) -> None:
    # Before: such tables iterate in address order: three replicas, three answers.
    r = Replicas()
    _error(r.eval(body), "cannot iterate a table with", "keys")
    r.same_state()


def test_iteration_over_strings_and_numbers_still_works() -> None:
    r = Replicas()
    body = """
        local t = {10, 20, x = 1, y = 2, [2.5] = 3}
        t[{}] = nil
        local keys = {}
        for k, v in pairs(t) do keys[#keys + 1] = tostring(k) .. '=' .. v end
        local n = 0
        table.foreach(t, function() n = n + 1 end)
        return {table.concat(keys, ','), n, next({}) == nil}
    """
    reply = r.eval(body)
    assert isinstance(reply, list)
    assert reply[1:] == [5, 1]
    assert sorted(reply[0].split(b",")) == [b"1=10", b"2.5=3", b"2=20", b"x=1", b"y=2"]


def test_no_string_dump_nan_text_or_inexact_numbers_reach_the_machine() -> None:
    r = Replicas()
    assert r.eval("return getmetatable('').__index.dump") is None
    assert r.eval("return {tostring(0/0), tostring(-(0/0))}") == [b"nan", b"nan"]
    for number in ("2^53", "-2^53", "0/0", "1/0"):
        _error(r.eval(f"return redis.call('SET', 'k', {number})"), "within +/-2^53")
    r.eval("redis.call('MSET', 'a', 2^53 - 1, 'b', -0, 'c', 1.5, 'd', -2^53 + 1)")
    assert r.eval("return redis.call('MGET', 'a', 'b', 'c', 'd')") == [
        b"9007199254740991",
        b"0",
        b"1.5",
        b"-9007199254740991",
    ]
    _error(r.eval("return redis.call('SET', 'k', {})"), "must be strings or integers")
    _error(r.eval("return redis.call()"), "at least one argument")
    assert r.eval("return redis.pcall('SET', 'k', true)") == ErrorReply(
        "ERR Lua redis lib command arguments must be strings or integers"
    )
    assert r.eval("return redis.sha1hex(1)") == scripting.sha1_hex(b"1").encode()
    r.same_state()


def test_a_script_mset_writes_every_key_or_none() -> None:
    # Before: the keys before the one too large for max_bytes were written, then OOM.
    machines = [CacheStateMachine(max_bytes=4096) for _ in range(3)]
    for machine in machines:
        machine.apply_entry(1, encode_format(4, now=NOW))
    body = b"return redis.pcall('MSET', 'a', '1', 'b', ARGV[1], 'c', '3')"
    entry = encode(EvalCommand(NOW, body, (), (b"x" * 8192,)))
    results = [machine.apply_entry(2, entry) for machine in machines]
    assert all(result == results[0] for result in results)
    assert isinstance(results[0], ScriptResult)
    _error(results[0].reply, "OOM", "exceeds max_bytes")
    for machine in machines:
        assert machine.get("a", NOW) is None
        assert machine.get("c", NOW) is None
    assert len({machine.digest for machine in machines}) == 1


def test_lupa_is_pinned_to_the_installed_build() -> None:
    # A script's memory budget is counted by lupa's allocator and its Lua build decides what a
    # script computes: every node must run the same lupa, so the dependency names one.
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (pin,) = [dep for dep in project["project"]["dependencies"] if dep.startswith("lupa")]
    assert pin == f"lupa=={version('lupa')}"


def test_a_pattern_too_complex_is_refused_not_a_crash() -> None:
    # Before: Lua 5.1's matcher recursed in C once per quantifier: a segmentation fault.
    r = Replicas()
    limit = scripting.MAX_PATTERN_ITEMS
    for body in (
        "return string.find(string.rep('a', 2e5), string.rep('a?', 2e5) .. 'b')",
        f"return ('aaa'):match(string.rep('a?', {limit + 1}))",  # through the metatable
        f"return string.gsub('a', string.rep('(a)', {limit}), '')",
        f"for _ in string.gmatch('a', string.rep('a-', {limit + 1})) do end",
    ):
        _error(r.eval(body), "pattern too complex")
    assert r.eval(f"return {{string.find('aaa', string.rep('a?', {limit}) .. '$')}}") == [1, 3]
    assert r.eval("return {string.gsub('hello world', '(o)', '[%1]')}") == [b"hell[o] w[o]rld", 2]
