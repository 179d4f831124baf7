"""The OpenAPI 3.1 document of a node's HTTP API, served at ``GET /openapi.json``.

Rule: the document is built from the same constants and ``Limits`` the validators enforce, so
the sizes it states are the sizes the server checks; it describes what a request must look like
tightly enough that a schema-driven fuzzer (schemathesis) can tell valid from invalid input, and
every 4xx/5xx as the one JSON error shape. The Raft endpoints are described too (tag ``raft``,
cluster token), so they can be fuzzed with the same tools; they are not a client API.
"""

from __future__ import annotations

from typing import Any

from raftcache import __version__
from raftcache.server.openapi.ops import admin_paths, raft_paths
from raftcache.server.openapi.schema import (
    BASE64,
    COMMON,
    CONSISTENCY,
    CURSOR,
    ERROR,
    IF_MATCH,
    INT64,
    JSON,
    KEY,
    KEY_PARAM,
    SESSION,
    TOUCH,
    TTL_CHANGE,
    VERSION,
    WRITE,
    Schema,
    closed_object,
    error_answer,
    json_answer,
)
from raftcache.server.validation import Limits
from raftcache.slots import SLOTS
from raftcache.vocabulary import CONSISTENCY_LEVELS, INT64_MAX


def _key_item_path(limits: Limits) -> dict[str, Schema]:
    """``/v1/keys/{key}``: PUT, GET, DELETE."""
    value_body = {
        "required": True,
        "content": {
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "maxLength": limits.max_value_bytes,
                }
            }
        },
    }
    ttl = {
        "name": "ttl",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1e12},
    }
    if_none = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "enum": ["*"]},
    }
    version = closed_object({"version": VERSION}, ["version"])
    return {
        "/v1/keys/{key}": {
            "parameters": [KEY_PARAM],
            "put": {
                "summary": "Store a value (If-Match: compare-and-set; If-None-Match: create)",
                "parameters": [ttl, IF_MATCH, if_none, *SESSION],
                "requestBody": value_body,
                "responses": {"200": json_answer("committed", version), **WRITE},
            },
            "get": {
                "summary": "Read a value (raw bytes, ETag: the version)",
                "parameters": [CONSISTENCY, TOUCH],
                "responses": {
                    "200": {
                        "description": "the value",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    "404": error_answer("missing or expired"),
                    **COMMON,
                },
            },
            "delete": {
                "summary": "Delete a key",
                "parameters": [IF_MATCH, *SESSION],
                "responses": {
                    "200": json_answer(
                        "done", closed_object({"deleted": {"type": "boolean"}}, ["deleted"])
                    ),
                    **WRITE,
                },
            },
        },
    }


def _key_paths(limits: Limits) -> dict[str, Schema]:
    """Every ``/v1/keys`` route."""
    return {
        **_key_item_path(limits),
        "/v1/keys/{key}/incr": {
            "parameters": [KEY_PARAM],
            "post": {
                "summary": "Add to a counter (a missing key counts as 0)",
                "parameters": SESSION,
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": closed_object({"by": INT64})}},
                },
                "responses": {
                    "200": json_answer(
                        "committed",
                        closed_object({"value": INT64, "version": VERSION}, ["value", "version"]),
                    ),
                    **WRITE,
                },
            },
        },
        "/v1/keys/{key}/ttl": {
            "parameters": [KEY_PARAM],
            "post": {
                "summary": "Change a key's expiry without rewriting its value (new version)",
                "description": "Exactly one of ttl (seconds from now; at or below 0 deletes "
                "the key; null removes the expiry) and at (epoch seconds). condition: Redis's "
                "EXPIRE options. Honours If-Match. 409 while a rolling upgrade is unfinished.",
                "parameters": [IF_MATCH, *SESSION],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": TTL_CHANGE}},
                },
                "responses": {
                    "200": json_answer(
                        "committed (version 0: the key is missing or was deleted)",
                        closed_object(
                            {"changed": {"type": "boolean"}, "version": VERSION},
                            ["changed", "version"],
                        ),
                    ),
                    **WRITE,
                },
            },
        },
        "/v1/keys": {
            "delete": {
                "summary": "Delete every key starting with prefix (empty: every key), atomically",
                "parameters": [
                    {"name": "prefix", "in": "query", "required": True, "schema": CURSOR},
                    *SESSION,
                ],
                "responses": {
                    "200": json_answer(
                        "committed as one log entry",
                        closed_object({"deleted": {"type": "integer", "minimum": 0}}, ["deleted"]),
                    ),
                    **WRITE,
                },
            },
            "get": {
                "summary": "List keys in order, a page at a time",
                "parameters": [
                    {"name": "prefix", "in": "query", "required": False, "schema": CURSOR},
                    {"name": "after", "in": "query", "required": False, "schema": CURSOR},
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": limits.max_list_limit,
                        },
                    },
                    CONSISTENCY,
                ],
                "responses": {
                    "200": json_answer(
                        "a page",
                        closed_object(
                            {
                                "keys": {"type": "array", "items": {"type": "string"}},
                                "next": {"type": ["string", "null"]},
                            },
                            ["keys", "next"],
                        ),
                    ),
                    **COMMON,
                },
            },
        },
    }


