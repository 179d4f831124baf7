"""Conversions between Python values and the HTTP API's wire forms (docs/api.md).

Rule: pure functions, no I/O. Inputs from the caller are validated here, before any request, and
raise ``BadRequestError`` (a ``ValueError``) — the same error the server would answer with 400.
Responses that do not have the documented shape raise ``ProtocolError``.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from raftcache.client.errors import BadRequestError, ProtocolError
from raftcache.vocabulary import CONSISTENCY_LEVELS

#: A batch operation: a mapping ``{"op", "key", "value", "ttl"}`` or a tuple
#: ``("get", key)``, ``("delete", key)``, ``("set", key, value)``, ``("set", key, value, ttl)``.
BatchOpSpec = Mapping[str, Any] | Sequence[Any]
#: The earlier name, kept working (``BatchOp`` now means the cache's op alone).
BatchOp = BatchOpSpec
Value = bytes | bytearray | memoryview | str


class KeyPage(NamedTuple):
    """One page of ``list_keys``: keys in order, and the ``after`` cursor of the next page."""

    keys: list[str]
    next: str | None


def to_bytes(value: Value) -> bytes:
    """Values are bytes; a str is sent as its UTF-8 encoding."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"values are bytes or str, got {type(value).__name__}")


def ttl_param(ttl: float | None) -> list[tuple[str, str]]:
    """The ``?ttl=`` query parameter; the TTL must be finite and > 0 seconds."""
    if ttl is None:
        return []
    return [("ttl", repr(check_ttl(ttl)))]


def check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise BadRequestError(f"ttl must be a number of seconds, got {ttl!r}")
    value = float(ttl)
    if not math.isfinite(value) or value <= 0:
        raise BadRequestError(f"ttl must be finite and > 0 seconds, got {ttl!r}")
    return value


def consistency_param(consistency: str | None) -> list[tuple[str, str]]:
    """The ``?consistency=`` parameter; None leaves the server's default (linearizable)."""
    if consistency is None:
        return []
    if consistency not in CONSISTENCY_LEVELS:
        raise BadRequestError(
            f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, got {consistency!r}"
        )
    return [("consistency", consistency)]


def touch_param(touch: bool) -> list[tuple[str, str]]:
    """The ``?touch=false`` parameter of a read that leaves recency alone; nothing otherwise
    (the server's default, understood by every release)."""
    if not isinstance(touch, bool):
        raise BadRequestError(f"touch must be True or False, got {touch!r}")
    return [] if touch else [("touch", "false")]


def if_match(version: int) -> dict[str, str]:
    """The ``If-Match`` header for a compare-and-set against ``version``."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise BadRequestError(f"version must be a non-negative int, got {version!r}")
    return {"If-Match": f'"{version}"'}


def parse_etag(value: str | None) -> int:
    """The version in an ``ETag: "<version>"`` header (weak tags accepted)."""
    text = (value or "").strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise ProtocolError(f"missing or malformed ETag: {value!r}")
    return int(text)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: Any) -> bytes | None:
    """Decode an optional base64 value (None stays None)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise ProtocolError(f"expected a base64 string or null, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"malformed base64 value: {text[:40]!r}") from exc


def field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[name]``, checked to be of ``kind`` (bool is never an int here)."""
    value = obj.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ProtocolError(f"response field {name!r} missing or not {kind}: {value!r}")
    return value


def encode_batch(ops: Sequence[BatchOpSpec]) -> tuple[list[dict[str, Any]], list[str]]:
    """The wire form of batch ops, and the op kinds to decode the results with."""
    wire: list[dict[str, Any]] = []
    kinds: list[str] = []
    for op in ops:
        item = _batch_item(op)
        kind = item.get("op")
        key = item.get("key")
        if kind not in BATCH_OPS:
            raise BadRequestError(f"batch op must be one of {', '.join(BATCH_OPS)}, got {kind!r}")
        if not isinstance(key, str) or not key:
            raise BadRequestError(f"batch op needs a non-empty str key, got {key!r}")
        out: dict[str, Any] = {"op": kind, "key": key}
        if kind == "set":
            if item.get("value") is None:
                raise BadRequestError(f"batch set of {key!r} needs a value")
            out["value"] = b64encode(to_bytes(item["value"]))
            if item.get("ttl") is not None:
                out["ttl"] = check_ttl(item["ttl"])
        elif kind == "incr":  # ("incr", key, by) or {"op": "incr", "key", "by"}
            by = item.get("by", item.get("value", 1))
            if isinstance(by, bool) or not isinstance(by, int):
                raise BadRequestError(f"batch incr of {key!r} needs an int by, got {by!r}")
            out["by"] = by
        elif kind == "ttl" and item.get("at") is None:
            out["ttl"] = item.get("ttl")  # None: remove the expiry ("at" passes as an option)
        # Conditions and options pass through as given; the server validates them (400).
        for name in _OPTIONS[kind]:
            if item.get(name) is not None:
                out[name] = item[name]
        wire.append(out)
        kinds.append(kind)
    return wire, kinds


BATCH_OPS = ("get", "set", "delete", "incr", "ttl")
_OPTIONS: dict[str, tuple[str, ...]] = {
    "get": (),
    "set": ("if_version", "if_absent", "keep_ttl"),
    "delete": ("if_version",),
    "incr": (),
    "ttl": ("at", "condition", "if_version"),
}


def _batch_item(op: BatchOpSpec) -> Mapping[str, Any]:
    if isinstance(op, Mapping):
        return op
    if isinstance(op, str | bytes) or not 2 <= len(op) <= 4:
        raise BadRequestError(f"batch op must be a mapping or (op, key[, value[, ttl]]): {op!r}")
    names = ("op", "key", "value", "ttl")
    return dict(zip(names, op, strict=False))


def decode_batch(results: Any, kinds: Sequence[str]) -> list[Any]:
    """Batch results as Python values: get → bytes | None, set → int (version), delete →
    bool, incr → int (the new value), ttl → bool (whether the expiry changed)."""
    if not isinstance(results, list) or len(results) != len(kinds):
        raise ProtocolError(f"expected {len(kinds)} batch results, got {results!r:.80}")
    decoded: list[Any] = []
    for kind, result in zip(kinds, results, strict=True):
        if not isinstance(result, dict):
            raise ProtocolError(f"batch result is not an object: {result!r:.80}")
        if kind == "get":
            decoded.append(b64decode(result.get("value")))
        elif kind == "set":
            decoded.append(field(result, "version", int))
        elif kind == "incr":
            decoded.append(field(result, "value", int))
        elif kind == "ttl":
            decoded.append(field(result, "changed", bool))
        else:
            decoded.append(field(result, "deleted", bool))
    return decoded
