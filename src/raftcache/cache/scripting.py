"""Lua scripts inside the state machine: a sandboxed, bounded, deterministic Lua 5.1 run.

Rule: a script's outcome depends only on its body, its KEYS and ARGV, and the state the
commands it calls (``redis.call``) read — never on the replica that runs it. So:

- **One fresh interpreter per run** (``lupa.lua51``, ~35 µs to make): nothing one script
  leaves behind (globals, garbage, the heap's layout) reaches the next, and a replica restored
  from a snapshot runs the next script exactly as one that applied every entry.
- **Lua 5.1**, as Redis embeds: its string hashes are not seeded (5.2+ seed them from the clock
  and addresses), so ``pairs`` over string and number keys walks in the same order everywhere;
  numbers are doubles, as Redis scripts expect.
- **A sandbox**: the script runs in an environment of its own holding only ``assert``,
  ``error``, ``ipairs``, ``next``, ``pairs``, ``pcall``, ``rawequal``, ``rawget``, ``rawset``,
  ``select``, ``setmetatable``, ``getmetatable``, ``tonumber``, ``tostring``, ``type``,
  ``unpack``, ``xpcall``, ``string`` (without ``dump``), ``table``, ``math``, ``KEYS``,
  ``ARGV`` and ``redis``. No ``os``, ``io``, ``require``, ``load*``, ``dofile``, ``debug``,
  ``coroutine``, ``print``, ``collectgarbage``, ``getfenv``/``setfenv``: no clock, no I/O, no
  escape. Reading an undefined global and creating one are errors, as in Redis 7.
- **No randomness, no addresses**: ``math.random`` is a Park–Miller generator seeded the same
  way at every run (Redis 7 also reseeds it identically per script); ``tostring`` of a table or
  function answers its type, not its address, and of NaN ``nan`` (the C library prints
  ``-nan`` on some CPUs); an error value that is not text shows its type. ``next``/``pairs``
  (and ``table.foreach``) refuse a table keyed by a table, function, userdata or thread: such
  a table iterates in address order, which differs between replicas. ``string.dump`` is gone,
  from ``string`` and from the strings' metatable; a pattern with more than
  ``MAX_PATTERN_ITEMS`` quantifiers and captures is refused (Lua 5.1's matcher would overflow
  the C stack).
- **Bounded by counts, never by time**: an instruction hook stops a script after
  ``instruction_limit`` VM instructions (counted in steps of ``HOOK_STEP``; each ``redis.call``
  counts ``CALL_COST``), and the runtime
  refuses allocations beyond ``memory_limit`` bytes. Both counts are the same on every
  replica, so a runaway script fails the same way — at the same instruction — everywhere; a
  wall-clock timeout would stop it at different points on different replicas. Once over its
  budget the hook raises at every further step, so a ``pcall`` in the script cannot swallow
  the stop. Both limits travel in the log entry (``raftcache.cache.commands_v4``). The memory
  limit holds only while Lua code runs (``run_script``): an allocation refused while Python
  works on the Lua heap would abort the process.

``redis.call``/``redis.pcall`` reach the machine's commands through ``dispatch`` (the machine
passes ``raftcache.cache.script_commands``); replies convert as Redis documents them, both ways
(``to_lua``; the script's reply is converted in Lua, under the script's budgets, then
``_decode``): integer ↔ number (Lua numbers truncate to integers; one beyond the 64-bit range,
infinite or NaN makes the reply an error), bulk ↔ string, nil → ``false`` (and ``false`` →
nil), array ↔ table (up to the first nil, read raw: no metamethod runs), status ↔ ``{ok=...}``,
error ↔ ``{err=...}``; ``true`` → 1. A reply nests at most ``MAX_REPLY_DEPTH`` levels and
holds at most ``MAX_REPLY_VALUES`` values (a cycle ends there). Arguments of ``redis.call``
are strings or numbers within ±2^53 (exact integers, converted alike on every CPU).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import lupa.lua51 as lua

#: Instructions between two calls of the budget hook.
HOOK_STEP = 1000
#: The default budget of one script: VM instructions (a few hundred ms of Lua 5.1 at most:
#: the replicas apply it on their event loop, so it must stay below an election timeout's
#: order of magnitude) and bytes of Lua heap.
DEFAULT_INSTRUCTION_LIMIT = 50_000_000
DEFAULT_MEMORY_LIMIT = 32 * 1024 * 1024
#: Instructions one ``redis.call``/``redis.pcall`` counts for: a command costs the machine
#: about as much time as that many Lua instructions (~10 µs), so the budget bounds a script
#: that loops over commands too (the default allows 50 000 of them).
CALL_COST = 1000
#: The fixed seed of ``math.random`` at the start of every run.
RANDOM_SEED = 1


@dataclass(frozen=True, slots=True)
class Status:
    """A status reply (``+OK``), from ``{ok=...}`` or ``redis.status_reply``."""

    text: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply (``-ERR ...``), from ``{err=...}``, ``redis.error_reply`` or a failed
    script; ``text`` starts with its code."""

    text: str


