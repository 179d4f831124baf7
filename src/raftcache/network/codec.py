"""The JSON wire codec of the Raft messages (docs/network.md#wire-format).

Rule: a message travels as one JSON object keyed by its dataclass field names. ``bytes`` travel as
RFC 4648 base64 with padding, nested dataclasses (``LogEntry``) as objects, lists as arrays. The
codec is generic over ``dataclasses.fields`` of the classes in ``raftcache.protocol.messages``:
a new field needs no change here. Decoding is strict about what it reads and lenient about what it
does not: unknown keys are ignored, a missing field with a default takes the default, but a missing
required field or a wrongly typed value raises ``CodecError`` naming the field (``bool`` is not an
``int`` and ``int`` is not a ``bool``, although Python would say otherwise).

Speed: the leader encodes many AppendEntries per second, so the work that depends only on the
class (resolving type hints, choosing a converter per field) is done once and cached as a
``_Plan``. Encoding hands the dataclass itself to orjson, which walks slots dataclasses natively
in Rust and calls back into Python only for ``bytes``.

``clone`` uses the same plans to copy a message structurally, as if it had crossed a wire; the
in-memory transport uses it so that a receiver mutating a request cannot affect its sender.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

from raftcache.protocol.messages import (
    AppendEntriesBatchResponse,
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = [
    "REQUEST_TYPES",
    "RESPONSE_FOR",
    "CodecError",
    "clone",
    "decode",
    "encode",
    "from_dict",
    "to_dict",
]

T = TypeVar("T")

REQUEST_TYPES: tuple[type[Any], ...] = (
    RequestVoteRequest,
    AppendEntriesRequest,
    InstallSnapshotRequest,
)
"""Every request message, in the order of docs/network.md#messages."""

RESPONSE_FOR: dict[type[Any], type[Any]] = {
    RequestVoteRequest: RequestVoteResponse,
    AppendEntriesRequest: AppendEntriesResponse,
    InstallSnapshotRequest: InstallSnapshotResponse,
}
"""The response class of each request class."""


