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
from raftcache.server.validation import INT64_MAX, INT64_MIN, MAX_KEY_BYTES, Limits

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
NODE_ID: Schema = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,128}$"}
NODE_URL: Schema = {"type": "string", "pattern": "^https?://[^\\s/?#]+/?$"}


def _error(description: str) -> Schema:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


# Answers every route may give: refused input, auth, overload, no leader, unknown outcome.
COMMON: dict[str, Schema] = {
    "400": _error("malformed input"),
    "401": _error("missing or wrong bearer token"),
    "403": _error("a read-only token used for a write"),
    "413": _error("a value or body over its limit"),
    "503": _error("no leader, overloaded or stopping; nothing happened (Retry-After)"),
}
WRITE: dict[str, Schema] = {
    **COMMON,
    "409": _error("not a counter, counter overflow, or a membership change refused"),
    "412": _error("a precondition failed; the body carries the current version"),
    "504": _error("the write's outcome is unknown (indeterminate: true)"),
}
CONSISTENCY: Schema = {
    "name": "consistency",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["linearizable", "lease", "stale"]},
}
KEY_PARAM: Schema = {"name": "key", "in": "path", "required": True, "schema": KEY}
SESSION: list[Schema] = [
    {
        "name": "X-Raftcache-Client-Id",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[!-~]{1,128}$"},
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


def _key_paths(limits: Limits) -> dict[str, Schema]:
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
    version = _obj({"version": VERSION}, ["version"])
    return {
        "/v1/keys/{key}": {
            "parameters": [KEY_PARAM],
            "put": {
                "summary": "Store a value (If-Match: compare-and-set; If-None-Match: create)",
                "parameters": [ttl, IF_MATCH, if_none, *SESSION],
                "requestBody": value_body,
                "responses": {"200": _json("committed", version), **WRITE},
            },
            "get": {
                "summary": "Read a value (raw bytes, ETag: the version)",
                "parameters": [CONSISTENCY],
                "responses": {
                    "200": {
                        "description": "the value",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    "404": _error("missing or expired"),
                    **COMMON,
                },
            },
            "delete": {
                "summary": "Delete a key",
                "parameters": [IF_MATCH, *SESSION],
                "responses": {
                    "200": _json("done", _obj({"deleted": {"type": "boolean"}}, ["deleted"])),
                    **WRITE,
                },
            },
        },
        "/v1/keys/{key}/incr": {
            "parameters": [KEY_PARAM],
            "post": {
                "summary": "Add to a counter (a missing key counts as 0)",
                "parameters": SESSION,
                "requestBody": {
                    "required": False,
                    "content": {JSON: {"schema": _obj({"by": INT64})}},
                },
                "responses": {
                    "200": _json(
                        "committed",
                        _obj({"value": INT64, "version": VERSION}, ["value", "version"]),
                    ),
                    **WRITE,
                },
            },
        },
        "/v1/keys": {
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
                    "200": _json(
                        "a page",
                        _obj(
                            {
                                "keys": {"type": "array", "items": {"type": "string"}},
                                "next": {"type": ["string", "null"]},
                            },
                            ["keys", "next"],
                        ),
                    ),
                    **COMMON,
                },
            }
        },
    }


def _batch_paths(limits: Limits) -> dict[str, Schema]:
    op = {
        "oneOf": [
            _obj({"op": {"const": "get"}, "key": KEY}, ["op", "key"]),
            _obj({"op": {"const": "delete"}, "key": KEY}, ["op", "key"]),
            _obj(
                {
                    "op": {"const": "set"},
                    "key": KEY,
                    "value": BASE64,
                    "ttl": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1e12},
                },
                ["op", "key", "value"],
            ),
        ]
    }
    max_ops = limits.max_batch_ops
    ops_body = _obj({"ops": {"type": "array", "items": op, "maxItems": max_ops}}, ["ops"])
    keys_body = _obj({"keys": {"type": "array", "items": KEY, "maxItems": max_ops}}, ["keys"])
    nullable_b64 = {"type": ["string", "null"]}
    return {
        "/v1/batch": {
            "post": {
                "summary": "Apply ops atomically as one log entry",
                "parameters": SESSION,
                "requestBody": {"required": True, "content": {JSON: {"schema": ops_body}}},
                "responses": {
                    "200": _json(
                        "results in op order",
                        _obj({"results": {"type": "array", "items": {"type": "object"}}}),
                    ),
                    **WRITE,
                },
            }
        },
        "/v1/mget": {
            "post": {
                "summary": "Read many keys after one read barrier",
                "parameters": [CONSISTENCY],
                "requestBody": {"required": True, "content": {JSON: {"schema": keys_body}}},
                "responses": {
                    "200": _json(
                        "values in key order (base64 or null)",
                        _obj({"values": {"type": "array", "items": nullable_b64}}, ["values"]),
                    ),
                    **COMMON,
                },
            }
        },
    }


