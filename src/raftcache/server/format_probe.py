"""How a leader learns which command versions the other nodes apply: it asks their ``/v1/status``.

Rule: every node reports ``command_format`` (the newest command version it applies) in
``/v1/status``; a node of a release before command versions reports nothing, which means 1. A
node that cannot be reached, answers an error, or answers something unreadable is reported as
None ("unknown"), which blocks raising the cluster's version (``raftcache.cache.upgrade``):
never guess in the direction that could put an entry in front of a node that cannot apply it.
Probes are rare (only while the cluster's version is below the leader's), so each opens its own
short-lived HTTP session.
"""

from __future__ import annotations

from raftcache.cache.formats import BASE_COMMAND_VERSION, CommandVersion
from raftcache.server.peer_probe import PeerProbe


class HttpCommandVersionProbe(PeerProbe):
    """``CommandVersionProbe`` over HTTP (see the module docstring); ``token``: the client token, if
    the API needs one."""

    async def __call__(self, node_id: str) -> CommandVersion | None:
        url = self.url_of(node_id)
        if url is None:
            return None
        return await self.at(url)

    async def at(self, url: str) -> CommandVersion | None:
        """The newest command version the node serving at ``url`` applies (None: unknown)."""
        status = await self.fetch_json("GET", url, "/v1/status")
        found = (
            status.get("command_format", BASE_COMMAND_VERSION) if isinstance(status, dict) else None
        )
        return found if type(found) is int and found >= BASE_COMMAND_VERSION else None


#: Its earlier name, kept working.
HttpFormatProbe = HttpCommandVersionProbe
