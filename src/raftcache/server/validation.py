"""Validation of everything a client sends: keys, query parameters, headers and JSON bodies.

Rule: these functions are pure and total. They turn untrusted input into typed values or raise
``ApiError`` (400 for malformed input, 413 for input over a size limit) — never anything else,
so no input can reach a handler half-checked or turn into a 500.

One verb per act: ``parse_*`` turns raw input (a path, a header, a query parameter, a body, a
JSON value) into a typed value or raises; ``check_*`` verifies a value already in hand and
returns nothing.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote_to_bytes

import orjson

from raftcache.cache.commands_v2 import TTL_CONDITIONS
from raftcache.server.errors import bad_request, too_large
from raftcache.vocabulary import (
    CONSISTENCY_LEVELS,
    INT64_MAX,
    INT64_MIN,
    MAX_CLIENT_ID_CHARS,
    MAX_NODE_ID_CHARS,
    NODE_ID_PATTERN,
    Consistency,
)

MAX_KEY_BYTES = 1024
#: Bound of a ttl/at given as a JSON number (the OpenAPI document's minimum/maximum).
MAX_JSON_SECONDS = 1e12

_IF_MATCH_RE = re.compile(r'^"(\d{1,19})"$')
_SEQ_RE = re.compile(r"^\d{1,19}$")
_CLIENT_ID_RE = re.compile(r"^[\x21-\x7e]+$")


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of the client API (all configurable by the operator)."""

    max_value_bytes: int = 1024 * 1024
    max_batch_ops: int = 1000
    max_batch_bytes: int = 8 * 1024 * 1024
    max_list_limit: int = 1000
    default_list_limit: int = 100


@dataclass(frozen=True, slots=True)
class ParsedBatchOp:
    """One validated operation of ``POST /v1/batch`` (or of ``POST /v1/keys/{key}/ttl``), as
    the HTTP API spells it; ``to_cache_ops`` makes it the cache's ``BatchOp``."""

    op: Literal["get", "set", "delete", "incr", "ttl", "hash"]
    key: str
    value: bytes | None = None
    ttl: float | None = None
    if_version: int | None = None
    if_absent: bool = False
    keep_ttl: bool = False
    by: int | float = 1
    at: float | None = None
    condition: str | None = None
    # A hash op (command version 5): ``raftcache.cache.hashes.HashOp``.
    action: str | None = None
    fields: tuple[bytes, ...] = ()
    values: tuple[bytes, ...] = ()
    nx: bool = False


def parse_key_path(raw_path: str, segment: int = 3) -> str:
    """Decode the key from the raw request path (``/v1/keys/{key}[/incr]``).

    The router's own decoding leaves invalid percent-escapes (``%FF``) in place, so the key is
    decoded here from the raw bytes, strictly: one segment, non-empty, valid UTF-8, ≤ 1 KiB.
    """
    path = raw_path.split("?", 1)[0]
    parts = path.split("/")
    if len(parts) <= segment:
        raise bad_request("missing key")
    return parse_key_bytes(unquote_to_bytes(parts[segment]))


