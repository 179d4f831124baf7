"""PeerProbe: one short HTTP request from this node to another node's API, as JSON.

Rule: a probe never raises for what the other side did — unreachable, an error status, a body
that is not JSON all read as None ("unknown"), and the caller decides what unknown means (the
format gate never raises the format on it, the divergence check never names a replica on it).
Probes are rare, so each opens its own short-lived session. The peer's URL comes from the
replicated configuration first, then from this node's own routes (``--peers``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from raftcache.network.groups import shared_urls

log = logging.getLogger("raftcache.server.peer_probe")


class PeerProbe:
    """Base of the HTTP probes a node sends its peers.

    Args:
        node: the local Raft node (its configuration's addresses).
        peer_urls: fallback base URLs by node id.
        token: the token to present (``Authorization: Bearer``), if the route needs one.
        ssl_context: client TLS context for ``https`` peers.
        timeout_s: total timeout of one request.
    """

    def __init__(
        self,
        node: Any,
        *,
        peer_urls: Mapping[str, str] | None = None,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self._node = node
        self._peer_urls = shared_urls(peer_urls)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def url_of(self, node_id: str) -> str | None:
        configuration = getattr(self._node, "configuration", None)
        address = None if configuration is None else configuration.address_of(node_id)
        fallback: str | None = self._peer_urls.get(node_id)
        return address or fallback

    async def fetch_json(self, method: str, url: str, path: str) -> Any:
        """The JSON body of ``method url+path`` when it answers 200 or 202; else None."""
        connector = aiohttp.TCPConnector(ssl=self._ssl or True)
        async with aiohttp.ClientSession(connector=connector, timeout=self._timeout) as session:
            try:
                async with session.request(
                    method, url.rstrip("/") + path, headers=self._headers
                ) as resp:
                    if resp.status not in (200, 202):
                        log.debug("%s %s%s: HTTP %s", method, url, path, resp.status)
                        return None
                    return await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("%s %s%s failed: %r", method, url, path, exc)
                return None
