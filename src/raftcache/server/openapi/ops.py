"""The operational and Raft parts of the OpenAPI document (see ``document``).

Rule: the same as ``document``'s — what is stated here is what the handlers check. The admin
routes carry the tag ``admin`` (a fuzzer must not send them *valid* requests: those really move
leadership and membership), the Raft routes the tag ``raft``.
"""

from __future__ import annotations

from raftcache.protocol.messages import MAX_BATCH_HOLD, MAX_BATCH_ITEMS, MAX_GROUP_ID_CHARS
from raftcache.server.openapi.schema import (
    BASE64,
    COMMON,
    JSON,
    NODE_ID,
    NODE_URL,
    WRITE,
    Schema,
    closed_object,
    error_answer,
    json_answer,
)
from raftcache.vocabulary import INT64_MAX


def admin_paths() -> dict[str, Schema]:
    any_object = {"type": "object"}
    return {
        "/v1/status": {"get": simple("This node's view of the cluster", any_object)},
        "/v1/stats": {"get": simple("Cache and Raft statistics", any_object)},
        "/v1/health": {"get": simple("200 while a leader is known, else 503", any_object)},
        "/openapi.json": {"get": simple("This document", any_object)},
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
                        JSON: {
                            "schema": closed_object(
                                {
                                    "id": NODE_ID,
                                    "url": NODE_URL,
                                    "config_index": {"type": "integer", "minimum": 0},
                                },
                                ["id", "url"],
                            )
                        }
                    },
                },
                "responses": {"200": json_answer("added", any_object), **WRITE},
            }
        },
        "/v1/members/{id}": {
            "delete": {
                "summary": "Remove a node",
                "tags": ["admin"],
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": NODE_ID},
                    {
                        "name": "config_index",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {"200": json_answer("removed", any_object), **WRITE},
            }
        },
        "/v1/leader/transfer": {
            "post": {
                "summary": "Hand leadership over",
                "tags": ["admin"],
                "requestBody": {
                    "required": False,
                    "content": {
                        JSON: {
                            "schema": closed_object({"to": {"oneOf": [NODE_ID, {"type": "null"}]}})
                        }
                    },
                },
                "responses": {"200": json_answer("new leader", any_object), **WRITE},
            }
        },
        "/v1/snapshot": {
            "post": {
                "summary": "Snapshot this node's state and compact its log",
                "tags": ["admin"],
                "responses": {"200": json_answer("snapshot taken", any_object), **WRITE},
            }
        },
        "/v1/alarms": {
            "get": {
                "summary": "The divergence alarms (docs/divergence.md)",
                "tags": ["admin"],
                "responses": {"200": json_answer("alarms", any_object)},
            }
        },
        "/v1/alarms/{id}": {
            "delete": {
                "summary": "Clear a replica's divergence alarm ('*': all) after rebuilding it",
                "tags": ["admin"],
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": json_answer("cleared", any_object), **WRITE},
            }
        },
        **backup_paths(),
    }


def backup_paths() -> dict[str, Schema]:
    """``GET /v1/backup`` and ``POST /v1/restore`` (docs/operations.md, "Backup and restore")."""
    binary = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    position = {"schema": {"type": "integer", "minimum": 0}}
    backup_info = closed_object(
        {
            "index": {"type": "integer", "minimum": 0},
            "term": {"type": "integer", "minimum": 0},
            "node": {"type": "string"},
            "created_at": {"type": "number"},
            "snapshot_bytes": {"type": "integer", "minimum": 0},
        },
        ["index", "term", "node", "created_at", "snapshot_bytes"],
    )
    count = {"type": "integer", "minimum": 0}
    restored = closed_object(
        {
            "restored": {"type": "boolean"},
            "keys": count,
            "expired": count,
            "too_large": count,
            "evicted": count,
            "version": count,
            "backup": backup_info,
        },
        ["restored", "keys", "expired", "too_large", "evicted", "version", "backup"],
    )
    return {
        "/v1/backup": {
            "get": {
                "summary": "A backup file of the cache, taken on the leader (linearizable)",
                "tags": ["admin"],
                "responses": {
                    "200": {
                        "description": "the backup file (raftcache snapshot save writes it)",
                        "headers": {
                            "X-Raftcache-Backup-Index": position,
                            "X-Raftcache-Backup-Term": position,
                        },
                        "content": binary,
                    },
                    **COMMON,
                },
            }
        },
        "/v1/restore": {
            "post": {
                "summary": "Replace the whole cache with a backup's contents (one replicated step)",
                "tags": ["admin"],
                "requestBody": {"required": True, "content": binary},
                "responses": {
                    "200": json_answer("restored", restored),
                    "415": error_answer("a content-coded body"),
                    **WRITE,
                },
            }
        },
    }


