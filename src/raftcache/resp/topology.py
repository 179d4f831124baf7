"""Who serves the hash slots, for the Redis Cluster commands and ``MOVED`` redirects.

Rule: in a cluster of one Raft group every slot belongs to that group and is served by its
leader; what the topology adds to the node's own view (voters, leader) is each voter's
advertised RESP addresses, read from the voter's ``/v1/status`` (``resp``) by a background poll
every ``refresh_s``, each member's answer taken as it comes. Lookups never wait: a voter not
heard from yet is simply unknown, and so is one whose status stopped advertising RESP (forgotten
at once) or that failed ``DOWN_AFTER`` polls in a row (down until a poll succeeds again): it is
left out of CLUSTER SLOTS and SHARDS (NODES flags it ``fail``), and a redirect to it becomes
``CLUSTERDOWN``, after which clients refresh their slots. Only the commands that list the
members (CLUSTER SLOTS, SHARDS, NODES, INFO) wait, through ``settle``, and only while a member
the poller reaches has never answered and is not down — before the first poll of the current
members is over, say — or, on a sharded store, while a group held elsewhere has no leader the
last poll heard of (that poll may have come before its election; such a wait starts at most one
poll every ``LEADERLESS_REPOLL_S``): for a poll (the one under way, or an extra one started at
once, whose failures do not count towards down) to end, at most ``STATUS_TIMEOUT_S``
(``settle_s``); then they answer from what is known. A client given one node right after the
start so learns every member, and can still find the others once that node is gone; ``MOVED``
and key routing never wait. Learners are never advertised: one being added is empty until its
first snapshot installs. An address is ``host:port`` with a port in 1..65535 and an IPv6 host
written as Redis writes it (``::1:7002``, no brackets); a member advertising anything else is
treated as advertising nothing. A node with a RESP listener has one topology (one poller),
shared by its listeners: the cluster commands read it only when the node has a cluster-mode
port, ROLE, INFO replication and SENTINEL always (``Endpoint``, ``endpoint``: a member where
Redis clients reach it, down or not). The RESP commands read only this class's methods —
``shard_of`` and ``shards`` above all: each data group's slot range, leader and replicas — so
they do not change with the number of groups.

A sharded store's topology (``StoreTopology``, made by ``store_topology``) describes one shard
per data group: a group this store hosts from its own replica (leader, voters, applied index),
a group held elsewhere from what the stores that host it report in their ``/v1/status``
(``groups``: ``{"group", "hosted", "leader", "members", "term"?}`` — the report of the highest
term wins, then a store's claim to lead it, then any). The poll covers every store of the
placement and reads their RESP endpoints as before. Leaders and voters are named by their
store (a replica id ``<store>.<n>`` of a moved replica is ``store_of``'d), and both follow the
store's replicas as they move: its own from the replica it hosts now, a group it stopped
hosting from what the last poll heard of it, the placement's stores as they are now.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import aiohttp
import orjson

from raftcache.network.groups import shared_urls, store_of
from raftcache.slots import SLOTS, group_range, slot_group

if TYPE_CHECKING:
    from raftcache.store import Store

log = logging.getLogger("raftcache.resp")

#: Failed polls in a row after which a member counts as down.
DOWN_AFTER: Final = 3
#: The most of a member's ``/v1/status`` body a poll reads (a larger one is a failed poll).
MAX_STATUS_BYTES: Final = 64 * 1024
#: Timeout of one poll of a member's ``/v1/status``.
STATUS_TIMEOUT_S: Final = 1.0
#: The least time between the starts of two polls asked for by cluster commands because a group
#: held elsewhere has no known leader: while a group stays leaderless (its quorum lost), clients
#: refreshing their slots after each CLUSTERDOWN would otherwise poll every store back to back.
LEADERLESS_REPOLL_S: Final = 0.25

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


@dataclass(frozen=True, slots=True)
class Shard:
    """One data group as the cluster commands see it: its slots ``first``..``last``, the member
    leading it (None: unknown), its voters, whether this node holds a voting replica of it
    (READONLY reads are served here then; not by a learner still catching up) and this node's
    applied index in it (0 when it holds none that votes)."""

    group: str
    first: int
    last: int
    leader: str | None
    members: tuple[str, ...]
    hosted: bool = True
    applied: int = 0


def cluster_node_id(node_id: str) -> str:
    """The 40-hex-digit id Redis Cluster clients expect for a member (stable per node id)."""
    return hashlib.sha1(node_id.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A member where Redis clients reach it: ``down`` when its last polls all failed."""

    node_id: str
    host: str
    port: int
    down: bool = False


