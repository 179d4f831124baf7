"""``RespServer``: the Redis protocol on a TCP port, over a node's ``CacheService``.

Rule: one asyncio ``Protocol`` per connection. Every read is parsed at once into all the
commands it completes; they run in order (``Executor``) and all their replies leave in one
write. One task per connection runs commands, so a slow command never blocks other clients,
and a connection whose client does not read its replies stops being read (bounded memory):
reading pauses while the transport's write buffer is over its high-water mark or too many
commands wait. A protocol error answers ``-ERR Protocol error: ...`` and closes the connection;
nothing a client sends can raise out of the protocol callbacks. Pub/sub messages
(``raftcache.resp.pubsub``) reach a subscribed connection as the node applies them — written at
once, or after the replies of the batch it is running — and a connection whose unsent output
passes the pub/sub limit is aborted.

Lifecycle: ``start()`` listens; ``stop()`` stops accepting, lets running commands finish for up
to ``shutdown_timeout_s``, then closes every connection and the HTTP session used to forward to
the leader. The server does not own the node or the service: whoever created them stops them.

On a sharded store (``store=``) the same server runs every command against its keys' data
group (``raftcache.resp.shards``): a group hosted here through its replica, or its leader
store over HTTP; a group held elsewhere through one of its stores over HTTP. Whole-keyspace
commands (SCAN, KEYS, DBSIZE, FLUSHDB) cover every group on the plain port, and on a
cluster-mode port the groups the store hosts — a cluster node answers for its own keys, and
cluster clients send these to every node (or every master) and merge. ``service`` and
``node`` are then those of one hosted group (any; None takes the first): ``node`` names the
store in HELLO and gives INFO its ``raft`` section, and nothing runs on them alone. The
server follows the store's replicas as they move (``Store.on_change``): the changed group gets
a new router (``ShardedRouter.replace``), the next operation of its keys takes it, and the
operations running on the old one finish there or, stopped with a removed replica, on the new.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

import aiohttp

from raftcache.network.groups import shared_urls
from raftcache.network.listener import close_listener
from raftcache.resp.args import Limits
from raftcache.resp.backend import (
    Backend,
    CallRouter,
    LocalBackend,
    NodePort,
    ReplicaPort,
    Router,
    ServicePort,
    ServiceView,
)
from raftcache.resp.coalesce import ReadGroups, ReadPort, WriteGroups, WritePort
from raftcache.resp.commands import TABLE
from raftcache.resp.connection import Executor
from raftcache.resp.leader import GroupScope, LeaderBackend
from raftcache.resp.protocol import RespError, RespParser, encode
from raftcache.resp.shards import (
    LiveRemoteGroup,
    RemoteRouter,
    ReplicaRouter,
    ShardedReads,
    ShardedRouter,
    ShardedWrites,
    StoreFace,
    StoreView,
)
from raftcache.resp.state import ClientState, ServerState
from raftcache.resp.subscriptions import OUTPUT_LIMIT, PubSubHub
from raftcache.resp.topology import Topology
from raftcache.vocabulary import CONSISTENCY_LEVELS

if TYPE_CHECKING:
    from raftcache.store import Store

#: Makes the backend of one group's leader store: (group id, the store's base URL) → backend.
GroupBackendFactory = Callable[[str, str], Backend]

log = logging.getLogger("raftcache.resp")

MAX_PENDING_COMMANDS: Final = 65_536  # parsed but not yet run, per connection


class RespConnection(asyncio.Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, server: RespServer) -> None:
        self._server = server
        self._state = server.state
        self._transport: asyncio.Transport | None = None
        self._parser = RespParser(
            max_bulk_bytes=server.max_bulk_bytes, max_buffer_bytes=server.max_buffer_bytes
        )
        self._pending: list[list[bytes]] = []
        self._pending_bytes = 0  # bytes received for the commands in ``_pending``
        self._task: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False
        self._closed = False
        self.client: ClientState | None = None
        self._executor: Executor | None = None
        # Pub/sub messages held while the connection runs a batch (sent after its replies).
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (which does not subclass asyncio.Transport).
        self._transport = stream = cast(asyncio.Transport, transport)
        state = self._state
        state.connections_total += 1
        if len(state.clients) >= self._server.max_clients:
            state.rejected_total += 1
            stream.write(b"-ERR max number of clients reached\r\n")
            stream.close()
            self._closed = True
            return
        peer = transport.get_extra_info("peername")
        addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        client = ClientState(state, next(state.client_ids), addr)
        client.authenticated = state.client_token is None and state.client_token_ro is None
        client.consistency = state.read_consistency
        client.link = self
        state.clients[client.id] = client
        self.client = client
        self._executor = Executor(client)
        self._server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        commands = self._parser.feed(data)
        if commands:
            self._pending += commands
        self._pending_bytes += len(data)
        if (
            self._parser.error is not None
            or len(self._pending) > MAX_PENDING_COMMANDS
            or self._pending_bytes > self._server.max_buffer_bytes
        ):
            self._pause()  # until the commands waiting have run and their replies are written
        if self._task is None and (self._pending or self._parser.error is not None):
            self._task = asyncio.get_running_loop().create_task(self._serve())

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    async def _serve(self) -> None:
        client, executor, transport = self.client, self._executor, self._transport
        assert client is not None
        assert executor is not None
        assert transport is not None
        try:
            while self._pending and not self._closed:
                batch, self._pending = self._pending, []
                self._pending_bytes = 0
                out: list[bytes] = []
                self._held = []
                try:
                    await executor.execute(batch, out)
                finally:
                    held, self._held = self._held, None
                    self._held_bytes = 0
                out += held  # the messages that arrived meanwhile: after the replies
                if out and not self._closed:
                    transport.write(b"".join(out))
                if client.closing:
                    break
                await self._writable.wait()
                if self._paused and self._parser.error is None and not self._closed:
                    self._paused = False
                    transport.resume_reading()
            self._finish(client)
        except Exception:  # a bug; the connection is lost, the server keeps serving
            log.exception("RESP connection %s failed", client.id)
            transport.abort()
        finally:
            self._task = None

    def _finish(self, client: ClientState) -> None:
        transport = self._transport
        if self._closed or transport is None:
            return
        error = self._parser.error
        if error is not None and not client.closing:
            transport.write(encode(_protocol_error(error), client.proto))
            transport.close()
        elif client.closing:
            transport.close()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._writable.set()  # wake a task waiting to write: it will see the connection gone
        if self.client is not None:
            self._state.clients.pop(self.client.id, None)
            if self._state.pubsub is not None and self.client.subscribed:
                self._state.pubsub.drop(self.client)
        self._server.connections.discard(self)

    def held_bytes(self) -> int:
        """Bytes this connection holds in memory: unparsed input, parsed commands not yet run
        (as received), replies not yet sent."""
        transport = self._transport
        unsent = 0 if transport is None else transport.get_write_buffer_size()
        return self._parser.buffered + self._pending_bytes + unsent + self._held_bytes

    # --- ClientLink: how pub/sub reaches this connection ----------------------------------

    def push(self, data: bytes) -> None:
        """A pub/sub message: written now, or after the replies of the batch being run."""
        if self._closed or self._transport is None:
            return
        if self._held is not None:
            self._held.append(data)
            self._held_bytes += len(data)
        else:
            self._transport.write(data)

    def pending_output(self) -> int:
        """Bytes written but not sent yet, and messages held for after the current batch."""
        transport = self._transport
        unsent = 0 if transport is None else transport.get_write_buffer_size()
        return unsent + self._held_bytes

    def abort(self) -> None:
        """Drop the connection at once, its unsent output with it (a slow subscriber)."""
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close the connection (its replies in flight are dropped)."""
        if self._transport is not None:
            self._transport.close()

    async def wait_idle(self) -> None:
        """Wait for the commands being run to finish."""
        task = self._task
        if task is not None:
            await asyncio.wait([task])

    async def cancel(self) -> None:
        """Cancel the commands being run, and wait until they are."""
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait([task])


