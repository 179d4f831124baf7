"""How a leader learns which command formats the other nodes apply: it asks their ``/v1/status``.

Rule: every node reports ``command_format`` (the newest command format it applies) in
``/v1/status``; a node of a release before command formats reports nothing, which means 1. A
node that cannot be reached, answers an error, or answers something unreadable is reported as
None ("unknown"), which blocks raising the cluster's format (``raftcache.cache.upgrade``):
never guess in the direction that could put an entry in front of a node that cannot apply it.
Probes are rare (only while the cluster's format is below the leader's), so each opens its own
short-lived HTTP session.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

from raftcache.cache.formats import BASE_FORMAT

log = logging.getLogger("raftcache.server.format_probe")


class HttpFormatProbe:
    """``FormatProbe`` over HTTP (see the module docstring).

    Args:
        node: the local Raft node (its configuration's addresses).
        peer_urls: fallback base URLs by node id.
        token: the client token to present, if the API needs one.
        ssl_context: client TLS context for ``https`` peers.
        timeout_s: total timeout of one probe.
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
        self._peer_urls = dict(peer_urls or {})
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def url_of(self, node_id: str) -> str | None:
        configuration = getattr(self._node, "configuration", None)
        address = None if configuration is None else configuration.address_of(node_id)
        return address or self._peer_urls.get(node_id)

    async def __call__(self, node_id: str) -> int | None:
        url = self.url_of(node_id)
        if url is None:
            return None
        return await self.at(url)

    async def at(self, url: str) -> int | None:
        """The newest command format the node serving at ``url`` applies (None: unknown)."""
        connector = aiohttp.TCPConnector(ssl=self._ssl or True)
        async with aiohttp.ClientSession(connector=connector, timeout=self._timeout) as session:
            try:
                async with session.get(
                    url.rstrip("/") + "/v1/status", headers=self._headers
                ) as resp:
                    if resp.status != 200:
                        return None
                    status = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.debug("format probe of %s failed: %r", url, exc)
                return None
        found = status.get("command_format", BASE_FORMAT) if isinstance(status, dict) else None
        return found if type(found) is int and found >= BASE_FORMAT else None