def simple(summary: str, schema: Schema) -> Schema:
    return {"summary": summary, "responses": {"200": json_answer("ok", schema), **COMMON}}


def _raft_messages() -> dict[str, Schema]:
    """The JSON schema of each Raft request, by route."""
    idx: Schema = {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
    group: Schema = {
        "type": "string",
        "maxLength": MAX_GROUP_ID_CHARS,
        "pattern": "^[A-Za-z0-9_.-]*$",
    }
    to: Schema = {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9_.-]*$"}
    entry = closed_object(
        {"term": idx, "index": idx, "command": BASE64, "kind": idx}, ["term", "index", "command"]
    )
    append = closed_object(
        {
            "term": idx,
            "leader_id": NODE_ID,
            "prev_log_index": idx,
            "prev_log_term": idx,
            "entries": {"type": "array", "items": entry},
            "leader_commit": idx,
            "timeout_now": {"type": "boolean"},
            "quiesce": {"type": "boolean"},
            "to": to,
            "group": group,
        },
        ["term", "leader_id", "prev_log_index", "prev_log_term"],
    )
    return {
        "/raft/request-vote": closed_object(
            {
                "term": idx,
                "candidate_id": NODE_ID,
                "last_log_index": idx,
                "last_log_term": idx,
                "pre_vote": {"type": "boolean"},
                "leader_transfer": {"type": "boolean"},
                "to": to,
                "group": group,
            },
            ["term", "candidate_id", "last_log_index", "last_log_term"],
        ),
        "/raft/append-entries": append,
        "/raft/append-batch": closed_object(
            {
                "items": {
                    "type": "array",
                    "items": append,
                    "minItems": 1,
                    "maxItems": MAX_BATCH_ITEMS,
                },
                "hold": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BATCH_HOLD},
            },
            ["items"],
        ),
        "/raft/install-snapshot": closed_object(
            {
                "term": idx,
                "leader_id": NODE_ID,
                "last_included_index": idx,
                "last_included_term": idx,
                "offset": idx,
                "data": BASE64,
                "done": {"type": "boolean"},
                "configuration": BASE64,
                "to": to,
                "group": group,
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


def raft_paths() -> dict[str, Schema]:
    """The Raft endpoints (tag ``raft``): not a client API, described so they can be fuzzed."""
    return {
        path: {
            "post": {
                "summary": "Raft RPC between nodes (cluster token)",
                "tags": ["raft"],
                "security": [{}, {"cluster": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": schema}}},
                "responses": {
                    "200": json_answer("the RPC's response", {"type": "object"}),
                    "400": error_answer("not a valid message"),
                    "401": error_answer("missing or wrong cluster token"),
                    "413": error_answer("body over the limit"),
                    "503": error_answer("node not ready"),
                },
            }
        }
        for path, schema in _raft_messages().items()
    } | _digest_paths()


def _digest_paths() -> dict[str, Schema]:
    """The divergence check's node-to-node routes (``raftcache.server.routes_divergence``);
    tagged ``admin``: tag ``raft`` means the Raft RPC messages."""
    refusals = {
        "401": error_answer("missing or wrong cluster token"),
        "404": error_answer("this node does not check divergence"),
    }
    return {
        "/raft/digest": {
            "get": {
                "summary": "This replica's state digest at a CHECK entry (cluster token)",
                "tags": ["admin"],
                "security": [{}, {"cluster": []}],
                "parameters": [
                    {"name": "index", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": json_answer("the digest report", {"type": "object"}),
                    "400": error_answer("index is not a non-negative integer"),
                    **refusals,
                },
            }
        },
        "/raft/digest/kick": {
            "post": {
                "summary": "Ask this node (the leader) to compare digests now (cluster token)",
                "tags": ["admin"],
                "security": [{}, {"cluster": []}],
                "responses": {
                    "202": json_answer("check scheduled", {"type": "object"}),
                    **refusals,
                },
            }
        },
    }
