"""A fault-injecting TCP proxy.

Rule: a proxy only ever delays, withholds or cuts bytes — it never reorders, duplicates or
corrupts them, because TCP never does. Its mode applies at once to new *and* existing
connections:

- ``pass``: forward bytes unchanged.
- ``delay``: forward each chunk after ``delay_s`` plus seeded uniform jitter in
  ``[-jitter_s, +jitter_s]`` (clamped at zero); a chunk is never released before the previous
  one, so the stream keeps its order.
- ``drop``: a black hole. Connections are accepted and held open, everything received is
  discarded (end-of-stream too), nothing is answered — the sender sees timeouts, not errors, as
  behind a silent firewall. A connection that lost bytes, or that was accepted during the black
  hole and so never reached the target, is closed when the mode changes: TCP cannot deliver a
  stream with a hole in it, and a real connection would have timed out by then.
- ``reject``: new connections are closed on accept and existing ones are aborted; the sender
  sees connection errors at once.

``stop()`` closes the listener, aborts every connection and awaits every task it started, so a
test running with warnings as errors sees no leaked task, transport or socket.

``ProxyMesh`` (``raftcache.testing.mesh``) places one proxy between every ordered pair of nodes;
``raftcache.testing.proxy`` offers both under one import path.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
from dataclasses import dataclass

__all__ = ["FaultProxy", "ProxyMode", "ProxyStats"]

_CHUNK_BYTES = 64 * 1024
# Bounded per direction so a slow or delayed receiver pushes back on the sender (at most
# _QUEUE_CHUNKS * _CHUNK_BYTES bytes in flight) instead of growing memory without limit.
_QUEUE_CHUNKS = 64


class ProxyMode(enum.StrEnum):
    """What a proxy does with connections and bytes (see the module docstring)."""

    PASS = "pass"
    DROP = "drop"
    REJECT = "reject"
    DELAY = "delay"


@dataclass(slots=True)
class ProxyStats:
    """Counters for tests and reports."""

    accepted: int = 0
    rejected: int = 0
    bytes_forwarded: int = 0
    bytes_dropped: int = 0


class FaultProxy:
    """A TCP proxy from ``listen_host:listen_port`` to ``target_host:target_port``.

    Args:
        listen_port: Port to listen on; 0 picks a free one, readable as ``port`` after start.
        target_host: Where connections are forwarded.
        target_port: Where connections are forwarded.
        listen_host: Interface to listen on.
        mode: Initial mode.
        delay_s: Base latency per chunk in ``delay`` mode.
        jitter_s: Jitter bound per chunk in ``delay`` mode.
        rng: Source of jitter; seed it to replay a run. Defaults to ``random.Random(0)``.
        connect_timeout_s: How long to wait for the target when a connection arrives.
    """

    def __init__(
        self,
        listen_port: int,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        mode: ProxyMode = ProxyMode.PASS,
        delay_s: float = 0.0,
        jitter_s: float = 0.0,
        rng: random.Random | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.listen_host = listen_host
        self.target_host = target_host
        self.target_port = target_port
        self.stats = ProxyStats()
        self._listen_port = listen_port
        self._mode = ProxyMode(mode)
        self._delay_s = delay_s
        self._jitter_s = jitter_s
        self._rng = rng if rng is not None else random.Random(0)
        self._connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        """The listening port (the chosen one when constructed with 0 and started)."""
        return self._listen_port

    @property
    def mode(self) -> ProxyMode:
        """The current mode."""
        return self._mode

    @property
    def connections(self) -> int:
        """How many client connections are open through the proxy."""
        return len(self._links)

    def set_mode(
        self, mode: ProxyMode, *, delay_s: float | None = None, jitter_s: float | None = None
    ) -> None:
        """Switch mode; applies immediately to existing connections too.

        Call it from the event loop the proxy runs on (it is not thread-safe).
        """
        if delay_s is not None:
            self._delay_s = delay_s
        if jitter_s is not None:
            self._jitter_s = jitter_s
        old, self._mode = self._mode, ProxyMode(mode)
        for link in list(self._links):
            # Why each is closed: see the module docstring (no holes in a TCP stream).
            if self._mode is ProxyMode.REJECT or (
                old is ProxyMode.DROP
                and self._mode is not ProxyMode.DROP
                and (link.damaged or link.upstream is None)
            ):
                link.abort()

    async def start(self) -> None:
        """Start listening."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._on_accept, self.listen_host, self._listen_port
        )
        self._listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, abort every connection and wait for every task to finish."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for link in list(self._links):
            link.abort()
        # A handler may still be waiting for the target to accept; cancelling is safe there
        # (``asyncio.timeout`` has no inner task that could complete and leak a socket).
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _release_time(self, previous: float) -> float:
        """When a chunk read now may be written: never before the previous chunk."""
        now = asyncio.get_running_loop().time()
        if self._mode is not ProxyMode.DELAY:
            return max(previous, now)
        jitter = self._rng.uniform(-self._jitter_s, self._jitter_s) if self._jitter_s else 0.0
        return max(previous, now + max(0.0, self._delay_s + jitter))

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._stopping or self._mode is ProxyMode.REJECT:
                self.stats.rejected += 1
                writer.transport.abort()
                return
            self.stats.accepted += 1
            link = _Link(self, reader, writer)
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        finally:
            self._handlers.discard(task)

    async def _connect_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await asyncio.open_connection(self.target_host, self.target_port)
        except (OSError, TimeoutError):
            return None


class _Link:
    """One client connection and, unless accepted into a black hole, its target connection."""

    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.damaged = False
        self._tasks: list[asyncio.Task[None]] = []
        self._aborted = False

    async def run(self) -> None:
        try:
            if self.proxy.mode is not ProxyMode.DROP:
                self.upstream = await self.proxy._connect_target()
                if self.upstream is None:
                    return
            if self._aborted:
                return
            c_reader, c_writer = self.client
            if self.upstream is None:
                self._tasks = [asyncio.create_task(self._pump(c_reader, None))]
            else:
                u_reader, u_writer = self.upstream
                self._tasks = [
                    asyncio.create_task(self._pump(c_reader, u_writer)),
                    asyncio.create_task(self._pump(u_reader, c_writer)),
                ]
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self.abort()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def abort(self) -> None:
        """Tear the connection down at once, both sides (idempotent)."""
        self._aborted = True
        for _, writer in filter(None, (self.client, self.upstream)):
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None
    ) -> None:
        """Read one direction and feed its sender; any socket error tears the link down."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        sender = asyncio.create_task(self._send(queue, writer))
        release = 0.0
        try:
            while True:
                data = await reader.read(_CHUNK_BYTES)
                if self._black_holed(writer, data):
                    if not data:
                        # The end-of-stream vanished too: wait to be torn down.
                        await asyncio.Future()
                    continue
                release = self.proxy._release_time(release)
                await queue.put((release, data))
                if not data:
                    await sender
                    return
        except OSError:
            self.abort()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await sender

    def _black_holed(self, writer: asyncio.StreamWriter | None, data: bytes) -> bool:
        if writer is not None and self.proxy.mode is not ProxyMode.DROP:
            return False
        self.proxy.stats.bytes_dropped += len(data)
        self.damaged = True
        return True

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter | None
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                release, data = await queue.get()
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                # Bytes still queued when a black hole starts are lost with it.
                if self._black_holed(writer, data):
                    continue
                assert writer is not None
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
                self.proxy.stats.bytes_forwarded += len(data)
        except OSError:
            self.abort()