def endpoint(
    peers: Topology | None, node_id: str | None, *, clustered: bool = False
) -> Endpoint | None:
    """Where Redis clients reach ``node_id``: its plain RESP port, or on a cluster-mode port
    its cluster-mode one (else its plain one). None when unknown."""
    if peers is None or node_id is None:
        return None
    advertised = peers.advertised(node_id)
    if advertised is None:
        return None
    address = advertised.best if clustered else advertised.address
    if not address:
        return None
    try:
        host, port = split_address(address)
    except ValueError:
        return None
    return Endpoint(node_id, host, port, peers.is_down(node_id))


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
        #: The longest the cluster commands wait for a poll (``settle``).
        self.settle_s = STATUS_TIMEOUT_S
        self._on_stop = on_stop
        self._known: dict[str, Advertised] = {node.node_id: own}
        self._failures: dict[str, int] = {}
        self._answered: set[str] = set()  # members a poll has read a status from
        self._task: asyncio.Task[None] | None = None
        self._next: asyncio.Future[None] | None = None  # the poll under way, or the next one
        self._wake = asyncio.Event()  # set: start the next poll now
        self._polling = False  # a poll is under way
        self._repolled = float("-inf")  # loop time a command last asked one for a leader

    def set_own(self, own: Advertised) -> None:
        """This node's endpoints (known once its listeners are bound)."""
        self.own = own
        self._known[self.node.node_id] = own

    def members(self) -> list[str]:
        """The voters, sorted (learners are never advertised)."""
        return list(self.node.members)

    def leader(self) -> str | None:
        return self.node.leader_id

    def shard_of(self, slot: int) -> Shard:
        """The shard serving ``slot``: with one group, the whole keyspace."""
        return Shard(
            "", 0, SLOTS - 1, self.leader(), tuple(self.members()), True, self.node.last_applied
        )

    def shards(self) -> list[Shard]:
        """Every shard, in slot order."""
        return [self.shard_of(0)]

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

    async def refresh(self, *, extra: bool = False) -> None:
        """Poll every other voter once (concurrently), taking each answer as it comes: one
        slow member does not hold back what the others say. ``extra``: a poll ``settle`` asked
        for between the scheduled ones, whose failures are not counted — a member is down
        after ``DOWN_AFTER`` failed polls at the poller's pace, however often clients ask."""
        me = self.node.node_id
        members = self.members()
        for gone in [m for m in self._known if m != me and m not in members]:
            del self._known[gone]
        for gone in [m for m in self._failures if m not in members]:
            del self._failures[gone]
        self._answered.intersection_update(members)
        urls = {m: self.node.peer_url(m) for m in members if m != me}
        await asyncio.gather(*(self._poll_one(m, url, extra) for m, url in urls.items() if url))
        self._polled(members)

    async def _poll_one(self, member: str, url: str, extra: bool) -> None:
        try:
            result = await self._fetch(url)
        except Exception:  # a poll is a hint: a failed one
            result = None
        if not isinstance(result, Mapping):
            if not extra:
                self._failures[member] = self._failures.get(member, 0) + 1
        else:
            self._failures[member] = 0
            self._answered.add(member)
            advertised = Advertised.from_status(result)
            if advertised is None:
                self._known.pop(member, None)  # it closed its RESP listeners
            else:
                self._known[member] = advertised
            self._heard(member, result)

    def _heard(self, member: str, status: Mapping[str, Any]) -> None:
        """A member's status, as a poll read it (for what a subclass learns from it)."""

    def _polled(self, members: Sequence[str]) -> None:
        """A poll of ``members`` is over (a subclass recomputes what it derives)."""

    def settle(self) -> Awaitable[None] | None:
        """For the commands that list the members: None when no poll is awaited, else the
        wait for one (the poll under way, or one started now), at most ``settle_s`` — while
        the poller runs and a member it polls has never answered and is not down (see the
        module docstring). Never for a lookup: ``shard_of``, ``address_of`` never wait."""
        if self._task is None or self._next is None:
            return None
        if not self._unanswered():
            if not self._unknown_leaders() or not self._may_repoll():
                return None
            self._repolled = asyncio.get_running_loop().time()
        self._wake.set()  # between polls: the next one starts now (during one: nothing)
        return _bounded(self._next, self.settle_s)

    def _unanswered(self) -> bool:
        """Whether a member other than this node, that a poll reaches (it has a URL), has
        never answered one and is not down: a poll may yet add it to the cluster commands."""
        me = self.node.node_id
        return any(
            m != me
            and m not in self._answered
            and not self.is_down(m)
            and self.node.peer_url(m) is not None
            for m in self.members()
        )

    def _unknown_leaders(self) -> bool:
        """Whether a shard whose leader only a poll can tell has none known (a subclass's):
        the last poll may have come before that election."""
        return False

    def _may_repoll(self) -> bool:
        """A poll is under way (waiting for it costs nothing more), or no command asked for
        one for an unknown leader within ``LEADERLESS_REPOLL_S``."""
        loop = asyncio.get_running_loop()
        return self._polling or loop.time() - self._repolled >= LEADERLESS_REPOLL_S

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._next, self._wake = loop.create_future(), asyncio.Event()  # of this loop
            self._task = loop.create_task(self._poll())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._on_stop is not None:
            await self._on_stop()

    async def _poll(self) -> None:
        """A poll every ``refresh_s`` (from the end of the last scheduled one), and an extra
        one whenever ``settle`` asks in between (which leaves the schedule as it is)."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            done = self._next
            extra = loop.time() < due
            self._polling = True
            try:
                await self.refresh(extra=extra)
            except Exception as exc:  # a poll is a hint: the next one tries again
                log.debug("RESP topology poll failed: %r", exc)
            finally:  # (cancelled too: no one waits for a poll that will not come)
                self._polling = False
                self._wake.clear()  # a wake asked for during this poll: this poll was it
                self._next = loop.create_future()
                if done is not None and not done.done():
                    done.set_result(None)
            if not extra:
                due = loop.time() + self.refresh_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - loop.time()))


async def _bounded(poll: asyncio.Future[None], timeout_s: float) -> None:
    """Until ``poll`` ends, at most ``timeout_s`` (it goes on either way)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(poll), timeout_s)


