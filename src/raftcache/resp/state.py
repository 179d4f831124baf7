"""State shared by the connections of one RESP server, and the state of one connection.

Rule: nothing here is global — two RESP servers in one process (two nodes in a test) share
nothing. Server state is touched only from the event loop, so it needs no locks; what grows
with clients (the SCAN cursor table, the client list) is bounded or removed on disconnect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from raftcache.resp.args import Limits
from raftcache.resp.backend import CallRouter, NodePort, ServiceView
from raftcache.resp.calls import Call
from raftcache.resp.coalesce import ReadPort, WritePort
from raftcache.resp.protocol import RespError
from raftcache.resp.subscriptions import PubSubHub
from raftcache.resp.topology import Endpoint, Topology

if TYPE_CHECKING:
    from raftcache.store import Store

MAX_CURSORS: Final = 65_536


class CursorTable:
    """SCAN cursors: small integers standing for "continue after this key" (of this shard).

    Redis cursors are integers (redis-py parses them with ``int``) while the cache pages by
    key, so the server remembers the key behind each cursor it hands out — the newest
    ``capacity`` of them; an older cursor is refused, and the client starts over. On a sharded
    store a cursor also remembers which group the scan is in (``shard``, the group's position
    in slot order; ``after`` None: that group from its start); with one group it is always 0.
    """

    def __init__(self, capacity: int = MAX_CURSORS) -> None:
        self._capacity = capacity
        self._after: OrderedDict[int, tuple[int, str | None]] = OrderedDict()
        self._ids = itertools.count(1)

    def issue(self, after: str | None, shard: int = 0) -> int:
        """A new cursor for "keys of ``shard`` after ``after``"."""
        cursor = next(self._ids)
        self._after[cursor] = (shard, after)
        if len(self._after) > self._capacity:
            self._after.popitem(last=False)
        return cursor

    def resolve_shard(self, cursor: int) -> tuple[int, str | None]:
        """The shard a cursor is in and the key it continues after ((0, None) for 0)."""
        if cursor == 0:
            return 0, None
        found = self._after.get(cursor)
        if found is None:
            raise RespError("ERR invalid cursor")
        return found


@dataclass(eq=False)
class ServerState:
    """What every connection of one server shares."""

    node: NodePort
    service: ServiceView
    router: CallRouter
    reads: ReadPort
    writes: WritePort
    clock: Callable[[], float]
    limits: Limits
    client_token: str | None
    client_token_ro: str | None
    read_consistency: str
    started_at: float  # loop time when the server started (for INFO uptime)
    commands: dict[str, Any] = field(default_factory=dict)  # name → Spec (see commands.py)
    #: Who serves the slots (None: CLUSTER SLOTS and friends answer "cluster support
    #: disabled"); ``cluster_mode``: redirect keyed commands (``raftcache.resp.cluster``).
    topology: Topology | None = None
    cluster_mode: bool = False
    #: The members' advertised RESP endpoints (the node's one topology, whether or not it has
    #: a cluster-mode port): ROLE, INFO replication and SENTINEL name the leader and replicas
    #: by them (None: unknown, as in a server built without one). ``sentinel_name``: the one
    #: service the SENTINEL commands answer for (``raftcache.resp.sentinel``).
    peers: Topology | None = None
    sentinel_name: str = "raftcache"
    #: This server's pub/sub subscriptions (``raftcache.resp.pubsub``; None: no pub/sub).
    pubsub: PubSubHub | None = None
    #: The last master SENTINEL found (a leader with a known address): what it reports,
    #: flagged down, while no leader is known, as a Sentinel keeps naming a failed master.
    sentinel_master: Endpoint | None = None
    #: The sharded store this server fronts (None: one group, ``node``'s), and the groups
    #: whole-keyspace commands (SCAN, KEYS, DBSIZE, FLUSHDB) go through one by one, in slot
    #: order: their ids and routers — every group on a plain port, the groups the store hosts
    #: on a cluster-mode port (a cluster node answers for its own keys); with one group
    #: ``[""]`` and ``[router]``.
    store: Store | None = None
    shards: list[CallRouter] = field(default_factory=list)
    shard_ids: list[str] = field(default_factory=list)
    cursors: CursorTable = field(default_factory=CursorTable)
    clients: dict[int, ClientState] = field(default_factory=dict)
    client_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    connections_total: int = 0
    commands_total: int = 0
    rejected_total: int = 0


class ClientLink(Protocol):
    """How pub/sub reaches one connection's transport."""

    def push(self, data: bytes) -> None: ...

    def pending_output(self) -> int: ...

    def abort(self) -> None: ...


@dataclass(eq=False)
class ClientState:
    """One connection: protocol version, authentication, name, read mode, MULTI queue."""

    server: ServerState
    id: int
    addr: str
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    proto: int = 2
    authenticated: bool = False
    read_only: bool = False  # authenticated with the read-only token
    name: str | None = None
    lib_name: str | None = None
    lib_ver: str | None = None
    consistency: str = "linearizable"
    #: CLIENT NO-TOUCH ON: this connection's reads leave the keys' recency alone.
    no_touch: bool = False
    in_multi: bool = False
    queue: list[Call] = field(default_factory=list)
    multi_failed: bool = False
    closing: bool = False
    commands_total: int = 0
    #: Pub/sub: channel (pattern) → the commit index when it was subscribed, and how the hub
    #: reaches the connection (set by it: ``raftcache.resp.server.RespConnection``).
    channels: dict[bytes, int] = field(default_factory=dict)
    patterns: dict[bytes, int] = field(default_factory=dict)
    link: ClientLink | None = None

    @property
    def subscribed(self) -> bool:
        """Whether the connection holds any subscription (RESP2: subscribed mode)."""
        return bool(self.channels or self.patterns)

    def push(self, data: bytes) -> None:
        """Send a pub/sub message (encoded) to the client."""
        if self.link is not None:
            self.link.push(data)

    def pending_output(self) -> int:
        """Bytes written to the client not yet sent, or held for it."""
        return 0 if self.link is None else self.link.pending_output()

    def close_connection(self) -> None:
        """Drop the connection (its unsent output with it)."""
        if self.link is not None:
            self.link.abort()

    def reset_multi(self) -> None:
        """Leave MULTI, dropping what was queued."""
        self.in_multi = False
        self.queue = []
        self.multi_failed = False
