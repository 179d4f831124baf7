"""Who serves the hash slots, for the Redis Cluster commands and ``MOVED`` redirects.

Rule: in a cluster of one Raft group every slot belongs to that group and is served by its
leader; what the topology adds to the node's own view (members, leader) is each member's
advertised RESP addresses, read from the member's ``/v1/status`` (``resp``) by a background
poll every ``refresh_s``. Lookups never wait: a member not heard from yet is simply unknown (a
redirect to it becomes ``CLUSTERDOWN`` until the next poll, and clients retry). The sharded
store replaces the poll with the cluster map (docs/sharding.md, step 4); the RESP commands read
only this class's methods, so they do not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("raftcache.resp")


class TopologyNode(Protocol):
    """The parts of ``RaftNode`` the topology reads."""

    @property
    def node_id(self) -> str: ...

    @property
    def leader_id(self) -> str | None: ...

    @property
    def current_term(self) -> int: ...

    @property
    def last_applied(self) -> int: ...

    @property
    def members(self) -> list[str]: ...

    @property
    def learners(self) -> list[str]: ...

    def peer_url(self, node_id: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Advertised:
    """A member's RESP endpoints as ``host:port`` ("" when it has none)."""

    address: str = ""
    cluster_address: str = ""

    @property
    def best(self) -> str:
        """Where a cluster client should go: the cluster-mode port, else the plain one."""
        return self.cluster_address or self.address

    def to_json(self) -> dict[str, str]:
        return {"address": self.address, "cluster_address": self.cluster_address}

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Advertised | None:
        resp = status.get("resp")
        if not isinstance(resp, Mapping):
            return None
        address, cluster = resp.get("address", ""), resp.get("cluster_address", "")
        if not isinstance(address, str) or not isinstance(cluster, str):
            return None
        return cls(address, cluster)


def cluster_node_id(node_id: str) -> str:
    """The 40-hex-digit id Redis Cluster clients expect for a member (stable per node id)."""
    return hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as ``(host, port)``."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Topology:
    """Members, leader and advertised RESP endpoints (see the module docstring).

    Args:
        node: this node's Raft node.
        own: this node's advertised endpoints.
        fetch_status: ``GET <url>/v1/status`` of a member, parsed, or None on any failure.
        refresh_s: seconds between polls of the members' endpoints.
    """

    def __init__(
        self,
        node: TopologyNode,
        own: Advertised,
        fetch_status: Callable[[str], Awaitable[Mapping[str, Any] | None]],
        *,
        refresh_s: float = 1.0,
    ) -> None:
        self.node = node
        self.own = own
        self._fetch = fetch_status
        self.refresh_s = refresh_s
        self._known: dict[str, Advertised] = {node.node_id: own}
        self._task: asyncio.Task[None] | None = None

    def set_own(self, own: Advertised) -> None:
        """This node's endpoints (known once its listeners are bound)."""
        self.own = own
        self._known[self.node.node_id] = own

    def members(self) -> list[str]:
        """Voters then learners, each sorted."""
        return list(self.node.members) + list(self.node.learners)

    def leader(self) -> str | None:
        return self.node.leader_id

    def advertised(self, node_id: str) -> Advertised | None:
        """What ``node_id`` advertised when last polled (None: not heard from yet)."""
        return self._known.get(node_id)

    async def refresh(self) -> None:
        """Poll every other member once (concurrently)."""
        me = self.node.node_id
        others = [m for m in self.members() if m != me]
        urls = {m: self.node.peer_url(m) for m in others}
        results = await asyncio.gather(
            *(self._fetch(url) for url in urls.values() if url is not None),
            return_exceptions=True,
        )
        polled = [m for m, url in urls.items() if url is not None]
        for member, result in zip(polled, results, strict=True):
            if isinstance(result, Mapping):
                advertised = Advertised.from_status(result)
                if advertised is not None:
                    self._known[member] = advertised

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a poll is a hint: the next one tries again
                log.debug("RESP topology poll failed: %r", exc)
            await asyncio.sleep(self.refresh_s)
