"""Raw HTTP/1.1 over a socket for the lean front's tests: exact bytes out, answers parsed in.

aiohttp's client would hide what these tests are about (pipelining, split segments, malformed
bytes, ``Expect``), so they write bytes and read answers themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import orjson


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> object:
        return orjson.loads(self.body)


def request(
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    version: str = "1.1",
) -> bytes:
    """One request's bytes (``Host`` and, with a body, ``Content-Length`` added)."""
    lines = [f"{method} {target} HTTP/{version}", "Host: test"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None and not any(k.lower() == "transfer-encoding" for k in headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_answer(reader: asyncio.StreamReader, *, head: bool = False) -> Answer:
    """One answer: status line, headers, and a ``Content-Length`` body (none for HEAD)."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if not head and status >= 200 and status not in (204, 304):
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


class Conn:
    """One client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> Conn:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context, server_hostname="127.0.0.1" if ssl_context else None
        )
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answers(self, count: int, *, head_at: tuple[int, ...] = ()) -> list[Answer]:
        async with asyncio.timeout(30):
            return [await read_answer(self.reader, head=i in head_at) for i in range(count)]

    async def read_to_end(self) -> bytes:
        async with asyncio.timeout(30):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()  # the server may have closed first
