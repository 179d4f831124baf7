"""The commands of command version 4 (``raftcache.cache.formats``): Lua scripts.

Rule: as in ``commands``, a command carries everything its outcome depends on — here the
script's whole body (never only its SHA-1: what runs must not depend on what a replica's
script table holds), its KEYS and ARGV, the leader's ``now`` and the script's budget — and
validates itself in ``__post_init__``. Its log entry carries ``"f": 4``, and the leader proposes
none before the cluster's format is 4 (the rolling-upgrade rule).

- ``EvalCommand`` (``o: eval``): run ``script`` (``sc``) with ``keys`` (``ks``) and ``args``
  (``as``) inside the machine (``raftcache.cache.scripting``); bounded by ``instructions``
  (``il``) and ``memory`` (``ml``); ``slot`` (``sl``, absent for none) binds it to one slot on a
  sharded store (``raftcache.cache.script_commands``); ``read_only`` (``ro``) refuses the
  commands that write (EVAL_RO). The machine also adds the body to its
  script table, as Redis caches what EVAL ran. Result: a ``ScriptResult``.
- ``ScriptLoadCommand`` (``o: script.load``): add ``script`` to the replicated script table;
  result its SHA-1 (hex ``str``). ``ScriptFlushCommand`` (``o: script.flush``): empty the
  table; result the number of scripts dropped.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Final

from raftcache.cache.checks import check_int, check_now
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.scripting import (
    DEFAULT_INSTRUCTION_LIMIT,
    DEFAULT_MEMORY_LIMIT,
    ErrorReply,
    Reply,
    Status,
)
from raftcache.slots import SLOTS

#: The command version of these commands.
SCRIPTING_VERSION: Final = 4
#: Largest script body (bytes), and most KEYS plus ARGV of one call.
MAX_SCRIPT_BYTES: Final = 1024 * 1024
MAX_SCRIPT_ARGS: Final = 100_000
SCRIPT_OPS: Final = frozenset({"eval", "script.load", "script.flush"})


def _check_body(script: object) -> None:
    if not isinstance(script, bytes) or len(script) > MAX_SCRIPT_BYTES:
        raise InvalidCommandError(f"script must be bytes of at most {MAX_SCRIPT_BYTES}")


@dataclass(frozen=True, slots=True)
class EvalCommand:
    """Run a Lua script in the machine (see the module docstring)."""

    now: float
    script: bytes
    keys: tuple[str, ...] = ()
    args: tuple[bytes, ...] = ()
    instructions: int = DEFAULT_INSTRUCTION_LIMIT
    memory: int = DEFAULT_MEMORY_LIMIT
    slot: int | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        check_now(self.now)
        _check_body(self.script)
        if not isinstance(self.read_only, bool):
            raise InvalidCommandError("eval: read_only must be a bool")
        if not isinstance(self.keys, tuple) or not all(
            isinstance(key, str) and key for key in self.keys
        ):
            raise InvalidCommandError("eval: keys must be a tuple of non-empty strings")
        if not isinstance(self.args, tuple) or not all(isinstance(a, bytes) for a in self.args):
            raise InvalidCommandError("eval: args must be a tuple of bytes")
        if len(self.keys) + len(self.args) > MAX_SCRIPT_ARGS:
            raise InvalidCommandError(f"eval: at most {MAX_SCRIPT_ARGS} keys and args")
        check_int(self.instructions, "eval: instructions", 1, 1 << 40)
        check_int(self.memory, "eval: memory", 1 << 16, 1 << 34)
        if self.slot is not None:
            check_int(self.slot, "eval: slot", -1, SLOTS - 1)


@dataclass(frozen=True, slots=True)
class ScriptLoadCommand:
    """Add a script to the replicated script table; result its SHA-1."""

    now: float
    script: bytes

    def __post_init__(self) -> None:
        check_now(self.now)
        _check_body(self.script)


@dataclass(frozen=True, slots=True)
class ScriptFlushCommand:
    """Empty the replicated script table."""

    now: float

    def __post_init__(self) -> None:
        check_now(self.now)


ScriptingCommand = EvalCommand | ScriptLoadCommand | ScriptFlushCommand


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What an EVAL entry answered: the script's reply (an ``ErrorReply`` when it failed,
    which is not a ``CommandError``: writes it made before failing stay, as in Redis)."""

    reply: Reply


def scripting_to_wire(cmd: ScriptingCommand) -> dict[str, Any]:
    if isinstance(cmd, ScriptLoadCommand):
        return {"o": "script.load", "n": cmd.now, "sc": cmd.script}
    if isinstance(cmd, ScriptFlushCommand):
        return {"o": "script.flush", "n": cmd.now}
    wire: dict[str, Any] = {"o": "eval", "n": cmd.now, "sc": cmd.script}
    if cmd.keys:
        wire["ks"] = list(cmd.keys)
    if cmd.args:
        wire["as"] = list(cmd.args)
    wire["il"] = cmd.instructions
    wire["ml"] = cmd.memory
    if cmd.slot is not None:
        wire["sl"] = cmd.slot
    if cmd.read_only:
        wire["ro"] = True
    return wire


def scripting_from_wire(wire: dict[str, Any]) -> ScriptingCommand:
    op, now = wire["o"], wire["n"]
    if op == "script.load":
        return ScriptLoadCommand(now, wire["sc"])
    if op == "script.flush":
        return ScriptFlushCommand(now)
    keys, args = wire.get("ks", []), wire.get("as", [])
    if not isinstance(keys, list) or not isinstance(args, list):
        raise InvalidCommandError("eval: keys and args must be lists")
    return EvalCommand(
        now,
        wire["sc"],
        tuple(keys),
        tuple(args),
        wire["il"],
        wire["ml"],
        wire.get("sl"),
        wire.get("ro", False),
    )


def reply_to_json(reply: Reply) -> Any:
    """A script reply as JSON (the HTTP API's ``/v1/scripts`` answers; docs/api.md): one
    key per shape — ``{"int": n}``, ``{"bulk": base64}``, ``{"nil": true}``, ``{"status":
    s}``, ``{"error": s}``, ``{"array": [...]}``."""
    if reply is None:
        return {"nil": True}
    if isinstance(reply, bool):
        return {"int": int(reply)}
    if isinstance(reply, int):
        return {"int": reply}
    if isinstance(reply, bytes):
        return {"bulk": base64.b64encode(reply).decode()}
    if isinstance(reply, Status):
        return {"status": reply.text}
    if isinstance(reply, ErrorReply):
        return {"error": reply.text}
    return {"array": [reply_to_json(item) for item in reply]}


def reply_from_json(obj: Any) -> Reply:
    """Inverse of ``reply_to_json``; ``ValueError`` on any other shape."""
    if not isinstance(obj, dict) or len(obj) != 1:
        raise ValueError(f"not a script reply: {obj!r}")
    ((kind, value),) = obj.items()
    if kind == "nil":
        return None
    if kind == "int" and type(value) is int:
        return value
    if kind == "bulk" and isinstance(value, str):
        return base64.b64decode(value, validate=True)
    if kind == "status" and isinstance(value, str):
        return Status(value)
    if kind == "error" and isinstance(value, str):
        return ErrorReply(value)
    if kind == "array" and isinstance(value, list):
        return [reply_from_json(item) for item in value]
    raise ValueError(f"not a script reply: {obj!r}")