#: What a script (or a command it calls) replies: RESP's shapes.
Reply: TypeAlias = "int | bytes | Status | ErrorReply | list[Reply] | None"

#: ``dispatch(args)``: run one command (name first), its reply; raises ``ScriptCommandError``.
Dispatch = Callable[[list[bytes]], Reply]


class ScriptCommandError(Exception):
    """A command called from a script failed; ``str(exc)`` is Redis's error text."""


def sha1_hex(body: bytes) -> str:
    """The script's name, as Redis computes it: the SHA-1 of its body, 40 lower-case hex."""
    return hashlib.sha1(body).hexdigest()


_LINE = re.compile(rb"user_script:(\d+):")

#: How deep a script's reply may nest, and how many values it may hold in all: a reply is
#: converted (in Lua, under the script's budgets) before it leaves the interpreter, and what
#: handles it afterwards (RESP, JSON) recurses over it.
MAX_REPLY_DEPTH = 100
MAX_REPLY_VALUES = 1_000_000
#: Numbers a script may pass to ``redis.call``: beyond ±2^53 a double is no longer an exact
#: integer, and converting it is left to the CPU (lupa casts it in C).
MAX_ARGUMENT_NUMBER = 2**53
#: Most quantifiers and captures in a pattern (``string.find`` & co.), as Lua 5.2's limit: Lua
#: 5.1's matcher recurses in C once per each, unbounded, and would overflow the C stack.
MAX_PATTERN_ITEMS = 200

