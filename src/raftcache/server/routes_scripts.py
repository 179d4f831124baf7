"""Handler of the scripts API: ``POST /v1/scripts``, Lua scripts as the RESP port runs them.

Rule: one route, one JSON object naming the operation — ``eval``, ``evalsha``, ``load``,
``exists``, ``flush`` — so that a follower's RESP port forwards EVAL, EVALSHA and SCRIPT to the
leader as it forwards every other command (``raftcache.resp.leader``), and any HTTP client can
run a script. The handler validates everything first, makes one call to the ``CacheService``,
and renders the result; a script's reply — an error reply included, and ``NOSCRIPT`` — is a
200 whose ``reply`` is the tagged JSON form of ``raftcache.cache.commands_v4.reply_to_json``.
Binary values travel as base64 (``script``, ``args``, bulk replies); keys as strings.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any, Protocol, cast

from aiohttp import web

from raftcache.cache.commands_v4 import MAX_SCRIPT_BYTES, reply_to_json
from raftcache.cache.errors import NoScriptError
from raftcache.cache.scripting import ErrorReply, Reply
from raftcache.server.bodies import read_body
from raftcache.server.context import request_context
from raftcache.server.errors import bad_request
from raftcache.server.results import json_response
from raftcache.server.validation import (
    check_fields,
    parse_consistency,
    parse_json_object,
    parse_key,
)
from raftcache.slots import SLOTS

SCRIPTS_PATH = "/v1/scripts"
#: Each operation and the fields it takes (``op`` besides): anything else is a 400.
_FIELDS: dict[str, frozenset[str]] = {
    "eval": frozenset({"script", "keys", "args", "slot", "read_only"}),
    "evalsha": frozenset({"sha", "keys", "args", "slot", "read_only"}),
    "load": frozenset({"script"}),
    "exists": frozenset({"shas", "consistency"}),
    "flush": frozenset(),
}


class ScriptPort(Protocol):
    """The script operations of ``CacheService`` (command version 4)."""

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None,
        read_only: bool,
    ) -> Reply: ...

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None,
        read_only: bool,
    ) -> Reply: ...

    async def script_load(self, script: bytes) -> str: ...

    async def script_exists(self, shas: Sequence[str], consistency: str) -> list[bool]: ...

    async def script_flush(self) -> int: ...


def scripts_body_limit(request: web.Request) -> int:
    """A body holds one script and its arguments, base64 inflating them by 4/3."""
    limits = request_context(request).settings.limits
    return (MAX_SCRIPT_BYTES + limits.max_batch_bytes) * 4 // 3 + 64 * 1024


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{what} is not valid base64") from None


def _list(value: object, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise bad_request(f"{what} must be a list")
    if len(value) > limit:
        raise bad_request(f"at most {limit} {what}")
    return value


def _parse(body: bytes) -> tuple[str, dict[str, Any]]:
    request = parse_json_object(body)
    op = request.get("op")
    if op not in _FIELDS:
        raise bad_request(f"op must be one of {', '.join(_FIELDS)}")
    check_fields(request, _FIELDS[op] | {"op"}, f"a {op} request")
    return op, request


async def post_scripts(request: web.Request) -> web.Response:
    """``POST /v1/scripts``: run, load, look up or flush Lua scripts (module docstring)."""
    ctx = request_context(request)
    op, body = _parse(await read_body(request, scripts_body_limit(request)))
    service = cast(ScriptPort, ctx.service)
    most = ctx.settings.limits.max_batch_ops
    if op == "load":
        sha = await service.script_load(_b64(body.get("script"), "script"))
        return json_response({"sha": sha})
    if op == "exists":
        shas = _list(body.get("shas", []), "shas", most)
        if not all(isinstance(sha, str) for sha in shas):
            raise bad_request("shas must be a list of strings")
        consistency = parse_consistency(body.get("consistency"))
        return json_response({"exists": await service.script_exists(shas, consistency)})
    if op == "flush":
        return json_response({"flushed": await service.script_flush()})
    keys = [
        parse_key(k, f"keys[{i}]") for i, k in enumerate(_list(body.get("keys", []), "keys", most))
    ]
    args = [_b64(arg, "args") for arg in _list(body.get("args", []), "args", most)]
    slot = body.get("slot")
    if slot is not None and (type(slot) is not int or not -1 <= slot < SLOTS):
        raise bad_request(f"slot must be an integer in -1..{SLOTS - 1}")
    read_only = body.get("read_only", False)
    if not isinstance(read_only, bool):
        raise bad_request("read_only must be true or false")
    if op == "eval":
        script = _b64(body.get("script"), "script")
        reply = await service.eval(script, keys, args, slot=slot, read_only=read_only)
    else:
        name = body.get("sha")
        if not isinstance(name, str):
            raise bad_request("sha must be a string")
        try:
            reply = await service.evalsha(name, keys, args, slot=slot, read_only=read_only)
        except NoScriptError as exc:
            reply = ErrorReply(str(exc))
    return json_response({"reply": reply_to_json(reply)})