@dataclass(frozen=True, slots=True)
class _Report:
    """What one store said of a group it hosts."""

    leader: str | None
    members: tuple[str, ...]
    term: int


def _report(entry: object) -> tuple[str, _Report] | None:
    """(group, report) of one entry of a status's ``groups``; None unless the reporter hosts
    the group and the entry is well formed."""
    if not isinstance(entry, Mapping) or entry.get("hosted") is not True:
        return None
    group, leader, members = entry.get("group"), entry.get("leader"), entry.get("members")
    if not isinstance(group, str) or not (leader is None or isinstance(leader, str)):
        return None
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        members = []
    term = entry.get("term")
    return group, _Report(leader, tuple(members), term if type(term) is int else -1)


class _StoreNode:
    """A store as the topology's "node": its id, the stores of the placement as members, and
    the highest term of its groups as the cluster's epoch."""

    def __init__(self, store: Store, peer_urls: Mapping[str, str]) -> None:
        self._store = store
        self._peer_urls = shared_urls(peer_urls)
        self.node_id = store.store_id

    @property
    def members(self) -> list[str]:
        """The stores of the placement as it is now (replicas move), sorted."""
        return sorted({s for stores in self._store.placement.values() for s in stores})

    @property
    def leader_id(self) -> str | None:
        return None  # one per group: ``StoreTopology.shard_of``

    @property
    def current_term(self) -> int:
        return max((r.node.current_term for r in self._store.replicas.values()), default=0)

    @property
    def last_applied(self) -> int:
        return 0

    def peer_url(self, node_id: str) -> str | None:
        url = self._peer_urls.get(node_id)
        for replica in self._store.replicas.values():
            if url:
                break
            url = replica.node.peer_url(node_id)
        return url or None


