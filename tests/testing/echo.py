"""A tiny TCP echo server and client helpers for the proxy tests.

Rule: every helper cleans up what it opens, whatever the outcome, so a test that leaks
anything has the proxy to blame.
"""

from __future__ import annotations

import asyncio
import contextlib


class EchoServer:
    """Echoes every byte back; half-closes when the client does."""

    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a client connection, ignoring a peer that already reset it."""
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def roundtrip(port: int, payload: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``payload`` on a fresh connection and read as many bytes back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await reader.readexactly(len(payload))
    finally:
        await close(writer)


async def reachable(port: int, wait_s: float = 0.3) -> bool:
    """Whether an echo answers through ``port`` within ``wait_s``: False on silence or error.

    A short wait is enough for "unreachable" (a black hole never answers) and harmless for
    "reachable" (a loaded machine only makes a reachable echo look unreachable, so callers
    assert reachability with a generous timeout via ``roundtrip`` instead).
    """
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"ping")
        async with asyncio.timeout(wait_s):
            return await reader.readexactly(4) == b"ping"
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return False
    finally:
        await close(writer)


def leftover_tasks() -> set[asyncio.Task[object]]:
    """Tasks still alive besides the caller's: a proxy that stopped cleanly leaves none."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}