def _batch_paths(limits: Limits) -> dict[str, Schema]:
    if_version = {"type": ["integer", "null"], "minimum": 0, "maximum": INT64_MAX}
    op = {
        "oneOf": [
            closed_object({"op": {"const": "get"}, "key": KEY}, ["op", "key"]),
            closed_object(
                {"op": {"const": "delete"}, "key": KEY, "if_version": if_version},
                ["op", "key"],
            ),
            closed_object(
                {
                    "op": {"const": "set"},
                    "key": KEY,
                    "value": BASE64,
                    "ttl": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1e12},
                    "if_version": if_version,
                    "if_absent": {"type": "boolean"},
                    "keep_ttl": {"type": "boolean"},
                },
                ["op", "key", "value"],
            ),
            closed_object({"op": {"const": "incr"}, "key": KEY, "by": INT64}, ["op", "key"]),
            closed_object(  # command format 5 (docs/api.md, "Hashes")
                {
                    "op": {"const": "hash"},
                    "key": KEY,
                    "action": {"enum": ["set", "del", "incr", "incrf", "read"]},
                    "fields": {"type": "array", "items": BASE64},
                    "values": {"type": "array", "items": BASE64},
                    "by": {"type": "number", "minimum": -1e300, "maximum": 1e300},
                    "nx": {"type": "boolean"},
                },
                ["op", "key", "action"],
            ),
            {
                **TTL_CHANGE,
                "properties": {
                    **TTL_CHANGE["properties"],
                    "op": {"const": "ttl"},
                    "key": KEY,
                    "if_version": if_version,
                },
                "required": ["op", "key"],
            },
        ]
    }
    max_ops = limits.max_batch_ops
    ops_body = closed_object({"ops": {"type": "array", "items": op, "maxItems": max_ops}}, ["ops"])
    keys_body = closed_object(
        {"keys": {"type": "array", "items": KEY, "maxItems": max_ops}}, ["keys"]
    )
    nullable_b64 = {"type": ["string", "null"]}
    return {
        "/v1/batch": {
            "post": {
                "summary": "Apply ops atomically as one log entry",
                "parameters": SESSION,
                "requestBody": {"required": True, "content": {JSON: {"schema": ops_body}}},
                "responses": {
                    "200": json_answer(
                        "results in op order",
                        closed_object({"results": {"type": "array", "items": {"type": "object"}}}),
                    ),
                    **WRITE,
                },
            }
        },
        "/v1/mget": {
            "post": {
                "summary": "Read many keys after one read barrier",
                "parameters": [CONSISTENCY, TOUCH],
                "requestBody": {"required": True, "content": {JSON: {"schema": keys_body}}},
                "responses": {
                    "200": json_answer(
                        "values in key order (base64 or null)",
                        closed_object(
                            {
                                "values": {"type": "array", "items": nullable_b64},
                                # positions holding hashes (their msgpack maps), when any
                                "hashes": {"type": "array", "items": {"type": "integer"}},
                            },
                            ["values"],
                        ),
                    ),
                    **COMMON,
                },
            }
        },
        "/v1/publish": {
            "post": {
                "summary": "Publish a pub/sub message through the log: every node delivers it to "
                "its Redis subscribers as it applies the entry (docs/resp.md, Pub/sub)",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": closed_object(
                                {"channel": BASE64, "message": BASE64}, ["channel", "message"]
                            )
                        }
                    },
                },
                "responses": {
                    "200": json_answer(
                        "applied at this log index",
                        closed_object({"index": {"type": "integer", "minimum": 1}}, ["index"]),
                    ),
                    **WRITE,
                },
            }
        },
    }