class StoreTopology(Topology):
    """The shards of a sharded store: one per data group (see the module docstring).

    Args:
        store: the store (``raftcache.store.Store``).
        own: this store's advertised endpoints.
        fetch_status: ``GET <url>/v1/status`` of a store, parsed, or None on any failure.
        peer_urls: store id → base URL (else what the hosted groups' nodes know).
        refresh_s: seconds between polls of the stores.
        on_stop: awaited by ``stop``.
    """

    def __init__(
        self,
        store: Store,
        own: Advertised,
        fetch_status: Callable[[str], Awaitable[Mapping[str, Any] | None]],
        *,
        peer_urls: Mapping[str, str] | None = None,
        refresh_s: float = 1.0,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        super().__init__(
            _StoreNode(store, peer_urls or {}),
            own,
            fetch_status,
            refresh_s=refresh_s,
            on_stop=on_stop,
        )
        self._groups = store.group_ids()
        self._reports: dict[str, dict[str, _Report]] = {}  # store → group → its report
        self._remote: dict[str, tuple[str | None, tuple[str, ...]]] = {}  # group → leader, voters

    def members(self) -> list[str]:
        """Every store of the placement, sorted."""
        return list(self.node.members)

    def leader(self) -> str | None:
        return None  # one per group: ``shard_of``

    def shard_of(self, slot: int) -> Shard:
        store = self.store
        index = slot_group(slot, store.groups)
        return self._shard(index, self._groups[index])

    def shards(self) -> list[Shard]:
        return [self._shard(index, gid) for index, gid in enumerate(self._groups)]

    def _shard(self, index: int, gid: str) -> Shard:
        slots = group_range(index, self.store.groups)
        first, last = slots.start, slots.stop - 1
        replica = self.store.replicas.get(gid)
        # Only a voter counts as hosted here: a replica still being filled for a move (not yet
        # among its configuration's voters) may be far behind, and may not know the leader —
        # the group is described as the stores that hold it report it, as one held elsewhere.
        if replica is not None and replica.node.node_id in replica.node.members:
            # Replica ids name their store (``<store>`` or ``<store>.<n>``): shards list stores.
            node = replica.node
            leader = None if node.leader_id is None else store_of(node.leader_id)
            members = tuple(store_of(m) for m in node.members)
            return Shard(gid, first, last, leader, members, True, node.last_applied)
        stores = self.store.placement[gid]
        found = self._remote.get(gid)
        if found is None:  # hosted here at the last poll: what that poll heard of it
            found = self._remote[gid] = self._described(gid, stores)
        leader, members = found
        return Shard(gid, first, last, leader, members or stores, False, 0)

    def _unknown_leaders(self) -> bool:
        """A group held elsewhere whose leader the last poll did not hear of (``_remote``:
        what that poll made of every group without a voter here)."""
        return any(leader is None for leader, _ in self._remote.values())

    def _heard(self, member: str, status: Mapping[str, Any]) -> None:
        groups = status.get("groups")
        reports: dict[str, _Report] = {}
        if isinstance(groups, list):
            for entry in groups:
                found = _report(entry)
                if found is not None:
                    reports[found[0]] = found[1]
        self._reports[member] = reports

    def _polled(self, members: Sequence[str]) -> None:
        for gone in [m for m in self._reports if m not in members]:
            del self._reports[gone]
        self._remote = {
            gid: self._described(gid, stores)
            for gid, stores in self.store.placement.items()
            if not self._votes_here(gid)
        }

    def _votes_here(self, gid: str) -> bool:
        replica = self.store.replicas.get(gid)
        return replica is not None and replica.node.node_id in replica.node.members

    def _described(self, gid: str, stores: Sequence[str]) -> tuple[str | None, tuple[str, ...]]:
        """A group held elsewhere as the stores hosting it reported it: its leader and voters
        (as store ids: a replica id ``<store>.<n>`` names its store), the voters as the report
        that named the leader has them (the leader's own, when it reported: the newest
        configuration), else as any report has them."""
        best: tuple[int, bool] | None = None
        leader: str | None = None
        voters: tuple[str, ...] = ()
        for reporter, reports in self._reports.items():
            report = reports.get(gid)
            if report is None or self.is_down(reporter):
                continue
            members = tuple(store_of(m) for m in report.members)
            said = None if report.leader is None else store_of(report.leader)
            if said is None or said not in (members or stores):
                if best is None:
                    voters = voters or members
                continue
            rank = (report.term, said == reporter)
            if best is None or rank > best:
                best, leader, voters = rank, said, members or voters
        return leader, voters


def store_topology(
    store: Store,
    own: Advertised,
    fetch_status: Callable[[str], Awaitable[Mapping[str, Any] | None]],
    *,
    peer_urls: Mapping[str, str] | None = None,
    refresh_s: float = 1.0,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> StoreTopology:
    """The topology of a sharded store's RESP listeners (pass it to ``start_resp_server`` as
    ``topology``, with ``store``): one shard per data group (``StoreTopology``)."""
    return StoreTopology(
        store, own, fetch_status, peer_urls=peer_urls, refresh_s=refresh_s, on_stop=on_stop
    )
