"""A Server-Sent Events parser, incremental: bytes in, complete messages out.

Rule: it follows the WHATWG event-stream rules the server relies on — lines end with LF, CRLF or
CR; a blank line ends a message; ``:`` starts a comment (a heartbeat); ``data`` lines join with
LF; ``id`` and ``event`` take the last value given; a field without a colon has an empty value;
one leading space after the colon is dropped; a message with no ``data`` is not dispatched
(``retry`` is kept, as a hint). Bytes are decoded as UTF-8 per whole line, so a multi-byte
character split across two reads is never broken.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One dispatched message.

    Attributes:
        event: the ``event`` field ("message" when none was given).
        data: the ``data`` lines, joined with LF.
        id: the ``id`` field of this message, or None when it had none.
    """

    event: str
    data: str
    id: str | None


class SseParser:
    """Feed it the stream's bytes as they arrive; it returns the messages they complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        #: The last ``retry`` hint in milliseconds, if the server sent one.
        self.retry_ms: int | None = None
        #: Comment lines seen (heartbeats), for whoever watches liveness.
        self.comments = 0

    def feed(self, chunk: bytes) -> list[SseMessage]:
        """Parse ``chunk``; the messages it completes, in order."""
        buffer = self._buffer + chunk
        messages: list[SseMessage] = []
        start = 0
        size = len(buffer)
        while start < size:
            lf = buffer.find(b"\n", start)
            cr = buffer.find(b"\r", start, lf if lf >= 0 else size)
            if cr >= 0:
                end = cr
                if cr + 1 == size:
                    break  # a CR at the very end: it may be the first half of a CRLF
                after = cr + 2 if buffer[cr + 1 : cr + 2] == b"\n" else cr + 1
            elif lf >= 0:
                end, after = lf, lf + 1
            else:
                break
            message = self._line(buffer[start:end].decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)
            start = after
        self._buffer = buffer[start:]
        return messages

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseMessage | None:
        data, event, ident = self._data, self._event, self._id
        self._data, self._event, self._id = [], "", None
        if not data:
            return None
        return SseMessage(event or "message", "\n".join(data), ident)
