"""Server-side polling of every peer for the dashboard: one node asks, the browser reads.

Rule: the browser talks to the node that served the page and to nobody else (no CORS, no
peer URLs the browser may not reach, one token). That node asks every peer's ``/v1/status`` and
``/v1/stats`` concurrently, each peer bounded by a short timeout and each body by a size bound,
so a slow, dead or hostile peer costs at most ``timeout_s`` and ``MAX_BODY_BYTES`` and becomes a
row with an ``error`` — never a failed page. Concurrent page loads share one poll in flight
(single flight per ``Authorization`` header), so N open tabs do not multiply the fan-out.

Turning the answers into numbers is ``raftcache.dashboard.view`` (pure); this module only does
the I/O and keeps the raw JSON objects.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from raftcache.network.groups import shared_urls

#: Largest ``/v1/status`` or ``/v1/stats`` body read from a peer (real ones are ~1 KiB).
MAX_BODY_BYTES = 256 * 1024
#: Per-peer bound on one poll: the page refreshes every second, so a peer that needs longer is
#: shown as unreachable rather than delaying every other row.
DEFAULT_TIMEOUT_S = 0.8


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    """What one peer answered in one poll.

    Attributes:
        node_id: the id this node was configured with for the peer.
        url: the peer's base URL.
        status: the ``/v1/status`` JSON object, or None when it did not answer one.
        stats: the ``/v1/stats`` JSON object, or None (a node may answer status but not stats).
        rtt_ms: how long the status request took, in milliseconds (None when it failed).
        error: why ``status`` is missing (None when it is there).
    """

    node_id: str
    url: str
    status: Mapping[str, Any] | None
    stats: Mapping[str, Any] | None
    rtt_ms: float | None
    error: str | None = None


class PeerError(Exception):
    """A peer's answer could not be used; the message is shown on the dashboard."""


class ClusterPoller:
    """Polls every configured peer; owns one ``aiohttp.ClientSession`` (created on first use).

    Args:
        peer_urls: node id → base URL of every node to show (this node included).
        timeout_s: bound on each peer's poll (status and stats together).
        ssl_context: TLS context for ``https://`` peers (mutual TLS: with a client certificate).
        clock: seconds from a monotonic clock; defaults to the running loop's ``time``.
    """

    def __init__(
        self,
        peer_urls: Mapping[str, str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        # Kept, not copied: a store's address book gains the stores that join later, and
        # the dashboard must show them (``network.groups.shared_urls``).
        self._peer_urls = shared_urls(peer_urls)
        self.timeout_s = timeout_s
        self._ssl_context = ssl_context
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: dict[str | None, asyncio.Task[list[PeerAnswer]]] = {}

    @property
    def peer_urls(self) -> dict[str, str]:
        """Node id → base URL of every node to show, as the address book has them now."""
        return {node_id: url.rstrip("/") for node_id, url in self._peer_urls.items()}

    async def poll(self, authorization: str | None = None) -> list[PeerAnswer]:
        """Every peer's answers, in ``peer_urls`` order.

        Args:
            authorization: the ``Authorization`` header to send to peers (the caller's own, so
                a node with a client token needs no copy of it for the dashboard).
        """
        task = self._in_flight.get(authorization)
        if task is None:
            task = asyncio.ensure_future(self._poll_all(authorization))
            self._in_flight[authorization] = task
            task.add_done_callback(lambda _: self._in_flight.pop(authorization, None))
        # Shielded: one caller going away (a closed tab) must not cancel the others' poll.
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Cancel polls in flight and close the HTTP session. Idempotent."""
        for task in list(self._in_flight.values()):
            task.cancel()
        self._in_flight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _poll_all(self, authorization: str | None) -> list[PeerAnswer]:
        headers = {"Authorization": authorization} if authorization else {}
        return list(
            await asyncio.gather(
                *(self._poll_one(node_id, url, headers) for node_id, url in self.peer_urls.items())
            )
        )

    async def _poll_one(self, node_id: str, url: str, headers: Mapping[str, str]) -> PeerAnswer:
        session = self._get_session()
        now = self._clock or asyncio.get_running_loop().time
        started = now()
        status_rtt: list[float] = []

        async def status() -> Mapping[str, Any]:
            body = await _get_json(session, url + "/v1/status", headers)
            status_rtt.append((now() - started) * 1000.0)
            return body

        async def stats() -> Mapping[str, Any] | None:
            try:
                return await _get_json(session, url + "/v1/stats", headers)
            except PeerError:
                return None  # status alone still fills most of the row

        try:
            async with asyncio.timeout(self.timeout_s):
                # Both requests at once; a failed status or the timeout cancels stats too, so
                # no request outlives the poll.
                stats_task = asyncio.ensure_future(stats())
                try:
                    got_status = await status()
                except BaseException:
                    stats_task.cancel()
                    raise
                got_stats = await stats_task
        except TimeoutError:
            return PeerAnswer(node_id, url, None, None, None, f"no answer in {self.timeout_s:g} s")
        except PeerError as exc:
            return PeerAnswer(node_id, url, None, None, None, str(exc))
        return PeerAnswer(node_id, url, got_status, got_stats, status_rtt[0])

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=4 * max(len(self.peer_urls), 1),
                ssl=self._ssl_context if self._ssl_context is not None else True,
            )
            # No trust_env: a proxy from the environment must not sit between cluster nodes.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session


async def _get_json(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str]
) -> Mapping[str, Any]:
    """GET ``url`` and return its JSON object; every failure becomes a ``PeerError``."""
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status != 200:
                raise PeerError(f"HTTP {response.status} from {_path(url)}")
            body = await _read_bounded(response.content, MAX_BODY_BYTES + 1)
    except aiohttp.ClientConnectorError as exc:
        errno = exc.os_error.errno
        reason = os.strerror(errno).lower() if errno else type(exc.os_error).__name__
        raise PeerError(f"unreachable: {reason}") from None
    except aiohttp.ClientError as exc:
        raise PeerError(f"connection failed: {type(exc).__name__}") from None
    if len(body) > MAX_BODY_BYTES:
        raise PeerError(f"answer from {_path(url)} larger than {MAX_BODY_BYTES} bytes")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PeerError(f"invalid JSON from {_path(url)}") from None
    if not isinstance(decoded, dict):
        raise PeerError(f"{_path(url)} did not answer a JSON object")
    return decoded


async def _read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body (``read(n)`` alone may stop at a chunk boundary)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _path(url: str) -> str:
    # Errors name the endpoint, not the full URL: the host is already in the row.
    return "/" + url.split("/", 3)[-1]
