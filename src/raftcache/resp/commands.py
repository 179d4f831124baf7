"""The command table: every command the RESP server knows, with Redis's arity, flags and
key-specs (what COMMAND reports, and where COMMAND GETKEYS finds keys) and its parser.

Rule: a command exists iff it is in ``TABLE``; the connection looks names up here
(case-insensitively), checks the arity here, and only then parses. Commands that need a
server-wide feature the cache lacks are documented in ``docs/resp.md`` rather than half-done.
"""

from __future__ import annotations

from typing import Final

from raftcache.resp import (
    admin,
    cluster,
    hashes,
    introspect,
    keyspace,
    pubsub,
    replication,
    scan,
    scripting,
    sentinel,
    strings,
)
from raftcache.resp.args import Parser, Spec
from raftcache.resp.keyspecs import Index, KeySpec, Range, counted, one, rest, set_flags

_R: Final = ("readonly", "fast")
_W: Final = ("write", "denyoom")
_WD: Final = ("write", "denyoom", "fast")
_WF: Final = ("write", "fast")
_S: Final = ("loading", "stale")
_C: Final = ("fast", "loading", "stale")
_CA: Final = ("fast", "loading", "stale", "no-auth")
_NW: Final = ("noscript",)
_RO: Final = ("noscript", *_C)
_ADM: Final = ("admin", *_S)
_PUB: Final = ("pubsub", "loading", "stale", "fast")
_SUB: Final = ("pubsub", "noscript", "loading", "stale")
_PS: Final = ("pubsub", "loading", "stale")
_LUA: Final = ("write", "noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys")
_LUA_RO: Final = ("noscript", "stale", "skip_monitor", "readonly", "no_mandatory_keys")

# Key-specs (``raftcache.resp.keyspecs``), with Redis 7's flags for each command.
_NOKEY: Final[tuple[KeySpec, ...]] = ()
_R1: Final = (one(1, "RO"),)
_RA1: Final = (one(1, "RO", "access"),)
_RWU1: Final = (one(1, "RW", "update"),)
_RWI1: Final = (one(1, "RW", "insert"),)
_RWD1: Final = (one(1, "RW", "delete"),)
_RWAU1: Final = (one(1, "RW", "access", "update"),)
_RWAD1: Final = (one(1, "RW", "access", "delete"),)
_OWU1: Final = (one(1, "OW", "update"),)
_OWI1: Final = (one(1, "OW", "insert"),)
_R_ALL: Final = (rest(1, "RO"),)
_RA_ALL: Final = (rest(1, "RO", "access"),)
_RM_ALL: Final = (rest(1, "RM", "delete"),)
_MSET_KEYS: Final = (rest(1, "OW", "update", step=2),)
_MSETNX_KEYS: Final = (rest(1, "OW", "insert", step=2),)
_SET_KEY: Final = (
    KeySpec(
        ("RW", "access", "update", "variable_flags"),
        Index(1),
        Range(0),
        "RW and ACCESS due to the optional `GET` argument",
        flags_of=set_flags,
    ),
)
_GETEX_KEY: Final = (
    KeySpec(
        ("RW", "access", "update"), Index(1), Range(0), "RW and UPDATE because it changes the TTL"
    ),
)
_RENAME_KEYS: Final = (one(1, "RW", "access", "delete"), one(2, "OW", "update"))
_RENAMENX_KEYS: Final = (one(1, "RW", "access", "delete"), one(2, "OW", "insert"))
_COPY_KEYS: Final = (one(1, "RO", "access"), one(2, "OW", "update"))
_OBJECT_KEY: Final = (one(2, "RO"),)
_LUA_KEYS: Final = (
    counted(
        2,
        "RW",
        "access",
        "update",
        notes="We cannot tell how the keys will be used so we assume the worst, RW and UPDATE",
    ),
)
_LUA_RO_KEYS: Final = (
    counted(
        2,
        "RO",
        "access",
        notes="We cannot tell how the keys will be used so we assume the worst, RO and ACCESS",
    ),
)

