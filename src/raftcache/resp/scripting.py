"""EVAL, EVALSHA (and their ``_RO`` forms) and SCRIPT LOAD|EXISTS|FLUSH|HELP on the RESP port.

Rule: a script is one write: one log entry that every replica runs inside its state machine
(``raftcache.cache.scripting``), so it is atomic with respect to every other command and
linearizable, read-only or not (``EVAL_RO`` takes the same path, and the machine refuses its
writes: ``ERR Write commands are not allowed from read-only scripts.``). A connection of the
read-only token may run only ``EVAL_RO``, ``EVALSHA_RO`` and ``SCRIPT EXISTS``. The RESP side
only parses, routes and converts replies: ``Status`` → ``+...``, ``ErrorReply`` → ``-...``
(anywhere in the reply), the rest as they are.

Keys: the ``numkeys`` keys are the call's ``keys``, so the cluster-mode port redirects a script
as any keyed command (``MOVED``, ``CROSSSLOT``), and on a sharded store the backend runs it in
its keys' group, bound to their one slot (``CROSSSLOT`` otherwise; a script without keys runs
in the first group and may touch no key: ``raftcache.resp.shards``).

Script cache: SCRIPT LOAD is a replicated entry (the script table is replicated state, in
snapshots), EVALSHA resolves the SHA-1 on the leader after a read barrier and proposes the body.
SCRIPT EXISTS reads the table with the connection's consistency; SCRIPT FLUSH is an entry too.
Inside MULTI these commands are refused (a transaction is one cache batch).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from raftcache.cache.commands_v4 import MAX_SCRIPT_BYTES, SCRIPTING_VERSION
from raftcache.cache.scripting import ErrorReply, Status
from raftcache.cache.scripting import Reply as ScriptReply
from raftcache.resp.args import Limits, integer, keys, upper, value
from raftcache.resp.calls import Call, Mode, Reply
from raftcache.resp.errors import no_permission, wrong_args
from raftcache.resp.protocol import OK, RespError, Simple

if TYPE_CHECKING:
    from raftcache.resp.backend import Backend, ScriptBackend

_SHA: Final = re.compile(r"[0-9a-fA-F]{40}")
_HELP: Final = (
    "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "EXISTS <sha1> [<sha1> ...]",
    "    Return information about the existence of the scripts in the script cache.",
    "FLUSH [ASYNC|SYNC]",
    "    Flush the Lua scripts cache (on every replica: a replicated entry).",
    "LOAD <script>",
    "    Load a script into the scripts cache without executing it.",
    "HELP",
    "    Print this help.",
)


def to_resp(reply: ScriptReply) -> Reply:
    """A script's reply as the RESP encoder takes it. A status or error text is one line:
    its ``\\r`` and ``\\n`` become spaces, as Redis does (a script's text must not add frames)."""
    if isinstance(reply, Status):
        return Simple(_one_line(reply.text))
    if isinstance(reply, ErrorReply):
        return RespError(_one_line(reply.text))
    if isinstance(reply, list):
        return [to_resp(item) for item in reply]
    return reply


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


class Eval(Call):
    """EVAL/EVALSHA (``sha`` set): one replicated script run (module docstring).

    It runs alone (``SERVER``), not among a pipeline's concurrent writes: EVALSHA reads the
    script table (a read barrier) before it proposes, so started together with the writes after
    it, it could reach the log after them."""

    mode = Mode.SERVER
    writes = True
    needs_command_version = SCRIPTING_VERSION

    def __init__(
        self,
        script: bytes | None,
        sha: str | None,
        keys: tuple[str, ...],
        args: list[bytes],
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only
        self.script = script
        self.sha = sha
        self.keys = self.pinned = keys
        self.args = args

    async def run(self, backend: Backend) -> Reply:
        scripts = cast("ScriptBackend", backend)  # every backend of the server has them
        if self.script is not None:
            reply = await scripts.eval(self.script, self.keys, self.args, read_only=self.read_only)
        else:
            assert self.sha is not None
            reply = await scripts.evalsha(self.sha, self.keys, self.args, read_only=self.read_only)
        return to_resp(reply)

    def run_server(self, ctx: Any) -> Reply:
        return ctx.server.router.call(self.run, ctx.gate)


class ScriptCommand(Call):
    """SCRIPT LOAD|EXISTS|FLUSH|HELP (LOAD and FLUSH are replicated writes)."""

    mode = Mode.SERVER

    def __init__(self, sub: str, args: Sequence[bytes]) -> None:
        self.sub = sub
        self.args = list(args)
        self.writes = sub in ("LOAD", "FLUSH")

    async def _run(self, client: Any) -> Reply:
        router = client.server.router  # its backends are ``ScriptBackend``s
        if self.writes and client.read_only:
            return no_permission(f"script|{self.sub.lower()}")
        if self.sub == "LOAD":
            script = self.args[0]
            return await router.call(lambda b: b.script_load(script), client.gate)
        if self.sub == "EXISTS":
            shas = [raw.decode("latin-1") for raw in self.args]
            found = await router.call(
                lambda b: b.script_exists(shas, client.consistency), client.gate
            )
            return [int(x) for x in found]
        await router.call(lambda b: b.script_flush(), client.gate)
        return OK

    def run_server(self, ctx: Any) -> Reply:
        if self.sub == "HELP":
            return [Simple(line) for line in _HELP]
        return self._run(ctx)


def _parse_eval(
    argv: Sequence[bytes], limits: Limits, *, by_sha: bool, read_only: bool = False
) -> Call:
    numkeys = integer(argv[1])
    if numkeys < 0:
        raise RespError("ERR Number of keys can't be negative")
    if numkeys > len(argv) - 2:
        raise RespError("ERR Number of keys can't be greater than number of args")
    names = keys(argv[2 : 2 + numkeys], limits)
    args = [value(raw, limits) for raw in argv[2 + numkeys :]]
    if by_sha:
        sha = argv[0].decode("latin-1")
        if _SHA.fullmatch(sha) is None:
            raise RespError("NOSCRIPT No matching script. Please use EVAL.")
        return Eval(None, sha.lower(), names, args, read_only)
    if len(argv[0]) > MAX_SCRIPT_BYTES:
        raise RespError(f"ERR scripts must be at most {MAX_SCRIPT_BYTES} bytes")
    return Eval(argv[0], None, names, args, read_only)


def parse_eval(argv: Sequence[bytes], limits: Limits) -> Call:
    return _parse_eval(argv, limits, by_sha=False)


def parse_evalsha(argv: Sequence[bytes], limits: Limits) -> Call:
    return _parse_eval(argv, limits, by_sha=True)


def parse_eval_ro(argv: Sequence[bytes], limits: Limits) -> Call:
    return _parse_eval(argv, limits, by_sha=False, read_only=True)


def parse_evalsha_ro(argv: Sequence[bytes], limits: Limits) -> Call:
    return _parse_eval(argv, limits, by_sha=True, read_only=True)


def parse_script(argv: Sequence[bytes], limits: Limits) -> Call:
    sub = upper(argv[0])
    rest = argv[1:]
    if sub == "LOAD":
        if len(rest) != 1:
            raise wrong_args("script|load")
        if len(rest[0]) > MAX_SCRIPT_BYTES:
            raise RespError(f"ERR scripts must be at most {MAX_SCRIPT_BYTES} bytes")
    elif sub == "EXISTS":
        if not rest:
            raise wrong_args("script|exists")
    elif sub == "FLUSH":
        if len(rest) > 1 or (rest and upper(rest[0]) not in ("ASYNC", "SYNC")):
            raise RespError("ERR SCRIPT FLUSH only support SYNC|ASYNC option")
    elif sub == "HELP":
        pass
    elif sub == "KILL":
        raise RespError("NOTBUSY No scripts in execution right now.")
    else:
        shown = argv[0].decode("utf-8", errors="replace")
        raise RespError(f"ERR unknown subcommand '{shown}'. Try SCRIPT HELP.")
    return ScriptCommand(sub, rest)