def _protocol_error(error: Exception) -> RespError:
    return RespError(f"ERR Protocol error: {error}")


class RespServer:
    """The Redis protocol for one node, or for a sharded store (``store``).

    Args:
        service: the node's ``CacheService`` (with ``store``: a hosted group's, or None).
        node: the node's ``RaftNode`` (with ``store``: a hosted group's, or None).
        host: address to listen on.
        port: port to listen on (0: a free one, read ``.port`` after ``start()``).
        clock: wall-clock seconds (the one the service uses): TTL replies and expiry options.
        client_token: when set, clients must AUTH with it; also sent to the leader's HTTP API
            when forwarding.
        client_token_ro: a token whose connections may only read (writes answer NOPERM).
        limits: value and per-command key limits.
        read_consistency: of GET, MGET, EXISTS... (``linearizable``, ``lease`` or ``stale``);
            READONLY switches a connection to ``stale``.
        leader_wait_s: how long a follower waits for a known leader before ``-TRYAGAIN``.
        forward_timeout_s: timeout of one request forwarded to the leader.
        peer_urls: node id → base URL fallback for finding the leader's HTTP API.
        ssl_context: TLS for the RESP listener (None: plain TCP).
        client_ssl_context: TLS for forwarding to ``https`` leaders.
        max_clients: connections accepted at once.
        max_bulk_bytes: largest argument accepted (larger closes the connection).
        max_buffer_bytes: most bytes one incomplete request may hold.
        shutdown_timeout_s: how long ``stop()`` lets running commands finish.
        topology: the node's one topology (``raftcache.resp.topology``), shared by its RESP
            listeners and started and stopped by its owner; with it the server answers
            CLUSTER SLOTS, SHARDS, NODES and INFO (without it: "cluster support disabled").
        cluster_mode: answer keyed commands this node must not run with Redis Cluster's
            redirects (``MOVED``, ``CROSSSLOT``, ``CLUSTERDOWN``: ``raftcache.resp.cluster``)
            and report ``redis_mode:cluster`` in INFO; needs ``topology`` (for a store,
            ``raftcache.resp.topology.store_topology``).
        store: the sharded store to serve (``raftcache.store.Store``): every keyed command
            runs on its key's group (module docstring); ``peer_urls`` then name the stores.
        group_backend: with ``store``, makes the backend of a group's store from (group id,
            base URL) instead of ``LeaderBackend`` over HTTP (tests).
        peers: the node's topology read for the members' RESP addresses by ROLE, INFO
            replication and SENTINEL (default: ``topology``); a node without a cluster-mode
            port passes it here alone, so CLUSTER still answers "cluster support disabled".
        sentinel_name: the service name SENTINEL answers for (``raftcache.resp.sentinel``).
        pubsub_output_limit: unsent bytes after which a subscriber is disconnected
            (``raftcache.resp.subscriptions``).
    """

    def __init__(
        self,
        service: ServicePort | None,
        node: NodePort | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float],
        client_token: str | None = None,
        client_token_ro: str | None = None,
        limits: Limits | None = None,
        read_consistency: str = "linearizable",
        leader_wait_s: float = 2.0,
        forward_timeout_s: float = 10.0,
        peer_urls: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_ssl_context: ssl.SSLContext | None = None,
        max_clients: int = 10_000,
        max_bulk_bytes: int = 16 * 1024 * 1024,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        shutdown_timeout_s: float = 5.0,
        topology: Topology | None = None,
        cluster_mode: bool = False,
        store: Store | None = None,
        group_backend: GroupBackendFactory | None = None,
        peers: Topology | None = None,
        sentinel_name: str = "raftcache",
        pubsub_output_limit: int = OUTPUT_LIMIT,
    ) -> None:
        if read_consistency not in CONSISTENCY_LEVELS:
            raise ValueError("read_consistency must be linearizable, lease or stale")
        if cluster_mode and topology is None:
            raise ValueError("a cluster-mode RESP server needs the node's topology")
        self.host, self.port = host, port
        self.max_clients = max_clients
        self.max_bulk_bytes = max_bulk_bytes
        self.max_buffer_bytes = max(max_buffer_bytes, max_bulk_bytes + 1024)
        self._ssl_context = ssl_context
        self._client_ssl = client_ssl_context
        # Forwarded requests present the full token when there is one: the leader's HTTP API
        # then checks nothing this server has not already checked (read-only included).
        self._http_token = client_token if client_token is not None else client_token_ro
        self._forward_timeout_s = forward_timeout_s
        self._shutdown_timeout_s = shutdown_timeout_s
        self._clock = clock
        self._http: aiohttp.ClientSession | None = None
        self._server: asyncio.Server | None = None
        self.connections: set[RespConnection] = set()
        self._peer_urls = shared_urls(peer_urls)
        self._store = store
        router: CallRouter
        reads: ReadPort
        writes: WritePort
        view: ServiceView
        if store is None:
            if service is None or node is None:
                raise ValueError("a RESP server needs the node's service and node")
            self._service: ServicePort | None = service
            self._node: NodePort = node
            single = Router(
                node,
                LocalBackend(service),
                self._leader_backend,
                peer_urls=peer_urls,
                leader_wait_s=leader_wait_s,
            )
            router, reads, writes, view = (
                single,
                ReadGroups(single),
                WriteGroups(single),
                service,
            )
            shards: list[CallRouter] = [single]
            shard_ids = [""]
        else:
            first = next(iter(store.replicas.values()), None)
            self._node = node or (first.node if first is not None else StoreFace(store))
            self._service = service or (first.service if first is not None else None)
            self._given = (node, service)
            self._leader_wait_s = leader_wait_s
            self._factory = group_backend
            self._sources: dict[str, object] = {}
            self._sharded = sharded = ShardedRouter(
                store.group_of, {gid: self._group_router(gid) for gid in store.group_ids()}
            )
            router, reads, writes = sharded, ShardedReads(sharded), ShardedWrites(sharded)
            self._view = view = StoreView(store, service)
            shard_ids = [g for g in store.group_ids() if not cluster_mode or g in store.replicas]
            shards = [sharded.routers[g] for g in shard_ids]
        self.state = ServerState(
            node=self._node,
            service=view,
            router=router,
            reads=reads,
            writes=writes,
            clock=clock,
            limits=limits or Limits(),
            client_token=client_token,
            client_token_ro=client_token_ro,
            read_consistency=read_consistency,
            started_at=0.0,
            commands=dict(TABLE),
            topology=topology,
            cluster_mode=cluster_mode,
            peers=peers if peers is not None else topology,
            sentinel_name=sentinel_name,
            store=store,
            shards=shards,
            shard_ids=shard_ids,
        )
        self._pubsub_group: str | None = None if store is None else store.group_ids()[0]
        self.state.pubsub = PubSubHub(self._commit_index, pubsub_output_limit)
        self._listen_pubsub()
        if store is not None:
            store.on_change(self._follow)

    def _pubsub_node(self) -> NodePort | None:
        """The node whose log pub/sub runs through: this node's, or on a store its replica
        of the first group (None: it holds none)."""
        store, gid = self._store, self._pubsub_group
        if store is None or gid is None:
            return self._node
        replica = store.replicas.get(gid)
        return None if replica is None else replica.node

    def _commit_index(self) -> int:
        """Where a subscription made now starts: after every entry already in the log. Not
        the commit index alone — just after a restart it is back at the snapshot's while the
        log on disk holds messages delivered before, which catching up would deliver again.
        An entry appended but not committed is left out too: its PUBLISH had not been
        answered when the client subscribed, so either outcome is one Redis could give."""
        node = self._pubsub_node()
        if node is None:
            return 0
        return max(int(node.status().get("commit_index") or 0), node.last_log_index)

    def _listen_pubsub(self) -> None:
        """Feed the hub from the machine of the pub/sub log (``raftcache.resp.pubsub``); on a
        store that no longer holds a replica of its group, refuse subscriptions and
        close the subscribers (they will not receive anything here any more)."""
        hub, store = self.state.pubsub, self._store
        assert hub is not None
        if store is None:
            assert self._service is not None
            hub.listen(self._service.machine)
            return
        gid = self._pubsub_group
        assert gid is not None
        node = self._pubsub_node()
        if node is not None:
            hub.listen(store.replicas[gid].service.machine)
            hub.unavailable = None
            return
        hub.stop_listening()
        holders = ", ".join(store.placement.get(gid, ()))
        hub.unavailable = (
            f"pub/sub runs through group {gid}, which this store holds no replica of: "
            f"subscribe on one of its stores ({holders})"
        )
        hub.disconnect_all(hub.unavailable)

    def _group_router(self, gid: str) -> CallRouter:
        """The router of group ``gid`` as the store holds it now: a ``ReplicaRouter`` over
        its replica here, else a ``RemoteRouter`` over the stores that hold it."""
        store = self._store
        assert store is not None
        index = store.group_ids().index(gid)
        scope = GroupScope(gid, index, store.groups)
        factory, leader_wait_s = self._factory, self._leader_wait_s
        replica = store.replicas.get(gid)
        if replica is not None:
            self._sources[gid] = replica
            node = replica.node
            make = self._group_backend(
                gid, scope, factory, replica.service.machine, _applied_of(node)
            )
            return ReplicaRouter(
                node,
                LocalBackend(replica.service),
                make,
                peer_urls=self._peer_urls,
                leader_wait_s=leader_wait_s,
            )
        remote = store.remote[gid]
        self._sources[gid] = remote
        make = self._group_backend(gid, scope, factory, None, None)
        live = LiveRemoteGroup(store.remote, remote)
        return RemoteRouter(live, make, self._store_url, leader_wait_s=leader_wait_s)

    def _follow(self, gid: str) -> None:
        """``Store.on_change``: route group ``gid`` as the store holds it now. Operations
        issued from now on take the new router; those running finish on the old one (see
        ``ShardedRouter.replace``). Nothing changes while it is the same replica, or the same
        ``RemoteGroup``."""
        store, state = self._store, self.state
        assert store is not None
        source = store.replicas.get(gid) or store.remote.get(gid)
        if gid == self._pubsub_group:
            self._listen_pubsub()
        if source is None or source is self._sources.get(gid):
            return
        self._sharded.replace(gid, self._group_router(gid))
        routers = self._sharded.routers
        if state.cluster_mode:  # a cluster node's whole-keyspace commands: its own groups
            state.shard_ids = [g for g in store.group_ids() if g in store.replicas]
        state.shards = [routers[g] for g in state.shard_ids]
        self._view.refresh()
        node, service = self._given
        first = next(iter(store.replicas.values()), None)
        self._node = node or (first.node if first is not None else StoreFace(store))
        self._service = service or (first.service if first is not None else None)
        state.node = self._node

    def _group_backend(
        self,
        gid: str,
        scope: GroupScope,
        factory: GroupBackendFactory | None,
        replica: ReplicaPort | None,
        applied: Callable[[], int] | None,
    ) -> Callable[[str], Backend]:
        if factory is not None:
            return lambda url: factory(gid, url)

        def make(url: str) -> Backend:
            return LeaderBackend(
                self._session(),
                url,
                token=self._http_token,
                timeout_s=self._forward_timeout_s,
                replica=replica,
                applied=applied,
                clock=self._clock,
                forwarded=replica is None,  # a group held elsewhere: "not the leader" answers
                scope=scope,
            )

        return make

    def _store_url(self, store_id: str) -> str | None:
        """A store's base URL: ``peer_urls``, else what a hosted group's node knows."""
        url = self._peer_urls.get(store_id)
        if url is None and self._store is not None:
            for replica in self._store.replicas.values():
                url = replica.node.peer_url(store_id)
                if url:
                    break
        return url or None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:  # created in the running loop, on first use, then reused
            connector = aiohttp.TCPConnector(limit=50, ssl=self._client_ssl or True)
            self._http = aiohttp.ClientSession(connector=connector)
            # aiohttp silently resends a PUT or DELETE once when a reused keep-alive
            # connection turns out broken: a forwarded write whose answer was lost could be
            # applied twice, or its resend fail to connect and pass for "certainly not
            # applied" (a retry elsewhere: twice again). It must surface as indeterminate.
            self._http._retry_connection = False
        return self._http

    def _leader_backend(self, url: str) -> Backend:
        assert self._service is not None
        return LeaderBackend(
            self._session(),
            url,
            token=self._http_token,
            timeout_s=self._forward_timeout_s,
            replica=self._service.machine,
            applied=lambda: self._node.last_applied,
            clock=self._clock,
        )

    async def start(self) -> None:
        """Listen; ``port`` then holds the bound port."""
        loop = asyncio.get_running_loop()
        self.state.started_at = loop.time()
        self._server = await loop.create_server(
            lambda: RespConnection(self), self.host, self.port, ssl=self._ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "RESP server listening",
            extra={"host": self.host, "port": self.port, "cluster_mode": self.state.cluster_mode},
        )

    async def stop(self) -> None:
        """Stop (see the module docstring). Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            await close_listener(server)  # every connection accepted is in ``connections``
        connections = list(self.connections)
        if connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._shutdown_timeout_s):
                    await asyncio.gather(*(c.wait_idle() for c in connections))
        for connection in connections:
            connection.close()
            await connection.cancel()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._shutdown_timeout_s):
                    await server.wait_closed()
        if self.state.pubsub is not None:
            self.state.pubsub.stop_listening()
        await self.state.writes.close()
        await self.state.reads.close()
        if self._http is not None:
            await self._http.close()
            self._http = None


def _applied_of(node: NodePort) -> Callable[[], int]:
    return lambda: node.last_applied


async def start_resp_server(
    service: ServicePort | None, node: NodePort | None, host: str, port: int, **options: Any
) -> RespServer:
    """Create and start a ``RespServer`` (``options`` as its keyword arguments; ``clock`` is
    required; ``store=`` serves a sharded store). Returns the running server; ``await
    server.stop()`` to stop it."""
    server = RespServer(service, node, host=host, port=port, **options)
    await server.start()
    return server
