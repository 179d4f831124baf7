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

import orjson
from aiohttp import web

from raftcache.cache.commands_v4 import MAX_SCRIPT_BYTES, reply_to_json
from raftcache.cache.errors import NoScriptError
from raftcache.cache.scripting import ErrorReply, Reply
from raftcache.server.bodies import read_body
from raftcache.server.context import request_context
from raftcache.server.errors import bad_request
from raftcache.server.results import json_response
from raftcache.server.validation import parse_consistency
from raftcache.slots import SLOTS

SCRIPTS_PATH = "/v1/scripts"
_OPS = ("eval", "evalsha", "load", "exists", "flush")
_FIELDS = frozenset({"op", "script", "sha", "keys", "args", "slot", "shas", "consistency"})


class ScriptPort(Protocol):
    """The script operations of ``CacheService`` (command version 4)."""

    async def eval(
        self, script: bytes, keys: Sequence[str], args: Sequence[bytes], *, slot: int | None
    ) -> Reply: ...

    async def evalsha(
        self, sha: str, keys: Sequence[str], args: Sequence[bytes], *, slot: int | None
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


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_request(f"{what} must be a list of non-empty strings")
    return value


def _parse(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("body must be a JSON object") from None
    if not isinstance(request, dict):
        raise bad_request("body must be a JSON object")
    unknown = sorted(set(request) - _FIELDS)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r}")
    if request.get("op") not in _OPS:
        raise bad_request(f"op must be one of {', '.join(_OPS)}")
    return request


async def post_scripts(request: web.Request) -> web.Response:
    """``POST /v1/scripts``: run, load, look up or flush Lua scripts (module docstring)."""
    ctx = request_context(request)
    body = _parse(await read_body(request, scripts_body_limit(request)))
    op, service = body["op"], cast(ScriptPort, ctx.service)
    if op == "load":
        sha = await service.script_load(_b64(body.get("script"), "script"))
        return json_response({"sha": sha})
    if op == "exists":
        shas = _strings(body.get("shas", []), "shas")
        consistency = parse_consistency(body.get("consistency"))
        return json_response({"exists": await service.script_exists(shas, consistency)})
    if op == "flush":
        return json_response({"flushed": await service.script_flush()})
    keys = _strings(body.get("keys", []), "keys")
    raw_args = body.get("args", [])
    if not isinstance(raw_args, list):
        raise bad_request("args must be a list of base64 strings")
    args = [_b64(arg, "args") for arg in raw_args]
    slot = body.get("slot")
    if slot is not None and (type(slot) is not int or not -1 <= slot < SLOTS):
        raise bad_request(f"slot must be an integer in -1..{SLOTS - 1}")
    if op == "eval":
        script = _b64(body.get("script"), "script")
        reply = await service.eval(script, keys, args, slot=slot)
    else:
        name = body.get("sha")
        if not isinstance(name, str):
            raise bad_request("sha must be a string")
        try:
            reply = await service.evalsha(name, keys, args, slot=slot)
        except NoScriptError as exc:
            reply = ErrorReply(str(exc))
    return json_response({"reply": reply_to_json(reply)})
