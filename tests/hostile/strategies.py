"""Hypothesis strategies of hostile HTTP requests: client API, admin API and Raft endpoints.

Raft bodies are *malformed* by construction: each is kept only if it does not decode, or decodes
into a message that fails the structural checks of ``raftcache.raft.validation``. A well-formed
message with hostile values (a huge term, say) is a protocol attack that only the cluster token
stops, tested separately (``test_raft_semantics``, ``test_fuzz_cluster``).
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import orjson
from hypothesis import strategies as st

from raftcache.network import codec
from raftcache.network.httpwire import PATHS as RAFT_PATHS
from raftcache.raft.validation import InvalidMessageError, validate_message


def dumps(value: Any) -> bytes:
    """JSON of any value, big integers and NaN included (orjson refuses those: a client may not)."""
    return json.dumps(value).encode()


RAFT_ROUTES = {path: cls for cls, path in RAFT_PATHS.items()}
RAFT_FIELDS = sorted(
    {"term", "leader_id", "candidate_id", "prev_log_index", "prev_log_term", "entries"}
    | {"leader_commit", "last_log_index", "last_log_term", "pre_vote", "offset", "data", "done"}
    | {"last_included_index", "last_included_term", "configuration", "timeout_now", "index"}
    | {"command", "kind"}
)

SEGMENT = st.one_of(
    st.sampled_from(["k", "a%2Fb", "%FF", "%", "%zz", "", "incr", "..", "x" * 1100, "%C3%A9"]),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/?#%"),
        max_size=8,
    ),
)
FIXED_PATHS = [
    "/v1/keys",
    "/v1/batch",
    "/v1/mget",
    "/v1/status",
    "/v1/stats",
    "/v1/health",
    "/metrics",
    "/openapi.json",
    "/v1/members",
    "/v1/members/nobody",
    "/v1/snapshot",
    "/",
    "/v2/x",
    "/raft",
    "/raft/unknown",
]


def client_paths(*acting: str) -> st.SearchStrategy[str]:
    """Client and admin API paths: key paths built from hostile segments, and the fixed routes.

    ``acting`` adds fixed paths that act on the cluster when a request gets through (a real
    member's ``/v1/members/<id>``, ``/v1/leader/transfer``). Only a fuzz over the fake service
    passes them: against a real cluster a lucky DELETE or POST would remove a member or move the
    leader mid-run, and the test would then measure that instead of the input handling.
    """
    return st.one_of(
        st.builds(lambda s: f"/v1/keys/{s}", SEGMENT),
        st.builds(lambda s: f"/v1/keys/{s}/incr", SEGMENT),
        st.builds(lambda a, b: f"/v1/keys/{a}/{b}", SEGMENT, SEGMENT),
        st.sampled_from([*FIXED_PATHS, *acting]),
    )


CLIENT_PATHS = client_paths()
# QUERY and HEADERS serve both fuzzers: the cluster's (test_fuzz_cluster) and the fake service's
# (tests/server/test_fuzz.py), so a hostile value added here reaches both fronts.
QUERY = st.dictionaries(
    st.sampled_from(["ttl", "consistency", "limit", "prefix", "after", "x"]),
    st.sampled_from(["1", "0", "-1", "nan", "1e999", "stale", "lease", "weird", "", "5000", "ÿ"]),
    max_size=3,
)
HEADERS = st.dictionaries(
    st.sampled_from(
        ["If-Match", "If-None-Match", "X-Raftcache-Client-Id", "X-Raftcache-Seq", "Content-Type"]
    ),
    st.sampled_from(['"1"', "*", "1", '"-1"', "abc", "", '"99999999999999999999"', "text/xml"]),
    max_size=3,
)
RAFT_HEADERS = st.dictionaries(
    st.sampled_from(["Content-Type", "Content-Encoding", "Authorization", "Accept"]),
    st.sampled_from(
        [
            "application/json",
            "application/msgpack",
            "application/x-msgpack",
            "text/plain",
            "gzip",
            "deflate",
            "br",
            "zstd",
            "identity",
            "x-unknown",
            "Bearer x",
            "",
        ]
    ),
    max_size=3,
)


def jsonish(integers: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[Any]:
    """Nested JSON-like values whose keys are the request-body field names.

    ``integers`` replaces the default ±2**70 range: a fuzzer that encodes with orjson (which
    refuses integers outside int64/uint64) passes the range it can send.
    """
    if integers is None:
        integers = st.integers(-(2**70), 2**70)
    return st.recursive(
        st.none() | st.booleans() | integers | st.floats() | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["ops", "keys", "op", "key", "value", "ttl", "by", "id", "url", "to"]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=16,
    )


JSONISH = jsonish()
CLIENT_BODIES = st.one_of(
    st.binary(max_size=64),
    JSONISH.map(dumps),
    st.integers(1, 40).map(lambda n: orjson.dumps({"keys": ["k"] * n})),
    st.integers(1, 40).map(lambda n: orjson.dumps({"ops": [{"op": "get", "key": "k"}] * n})),
    st.just(b"x" * 5000),
)
METHODS = st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"])


def _int_like() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(-(2**64), 2**64), st.booleans(), st.floats(), st.text(max_size=4), st.none()
    )


def _entry() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"term": _int_like(), "index": _int_like()},
            optional={
                "command": st.one_of(
                    st.text(max_size=8),
                    st.binary(max_size=4).map(lambda b: base64.b64encode(b).decode()),
                ),
                "kind": _int_like(),
            },
        ),
        JSONISH,
    )


RAFT_VALUES = st.one_of(
    _int_like(),
    st.lists(_entry(), max_size=5),
    st.text(max_size=10),
    st.binary(max_size=8).map(lambda b: base64.b64encode(b).decode()),
    JSONISH,
)
RAFT_OBJECTS = st.dictionaries(st.sampled_from(RAFT_FIELDS), RAFT_VALUES, max_size=8)
RAFT_RAW = st.one_of(
    RAFT_OBJECTS.map(dumps),
    st.binary(max_size=64),
    JSONISH.map(dumps),
    st.just(b""),
    st.just(b"{" * 100_000),  # deep nesting: the JSON parser must refuse, not recurse
    st.just(b"[" + b"1," * 50_000 + b"1]"),
)


def undecodable(path: str, body: bytes) -> bool:
    """Whether ``body`` is *not* a valid message for the Raft route ``path``: it does not decode,
    or it decodes into a message no correct peer could send (``raftcache.raft.validation``)."""
    try:
        validate_message(codec.decode(RAFT_ROUTES[path], body))
    except (codec.CodecError, InvalidMessageError):
        return True
    return False


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of ``inflated`` zero bytes (a thousandth of that on the wire), built in
    pieces so the test itself never holds the inflated size."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b"\0" * (1 << 20)
    out = [packer.compress(piece) for _ in range(inflated >> 20)]
    out.append(packer.flush())
    return b"".join(out)


def huge_entries_body(count: int) -> bytes:
    """An AppendEntries whose ``count`` entries are wrongly typed (the last one): decoding must
    walk them all, then refuse with 400."""
    entry = {"term": 1, "index": 1, "command": ""}
    entries: list[Any] = [entry] * (count - 1) + [{"term": "one", "index": 1, "command": ""}]
    obj = {"term": 1, "leader_id": "x", "prev_log_index": 0, "prev_log_term": 0, "entries": entries}
    return orjson.dumps(obj)