class CodecError(ValueError):
    """A body that cannot be decoded into the expected message.

    Attributes:
        field: path of the offending field (``"entries[2].command"``), or ``None`` when the body
            as a whole is at fault (not JSON, not an object).
        reason: what is wrong with it.
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"field {field!r}: {reason}" if field else reason)
        self.field = field
        self.reason = reason

    def within(self, outer: str) -> CodecError:
        """The same error seen from the enclosing field ``outer`` (a name or ``[index]``)."""
        if self.field is None:
            inner = outer
        elif self.field.startswith("["):
            inner = outer + self.field
        else:
            inner = f"{outer}.{self.field}"
        return CodecError(self.reason, inner)


# A converter turns a decoded JSON value into the field's Python value, or raises CodecError.
# Converters do not know where they are: the enclosing object or list adds its field name or
# index to the error on the way out, so the hot path never builds path strings.
_Convert = Callable[[Any], Any]
# A copier duplicates a field value so that no mutable object is shared.
_Copy = Callable[[Any], Any]

_MISSING: Any = dataclasses.MISSING


class _Field:
    """How one dataclass field is decoded and copied; built once per class."""

    __slots__ = ("convert", "copy", "name", "required")

    def __init__(self, f: dataclasses.Field[Any], hint: Any) -> None:
        self.name = f.name
        self.convert, self.copy = _converter_for(hint)
        self.required = f.default is _MISSING and f.default_factory is _MISSING


class _Plan:
    """The per-class field plan: decoding and cloning walk it without inspecting types again."""

    __slots__ = ("cls", "fields", "mutable")

    def __init__(self, cls: type[Any]) -> None:
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.fields = tuple(_Field(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init)
        # Fields whose values are mutable (lists, nested dataclasses) must be copied by clone();
        # the others (int, str, bool, bytes, None) are immutable and may be shared.
        self.mutable = tuple(f for f in self.fields if f.copy is not _identity)


_PLANS: dict[type[Any], _Plan] = {}


def _plan(cls: type[Any]) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{cls!r} is not a dataclass")
        plan = _PLANS[cls] = _Plan(cls)
    return plan


def _identity(value: Any) -> Any:
    return value


def _wrong(expected: str, value: Any) -> CodecError:
    text = repr(value)
    preview = text if len(text) <= 60 else text[:57] + "..."
    return CodecError(f"expected {expected}, got {type(value).__name__} {preview}")


def _to_int(value: Any) -> int:
    # type() rather than isinstance(): bool is a subclass of int, but true is not a term number.
    if type(value) is int:
        return value
    raise _wrong("an integer", value)


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    raise _wrong("a boolean", value)


def _to_float(value: Any) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise _wrong("a number", value)


def _to_str(value: Any) -> str:
    if type(value) is str:
        return value
    raise _wrong("a string", value)


def _to_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value  # a binary body format (msgpack) carries bytes as they are; JSON never does
    if type(value) is not str:
        raise _wrong("a base64 string", value)
    try:
        # validate=True rejects characters outside the alphabet instead of skipping them; padding
        # is checked by the decoder itself. A non-ASCII str raises ValueError.
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CodecError(f"invalid base64 ({exc})") from None


_SIMPLE: dict[Any, _Convert] = {
    int: _to_int,
    bool: _to_bool,
    float: _to_float,
    str: _to_str,
    bytes: _to_bytes,
}


def _converter_for(hint: Any) -> tuple[_Convert, _Copy]:
    """The converter and copier of one type hint; only the types messages use are supported."""
    if hint in _SIMPLE:
        return _SIMPLE[hint], _identity
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _nested(hint)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is list and len(args) == 1:
        return _list_of(*_converter_for(args[0]))
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _optional(*_converter_for(inner))
    raise TypeError(f"the wire codec does not support fields of type {hint!r}")


def _nested(cls: type[Any]) -> tuple[_Convert, _Copy]:
    # The plan is looked up on first use: building it here could recurse forever on a recursive
    # type. After that the closure holds it directly.
    cache: list[_Plan] = []

    def plan() -> _Plan:
        if not cache:
            cache.append(_plan(cls))
        return cache[0]

    def convert(value: Any) -> Any:
        return _from_dict(plan(), value)

    def copy(value: Any) -> Any:
        return _clone(plan(), value)

    return convert, copy


def _list_of(item: _Convert, item_copy: _Copy) -> tuple[_Convert, _Copy]:
    def convert(value: Any) -> list[Any]:
        if type(value) is not list:
            raise _wrong("a list", value)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except CodecError as exc:
                raise exc.within(f"[{i}]") from None
        return out

    def copy(value: Any) -> list[Any]:
        if item_copy is _identity:
            return list(value)
        return [item_copy(v) for v in value]

    return convert, copy


def _optional(inner: _Convert, inner_copy: _Copy) -> tuple[_Convert, _Copy]:
    def convert(value: Any) -> Any:
        return None if value is None else inner(value)

    if inner_copy is _identity:
        return convert, _identity
    return convert, lambda value: None if value is None else inner_copy(value)


def _from_dict(plan: _Plan, obj: Any) -> Any:
    if type(obj) is not dict:
        raise CodecError(
            f"expected a JSON object for {plan.cls.__name__}, got {type(obj).__name__}"
        )
    kwargs: dict[str, Any] = {}
    for f in plan.fields:
        value = obj.get(f.name, _MISSING)
        if value is not _MISSING:
            try:
                kwargs[f.name] = f.convert(value)
            except CodecError as exc:
                raise exc.within(f.name) from None
        elif f.required:
            raise CodecError(f"missing (required by {plan.cls.__name__})", f.name)
        # else: leave it out, the dataclass applies its own default (or default factory).
    return plan.cls(**kwargs)


def _clone(plan: _Plan, msg: Any) -> Any:
    kwargs = {f.name: getattr(msg, f.name) for f in plan.fields}
    for f in plan.mutable:
        kwargs[f.name] = f.copy(kwargs[f.name])
    return plan.cls(**kwargs)


def _encode_default(value: Any) -> Any:
    """orjson calls this for the types it does not know: here only binary values."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} on the wire")


