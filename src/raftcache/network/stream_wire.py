"""The stream transport's wire: msgpack frames over one upgraded (WebSocket) connection per peer.

Rule: a node that serves the stream answers ``GET /raft/v1/stream`` (the route of the HTTP
transport's listener, so TLS, the cluster token and the peer addresses stay as they are) with a
WebSocket upgrade, sub-protocol ``raftcache-raft.1``. Every WebSocket message is binary and holds
one or more *frames* back to back; a frame is two msgpack objects:

* a header ``[kind, id, rpc]`` — ``kind`` one of ``HELLO``, ``REQUEST``, ``RESPONSE``,
  ``ERROR``; ``id`` the request id chosen by the client (answers carry it back, so many RPCs
  are in flight at once and answers may come in any order); ``rpc`` the RPC code
  (1 RequestVote, 2 AppendEntries, 3 InstallSnapshot; for ``HELLO`` the protocol version);
* a body: the message as the msgpack codec maps it (``raftcache.network.msgpack_codec``: field
  names as keys, ``bytes`` as binary), or for ``ERROR`` ``{"error": str, "code": str}``, or for
  ``HELLO`` ``{"node": str, "max_frame": int}``.

The server's first message is a ``HELLO``: its id and the largest message it reads. The client
sends its own limit in the upgrade request's ``Raftcache-Max-Frame`` header. A sender packs
several frames into one message only up to the reader's limit, so a frame is refused only when
it is alone over the limit — and a client checks that before sending (see ``too_large``).

Error codes in ``ERROR`` frames and what the client raises, mirroring ``httpwire``'s statuses:
``bad_request`` (undecodable or invalid request: permanent), ``no_handlers`` (permanent "Node X
has no handlers registered"), ``handler_error`` (the handler raised: permanent, its message).
A ``NetworkError`` the handler raised (``GroupNotHostedError``) is relayed as itself: the code is
its kind and the body's ``"permanent"`` its flag.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from raftcache.network import msgpack_codec
from raftcache.network.codec import REQUEST_TYPES, RESPONSE_FOR
from raftcache.network.errors import NetworkError, no_handlers, relayed

__all__ = [
    "ERROR",
    "HELLO",
    "MAX_FRAME_HEADER",
    "REQUEST",
    "RESPONSE",
    "STREAM_PATH",
    "SUBPROTOCOL",
    "VERSION",
    "Frame",
    "FrameError",
    "decode_message",
    "encode_frame",
    "frame_error",
    "request_code",
    "too_large",
]

STREAM_PATH: Final = "/raft/v1/stream"
SUBPROTOCOL: Final = "raftcache-raft.1"
VERSION: Final = 1
MAX_FRAME_HEADER: Final = "Raftcache-Max-Frame"

HELLO: Final = 0
REQUEST: Final = 1
RESPONSE: Final = 2
ERROR: Final = 3
_KINDS = frozenset({HELLO, REQUEST, RESPONSE, ERROR})

# Codes 1, 2, 3 in the order of docs/network.md#messages (the codec's REQUEST_TYPES):
# RequestVote, AppendEntries, InstallSnapshot — part of the wire, so that order must not change.
REQUEST_CLASSES: Final[dict[int, type[Any]]] = {
    code: cls for code, cls in enumerate(REQUEST_TYPES, start=1)
}
RESPONSE_CLASSES: Final[dict[int, type[Any]]] = {
    code: RESPONSE_FOR[cls] for code, cls in REQUEST_CLASSES.items()
}
_CODE_OF = {cls: code for code, cls in REQUEST_CLASSES.items()}


class FrameError(ValueError):
    """A message that is not a sequence of well-formed frames (a protocol violation)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame; ``size`` is its length in bytes on the wire (header and body)."""

    kind: int
    id: int
    code: int
    body: Any
    size: int


def request_code(req: Any) -> int:
    """The RPC code of a request object."""
    return _CODE_OF[type(req)]


def encode_frame(kind: int, frame_id: int, code: int, body: Any) -> bytes:
    """A frame: the header, then ``body`` (a message dataclass, or a plain map)."""
    header: bytes = msgpack.packb((kind, frame_id, code))
    if dataclasses.is_dataclass(body) and not isinstance(body, type):
        return header + msgpack_codec.encode(body)
    packed: bytes = msgpack.packb(body)
    return header + packed


def decode_message(data: bytes) -> list[Frame]:
    """Every frame of one WebSocket message, in order.

    Raises:
        FrameError: not msgpack, a header that is not ``[kind, id, rpc]`` of known kind, a
            header without its body, or bytes left over after the last frame.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    frames: list[Frame] = []
    try:
        unpacker.feed(data)
        start = 0
        for header in unpacker:
            if not (
                isinstance(header, list)
                and len(header) == 3
                and all(type(x) is int for x in header)
                and header[0] in _KINDS
            ):
                raise FrameError(f"frame header is not [kind, id, rpc]: {header!r:.80}")
            body = unpacker.unpack()
            end = unpacker.tell()
            frames.append(Frame(header[0], header[1], header[2], body, end - start))
            start = end
    except msgpack.OutOfData:
        raise FrameError("frame header without its body") from None
    except FrameError:
        raise
    except Exception as exc:  # msgpack raises several unrelated classes for bad input
        raise FrameError(f"message is not msgpack frames: {exc}") from None
    if unpacker.tell() != len(data):
        raise FrameError("message ends inside a frame")
    return frames


def frame_error(target: str, body: Any) -> NetworkError:
    """The client-side error for an ``ERROR`` frame from ``target`` (see the module table)."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        detail, code = body["error"], body.get("code")
    else:
        detail, code = repr(body)[:200], None
    if code == "no_handlers":
        return no_handlers(target)
    permanent = body.get("permanent") if isinstance(body, dict) else None
    if isinstance(permanent, bool):
        return relayed(detail, code, permanent)
    if code == "handler_error":
        return NetworkError(detail, permanent=True, kind="handler_error")
    return NetworkError(f"Node {target} refused the request ({code}): {detail}", permanent=True)


def too_large(target: str, size: int, limit: int) -> NetworkError:
    """A request the peer said it would not read: refused before it is sent (permanent)."""
    return NetworkError(
        f"Request of {size} bytes is larger than node {target} accepts ({limit} bytes)",
        permanent=True,
        kind="too_large",
    )
