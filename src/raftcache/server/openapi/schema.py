"""The building blocks of the OpenAPI document: shared schemas, parameters and answers.

Rule: only vocabulary lives here, and no path. ``document`` (the key, batch and watch routes and
the document itself) and ``ops`` (the operational and Raft routes) both build on it, so
neither needs the other's helpers. Sizes come from the validators' constants (see ``document``).
"""

from __future__ import annotations

from typing import Any

from raftcache.server.validation import MAX_KEY_BYTES
from raftcache.vocabulary import (
    CONSISTENCY_LEVELS,
    INT64_MAX,
    INT64_MIN,
    MAX_CLIENT_ID_CHARS,
    NODE_ID_PATTERN,
)

JSON = "application/json"
Schema = dict[str, Any]

ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
INT64: Schema = {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}
VERSION: Schema = {"type": "integer", "minimum": 0}
BASE64: Schema = {
    "type": "string",
    "contentEncoding": "base64",
    "pattern": "^[A-Za-z0-9+/]*={0,2}$",
}
KEY: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_BYTES}
CURSOR: Schema = {"type": "string", "maxLength": MAX_KEY_BYTES}  # may be empty: no bound
NODE_ID: Schema = {"type": "string", "pattern": f"^{NODE_ID_PATTERN}$"}
NODE_URL: Schema = {"type": "string", "pattern": "^https?://[^\\s/?#]+/?$"}


_SECONDS: Schema = {"type": "number", "minimum": -1e12, "maximum": 1e12}
#: A TTL-only change: exactly one of ttl (null removes the expiry) and at.
TTL_CHANGE: Schema = {
    "type": "object",
    "properties": {
        "ttl": {"type": ["number", "null"], "minimum": -1e12, "maximum": 1e12},
        "at": _SECONDS,
        "condition": {"type": "string", "enum": ["nx", "xx", "gt", "lt"]},
    },
    "oneOf": [{"required": ["ttl"]}, {"required": ["at"]}],
    "additionalProperties": False,
}


def error_answer(description: str) -> Schema:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def json_answer(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def closed_object(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


# Answers every route may give: refused input, auth, overload, no leader, unknown outcome.
COMMON: dict[str, Schema] = {
    "400": error_answer("malformed input"),
    "401": error_answer("missing or wrong bearer token"),
    "403": error_answer("a read-only token used for a write"),
    "413": error_answer("a value or body over its limit"),
    "503": error_answer("no leader, overloaded or stopping; nothing happened (Retry-After)"),
}
WRITE: dict[str, Schema] = {
    **COMMON,
    "409": error_answer("not a counter, counter overflow, or a membership change refused"),
    "412": error_answer("a precondition failed; the body carries the current version"),
    "504": error_answer("the write's outcome is unknown (indeterminate: true)"),
}
CONSISTENCY: Schema = {
    "name": "consistency",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": list(CONSISTENCY_LEVELS)},
}
#: ``false``: the read leaves the keys' recency (LRU order) alone, as Redis's CLIENT NO-TOUCH.
TOUCH: Schema = {
    "name": "touch",
    "in": "query",
    "required": False,
    "description": "false: the read does not refresh the keys' recency (LRU order)",
    "schema": {"type": "string", "enum": ["true", "false"]},
}
KEY_PARAM: Schema = {"name": "key", "in": "path", "required": True, "schema": KEY}
SESSION: list[Schema] = [
    {
        "name": "X-Raftcache-Client-Id",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": f"^[!-~]{{1,{MAX_CLIENT_ID_CHARS}}}$"},
    },
    {
        "name": "X-Raftcache-Seq",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    },
]
IF_MATCH: Schema = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": '^"[0-9]{1,18}"$'},
}