# The run, in Lua. ``prepare`` runs with no memory limit and no hook: it builds the sandbox
# from the full runtime, compiles the script and answers ``run``, which the caller starts once
# the memory limit is set. ``debug`` stays in this chunk's locals, out of the script's reach,
# and leaves the globals (lupa then calls ``run`` with no traceback handler). ``run`` answers
# only strings and numbers (its reply already converted), so taking its results back never
# allocates on the Lua heap. Every Python function the sandbox calls lifts the memory limit
# first thing; the Lua side sets it again (``relimit``) once back.
_BOOT = """
local body, keys, key_sizes, argv, arg_sizes, dispatch, sha1hex, relimit, limit, step,
  call_cost, max_depth, max_values, max_number, max_pattern = ...
local sethook, getinfo = debug.sethook, debug.getinfo
local error, type, pcall, setfenv, loadstring = error, type, pcall, setfenv, loadstring
local tostring0, floor, select, rawget, next0 = tostring, math.floor, select, rawget, next
local format, concat, unpack = string.format, table.concat, unpack
local state = { line = 0 }
local count = 0
local function charge(cost)
  count = count + cost
  if count > limit then
    sethook(function() error("script killed: instruction budget exceeded", 0) end, "", 1)
    error("script killed: instruction budget exceeded", 0)
  end
end
local function hook() charge(step) end
string.dump = nil  -- also reachable as getmetatable("").__index
-- Lua 5.1's pattern matcher recurses in C once per quantifier or capture of the pattern, with
-- no limit (5.2 stops at 200): a long pattern overflows the C stack and kills the process. A
-- pattern with more than ``max_pattern`` of them is refused, in the real string table too
-- (``("s"):find(p)`` reaches it through the strings' metatable).
local gsub0 = string.gsub
local function matcher(name)
  local f = string[name]
  string[name] = function(s, p, ...)
    if type(p) == "string" and #p > max_pattern then
      local _, n = gsub0(p, "[?*+%%-()]", "")
      if n > max_pattern then error("pattern too complex", 2) end
    end
    return f(s, p, ...)
  end
end
matcher("find") matcher("match") matcher("gmatch") matcher("gsub")
_G.debug = nil

local function tostring1(v)  -- no addresses; NaN printed alike on every CPU
  local t = type(v)
  if (t == "table" or t == "userdata") and getmetatable(v) and getmetatable(v).__tostring then
    return tostring0(v)
  end
  if t == "table" or t == "function" or t == "userdata" or t == "thread" then return t end
  if v ~= v then return "nan" end
  return tostring0(v)
end

-- next/pairs: a table keyed by a table, function, userdata or thread iterates in address
-- order (and such keys move the others), which differs between replicas: refused. The whole
-- table is checked when a traversal starts (or resumes on a table not checked yet).
local checked = setmetatable({}, { __mode = "k" })
local function unordered(k)
  local t = type(k)
  return t == "table" or t == "function" or t == "userdata" or t == "thread"
end
local function next1(t, k)
  if type(t) == "table" and (k == nil or not checked[t]) then
    local key = next0(t)
    while key ~= nil do
      if unordered(key) then
        error("cannot iterate a table with " .. type(key) .. " keys: its order differs " ..
          "between replicas", 2)
      end
      key = next0(t, key)
    end
    checked[t] = true
  end
  local key, value = next0(t, k)
  if unordered(key) then
    error("cannot iterate a table with " .. type(key) .. " keys: its order differs " ..
      "between replicas", 2)
  end
  return key, value
end
local function pairs1(t)
  if type(t) ~= "table" then
    error("bad argument #1 to 'pairs' (table expected, got " .. type(t) .. ")", 2)
  end
  return next1, t, nil
end

local env = {}
for _, name in ipairs({"assert", "error", "ipairs", "pcall", "rawequal",
    "rawget", "rawset", "select", "setmetatable", "getmetatable", "tonumber", "type",
    "unpack", "xpcall"}) do
  env[name] = _G[name]
end
env.next, env.pairs, env.tostring = next1, pairs1, tostring1
env._VERSION = _VERSION
local function copy(t) local c = {} for k, v in next0, t do c[k] = v end return c end
env.string = copy(string)
env.table = copy(table)
env.table.foreach = function(t, f)
  for k, v in pairs1(t) do
    local r = f(k, v)
    if r ~= nil then return r end
  end
end
env.math = copy(math)
local seed = %(seed)d
env.math.randomseed = function(s)
  seed = floor(tonumber(s) or 0) %% 2147483646 + 1
end
env.math.random = function(m, n)
  seed = (seed * 16807) %% 2147483647
  local r = (seed - 1) / 2147483646
  if m == nil then return r end
  if n == nil then m, n = 1, m end
  if m > n then error("bad argument to 'random' (interval is empty)", 2) end
  return floor(r * (n - m + 1)) + m
end
local function split(blob, sizes)  -- KEYS, ARGV: one string and their sizes (lupa's
  local t, at, n = {}, 1, 0         -- table_from takes seconds for 100 000 values)
  for size in sizes:gmatch("%%d+") do
    n = n + 1
    t[n] = blob:sub(at, at + size - 1)
    at = at + size
  end
  return t
end
env.KEYS = split(keys, key_sizes)
env.ARGV = split(argv, arg_sizes)

local function where()  -- the script's line that called (lost to a tail call: 0)
  for level = 3, 12 do
    local info = getinfo(level, "Sl")
    if not info then return end
    if info.source == "@user_script" then state.line = info.currentline return end
  end
end
local BAD_ARGUMENT = "ERR Lua redis lib command arguments must be strings or integers"
-- redis.call's arguments as Redis takes them: strings, numbers as their %%.17g text
-- (integers without a fraction); nil and Redis's error text when one is not.
local function arguments(...)
  local n = select("#", ...)
  if n == 0 then
    return nil, "ERR Please specify at least one argument for this redis lib call"
  end
  local args = {...}
  for i = 1, n do
    local v = args[i]
    local t = type(v)
    if t == "number" then
      if v ~= v or v >= max_number or v <= -max_number then
        return nil, "ERR Lua redis lib command arguments must be strings or integers " ..
          "(numbers within +/-2^53)"
      end
      if v == floor(v) then
        args[i] = v == 0 and "0" or format("%%.0f", v)
      else
        args[i] = format("%%.17g", v)
      end
    elseif t ~= "string" then
      return nil, BAD_ARGUMENT
    end
  end
  return args, n
end
local function command(...)  -- ok, reply
  local args, n = arguments(...)
  if not args then return false, n end
  local ok, reply = dispatch(unpack(args, 1, n))
  relimit()
  return ok, reply
end
local redis = {}
redis.call = function(...)
  charge(call_cost)
  local ok, reply = command(...)
  if ok then return reply end
  where()
  error({err = reply}, 0)
end
redis.pcall = function(...)
  charge(call_cost)
  local ok, reply = command(...)
  if ok then return reply end
  return {err = reply}
end
redis.error_reply = function(msg)
  if type(msg) ~= "string" then error("wrong number or type of arguments", 2) end
  return {err = msg}
end
redis.status_reply = function(msg)
  if type(msg) ~= "string" then error("wrong number or type of arguments", 2) end
  return {ok = msg}
end
redis.sha1hex = function(s)
  if type(s) == "number" then s = tostring1(s) end
  if type(s) ~= "string" then error("wrong number or type of arguments", 2) end
  local hex = sha1hex(s)
  relimit()
  return hex
end
redis.log = function() end
redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING = 0, 1, 2, 3
redis.setresp = function(v) if v ~= 2 then error("RESP3 is not supported in scripts", 2) end end
redis.set_repl = function() end
redis.replicate_commands = function() return true end
redis.REPL_ALL, redis.REPL_AOF, redis.REPL_REPLICA, redis.REPL_SLAVE, redis.REPL_NONE =
  3, 1, 2, 2, 0
redis.REDIS_VERSION, redis.REDIS_VERSION_NUM = "7.0.0", 0x070000
env.redis = redis
setmetatable(env, {
  __index = function(_, name)
    error("Script attempted to access nonexistent global variable '" .. tostring0(name) .. "'", 2)
  end,
  __newindex = function(_, name)
    error("Script attempted to create global variable '" .. tostring0(name) .. "'", 2)
  end,
})

-- The reply, as Redis converts it, in one string (``_decode``): raw access only (no
-- metamethod runs), ``max_depth`` levels and ``max_values`` values at most. Numbers truncate
-- to integers; one that is not a 64-bit integer then (NaN, infinite, beyond 2^63) fails.
local function encode(reply)
  local out, n, values = {}, 0, 0
  local function put(a, b, c)
    out[n + 1], out[n + 2], out[n + 3] = a, b, c
    n = n + 3
  end
  local function walk(v, depth)
    values = values + 1
    if values > max_values then error("reply holds more than " .. max_values .. " values", 0) end
    local t = type(v)
    if t == "string" then put("$", #v, ":") n = n + 1 out[n] = v
    elseif t == "number" then
      local i = v >= 0 and floor(v) or -floor(-v)
      if i ~= i or i >= 2^63 or i < -2^63 then
        error("reply number " .. tostring1(v) .. " is not a 64-bit integer", 0)
      end
      put(":", i == 0 and "0" or format("%%.0f", i), ";")
    elseif t == "boolean" then
      if v then put(":", "1", ";") else n = n + 1 out[n] = "_" end
    elseif t == "table" then
      local err, ok = rawget(v, "err"), rawget(v, "ok")
      if type(err) == "string" then put("-", #err, ":") n = n + 1 out[n] = err
      elseif type(ok) == "string" then put("+", #ok, ":") n = n + 1 out[n] = ok
      else
        if depth >= max_depth then
          error("reply nests more than " .. max_depth .. " levels", 0)
        end
        local size = 0
        while rawget(v, size + 1) ~= nil do size = size + 1 end
        put("*", size, ";")
        for i = 1, size do walk(rawget(v, i), depth + 1) end
      end
    else
      n = n + 1 out[n] = "_"  -- nil, functions, userdata: nil, as Redis converts them
    end
  end
  walk(reply, 0)
  return concat(out, "", 1, n)
end

-- An error value as text: a table's ``err`` ("T"), or the value's own text ("E"); never an
-- address.
local function describe(e)
  if type(e) == "table" then
    local err = rawget(e, "err")
    return "T", type(err) == "string" and err or ""
  end
  if type(e) == "string" or type(e) == "number" or type(e) == "boolean" then
    return "E", tostring1(e)
  end
  return "E", "(error object is a " .. type(e) .. " value)"
end

local fn, why = loadstring(body, "@user_script")
if not fn then return "compile", why end
setfenv(fn, env)
local pins = { dispatch, sha1hex, relimit }  -- the Python functions live as long as ``run``
return "ready", function()
  if not pins then return end
  sethook(hook, "", step)
  local ok, result = pcall(fn)
  if not ok then
    local kind, text = describe(result)
    return kind, text, state.line
  end
  local converted, encoded = pcall(encode, result)
  if not converted then return "C", encoded, 0 end
  return "ok", encoded, 0
end
"""