def _admin_paths() -> dict[str, Schema]:
    any_object = {"type": "object"}
    return {
        "/v1/status": {"get": _simple("This node's view of the cluster", any_object)},
        "/v1/stats": {"get": _simple("Cache and Raft statistics", any_object)},
        "/v1/health": {"get": _simple("200 while a leader is known, else 503", any_object)},
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition",
                "responses": {
                    "200": {"description": "metrics", "content": {"text/plain": {}}},
                    **COMMON,
                },
            }
        },
        "/v1/members": {
            "post": {
                "summary": "Add a node (learner, then voter once caught up)",
                "tags": ["admin"],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {"schema": _obj({"id": NODE_ID, "url": NODE_URL}, ["id", "url"])}
                    },
                },
                "responses": {"200": _json("added", any_object), **WRITE},
            }
        },
        "/v1/members/{id}": {
            "delete": {
                "summary": "Remove a node",
                "tags": ["admin"],
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": NODE_ID}],
                "responses": {"200": _json("removed", any_object), **WRITE},
            }
        },
        "/v1/leader/transfer": {
            "post": {
                "summary": "Hand leadership over",
                "tags": ["admin"],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {"schema": _obj({"to": {"oneOf": [NODE_ID, {"type": "null"}]}})}
                    },
                },
                "responses": {"200": _json("new leader", any_object), **WRITE},
            }
        },
        "/v1/snapshot": {
            "post": {
                "summary": "Snapshot this node's state and compact its log",
                "tags": ["admin"],
                "responses": {"200": _json("snapshot taken", any_object), **WRITE},
            }
        },
    }


def _simple(summary: str, schema: Schema) -> Schema:
    return {"summary": summary, "responses": {"200": _json("ok", schema), **COMMON}}


def _raft_paths() -> dict[str, Schema]:
    idx: Schema = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
    entry = _obj(
        {"term": idx, "index": idx, "command": BASE64, "kind": idx}, ["term", "index", "command"]
    )
    messages = {
        "/raft/request-vote": _obj(
            {
                "term": idx,
                "candidate_id": NODE_ID,
                "last_log_index": idx,
                "last_log_term": idx,
                "pre_vote": {"type": "boolean"},
                "leader_transfer": {"type": "boolean"},
            },
            ["term", "candidate_id", "last_log_index", "last_log_term"],
        ),
        "/raft/append-entries": _obj(
            {
                "term": idx,
                "leader_id": NODE_ID,
                "prev_log_index": idx,
                "prev_log_term": idx,
                "entries": {"type": "array", "items": entry},
                "leader_commit": idx,
                "timeout_now": {"type": "boolean"},
            },
            ["term", "leader_id", "prev_log_index", "prev_log_term"],
        ),
        "/raft/install-snapshot": _obj(
            {
                "term": idx,
                "leader_id": NODE_ID,
                "last_included_index": idx,
                "last_included_term": idx,
                "offset": idx,
                "data": BASE64,
                "done": {"type": "boolean"},
                "configuration": BASE64,
            },
            [
                "term",
                "leader_id",
                "last_included_index",
                "last_included_term",
                "offset",
                "data",
                "done",
            ],
        ),
    }
    return {
        path: {
            "post": {
                "summary": "Raft RPC between nodes (cluster token)",
                "tags": ["raft"],
                "security": [{}, {"cluster": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": schema}}},
                "responses": {
                    "200": _json("the RPC's response", {"type": "object"}),
                    "400": _error("not a valid message"),
                    "401": _error("missing or wrong cluster token"),
                    "413": _error("body over the limit"),
                    "503": _error("node not ready"),
                },
            }
        }
        for path, schema in messages.items()
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
            **_admin_paths(),
            **_raft_paths(),
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