_Row = tuple[str, int, tuple[str, ...], tuple[KeySpec, ...], str, str, Parser]

# name, arity, flags, key-specs, group, summary, parser
_ROWS: Final[tuple[_Row, ...]] = (
    ("GET", 2, _R, _RA1, "string", "Get a value", strings.parse_get),
    ("MGET", -2, _R, _RA_ALL, "string", "Get several values", strings.parse_mget),
    ("STRLEN", 2, _R, _R1, "string", "Length of a value", strings.parse_strlen),
    ("SET", -3, _W, _SET_KEY, "string", "Set a value", strings.parse_set),
    ("SETEX", 4, _W, _OWU1, "string", "Set a value with a TTL (s)", strings.parse_setex),
    ("PSETEX", 4, _W, _OWU1, "string", "Set a value with a TTL (ms)", strings.parse_psetex),
    ("SETNX", 3, _WD, _OWI1, "string", "Set a missing key", strings.parse_setnx),
    ("GETSET", 3, _WD, _RWAU1, "string", "Set, return the old value", strings.parse_getset),
    ("GETEX", -2, _WF, _GETEX_KEY, "string", "Get, set the expiry", strings.parse_getex),
    ("GETDEL", 2, _WF, _RWAD1, "string", "Get and delete", strings.parse_getdel),
    ("MSET", -3, _W, _MSET_KEYS, "string", "Set several keys at once", strings.parse_mset),
    ("MSETNX", -3, _W, _MSETNX_KEYS, "string", "Set keys if none exists", strings.parse_msetnx),
    ("INCR", 2, _WD, _RWAU1, "string", "Increment a counter", strings.parse_incr),
    ("DECR", 2, _WD, _RWAU1, "string", "Decrement a counter", strings.parse_decr),
    ("INCRBY", 3, _WD, _RWAU1, "string", "Add to a counter", strings.parse_incrby),
    ("DECRBY", 3, _WD, _RWAU1, "string", "Subtract from a counter", strings.parse_decrby),
    ("INCRBYFLOAT", 3, _WD, _RWAU1, "string", "Add a float", strings.parse_incrbyfloat),
    ("APPEND", 3, _WD, _RWI1, "string", "Append to a value", strings.parse_append),
    ("HSET", -4, _WD, _RWU1, "hash", "Set hash fields", hashes.parse_hset),
    ("HMSET", -4, _WD, _RWU1, "hash", "Set hash fields", hashes.parse_hmset),
    ("HSETNX", 4, _WD, _RWI1, "hash", "Set a missing hash field", hashes.parse_hsetnx),
    ("HDEL", -3, _WF, _RWD1, "hash", "Delete hash fields", hashes.parse_hdel),
    ("HINCRBY", 4, _WD, _RWAU1, "hash", "Add to a hash field", hashes.parse_hincrby),
    ("HINCRBYFLOAT", 4, _WD, _RWAU1, "hash", "Add a float", hashes.parse_hincrbyfloat),
    ("HGET", 3, _R, _RA1, "hash", "Get a hash field", hashes.parse_hget),
    ("HMGET", -3, _R, _RA1, "hash", "Get hash fields", hashes.parse_hmget),
    ("HGETALL", 2, ("readonly",), _RA1, "hash", "Every field", hashes.parse_hgetall),
    ("HKEYS", 2, ("readonly",), _RA1, "hash", "Every field name", hashes.parse_hkeys),
    ("HVALS", 2, ("readonly",), _RA1, "hash", "Every field value", hashes.parse_hvals),
    ("HLEN", 2, _R, _R1, "hash", "Number of fields", hashes.parse_hlen),
    ("HEXISTS", 3, _R, _R1, "hash", "Whether a field exists", hashes.parse_hexists),
    ("HSTRLEN", 3, _R, _R1, "hash", "Length of a field", hashes.parse_hstrlen),
    ("HRANDFIELD", -2, ("readonly",), _RA1, "hash", "Random fields", hashes.parse_hrandfield),
    ("HSCAN", -3, ("readonly",), _RA1, "hash", "Iterate over fields", hashes.parse_hscan),
    ("DEL", -2, ("write",), _RM_ALL, "generic", "Delete keys", keyspace.parse_del),
    ("UNLINK", -2, _WF, _RM_ALL, "generic", "Delete keys", keyspace.parse_del),
    ("EXISTS", -2, _R, _R_ALL, "generic", "Count existing keys", keyspace.parse_exists),
    ("TOUCH", -2, _R, _R_ALL, "generic", "Count keys, refresh them", keyspace.parse_touch),
    ("TYPE", 2, _R, _R1, "generic", "Type of a value", keyspace.parse_type),
    ("EXPIRE", -3, _WF, _RWU1, "generic", "Set a TTL (s)", keyspace.parse_expire),
    ("PEXPIRE", -3, _WF, _RWU1, "generic", "Set a TTL (ms)", keyspace.parse_pexpire),
    ("EXPIREAT", -3, _WF, _RWU1, "generic", "Set an expiry (s)", keyspace.parse_expireat),
    ("PEXPIREAT", -3, _WF, _RWU1, "generic", "Set an expiry (ms)", keyspace.parse_pexpireat),
    ("PERSIST", 2, _WF, _RWU1, "generic", "Remove a TTL", keyspace.parse_persist),
    ("TTL", 2, _R, _RA1, "generic", "Time to live (s)", keyspace.parse_ttl),
    ("PTTL", 2, _R, _RA1, "generic", "Time to live (ms)", keyspace.parse_pttl),
    ("EXPIRETIME", 2, _R, _RA1, "generic", "Expiry instant (s)", keyspace.parse_expiretime),
    ("PEXPIRETIME", 2, _R, _RA1, "generic", "Expiry instant (ms)", keyspace.parse_pexpiretime),
    ("RENAME", 3, ("write",), _RENAME_KEYS, "generic", "Rename a key", keyspace.parse_rename),
    ("RENAMENX", 3, _WF, _RENAMENX_KEYS, "generic", "Rename to a new key", keyspace.parse_renamenx),
    ("COPY", -3, _W, _COPY_KEYS, "generic", "Copy a key", keyspace.parse_copy),
    ("OBJECT", -2, ("readonly",), _OBJECT_KEY, "generic", "Value internals", keyspace.parse_object),
    ("RANDOMKEY", 1, ("readonly",), _NOKEY, "generic", "A random key", scan.parse_randomkey),
    ("KEYS", 2, ("readonly",), _NOKEY, "generic", "Keys matching", scan.parse_keys),
    ("SCAN", -2, ("readonly",), _NOKEY, "generic", "Iterate over keys", scan.parse_scan),
    ("DBSIZE", 1, _R, _NOKEY, "server", "Number of keys", scan.parse_dbsize),
    ("FLUSHDB", -1, ("write",), _NOKEY, "server", "Delete every key", scan.parse_flushdb),
    ("FLUSHALL", -1, ("write",), _NOKEY, "server", "Delete every key", scan.parse_flushdb),
    ("TIME", 1, ("random", *_C), _NOKEY, "server", "Server time", introspect.parse_time),
    ("INFO", -1, _S, _NOKEY, "server", "Server information", introspect.parse_info),
    ("COMMAND", -1, _S, _NOKEY, "server", "Command details", introspect.parse_command),
    ("CONFIG", -2, ("admin", *_S), _NOKEY, "server", "Configuration", introspect.parse_config),
    ("PING", -1, _C, _NOKEY, "connection", "Ping the server", admin.parse_ping),
    ("ECHO", 2, _C, _NOKEY, "connection", "Echo a message", admin.parse_echo),
    ("HELLO", -1, _CA, _NOKEY, "connection", "Handshake", admin.parse_hello),
    ("AUTH", -2, _CA, _NOKEY, "connection", "Authenticate", admin.parse_auth),
    ("SELECT", 2, _C, _NOKEY, "connection", "Select database 0", admin.parse_select),
    ("CLIENT", -2, _S, _NOKEY, "connection", "This connection", introspect.parse_client),
    ("QUIT", -1, _CA, _NOKEY, "connection", "Close the connection", admin.parse_quit),
    ("RESET", 1, _CA, _NOKEY, "connection", "Reset the connection", admin.parse_reset),
    ("WAIT", 3, _NW, _NOKEY, "generic", "Replicas holding writes", introspect.parse_wait),
    ("EVAL", -3, _LUA, _LUA_KEYS, "scripting", "Run a Lua script", scripting.parse_eval),
    ("EVALSHA", -3, _LUA, _LUA_KEYS, "scripting", "Run a loaded script", scripting.parse_evalsha),
    ("EVAL_RO", -3, _LUA_RO, _LUA_RO_KEYS, "scripting", "Run a script", scripting.parse_eval_ro),
    (
        "EVALSHA_RO",
        -3,
        _LUA_RO,
        _LUA_RO_KEYS,
        "scripting",
        "Run a script",
        scripting.parse_evalsha_ro,
    ),
    ("SCRIPT", -2, ("noscript",), _NOKEY, "scripting", "Script cache", scripting.parse_script),
    ("ROLE", 1, _RO, _NOKEY, "server", "Replication role", replication.parse_role),
    ("PUBLISH", 3, _PUB, _NOKEY, "pubsub", "Post a message", pubsub.parse_publish),
    ("SUBSCRIBE", -2, _SUB, _NOKEY, "pubsub", "Listen to channels", pubsub.parse_subscribe),
    ("PSUBSCRIBE", -2, _SUB, _NOKEY, "pubsub", "Listen to patterns", pubsub.parse_psubscribe),
    ("UNSUBSCRIBE", -1, _SUB, _NOKEY, "pubsub", "Stop listening", pubsub.parse_unsubscribe),
    ("PUNSUBSCRIBE", -1, _SUB, _NOKEY, "pubsub", "Stop listening", pubsub.parse_punsubscribe),
    ("PUBSUB", -2, _PS, _NOKEY, "pubsub", "Subscriptions here", pubsub.parse_pubsub),
    ("SENTINEL", -2, _ADM, _NOKEY, "sentinel", "Find the leader", sentinel.parse_sentinel),
    ("CLUSTER", -2, _S, _NOKEY, "cluster", "Cluster state and slots", cluster.parse_cluster),
    ("READONLY", 1, _C, _NOKEY, "cluster", "Stale reads from here", admin.parse_readonly),
    ("READWRITE", 1, _C, _NOKEY, "cluster", "Linearizable reads", admin.parse_readwrite),
    ("MULTI", 1, _C, _NOKEY, "transactions", "Start a transaction", admin.parse_multi),
    ("EXEC", 1, _S, _NOKEY, "transactions", "Run the transaction", admin.parse_exec),
    ("DISCARD", 1, _C, _NOKEY, "transactions", "Drop the transaction", admin.parse_discard),
    ("WATCH", -2, _C, _R_ALL, "transactions", "Not supported", admin.parse_watch),
    ("UNWATCH", 1, _C, _NOKEY, "transactions", "Forget watched keys", admin.parse_unwatch),
)

TABLE: Final[dict[str, Spec]] = {
    name: Spec.of(name, arity, flags, specs, group, summary, parse)
    for name, arity, flags, specs, group, summary, parse in _ROWS
}

#: Commands a client may send before it authenticates.
NO_AUTH: Final = frozenset(name for name, spec in TABLE.items() if "no-auth" in spec.flags)


def lookup(name: bytes) -> Spec | None:
    """The spec of a command name (any case), or None."""
    spec = TABLE.get(name.decode("latin-1"))
    if spec is None:
        spec = TABLE.get(name.decode("latin-1").upper())
    return spec