def run_script(
    body: bytes,
    keys: Sequence[bytes],
    argv: Sequence[bytes],
    dispatch: Dispatch,
    *,
    instruction_limit: int = DEFAULT_INSTRUCTION_LIMIT,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> Reply:
    """Run ``body`` with ``KEYS``/``ARGV`` in a fresh sandbox; its reply (an ``ErrorReply``
    when it failed: compile error, runtime error, budget exceeded). Never raises for anything
    the script does.

    The memory limit holds only while Lua code runs: whenever Python touches the Lua heap
    (building KEYS/ARGV and the sandbox, a command's reply, taking the results back) it is
    lifted, because an allocation refused outside a protected Lua call aborts the process
    (Lua's panic), and one refused inside a Python callback unwinds through Python's frames."""
    sha = sha1_hex(body)
    runtime = lua.LuaRuntime(
        encoding=None,
        unpack_returned_tuples=True,
        register_eval=False,
        register_builtins=False,
        max_memory=0,  # lupa's counting allocator, no limit yet
    )

    def unlimit() -> None:
        runtime.set_max_memory(0)

    def relimit() -> None:
        runtime.set_max_memory(memory_limit)

    def call(*raw: object) -> tuple[bool, object]:
        unlimit()  # first: nothing below may meet a refused allocation (docstring)
        try:
            reply = dispatch(_arguments(raw))
        except ScriptCommandError as exc:
            return False, str(exc).encode()
        return True, to_lua(runtime, reply)

    def sha1hex(text: bytes) -> bytes:
        unlimit()
        return sha1_hex(text).encode()

    prepare = runtime.execute(
        b"return function(...) " + (_BOOT % {"seed": RANDOM_SEED}).encode() + b" end"
    )
    ready, run = prepare(
        body,
        b"".join(keys),
        _sizes(keys),
        b"".join(argv),
        _sizes(argv),
        call,
        sha1hex,
        relimit,
        instruction_limit,
        HOOK_STEP,
        CALL_COST,
        MAX_REPLY_DEPTH,
        MAX_REPLY_VALUES,
        float(MAX_ARGUMENT_NUMBER),
        MAX_PATTERN_ITEMS,
    )
    del prepare
    if ready == b"compile":
        return ErrorReply(f"ERR Error compiling script (new function): {_text(run)}")
    relimit()
    try:
        outcome, result, line = run()
    except lua.LuaMemoryError:
        unlimit()
        return _memory(memory_limit, sha)
    except lua.LuaError as exc:  # out of the script's pcall: the budget hook fired
        unlimit()
        if "instruction budget" in str(exc):
            return _budget(instruction_limit, sha)
        return ErrorReply(f"ERR {exc} {_at(sha)}")
    unlimit()
    assert isinstance(result, bytes)
    if outcome == b"ok":
        return _decode(result)
    if outcome == b"C":  # the reply did not convert
        if result == b"not enough memory":
            return _memory(memory_limit, sha)
        return ErrorReply(f"ERR {_text(result)} {_at(sha)}")
    return _script_error(outcome == b"T", result, int(line), sha, memory_limit)


def _sizes(values: Sequence[bytes]) -> bytes:
    return b",".join(b"%d" % len(value) for value in values)


def _budget(limit: int, sha: str) -> ErrorReply:
    return ErrorReply(
        f"ERR script exceeded its budget of {limit} instructions and was stopped {_at(sha)}"
    )


def _memory(limit: int, sha: str) -> ErrorReply:
    return ErrorReply(f"ERR script exceeded its memory limit of {limit} bytes {_at(sha)}")


def _at(sha: str, line: int = 0) -> str:
    return f"script: {sha}" + (f", on @user_script:{line}." if line else "")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _script_error(table: bool, raw: bytes, line: int, sha: str, memory_limit: int) -> ErrorReply:
    """Redis 7's text for a script that raised: ``{err=...}`` (``table``) keeps its own code,
    a Lua error gets ``ERR``; both name the script and the line."""
    if table:
        if not raw:
            return ErrorReply(f"ERR unknown error {_at(sha, line)}")
        text = raw.decode("utf-8", errors="replace")
        if " " not in text.split("\n")[0] or not text.split(" ")[0].isupper():
            text = "ERR " + text
        return ErrorReply(f"{text} {_at(sha, line)}")
    if raw == b"not enough memory":  # an allocation refused, not caught by the script
        return _memory(memory_limit, sha)
    match = _LINE.match(raw)
    if match is not None:
        line = int(match.group(1))
    return ErrorReply(f"ERR {_text(raw)} {_at(sha, line)}")


def _arguments(raw: Sequence[object]) -> list[bytes]:
    """``redis.call``'s arguments as Redis takes them: strings, and numbers as their
    ``%.17g`` text (integers without a fraction)."""
    if not raw:
        raise ScriptCommandError("ERR Please specify at least one argument for this redis lib call")
    out: list[bytes] = []
    for arg in raw:
        if isinstance(arg, bytes):
            out.append(arg)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            out.append(str(arg).encode())
        elif isinstance(arg, float) and math.isfinite(arg):
            out.append(str(int(arg)).encode() if arg.is_integer() else (b"%.17g" % arg))
        else:
            raise ScriptCommandError(
                "ERR Lua redis lib command arguments must be strings or integers"
            )
    return out


def to_lua(runtime: Any, reply: Reply) -> object:
    """A command's reply as ``redis.call`` returns it to Lua."""
    if reply is None:
        return False
    if isinstance(reply, bytes | int):
        return reply
    if isinstance(reply, Status):
        return runtime.table_from({b"ok": reply.text.encode()})
    if isinstance(reply, ErrorReply):
        return runtime.table_from({b"err": reply.text.encode()})
    return runtime.table_from([to_lua(runtime, item) for item in reply])


def _decode(data: bytes) -> Reply:
    """The reply ``encode`` (in ``_BOOT``) wrote: ``$<n>:<bytes>`` bulk, ``+<n>:<text>``
    status, ``-<n>:<text>`` error, ``:<int>;`` integer, ``_`` nil, ``*<n>;`` array of the next
    n replies."""
    reply, end = _decode_at(data, 0)
    assert end == len(data)
    return reply


def _decode_at(data: bytes, at: int) -> tuple[Reply, int]:
    mark = data[at : at + 1]
    if mark == b"_":
        return None, at + 1
    if mark == b":":
        end = data.index(b";", at)
        return int(data[at + 1 : end]), end + 1
    if mark == b"*":
        end = data.index(b";", at)
        count = int(data[at + 1 : end])
        items: list[Reply] = []
        at = end + 1
        for _ in range(count):
            item, at = _decode_at(data, at)
            items.append(item)
        return items, at
    colon = data.index(b":", at)
    size = int(data[at + 1 : colon])
    text = data[colon + 1 : colon + 1 + size]
    if mark == b"$":
        return text, colon + 1 + size
    decoded = text.decode("utf-8", errors="replace")
    return (Status(decoded) if mark == b"+" else ErrorReply(decoded)), colon + 1 + size
