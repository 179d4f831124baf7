"""The msgpack wire codec of the Raft messages: the JSON codec's shape, in binary.

Rule: a message travels as one msgpack map keyed by its dataclass field names, exactly like the
JSON codec (``raftcache.network.codec``) except that ``bytes`` travel as msgpack ``bin`` values
instead of base64 text: a third smaller for binary payloads, and no base64 work on either side.
Decoding goes through the JSON codec's field plans, so the same strictness holds: unknown keys
ignored, defaults applied, a wrongly typed value or a missing required field is a
``CodecError`` naming the field. JSON stays the default on the wire; msgpack is negotiated by
Content-Type (``application/msgpack``) between nodes that both know it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import msgpack

from raftcache.network.codec import CodecError, from_dict

__all__ = ["CONTENT_TYPE", "decode", "encode"]

T = TypeVar("T")

CONTENT_TYPE = "application/msgpack"

_FIELDS: dict[type[Any], tuple[str, ...]] = {}


def _as_map(value: Any) -> Any:
    """msgpack calls this for what it cannot pack itself: here only message dataclasses."""
    cls = type(value)
    names = _FIELDS.get(cls)
    if names is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise TypeError(f"cannot encode {cls.__name__} on the wire")
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(value))
    fields = {name: getattr(value, name) for name in names}
    if fields.get("quiesce") is False:
        del fields["quiesce"]  # an AppendEntries that is no quiescing heartbeat: the default
    if fields.get("transfer_declined") is False:
        del fields["transfer_declined"]  # an AppendEntries answer declining nothing: the default
    if fields.get("group") == "" and fields.get("to") == "":
        del fields["group"]  # one group: the map every earlier release sent
        del fields["to"]
    return fields


def encode(msg: Any) -> bytes:
    """Encode a message (any class of ``raftcache.protocol.messages``) to msgpack bytes.

    Raises:
        TypeError: ``msg`` is not a message dataclass or holds a value msgpack cannot carry.
    """
    if not dataclasses.is_dataclass(msg) or isinstance(msg, type):
        raise TypeError(f"cannot encode {type(msg).__name__}: not a message dataclass")
    result: bytes = msgpack.packb(msg, default=_as_map)
    return result


def decode(cls: type[T], data: bytes | bytearray | memoryview) -> T:
    """Decode the msgpack form of a message of class ``cls``.

    Raises:
        CodecError: not msgpack, not a map, a missing required field or a wrongly typed value.
    """
    try:
        obj = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated classes for bad input
        raise CodecError(f"body is not valid msgpack: {exc}") from None
    return from_dict(cls, obj)
