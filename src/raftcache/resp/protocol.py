"""RESP wire format: an incremental request parser and a RESP2/RESP3 reply encoder.

Rule: the parser turns bytes into complete commands (lists of ``bytes``, the name first) and
nothing else; it keeps a half-received command across reads (so a command split over many reads
is never re-scanned from its start) and enforces every size limit *before* buffering, so a
client cannot make the server hold more than ``max_buffer_bytes`` for one connection. Malformed
input sets ``error`` (a ``ProtocolError``): the connection answers ``-ERR Protocol error: ...``
and closes, as Redis does, because after a framing error nothing that follows can be trusted.

Replies are plain Python values encoded by ``encode``: ``bytes``/``str`` → bulk string, ``int``
→ integer, ``None`` → null, ``list``/``tuple`` → array, ``dict`` → map, ``set``/``frozenset``
→ set, ``float`` → double, ``bool`` → boolean, ``Simple`` → simple string, ``Verbatim`` →
verbatim text, ``RespError`` → error, ``Push`` → push (pub/sub), ``Frames`` → several replies
in a row. RESP2 has no map, set, double, boolean or verbatim type:
those degrade to what Redis itself sends a RESP2 client (flat arrays, bulk strings, integers).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "NULL_ARRAY",
    "OK",
    "QUEUED",
    "Frames",
    "ProtocolError",
    "Push",
    "RespError",
    "RespParser",
    "Simple",
    "Verbatim",
    "encode",
]

MAX_MULTIBULK_LENGTH: Final = 1024 * 1024  # Redis's limit on arguments per command
MAX_INLINE_BYTES: Final = 64 * 1024  # Redis's PROTO_INLINE_MAX_SIZE


class ProtocolError(Exception):
    """The client sent bytes that are not a RESP request; the connection must be closed."""


class RespError(Exception):
    """An error reply. ``line`` is the reply text without ``-``: an upper-case code word
    (``ERR``, ``WRONGTYPE``, ``NOAUTH``...) followed by a message, as Redis clients expect."""

    def __init__(self, line: str) -> None:
        # CR/LF would break the framing of the reply line: a message never carries them.
        self.line = line.replace("\r", " ").replace("\n", " ")
        super().__init__(self.line)


class Simple(str):
    """A simple-string reply (``+OK``): short status text without CR/LF."""

    __slots__ = ()


class Verbatim(str):
    """A verbatim-text reply (RESP3 ``=``, format ``txt``); a bulk string in RESP2."""

    __slots__ = ()


class Push(tuple[Any, ...]):
    """A push (RESP3 ``>``: pub/sub messages and subscription replies); an array in RESP2."""

    __slots__ = ()


class Frames(tuple[Any, ...]):
    """Several replies to one command, one after another (SUBSCRIBE a b: one per channel)."""

    __slots__ = ()


class _NullArray:
    """The RESP2 null array (``*-1``), e.g. an aborted EXEC; ``_`` in RESP3."""

    __slots__ = ()


OK: Final = Simple("OK")
QUEUED: Final = Simple("QUEUED")
NULL_ARRAY: Final = _NullArray()


class RespParser:
    """Incremental parser of client requests: RESP arrays of bulk strings, and inline commands.

    Args:
        max_bulk_bytes: largest single argument accepted.
        max_buffer_bytes: most bytes one incomplete command may occupy.
    """

    __slots__ = ("_args", "_buf", "_held", "_max_buffer", "_max_bulk", "_pos", "_want", "error")

    def __init__(self, *, max_bulk_bytes: int, max_buffer_bytes: int) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._max_bulk = max_bulk_bytes
        self._max_buffer = max_buffer_bytes
        # The command being assembled: arguments still expected, arguments parsed so far.
        self._want = 0
        self._args: list[bytes] = []
        self._held = 0  # bytes of ``_args``, plus a per-argument overhead
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for commands not yet complete (arguments counted with an overhead)."""
        return len(self._buf) - self._pos + self._held

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add ``data`` and return every command it completes, in order (empty commands
        — a blank inline line — are skipped). After malformed input, ``error`` is set, the
        commands before it are still returned, and nothing more is ever parsed."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        commands: list[list[bytes]] = []
        try:
            while self._pos < len(buf):
                command = self._next()
                if command is None:
                    break
                if command:
                    commands.append(command)
            if len(buf) - self._pos + self._held > self._max_buffer:
                raise ProtocolError("too big request (query buffer limit exceeded)")
        except ProtocolError as exc:
            self.error = exc
            buf.clear()
            self._pos = 0
            return commands
        # Compact once per feed, not per command: deleting a prefix is a memmove.
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        return commands

    def _next(self) -> list[bytes] | None:
        """The next complete command, ``[]`` for a blank inline line, None if incomplete."""
        if self._want == 0:
            if self._buf[self._pos] != 0x2A:  # not '*': an inline command
                return self._inline()
            count = self._header(0x2A, MAX_MULTIBULK_LENGTH, "multibulk")
            if count is None:
                return None
            if count <= 0:
                return []
            self._want = count
        args = self._args
        while len(args) < self._want:
            arg = self._bulk()
            if arg is None:
                return None
            args.append(arg)
            self._held += len(arg) + 64
        self._want = 0
        self._args = []
        self._held = 0
        return args

    def _header(self, marker: int, limit: int, what: str) -> int | None:
        """Parse ``<marker><integer>\\r\\n`` at the position; None if the line is incomplete."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > 32:  # no valid header line is that long
                raise ProtocolError(f"invalid {what} length")
            return None
        if buf[pos] != marker:
            got = chr(buf[pos]) if 32 <= buf[pos] < 127 else f"\\x{buf[pos]:02x}"
            raise ProtocolError(f"expected '{chr(marker)}', got '{got}'")
        digits = bytes(buf[pos + 1 : end])
        # int() accepts '+', '_' and spaces; RESP does not.
        if not digits or not (digits.isdigit() or (digits[:1] == b"-" and digits[1:].isdigit())):
            raise ProtocolError(f"invalid {what} length")
        value = int(digits)
        if value > limit or (value < 0 and marker == 0x24):
            raise ProtocolError(f"invalid {what} length")
        self._pos = end + 2
        return value

    def _bulk(self) -> bytes | None:
        """Parse one bulk string; None (with the position unchanged) if incomplete."""
        start = self._pos
        size = self._header(0x24, self._max_bulk, "bulk")
        if size is None:
            return None
        buf, pos = self._buf, self._pos
        if len(buf) < pos + size + 2:
            self._pos = start  # re-read the header when the rest arrives: it is short
            if size + 64 > self._max_buffer:
                raise ProtocolError("invalid bulk length")
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ProtocolError("bulk string not terminated by CRLF")
        self._pos = pos + size + 2
        return bytes(buf[pos : pos + size])

    def _inline(self) -> list[bytes] | None:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_INLINE_BYTES:
                raise ProtocolError("too big inline request")
            return None
        if end - pos > MAX_INLINE_BYTES:
            raise ProtocolError("too big inline request")
        line = bytes(buf[pos:end]).rstrip(b"\r")
        self._pos = end + 1
        return split_inline(line)


_HEX: Final = b"0123456789abcdefABCDEF"
_ESCAPES: Final = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def split_inline(line: bytes) -> list[bytes]:
    """Split an inline command as Redis's ``sdssplitargs`` does: whitespace-separated words,
    ``"double quoted"`` with escapes (``\\n``, ``\\xHH``...) and ``'single quoted'`` with
    ``\\'``. Raises ``ProtocolError`` on unbalanced quotes."""
    words: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\r\n\v\f":
            i += 1
        if i >= n:
            return words
        word = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i]
            if quote == 0x22 and c == 0x5C and i + 1 < n:  # backslash inside "..."
                i = _unescape(line, i, word)
            elif quote == 0x27 and c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                word.append(0x27)
                i += 1
            elif quote and c == quote:
                # A closing quote must be followed by a space or the end of the line.
                if i + 1 < n and line[i + 1] not in b" \t\r\n\v\f":
                    raise ProtocolError("unbalanced quotes in request")
                quote = 0
                i += 1
                break
            elif not quote and c in b"\"'":
                quote = c
            elif not quote and c in b" \t\r\n\v\f":
                break
            else:
                word.append(c)
            i += 1
        words.append(bytes(word))


