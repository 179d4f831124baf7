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
  function answers its type, not its address.
- **Bounded by counts, never by time**: an instruction hook stops a script after
  ``instruction_limit`` VM instructions (counted in steps of ``HOOK_STEP``; each ``redis.call``
  counts ``CALL_COST``), and the runtime
  refuses allocations beyond ``memory_limit`` bytes. Both counts are the same on every
  replica, so a runaway script fails the same way — at the same instruction — everywhere; a
  wall-clock timeout would stop it at different points on different replicas. Once over its
  budget the hook raises at every further step, so a ``pcall`` in the script cannot swallow
  the stop. Both limits travel in the log entry (``raftcache.cache.commands_v4``).

``redis.call``/``redis.pcall`` reach the machine's commands through ``dispatch`` (the machine
passes ``raftcache.cache.script_commands``); replies convert as Redis documents them, both ways
(``to_lua``, ``_from_lua``): integer ↔ number (Lua numbers truncate to integers), bulk ↔
string, nil → ``false`` (and ``false`` → nil), array ↔ table (up to the first nil), status ↔
``{ok=...}``, error ↔ ``{err=...}``; ``true`` → 1.
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

# The run, in Lua: builds the sandbox from the full runtime, then calls the script in it. The
# budget hook and ``debug`` stay in this chunk's locals, out of the script's reach.
_BOOT = """
local body, keys, argv, dispatch, sha1hex, limit, step, call_cost = ...
local sethook, getinfo = debug.sethook, debug.getinfo
local error, type, pcall, setfenv, loadstring = error, type, pcall, setfenv, loadstring
local tostring0, floor, select = tostring, math.floor, select
local state = { over = false, line = 0 }
local count = 0
local function charge(cost)
  count = count + cost
  if count > limit then
    state.over = true
    sethook(function() error("script killed: instruction budget exceeded", 0) end, "", 1)
    error("script killed: instruction budget exceeded", 0)
  end
end
sethook(function() charge(step) end, "", step)

local env = {}
for _, name in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal",
    "rawget", "rawset", "select", "setmetatable", "getmetatable", "tonumber", "type",
    "unpack", "xpcall"}) do
  env[name] = _G[name]
end
env._VERSION = _VERSION
local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
env.string = copy(string); env.string.dump = nil
env.table = copy(table)
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
env.tostring = function(v)
  local t = type(v)
  if (t == "table" or t == "userdata") and getmetatable(v) and getmetatable(v).__tostring then
    return tostring0(v)
  end
  if t == "table" or t == "function" or t == "userdata" or t == "thread" then return t end
  return tostring0(v)
end
env.KEYS = keys
env.ARGV = argv

local function where()  -- the script's line that called (lost to a tail call: 0)
  for level = 3, 12 do
    local info = getinfo(level, "Sl")
    if not info then return end
    if info.source == "@user_script" then state.line = info.currentline return end
  end
end
local redis = {}
redis.call = function(...)
  charge(call_cost)
  local ok, reply = dispatch(...)
  if ok then return reply end
  where()
  error({err = reply}, 0)
end
redis.pcall = function(...)
  charge(call_cost)
  local ok, reply = dispatch(...)
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
  if type(s) ~= "string" and type(s) ~= "number" then
    error("wrong number or type of arguments", 2)
  end
  return sha1hex(s)
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

local fn, why = loadstring(body, "@user_script")
if not fn then return "compile", why, state end
setfenv(fn, env)
local ok, result = pcall(fn)
if not ok then return "error", result, state end
return "ok", result, state
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
    the script does."""
    sha = sha1_hex(body)
    runtime = lua.LuaRuntime(
        encoding=None,
        unpack_returned_tuples=True,
        register_eval=False,
        register_builtins=False,
        max_memory=memory_limit,
    )

    def call(*raw: object) -> tuple[bool, object]:
        try:
            reply = dispatch(_arguments(raw))
        except ScriptCommandError as exc:
            return False, str(exc).encode()
        return True, to_lua(runtime, reply)

    boot = runtime.execute(
        b"return function(...) " + (_BOOT % {"seed": RANDOM_SEED}).encode() + b" end"
    )
    try:
        outcome, result, state = boot(
            body,
            runtime.table_from(list(keys)),
            runtime.table_from(list(argv)),
            call,
            lambda text: sha1_hex(text if isinstance(text, bytes) else str(text).encode()).encode(),
            instruction_limit,
            HOOK_STEP,
            CALL_COST,
        )
        if state[b"over"]:
            return _budget(instruction_limit, sha)
        if outcome == b"compile":
            return ErrorReply(f"ERR Error compiling script (new function): {_text(result)}")
        if outcome == b"error":
            return _script_error(result, state[b"line"], sha)
        return _from_lua(result)
    except lua.LuaMemoryError:
        return ErrorReply(
            f"ERR script exceeded its memory limit of {memory_limit} bytes {_at(sha)}"
        )
    except lua.LuaError as exc:  # raised while converting a reply: the budget hook fired
        if "instruction budget" in str(exc):
            return _budget(instruction_limit, sha)
        return ErrorReply(f"ERR {exc} {_at(sha)}")


def _budget(limit: int, sha: str) -> ErrorReply:
    return ErrorReply(
        f"ERR script exceeded its budget of {limit} instructions and was stopped {_at(sha)}"
    )


def _at(sha: str, line: int = 0) -> str:
    return f"script: {sha}" + (f", on @user_script:{line}." if line else "")


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _script_error(error: object, line: int, sha: str) -> ErrorReply:
    """Redis 7's text for a script that raised: ``{err=...}`` keeps its own code, a Lua error
    gets ``ERR``; both name the script and the line."""
    if lua.lua_type(error) == "table":
        err = error[b"err"]  # type: ignore[index]
        if isinstance(err, bytes):
            text = err.decode("utf-8", errors="replace")
            if not text or " " not in text.split("\n")[0] or not text.split(" ")[0].isupper():
                text = "ERR " + text
            return ErrorReply(f"{text} {_at(sha, line)}")
        return ErrorReply(f"ERR unknown error {_at(sha, line)}")
    raw = error if isinstance(error, bytes) else _text(error).encode()
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


def _from_lua(value: object) -> Reply:
    """A Lua value as the script's reply (Redis's Lua-to-RESP conversion)."""
    if value is None or value is False:
        return None
    if value is True:
        return 1
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if lua.lua_type(value) == "table":
        table: Any = value
        err = table[b"err"]
        if isinstance(err, bytes):
            return ErrorReply(err.decode("utf-8", errors="replace"))
        ok = table[b"ok"]
        if isinstance(ok, bytes):
            return Status(ok.decode("utf-8", errors="replace"))
        items: list[Reply] = []
        position = 1
        while True:
            item = table[position]
            if item is None:
                return items
            items.append(_from_lua(item))
            position += 1
    return None  # functions, userdata: nil, as Redis converts them