def to_dict(msg: Any) -> dict[str, Any]:
    """The JSON-ready dict of a message (bytes as base64 strings).

    Args:
        msg: a message dataclass instance.

    Returns:
        A dict of plain JSON values keyed by field name.
    """
    result: dict[str, Any] = orjson.loads(encode(msg))
    return result


def from_dict(cls: type[T], obj: Any) -> T:
    """Build a message of class ``cls`` from an already parsed JSON (or msgpack) value.

    Raises:
        CodecError: the value is not an object of the right shape.
    """
    result: T = _from_dict(_plan(cls), obj)
    return result


def encode(msg: Any) -> bytes:
    """Encode a message to its JSON wire form.

    Args:
        msg: a message dataclass instance (any class of ``raftcache.protocol.messages``).

    Returns:
        UTF-8 JSON bytes.

    Raises:
        TypeError: ``msg`` is not a dataclass instance or holds a value JSON cannot carry.
    """
    if not dataclasses.is_dataclass(msg) or isinstance(msg, type):
        raise TypeError(f"cannot encode {type(msg).__name__}: not a message dataclass")
    out = orjson.dumps(msg, default=_encode_default)
    if out.endswith(_EMPTY_GROUP):
        # A request of a node hosting one group: leave the seed's wire exactly as it was.
        # ``to`` and ``group`` are every request's last fields and orjson keeps their order;
        # an AppendEntries' ``quiesce`` comes just before them and is false on that wire.
        cut = len(_QUIET_EMPTY_GROUP) if out.endswith(_QUIET_EMPTY_GROUP) else len(_EMPTY_GROUP)
        return out[:-cut] + b"}"
    if type(msg) is AppendEntriesResponse and out.endswith(_NOT_DECLINED):
        return out[: -len(_NOT_DECLINED)] + b"}"  # the default, left off (it is the last field)
    if type(msg) is AppendEntriesBatchResponse:
        # Each item's answer alike. The pattern cannot occur inside a JSON string (its
        # quotes would be escaped there), so every occurrence is an answer's last field.
        return out.replace(_NOT_DECLINED, b"}")
    if type(msg) is AppendEntriesRequest and not msg.quiesce:
        # The default, left off as ``to`` is; searched from the end, where the field is.
        at = out.rfind(_NOT_QUIESCING)
        if at >= 0:
            return out[:at] + b"," + out[at + len(_NOT_QUIESCING) :]
    return out


_EMPTY_GROUP = b',"to":"","group":""}'
_QUIET_EMPTY_GROUP = b',"quiesce":false,"to":"","group":""}'
_NOT_QUIESCING = b',"quiesce":false,'
_NOT_DECLINED = b',"transfer_declined":false}'


def decode(cls: type[T], data: bytes | bytearray | memoryview | str) -> T:
    """Decode the JSON wire form of a message of class ``cls``.

    Args:
        cls: the expected message class.
        data: the JSON body.

    Returns:
        A new instance of ``cls``.

    Raises:
        CodecError: the body is not JSON, not an object, lacks a required field or holds a
            wrongly typed value; the message and ``.field`` name the field.
    """
    plan = _plan(cls)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"body is not valid JSON: {exc}") from None
    result: T = _from_dict(plan, obj)
    return result


def clone(msg: T) -> T:
    """A structural copy of a message: nothing mutable is shared with the original.

    ``bytes``, ``str`` and numbers are immutable and shared; lists and nested dataclasses
    (``LogEntry``) are copied, so the copy behaves as if it had been sent over a wire.
    """
    result: T = _clone(_plan(type(msg)), msg)
    return result