def _unescape(line: bytes, i: int, word: bytearray) -> int:
    """Append the escape at ``line[i]`` (a backslash) to ``word``; returns its last index."""
    nxt = line[i + 1]
    hexdigits = line[i + 2 : i + 4]
    if (
        nxt == ord("x")
        and len(hexdigits) == 2
        and all(h in b"0123456789abcdefABCDEF" for h in hexdigits)
    ):
        word.append(int(hexdigits, 16))
        return i + 3
    word.append(_ESCAPES.get(nxt, nxt))
    return i + 1


# --- encoding ---------------------------------------------------------------------------------

_NULL2: Final = b"$-1\r\n"
_BOOLS: Final = ((b":0\r\n", b":1\r\n"), (b"#f\r\n", b"#t\r\n"))
_NULL3: Final = b"_\r\n"
_SMALL_INTS: Final = tuple(b":%d\r\n" % i for i in range(1024))


def encode(reply: Any, proto: int = 2) -> bytes:
    """The wire form of ``reply`` for a client speaking RESP ``proto`` (2 or 3)."""
    kind = type(reply)
    if kind is bytes:
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if kind is Simple:
        return b"+%b\r\n" % reply.encode()
    if reply is None:
        return _NULL3 if proto == 3 else _NULL2
    if kind is int:
        return _SMALL_INTS[reply] if 0 <= reply < 1024 else b":%d\r\n" % reply
    out: list[bytes] = []
    _encode_into(reply, proto, out)
    return b"".join(out)


