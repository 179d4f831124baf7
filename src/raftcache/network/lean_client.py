"""A lean HTTP/1.1 client for Raft RPCs: the wire of ``httpclient.transfer``, less CPU.

Rule: ``LeanClient.transfer`` sends the same POST ``httpclient.transfer`` sends through aiohttp
(same URL, headers, body) on a pooled asyncio connection (``lean_client_conn``, parsed with
httptools) and returns the same ``Answer``, with the same error mapping: the whole exchange
(waiting for a connection slot, connecting, the answer) is bounded by ``timeout`` and exceeding
it is ``NetworkTimeoutError``; a TLS failure while connecting is permanent; refused, reset or
closed connections and unreadable answers are ``NetworkError(kind="connection")``.

Pooling: per peer origin at most ``max_connections`` connections, each running one exchange at
a time; idle ones are reused newest first and closed after ``keepalive_timeout``. A pooled
connection the peer closed while it was idle (no answer byte arrived) is retried once on a fresh
connection — Raft RPCs are idempotent — but never once an answer has started. A connection whose
exchange failed, timed out or was cancelled, or whose answer said ``Connection: close``, is
closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl

from yarl import URL

from raftcache.network import compression
from raftcache.network.errors import NetworkError, NetworkTimeoutError
from raftcache.network.httpclient import Answer, capabilities_of
from raftcache.network.httpwire import JSON
from raftcache.network.lean_client_conn import (
    ConnectionLostError,
    LeanConnection,
    MalformedAnswerError,
)

__all__ = ["LeanClient"]

_MAX_ANSWER = 1024 * 1024 * 1024  # a coded answer is decoded up to this; ours are small


class _Pool:
    """The connections to one origin: a slot per allowed connection, idle ones newest last."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, keepalive: float) -> None:
        self._loop = loop
        self.slots = asyncio.Semaphore(limit)
        self.idle: list[LeanConnection] = []
        self._keepalive = keepalive
        self._sweep: asyncio.TimerHandle | None = None

    def take(self) -> LeanConnection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def put(self, conn: LeanConnection) -> None:
        # Loop time: the keep-alive sweep is a loop.call_at timer, armed on the loop's clock.
        conn.idle_since = self._loop.time()
        self.idle.append(conn)
        if self._sweep is None:
            self._sweep = self._loop.call_at(conn.idle_since + self._keepalive, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for ``keepalive`` (one timer per pool, not per use)."""
        self._sweep = None
        cutoff = self._loop.time() - self._keepalive
        stale = [c for c in self.idle if c.idle_since <= cutoff or c.closed]
        self.idle = [c for c in self.idle if c.idle_since > cutoff and not c.closed]
        for conn in stale:
            conn.close()
        if self.idle:  # the oldest is first
            self._sweep = self._loop.call_at(
                self.idle[0].idle_since + self._keepalive, self._expire
            )

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for conn in self.idle:
            conn.abort()
        self.idle.clear()


class LeanClient:
    """Keep-alive pools of lean connections, one pool per peer origin."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | bool, max_connections: int, keepalive_timeout: float
    ) -> None:
        self._loop = asyncio.get_running_loop()
        # True: the system trust store, as aiohttp does; made once, only if an https URL needs it.
        self._ssl_setting = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self._limit = max_connections
        self._keepalive = keepalive_timeout
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._heads: dict[URL, bytes] = {}
        self._live: set[LeanConnection] = set()
        self._closed = False

    async def close(self) -> None:
        """Close every connection; exchanges still running fail with a connection error."""
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        for conn in list(self._live):
            conn.abort()
        self._live.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost and release sockets

    async def transfer(
        self, target: str, url: URL, wire: bytes, headers: dict[str, str], timeout: float
    ) -> Answer:
        """POST ``wire`` to ``url`` (node ``target``) and read the whole answer."""
        head = self._head(url, headers, len(wire))
        key = (url.scheme, url.raw_host or "", url.port or 0)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self._loop, self._limit, self._keepalive)
        try:
            async with asyncio.timeout(timeout):
                await pool.slots.acquire()
                try:
                    conn = await self._exchange(pool, target, url, head, wire)
                finally:
                    pool.slots.release()
        except TimeoutError:
            raise NetworkTimeoutError(
                f"RPC to node {target} timed out after {timeout:g}s"
            ) from None
        except ConnectionLostError as exc:
            raise NetworkError(
                f"Cannot reach node {target} at {url.origin()}: {exc}", kind="connection"
            ) from exc
        except MalformedAnswerError as exc:
            raise NetworkError(
                f"Bad answer from node {target} at {url.origin()}: {exc}", kind="connection"
            ) from exc
        return self._answer(target, url, conn)

    async def _exchange(
        self, pool: _Pool, target: str, url: URL, head: bytes, wire: bytes
    ) -> LeanConnection:
        conn = pool.take()
        if conn is not None:
            try:
                return await self._run(pool, conn, head, wire)
            except ConnectionLostError as exc:
                if exc.started:
                    raise
                # The peer closed it while idle (its keep-alive ran out): once more, afresh.
        conn = await self._connect(target, url)
        return await self._run(pool, conn, head, wire)

    async def _run(
        self, pool: _Pool, conn: LeanConnection, head: bytes, wire: bytes
    ) -> LeanConnection:
        done = False
        try:
            await conn.send(head, wire)
            done = True
        finally:
            if done and conn.keep_alive and not conn.closed and not self._closed:
                pool.put(conn)
            else:  # failed, timed out or cancelled mid-exchange: its stream is out of step
                conn.close()
        return conn

    async def _connect(self, target: str, url: URL) -> LeanConnection:
        host, port = url.raw_host or "", url.port or 0
        ctx = self._context() if url.scheme == "https" else None
        try:
            _, conn = await self._loop.create_connection(
                lambda: LeanConnection(self._loop, self._live),
                host,
                port,
                ssl=ctx,
                server_hostname=host if ctx is not None else None,
            )
        except ssl.SSLError as exc:  # a certificate or handshake refused: it will be next time
            raise NetworkError(f"TLS with node {target} failed: {exc}", permanent=True) from exc
        except OSError as exc:
            raise NetworkError(
                f"Cannot reach node {target} at {url.origin()}: {exc}", kind="connection"
            ) from exc
        if self._closed:
            conn.abort()
            raise NetworkError(f"Cannot reach node {target}: client closed", kind="connection")
        return conn

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            setting = self._ssl_setting
            self._ssl = (
                setting if isinstance(setting, ssl.SSLContext) else ssl.create_default_context()
            )
        return self._ssl

    def _head(self, url: URL, headers: dict[str, str], length: int) -> bytes:
        """Request line, headers and ``Content-Length``: everything before the body."""
        start = self._heads.get(url)
        if start is None:
            host = url.raw_host or ""
            if ":" in host:
                host = f"[{host}]"
            if not url.is_default_port():
                host = f"{host}:{url.port}"
            start = f"POST {url.raw_path_qs} HTTP/1.1\r\nHost: {host}\r\n".encode("latin-1")
            self._heads[url] = start
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
            raise NetworkError(f"header value with a line break: {list(headers)}", permanent=True)
        return b"%s%sContent-Length: %d\r\n\r\n" % (start, lines.encode("latin-1"), length)

    def _answer(self, target: str, url: URL, conn: LeanConnection) -> Answer:
        body = conn.body()
        coding = conn.content_encoding
        if coding and coding != compression.IDENTITY:
            # We never ask for a coded answer, but a proxy may send one: read it as aiohttp does.
            if coding not in compression.available():
                raise NetworkError(
                    f"Answer from node {target} in unknown coding {coding!r}", kind="connection"
                )
            try:
                body = compression.codec(coding).decompress(body, _MAX_ANSWER)
            except (compression.DecompressionError, compression.BodyTooLargeError) as exc:
                raise NetworkError(
                    f"Bad answer from node {target} at {url.origin()}: {exc}", kind="connection"
                ) from exc
        caps = capabilities_of(conn.status, conn.accept_encoding, conn.accept_post, conn.raft_batch)
        return Answer(conn.status, body, _media_type(conn.content_type) or JSON, caps)


def _media_type(content_type: str | None) -> str:
    """``Content-Type`` without parameters, lower case, as aiohttp's ``content_type``."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()
