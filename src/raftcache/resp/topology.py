"""Who serves the hash slots, for the Redis Cluster commands and ``MOVED`` redirects.

Rule: in a cluster of one Raft group every slot belongs to that group and is served by its
leader; what the topology adds to the node's own view (voters, leader) is each voter's
advertised RESP addresses, read from the voter's ``/v1/status`` (``resp``) by a background poll
every ``refresh_s``. Lookups never wait: a voter not heard from yet is simply unknown, and so is
one whose status stopped advertising RESP (forgotten at once) or that failed ``DOWN_AFTER``
polls in a row (down until a poll succeeds again): it is left out of CLUSTER SLOTS and SHARDS
(NODES flags it ``fail``), and a redirect to it becomes ``CLUSTERDOWN``, after which clients
refresh their slots. Learners are never advertised: one being added is empty until its first
snapshot installs. An address is ``host:port`` with a port in 1..65535 and an IPv6 host
written as Redis writes it (``::1:7002``, no brackets); a member advertising anything else is
treated as advertising nothing. A node has one topology (one poller), shared by its RESP
listeners, and only when it has a cluster-mode port. The sharded store replaces the poll with
the cluster map (docs/sharding.md, step 4); the RESP commands read only this class's methods,
so they do not change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import aiohttp
import orjson

log = logging.getLogger("raftcache.resp")

#: Failed polls in a row after which a member counts as down.
DOWN_AFTER: Final = 3
#: The most of a member's ``/v1/status`` body a poll reads (a larger one is a failed poll).
MAX_STATUS_BYTES: Final = 64 * 1024
#: Timeout of one poll of a member's ``/v1/status``.
STATUS_TIMEOUT_S: Final = 1.0

# A host name or an IP literal (IPv6 with an optional zone): no spaces, brackets or '@'.
_HOST: Final = re.compile(r"[A-Za-z0-9._:%-]{1,253}")


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

    def peer_url(self, node_id: str) -> str | None: ...


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` as ``(host, port)``; an IPv6 host as Redis writes it (``::1:7002``) or in
    brackets (``[::1]:7002``). ``ValueError`` unless the host is a plausible host name or IP
    literal and the port is in 1..65535."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not _HOST.fullmatch(host) or not (port.isascii() and port.isdigit()):
        raise ValueError(f"not a host:port address: {address[:80]!r}")
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port out of range in {address[:80]!r}")
    return host, number


def join_address(host: str, port: int) -> str:
    """``host:port`` as Redis writes it: an IPv6 host without brackets (``::1:7002``), which
    is what ``MOVED`` carries and what Redis Cluster clients split at the last colon."""
    return f"{host}:{port}"


def _normal(address: object) -> str:
    """``address`` in Redis's form, or "" when it is not a valid ``host:port``."""
    if not isinstance(address, str) or not address:
        return ""
    try:
        return join_address(*split_address(address))
    except ValueError:
        return ""


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
        """What a member's ``/v1/status`` advertises (None: no RESP listener); an address
        that is not a valid ``host:port`` counts as none."""
        resp = status.get("resp")
        if not isinstance(resp, Mapping):
            return None
        return cls(_normal(resp.get("address")), _normal(resp.get("cluster_address")))


def cluster_node_id(node_id: str) -> str:
    """The 40-hex-digit id Redis Cluster clients expect for a member (stable per node id)."""
    return hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()


class HttpStatusFetcher:
    """``GET <url>/v1/status`` of a member over one HTTP session, parsed (None on any failure,
    a status other than 200, or a body over ``MAX_STATUS_BYTES``).

    Args:
        token: the client token to present, if any.
        ssl_context: TLS for ``https`` members (None: the default verification).
    """

    def __init__(self, *, token: str | None, ssl_context: ssl.SSLContext | None) -> None:
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, url: str) -> Mapping[str, Any] | None:
        if self._session is None:  # created in the running loop, on first use, then reused
            connector = aiohttp.TCPConnector(limit=20, ssl=self._ssl or True)
            self._session = aiohttp.ClientSession(connector=connector)
        timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)
        try:
            async with self._session.get(
                f"{url.rstrip('/')}/v1/status", headers=self._headers, timeout=timeout
            ) as answer:
                if answer.status != 200:
                    return None
                data = await answer.content.read(MAX_STATUS_BYTES + 1)
            body = orjson.loads(data) if len(data) <= MAX_STATUS_BYTES else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return body if isinstance(body, Mapping) else None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class Topology:
    """Voters, leader and advertised RESP endpoints (see the module docstring).

    Args:
        node: this node's Raft node.
        own: this node's advertised endpoints.
        fetch_status: ``GET <url>/v1/status`` of a member, parsed, or None on any failure.
        refresh_s: seconds between polls of the members' endpoints.
        on_stop: awaited by ``stop`` (closes what ``fetch_status`` holds).
    """

    def __init__(
        self,
        node: TopologyNode,
        own: Advertised,
        fetch_status: Callable[[str], Awaitable[Mapping[str, Any] | None]],
        *,
        refresh_s: float = 1.0,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.node = node
        self.own = own
        self._fetch = fetch_status
        self.refresh_s = refresh_s
        self._on_stop = on_stop
        self._known: dict[str, Advertised] = {node.node_id: own}
        self._failures: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def set_own(self, own: Advertised) -> None:
        """This node's endpoints (known once its listeners are bound)."""
        self.own = own
        self._known[self.node.node_id] = own

    def members(self) -> list[str]:
        """The voters, sorted (learners are never advertised)."""
        return list(self.node.members)

    def leader(self) -> str | None:
        return self.node.leader_id

    def advertised(self, node_id: str) -> Advertised | None:
        """What ``node_id`` advertised when last heard from (None: not heard from yet, or its
        status no longer advertises RESP)."""
        return self._known.get(node_id)

    def is_down(self, node_id: str) -> bool:
        """Whether the last ``DOWN_AFTER`` polls of ``node_id`` all failed."""
        return self._failures.get(node_id, 0) >= DOWN_AFTER

    def address_of(self, node_id: str) -> str | None:
        """Where a cluster client reaches ``node_id`` (None: unknown, or down)."""
        advertised = self._known.get(node_id)
        if advertised is None or not advertised.best or self.is_down(node_id):
            return None
        return advertised.best

    async def refresh(self) -> None:
        """Poll every other voter once (concurrently)."""
        me = self.node.node_id
        members = self.members()
        for gone in [m for m in self._known if m != me and m not in members]:
            del self._known[gone]
        for gone in [m for m in self._failures if m not in members]:
            del self._failures[gone]
        urls = {m: self.node.peer_url(m) for m in members if m != me}
        polled = [(m, url) for m, url in urls.items() if url is not None]
        results = await asyncio.gather(
            *(self._fetch(url) for _, url in polled), return_exceptions=True
        )
        for (member, _), result in zip(polled, results, strict=True):
            if not isinstance(result, Mapping):
                self._failures[member] = self._failures.get(member, 0) + 1
                continue
            self._failures[member] = 0
            advertised = Advertised.from_status(result)
            if advertised is None:
                self._known.pop(member, None)  # it closed its RESP listeners
            else:
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
        if self._on_stop is not None:
            await self._on_stop()

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # a poll is a hint: the next one tries again
                log.debug("RESP topology poll failed: %r", exc)
            await asyncio.sleep(self.refresh_s)