def _encode_into(reply: Any, proto: int, out: list[bytes]) -> None:
    kind = type(reply)
    if kind is bytes:
        out.append(b"$%d\r\n%b\r\n" % (len(reply), reply))
    elif reply is None:
        out.append(_NULL3 if proto == 3 else _NULL2)
    elif kind is bool:
        out.append(_BOOLS[proto == 3][reply])
    elif kind is int:
        out.append(b":%d\r\n" % reply)
    elif kind is list or kind is tuple:
        out.append(b"*%d\r\n" % len(reply))
        for item in reply:
            _encode_into(item, proto, out)
    elif kind is Simple:
        out.append(b"+%b\r\n" % reply.encode())
    elif isinstance(reply, RespError):
        out.append(b"-%b\r\n" % reply.line.encode())
    else:
        _encode_rare(reply, proto, out)


def _encode_rare(reply: Any, proto: int, out: list[bytes]) -> None:
    if isinstance(reply, Verbatim):
        data = reply.encode()
        if proto == 3:
            out.append(b"=%d\r\ntxt:%b\r\n" % (len(data) + 4, data))
        else:
            out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(reply, str):
        data = reply.encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    elif isinstance(reply, dict):
        out.append(b"%%%d\r\n" % len(reply) if proto == 3 else b"*%d\r\n" % (2 * len(reply)))
        for key, value in reply.items():
            _encode_into(key, proto, out)
            _encode_into(value, proto, out)
    elif isinstance(reply, set | frozenset):
        out.append(b"~%d\r\n" % len(reply) if proto == 3 else b"*%d\r\n" % len(reply))
        for item in sorted(reply):
            _encode_into(item, proto, out)
    elif isinstance(reply, float):
        text = repr(reply).encode() if reply == reply else b"nan"
        out.append(b",%b\r\n" % text if proto == 3 else b"$%d\r\n%b\r\n" % (len(text), text))
    elif isinstance(reply, _NullArray):
        out.append(_NULL3 if proto == 3 else b"*-1\r\n")
    elif isinstance(reply, Push):
        out.append(b">%d\r\n" % len(reply) if proto == 3 else b"*%d\r\n" % len(reply))
        for item in reply:
            _encode_into(item, proto, out)
    elif isinstance(reply, Frames):
        for item in reply:
            _encode_into(item, proto, out)
    else:
        raise TypeError(f"cannot encode a {type(reply).__name__} as a RESP reply")