def parse_key_bytes(raw: bytes) -> str:
    """Check a key given as bytes and return it as a string."""
    if not raw:
        raise bad_request("key must not be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise bad_request(f"key longer than {MAX_KEY_BYTES} bytes")
    try:
        return raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise bad_request("key is not valid UTF-8") from None


def parse_key(value: object, what: str = "key") -> str:
    """Check a key given as a JSON value (batch and mget bodies)."""
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a string")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes
        raise bad_request(f"{what} is not valid UTF-8") from None
    return parse_key_bytes(raw)


def parse_ttl(value: object) -> float | None:
    """A TTL in seconds: None when absent, else a finite number > 0 (a bool is not a number)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            ttl = float(value)
        except ValueError:
            raise bad_request(f"ttl must be a number, got {value[:40]!r}") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ttl = float(value)
    else:
        raise bad_request("ttl must be a number")
    if not math.isfinite(ttl) or ttl <= 0:
        raise bad_request("ttl must be finite and > 0")
    return ttl


def parse_if_match(header: str | None) -> int | None:
    """``If-Match: "<version>"`` → the version; None when absent; 400 when malformed."""
    if header is None:
        return None
    match = _IF_MATCH_RE.match(header.strip())
    if match is None:
        raise bad_request('If-Match must be a quoted non-negative integer, e.g. "42"')
    version = int(match.group(1))
    if version > INT64_MAX:
        raise bad_request("If-Match version out of range")
    return version


def parse_if_none_match(header: str | None) -> bool:
    """``If-None-Match: *`` → True (create only); None → False; anything else → 400."""
    if header is None:
        return False
    if header.strip() != "*":
        raise bad_request("If-None-Match supports only *")
    return True


def parse_consistency(value: str | None) -> Consistency:
    """The ``consistency`` query parameter; linearizable by default."""
    if value is None or value == "linearizable":
        return "linearizable"
    if value == "lease":
        return "lease"
    if value == "stale":
        return "stale"
    raise bad_request(f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}")


def parse_touch(value: str | None) -> bool:
    """The ``touch`` query parameter of the reads of values: ``false`` leaves the keys'
    recency (LRU order) alone, as Redis's ``CLIENT NO-TOUCH``; ``true`` by default."""
    if value is None or value == "true":
        return True
    if value == "false":
        return False
    raise bad_request(f"touch must be true or false, got {value[:40]!r}")


def parse_limit(value: str | None, limits: Limits) -> int:
    """The ``limit`` query parameter of the key listing: an integer in 1..max_list_limit."""
    if value is None:
        return limits.default_list_limit
    if not value.isdigit() or len(value) > 9:
        raise bad_request("limit must be a positive integer")
    limit = int(value)
    if not 1 <= limit <= limits.max_list_limit:
        raise bad_request(f"limit must be between 1 and {limits.max_list_limit}")
    return limit


def parse_prefix_or_after(value: str | None, name: str) -> str | None:
    """``prefix``/``after`` of the key listing: any string up to the key size limit."""
    if value is None:
        return None
    if len(value.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise bad_request(f"{name} longer than {MAX_KEY_BYTES} bytes")
    return value


def parse_session_headers(client_id: str | None, seq: str | None) -> tuple[str, int] | None:
    """``X-Raftcache-Client-Id`` + ``X-Raftcache-Seq`` → (client id, seq); both or neither."""
    if client_id is None and seq is None:
        return None
    if client_id is None or seq is None:
        raise bad_request("X-Raftcache-Client-Id and X-Raftcache-Seq must be sent together")
    if len(client_id) > MAX_CLIENT_ID_CHARS or not _CLIENT_ID_RE.match(client_id):
        raise bad_request(
            f"X-Raftcache-Client-Id must be 1..{MAX_CLIENT_ID_CHARS} printable ASCII characters"
        )
    if not _SEQ_RE.match(seq) or int(seq) > INT64_MAX:
        raise bad_request("X-Raftcache-Seq must be a non-negative integer")
    return client_id, int(seq)


def check_value_size(size: int, limits: Limits) -> None:
    """413 when a value is over the configured limit."""
    if size > limits.max_value_bytes:
        raise too_large(f"value larger than {limits.max_value_bytes} bytes")


def parse_json_object(body: bytes, *, allow_empty: bool = False) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (an empty body is ``{}`` if allowed)."""
    if not body.strip():
        if allow_empty:
            return {}
        raise bad_request("request body must be a JSON object")
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise bad_request("request body must be a JSON object")
    return obj


def check_fields(obj: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    """400 when an object carries a field the API does not know (typos must not pass silently)."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise bad_request(f"unknown field(s) in {what}: {', '.join(unknown[:5])}")


def parse_incr_body(body: bytes) -> int:
    """``{"by": int}`` (optional; an absent body or field means 1); a bool is not an int."""
    obj = parse_json_object(body, allow_empty=True)
    check_fields(obj, frozenset({"by"}), "incr body")
    by = obj.get("by", 1)
    if isinstance(by, bool) or not isinstance(by, int):
        raise bad_request("by must be a JSON integer")
    if not INT64_MIN <= by <= INT64_MAX:
        raise bad_request("by must fit in a signed 64-bit integer")
    return by


def parse_base64(value: object, what: str) -> bytes:
    """Strict RFC 4648 base64 with padding (no whitespace or foreign characters)."""
    if not isinstance(value, str):
        raise bad_request(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise bad_request(f"{what} is not valid base64") from None


_OP_FIELDS: dict[str, frozenset[str]] = {
    "get": frozenset({"op", "key"}),
    "set": frozenset({"op", "key", "value", "ttl", "if_version", "if_absent", "keep_ttl"}),
    "delete": frozenset({"op", "key", "if_version"}),
    "incr": frozenset({"op", "key", "by"}),
    "ttl": frozenset({"op", "key", "ttl", "at", "condition", "if_version"}),
    "hash": frozenset({"op", "key", "action", "fields", "values", "by", "nx"}),
}
#: A hash op's actions (``raftcache.cache.hashes.HASH_ACTIONS``; the server layer keeps its own
#: spelling of the API, as for the other ops).
HASH_ACTIONS = ("set", "del", "incr", "incrf", "read")


def _parse_json_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{what} must be a JSON integer")
    if not low <= value <= high:
        raise bad_request(f"{what} must be between {low} and {high}")
    return value


def _parse_json_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise bad_request(f"{what} must be true or false")
    return value


def _parse_json_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{what} must be a JSON number")
    if not math.isfinite(value):
        raise bad_request(f"{what} must be finite")
    if abs(value) > MAX_JSON_SECONDS:
        # The bound the OpenAPI document promises (schemathesis found it unenforced).
        raise bad_request(f"{what} must be between -1e12 and 1e12 seconds")
    return float(value)


def parse_expiry_change(
    obj: dict[str, Any], where: str
) -> tuple[float | None, float | None, str | None]:
    """The ``ttl``/``at``/``condition`` of a TTL-only change: exactly one of ``ttl`` (seconds
    from now, any finite number — at or below 0 deletes the key — or null to remove the
    expiry) and ``at`` (epoch seconds); ``condition`` one of nx/xx/gt/lt, with a new expiry."""
    if ("ttl" in obj) == ("at" in obj):
        raise bad_request(
            f"{where} needs exactly one of ttl (seconds or null) and at (epoch seconds)"
        )
    ttl = at = None
    if obj.get("ttl") is not None:
        ttl = _parse_json_seconds(obj["ttl"], f"{where}.ttl")
    if "at" in obj:
        at = _parse_json_seconds(obj["at"], f"{where}.at")
    condition = obj.get("condition")
    if condition is not None:
        if condition not in TTL_CONDITIONS:
            raise bad_request(f"{where}.condition must be one of {', '.join(TTL_CONDITIONS)}")
        if ttl is None and at is None:
            raise bad_request(f"{where}.condition needs a new expiry (ttl or at), not null")
    return ttl, at, condition


def _parse_if_version(raw: dict[str, Any], where: str) -> int | None:
    if raw.get("if_version") is None:
        return None
    return _parse_json_int(raw["if_version"], f"{where}.if_version", 0, INT64_MAX)


def _parse_batch_op(raw: object, position: int, limits: Limits) -> ParsedBatchOp:
    where = f"ops[{position}]"
    if not isinstance(raw, dict):
        raise bad_request(f"{where} must be an object")
    op = raw.get("op")
    if not isinstance(op, str) or op not in _OP_FIELDS:
        raise bad_request(f'{where}.op must be "get", "set", "delete", "incr", "ttl" or "hash"')
    check_fields(raw, _OP_FIELDS[op], where)
    key = parse_key(raw.get("key"), f"{where}.key")
    if op == "get":
        return ParsedBatchOp("get", key)
    if op == "hash":
        return _parse_hash_op(raw, key, where, limits)
    if op == "delete":
        return ParsedBatchOp("delete", key, if_version=_parse_if_version(raw, where))
    if op == "incr":
        by = _parse_json_int(raw.get("by", 1), f"{where}.by", INT64_MIN, INT64_MAX)
        return ParsedBatchOp("incr", key, by=by)
    if op == "ttl":
        ttl, at, condition = parse_expiry_change(raw, where)
        return ParsedBatchOp(
            "ttl",
            key,
            ttl=ttl,
            at=at,
            condition=condition,
            if_version=_parse_if_version(raw, where),
        )
    if "value" not in raw:
        raise bad_request(f"{where}.value is required for set")
    value = parse_base64(raw["value"], f"{where}.value")
    if len(value) > limits.max_value_bytes:
        raise too_large(f"{where}.value larger than {limits.max_value_bytes} bytes")
    ttl = raw.get("ttl")
    if isinstance(ttl, str):  # JSON carries numbers as numbers; "5" is a client bug
        raise bad_request(f"{where}.ttl must be a JSON number")
    if_version = _parse_if_version(raw, where)
    if_absent = _parse_json_bool(raw.get("if_absent", False), f"{where}.if_absent")
    keep_ttl = _parse_json_bool(raw.get("keep_ttl", False), f"{where}.keep_ttl")
    if if_version is not None and if_absent:
        raise bad_request(f"{where}: if_version and if_absent cannot be combined")
    if keep_ttl and ttl is not None:
        raise bad_request(f"{where}: keep_ttl and ttl cannot be combined")
    return ParsedBatchOp(
        "set",
        key,
        value=value,
        ttl=parse_ttl(ttl),
        if_version=if_version,
        if_absent=if_absent,
        keep_ttl=keep_ttl,
    )


def _parse_hash_op(raw: dict[str, Any], key: str, where: str, limits: Limits) -> ParsedBatchOp:
    """A hash op: ``action`` and its ``fields`` / ``values`` (base64), ``by``, ``nx``; the
    combination rules are the cache's (``HashOp``), checked again there."""
    action = raw.get("action")
    if action not in HASH_ACTIONS:
        raise bad_request(f"{where}.action must be one of {', '.join(HASH_ACTIONS)}")
    parts: dict[str, tuple[bytes, ...]] = {}
    for name in ("fields", "values"):
        items = raw.get(name, [])
        if not isinstance(items, list):
            raise bad_request(f"{where}.{name} must be a list of base64 strings")
        parts[name] = tuple(parse_base64(x, f"{where}.{name}[{i}]") for i, x in enumerate(items))
        if any(len(x) > limits.max_value_bytes for x in parts[name]):
            raise too_large(f"{where}.{name}: one is larger than {limits.max_value_bytes} bytes")
    by: int | float = 0
    if action == "incr":
        by = _parse_json_int(raw.get("by", 1), f"{where}.by", INT64_MIN, INT64_MAX)
    elif action == "incrf":
        number = raw.get("by", 1.0)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise bad_request(f"{where}.by must be a JSON number")
        try:
            by = float(number)
        except OverflowError:  # an integer literal beyond any float
            raise bad_request(f"{where}.by is out of range") from None
    elif "by" in raw:
        raise bad_request(f"{where}.by is only for incr and incrf")
    nx = _parse_json_bool(raw.get("nx", False), f"{where}.nx")
    return ParsedBatchOp(
        "hash", key, action=action, fields=parts["fields"], values=parts["values"], by=by, nx=nx
    )


def parse_batch_body(body: bytes, limits: Limits) -> list[ParsedBatchOp]:
    """``{"ops": [...]}`` fully validated: op names, keys, base64 values, ttls, counts, sizes."""
    obj = parse_json_object(body)
    check_fields(obj, frozenset({"ops"}), "batch body")
    ops = obj.get("ops")
    if not isinstance(ops, list):
        raise bad_request("ops must be a list")
    if len(ops) > limits.max_batch_ops:
        raise bad_request(f"at most {limits.max_batch_ops} ops per batch")
    parsed = [_parse_batch_op(raw, i, limits) for i, raw in enumerate(ops)]
    total = sum(len(op.value or b"") + len(op.key) for op in parsed)
    if total > limits.max_batch_bytes:
        raise too_large(f"batch larger than {limits.max_batch_bytes} bytes")
    return parsed


def parse_ttl_body(body: bytes) -> tuple[float | None, float | None, str | None]:
    """``POST /v1/keys/{key}/ttl`` body ``{"ttl": seconds | null}`` or ``{"at": epoch
    seconds}``, optionally ``"condition"``: see ``parse_expiry_change``."""
    obj = parse_json_object(body)
    check_fields(obj, frozenset({"ttl", "at", "condition"}), "ttl body")
    return parse_expiry_change(obj, "ttl body")


def parse_mget_body(body: bytes, limits: Limits) -> list[str]:
    """``{"keys": [...]}``: a list of valid keys, at most ``max_batch_ops`` of them."""
    obj = parse_json_object(body)
    check_fields(obj, frozenset({"keys"}), "mget body")
    keys = obj.get("keys")
    if not isinstance(keys, list):
        raise bad_request("keys must be a list")
    if len(keys) > limits.max_batch_ops:
        raise bad_request(f"at most {limits.max_batch_ops} keys per mget")
    return [parse_key(k, f"keys[{i}]") for i, k in enumerate(keys)]


def parse_node_id(value: object, what: str = "id") -> str:
    """A node id in an admin body: a non-empty string of printable ASCII without separators."""
    if not isinstance(value, str) or not value or len(value) > MAX_NODE_ID_CHARS:
        raise bad_request(
            f"{what} must be a non-empty string of at most {MAX_NODE_ID_CHARS} characters"
        )
    if not re.fullmatch(NODE_ID_PATTERN, value):
        raise bad_request(f"{what} may contain only letters, digits, '.', '_' and '-'")
    return value


def parse_node_url(value: object) -> str:
    """A peer base URL in an admin body: ``http(s)://host:port`` without a trailing path."""
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/?#]+/?", value):
        raise bad_request("url must look like http://host:port")
    return value.rstrip("/")


# Earlier names, kept working (the same objects): before the one-verb convention, and the
# parsed batch op before ``BatchOp`` came to mean the cache's op alone.
BatchOp = ParsedBatchOp
key_from_raw_path = parse_key_path
validate_key_bytes = parse_key_bytes
validate_key = parse_key
validate_ttl = parse_ttl
decode_base64 = parse_base64