def _scripts_path(limits: Limits) -> dict[str, Schema]:
    """``POST /v1/scripts``: EVAL, EVALSHA and SCRIPT over HTTP (docs/api.md)."""
    max_args = limits.max_batch_ops
    keys = {"type": "array", "items": KEY, "maxItems": max_args}
    args = {"type": "array", "items": BASE64, "maxItems": max_args}
    slot = {"type": "integer", "minimum": -1, "maximum": SLOTS - 1}
    sha = {"type": "string"}
    op = {
        "oneOf": [
            closed_object(
                {
                    "op": {"const": "eval"},
                    "script": BASE64,
                    "keys": keys,
                    "args": args,
                    "slot": slot,
                },
                ["op", "script"],
            ),
            closed_object(
                {
                    "op": {"const": "evalsha"},
                    "sha": sha,
                    "keys": keys,
                    "args": args,
                    "slot": slot,
                    "read_only": {"type": "boolean"},
                },
                ["op", "sha"],
            ),
            closed_object({"op": {"const": "load"}, "script": BASE64}, ["op", "script"]),
            closed_object(
                {
                    "op": {"const": "exists"},
                    "shas": {"type": "array", "items": sha, "maxItems": max_args},
                    "consistency": {"type": "string", "enum": list(CONSISTENCY_LEVELS)},
                },
                ["op"],
            ),
            closed_object({"op": {"const": "flush"}}, ["op"]),
        ]
    }
    answer = {
        "type": "object",
        "properties": {
            "reply": {"type": "object", "description": "a tagged script reply (docs/api.md)"},
            "sha": {"type": "string"},
            "exists": {"type": "array", "items": {"type": "boolean"}},
            "flushed": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }
    return {
        "/v1/scripts": {
            "post": {
                "summary": "Run, load, look up or flush Lua scripts (the RESP port's EVAL, "
                "EVALSHA and SCRIPT)",
                "requestBody": {"required": True, "content": {JSON: {"schema": op}}},
                "responses": {"200": json_answer("the operation's answer", answer), **WRITE},
            }
        }
    }


def _watch_path() -> dict[str, Schema]:
    """``GET /v1/watch``: tagged ``stream`` — a valid request never ends, so a fuzzer that
    waits for whole answers must leave it out (``tests/hostile/test_schemathesis.py`` does)."""
    version = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
    gone = closed_object(
        {"error": {"type": "string"}, "version": VERSION, "oldest_version": VERSION},
        ["error", "version", "oldest_version"],
    )
    return {
        "/v1/watch": {
            "get": {
                "summary": "Stream the changes under a prefix as Server-Sent Events, one event "
                "per log entry (id: its version), from a version on (docs/api.md, Watches)",
                "tags": ["stream"],
                "parameters": [
                    {"name": "prefix", "in": "query", "required": False, "schema": CURSOR},
                    {"name": "from_version", "in": "query", "required": False, "schema": version},
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{0,19}$"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the stream: events change and progress, keep-alive "
                        "comments",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "404": error_answer("this node keeps no watch history"),
                    "410": json_answer(
                        "the history after that version is gone: re-read, then watch from version",
                        gone,
                    ),
                    **COMMON,
                },
            }
        }
    }


def openapi_document(limits: Limits | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a node whose client API enforces ``limits``."""
    limits = limits or Limits()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "raftcache",
            "version": __version__,
            "description": "A distributed, strongly consistent cache replicated with Raft. "
            "Any node accepts any request; followers forward to the leader.",
        },
        "paths": {
            **_key_paths(limits),
            **_batch_paths(limits),
            **_scripts_path(limits),
            **_watch_path(),
            **admin_paths(),
            **raft_paths(),
        },
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {
                "client": {"type": "http", "scheme": "bearer"},
                "cluster": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{}, {"client": []}],
    }
