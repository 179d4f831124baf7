"""The composition root of ``raftcache serve``: builds one node and runs it until a signal.

Rule: this is the only module of the node that reads the wall clock (``time.time``, handed to
the cache service, the Redis listener and the lean front's ``Date``) and creates a
``random.Random()`` (handed to the Raft node). It wires HttpNetwork (mounted on the node's app,
so one port serves Raft and the client API; no ``ReliableNetwork``: Raft retries on its own,
and a bare transport with a short timeout keeps heartbeats fresh; ``--raft-transport stream``:
``StreamNetwork``, mounted the same way), ``FileStorage(data_dir)``, ``CacheStateMachine``,
``RaftNode`` and ``CacheService``.

Shutdown order (SIGTERM/SIGINT): a leader first hands leadership to its most up-to-date live
follower (``server.handover``, bounded; on by default, ``--no-transfer-on-shutdown`` turns it
off), then the node stops accepting connections, lets in-flight requests finish
(``server.drain``, bounded by ``shutdown_timeout_s``; the node still runs so they can commit, or
be forwarded to the new leader), stops the cache service's background work, stops the node
(which persists and stops the network), closes storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from aiohttp import web

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.cache.watch import WatchHistory
from raftcache.network.http import HttpNetwork
from raftcache.network.prometheus import NetworkMetricsCollector
from raftcache.network.stream import StreamNetwork
from raftcache.network.tls import client_ssl_context, server_ssl_context
from raftcache.process import gcpolicy
from raftcache.process.config import ServeOptions, is_unspecified
from raftcache.process.exposure import warn_if_exposed
from raftcache.process.logs import configure_logging
from raftcache.raft.config import RaftConfig
from raftcache.raft.errors import PeersMismatchError
from raftcache.raft.node import RaftNode
from raftcache.server.admission import AdmissionLimits
from raftcache.server.app import create_app
from raftcache.server.context import CONTEXT, ServerSettings
from raftcache.server.drain import DRAIN
from raftcache.server.format_probe import HttpCommandVersionProbe
from raftcache.server.handover import HANDOVER, Handover, hand_over, handover_middleware
from raftcache.server.lean.front import LeanFront, LeanSite, lean_available
from raftcache.server.routes_divergence import HttpDigestProbe
from raftcache.server.routes_watch import WatchSettings
from raftcache.server.validation import MAX_KEY_BYTES, Limits
from raftcache.storage.base import Storage, StorageError
from raftcache.storage.file import FileStorage

log = logging.getLogger("raftcache.server")

#: Longest request line and header field the HTTP parser reads (aiohttp's default is 8190).
MAX_REQUEST_LINE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
#: Keys in the cache's largest access batch (``CacheService``'s default ``touch_batch_size``).
TOUCH_BATCH_KEYS = 10_000


class NodeServer:
    """One running node: its Raft node, cache service and HTTP server on one port.

    Also the way to embed a node in an existing asyncio program: build the parts, then
    ``await server.start()`` and later ``await server.stop()``.

    Args:
        node: the Raft node (not started yet).
        service: the cache service over ``node`` (not started yet).
        app: the aiohttp application serving the node (``create_app``).
        host: address to listen on.
        port: port to listen on (0: a free port, read ``.port`` after ``start()``).
        ssl_context: server TLS context, or None for plain HTTP.
        shutdown_timeout_s: bound on waiting for in-flight requests at shutdown.
        transfer_on_shutdown: a leader hands leadership over before it stops (see
            ``server.handover``; bounded by two election timeouts and ``shutdown_timeout_s``).
        http_front: ``lean`` (``server.lean.front``: httptools answers the hot key and Raft
            routes), ``aiohttp`` (aiohttp alone) or ``auto`` (lean when httptools is
            installed); ``lean-keys``, for A/B measurements: lean, but the Raft routes are
            served by aiohttp.
        clock: wall-clock seconds since the epoch, for the lean front's ``Date``.
    """

    def __init__(
        self,
        node: RaftNode,
        service: CacheService,
        app: web.Application,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout_s: float = 10.0,
        transfer_on_shutdown: bool = True,
        http_front: str = "auto",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.service = service
        self.app = app
        self.host = host
        self.port = port
        self._ssl_context = ssl_context
        self._shutdown_timeout_s = shutdown_timeout_s
        self._transfer_on_shutdown = transfer_on_shutdown
        self._handover = Handover()
        app[HANDOVER] = self._handover
        # Innermost, inside forwarding: requests caught by the hand-over go to the new leader.
        app.middlewares.append(handover_middleware)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout_s,
            # Room for the longest request the API accepts (a listing with a 1 KiB prefix and
            # after, percent-encoded), so the app — not the HTTP parser — judges it, and answers
            # JSON. Beyond these, aiohttp's parser refuses with a plain-text 400.
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            # Request bodies reach the handlers as sent: the Raft routes decode their codings
            # themselves, bounded by their size limit (aiohttp would inflate a small gzip body
            # to any size, and answers codings it lacks with a plain-text 400); the client API
            # refuses content codings (415).
            auto_decompress=False,
        )
        self._started = False
        self._lean = _lean_wanted(http_front)
        self._lean_raft = http_front != "lean-keys"
        self._lean_site: LeanSite | None = None
        self._clock = clock

    @property
    def url(self) -> str:
        """The node's base URL as seen on loopback/its listen address."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Listen first (peers can reach us as soon as the node campaigns), then start the
        node and the service's leader-only background work."""
        await self._runner.setup()
        site: web.TCPSite
        if self._lean:
            site = self._lean_site = LeanSite(
                self._runner,
                self.host,
                self.port,
                ssl_context=self._ssl_context,
                max_line_bytes=MAX_REQUEST_LINE_BYTES,
                max_field_bytes=MAX_HEADER_BYTES,
                raft=self._lean_raft,
                clock=self._clock,
            )
        else:
            site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl_context)
        try:
            await site.start()
            self.port = self._runner.addresses[0][1]
            await self.node.start()
            await self.service.start()
        except BaseException:
            await self._runner.cleanup()
            await self.node.stop()
            self.node.storage.close()  # idempotent; a node that never started did not close it
            raise
        self._started = True
        log.info("node serving", extra={"id": self.node.node_id, "url": self.url})

    async def stop(self) -> None:
        """Graceful stop (see module docstring). Idempotent."""
        if not self._started:
            return
        self._started = False
        log.info("node stopping", extra={"id": self.node.node_id})
        if self._transfer_on_shutdown:
            # Before closing the listener: clients that know this node as the leader are then
            # served through it (held, then forwarded) rather than refused during the change.
            await hand_over(self.node, self._handover, self._transfer_timeout_s())
        # Close the listener, then drain the connections we have (see ``server.drain``): aiohttp's
        # own shutdown would drop a request whose body is still arriving.
        for site in list(self._runner.sites):
            await site.stop()
        if not await self.app[DRAIN].wait_idle(self._shutdown_timeout_s):
            log.warning("requests still in progress at the shutdown timeout")
        if self.lean_front is not None:
            self.lean_front.close_connections()  # the runner closes aiohttp's below
        # Closes the now idle connections, runs on_cleanup.
        await self._runner.cleanup()
        with contextlib.suppress(Exception):
            await self.service.stop()
        await self.node.stop()  # stops the network and closes the storage
        log.info("node stopped", extra={"id": self.node.node_id})

    @property
    def lean_front(self) -> LeanFront | None:
        """The lean front serving this node (None on aiohttp alone or before ``start``)."""
        return self._lean_site.front if self._lean_site is not None else None

    @property
    def http_front(self) -> str:
        """``lean`` or ``aiohttp``: the front this node serves with."""
        return "lean" if self._lean else "aiohttp"

    def _transfer_timeout_s(self) -> float:
        # The core gives a transfer one election timeout; a second one covers the target's
        # own election. Never longer than the whole shutdown may take.
        election_max = float(getattr(self.node.config, "election_timeout_max", 2.0))
        return min(self._shutdown_timeout_s, 2 * election_max)


def server_settings(options: ServeOptions) -> ServerSettings:
    """The HTTP server's settings from the ``serve`` options."""
    certfile, keyfile, cafile = _tls_files(options)
    client_ssl = None
    if certfile is not None:
        client_ssl = client_ssl_context(cafile, certfile, keyfile)
    return ServerSettings(
        limits=Limits(max_value_bytes=options.max_value_bytes, max_batch_ops=options.max_batch_ops),
        client_token=options.client_token,
        client_token_ro=options.client_token_ro,
        cluster_token=options.cluster_token,
        leader_wait_s=options.leader_wait_s,
        peer_urls=peer_routes(options),
        client_ssl_context=client_ssl,
        admission=AdmissionLimits(
            max_inflight_requests=options.max_inflight_requests,
            max_pending_writes=options.max_pending_writes,
            max_inflight_bytes=options.max_inflight_bytes,
        ),
    )


def peer_routes(options: ServeOptions) -> dict[str, str]:
    """How this node reaches each peer it knows at start: ``--peers``, with
    ``--peer-address-override`` on top (the override also beats addresses that membership
    changes replicate later; see ``RaftNode``'s ``address_overrides``)."""
    return {**options.peers, **options.peer_address_override}


def raft_config_of(options: ServeOptions) -> RaftConfig:
    """Raft timing from the ``serve`` options (validated by ``RaftConfig.validate``)."""
    config = RaftConfig(
        rpc_timeout=options.network_timeout_s,
        election_timeout_min=options.election_timeout_min_s,
        election_timeout_max=options.election_timeout_max_s,
        heartbeat_interval=options.heartbeat_interval_s,
        tick_interval=min(0.02, options.heartbeat_interval_s),
        snapshot_threshold=options.snapshot_threshold,
        snapshot_threshold_bytes=options.snapshot_threshold_bytes,
    )
    config.validate()
    return config


def build_node_server(
    options: ServeOptions,
    *,
    raft_config: RaftConfig | None = None,
    storage: Storage | None = None,
) -> NodeServer:
    """Compose one node from its options (the only place with real clock and randomness).

    Args:
        options: the validated ``serve`` options.
        raft_config: Raft timing (default: ``RaftConfig`` with the options' RPC timeout).
        storage: the node's storage (default: ``FileStorage(options.data_dir)``).
    """
    raft_config = raft_config or raft_config_of(options)
    network = _network(options, raft_body_limit(server_settings(options).limits, raft_config))
    if storage is None:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        storage = FileStorage(options.data_dir)
    history = WatchHistory(options.watch_history, options.watch_history_bytes)
    machine = CacheStateMachine(
        max_keys=options.max_keys,
        max_bytes=options.max_bytes,
        watch=history,
        max_command_version=options.max_command_format,
    )
    node = RaftNode(
        options.id,
        list(options.peers),
        network,
        storage,
        machine,
        raft_config,
        rng=random.Random(),
        peer_addresses=peer_routes(options),
        address_overrides=dict(options.peer_address_override),
    )
    settings = server_settings(options)
    service = CacheService(
        node,
        machine,
        clock=time.time,
        command_version_probe=HttpCommandVersionProbe(
            node,
            peer_urls=settings.peer_urls,
            token=settings.client_token or settings.client_token_ro,
            ssl_context=settings.client_ssl_context,
        ),
        # The other replicas' /raft/digest, with the cluster token (docs/divergence.md).
        digest_probe=HttpDigestProbe(
            node,
            peer_urls=settings.peer_urls,
            token=settings.cluster_token,
            ssl_context=settings.client_ssl_context,
        ),
        digest_check_interval_s=options.digest_check_interval_s,
    )
    watch = WatchSettings(heartbeat_s=options.watch_heartbeat_s, max_watchers=options.max_watchers)
    app = create_app(node, service, settings, mount=network.mount, watch=watch)
    # The transport's own figures (per RPC type and peer) on this node's /metrics.
    app[CONTEXT].metrics.registry.register(NetworkMetricsCollector(network.metrics))
    if isinstance(network, StreamNetwork):
        # Inbound streams never end on their own: draining closes them (peers reconnect).
        app[DRAIN].on_drain.append(network.close_inbound_streams)
    return NodeServer(
        node,
        service,
        app,
        host=options.host,
        port=options.port,
        ssl_context=_server_tls(options),
        shutdown_timeout_s=options.shutdown_timeout_s,
        transfer_on_shutdown=options.transfer_on_shutdown,
        http_front=options.http_front,
        clock=time.time,
    )


def _tls_files(options: ServeOptions) -> tuple[str | None, str | None, str | None]:
    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    return text(options.tls_cert), text(options.tls_key), text(options.tls_ca)


def raft_body_limit(limits: Limits, config: RaftConfig) -> int:
    """The largest Raft request body this node accepts, derived from what a leader may send.

    An AppendEntries carries up to ``max_bytes_per_message`` of entries, or one larger entry;
    the largest entry the cache proposes is a full batch or an access (touch) batch. A snapshot
    chunk is ``snapshot_chunk_size``. Bytes travel as base64 (4/3); twice that leaves room for
    JSON framing. Smaller than aiohttp's default 64 MiB: an unauthenticated peer can make us
    buffer no more than this per connection.
    """
    largest_entry = max(
        limits.max_batch_bytes + limits.max_batch_ops * (MAX_KEY_BYTES + 64),
        limits.max_value_bytes + MAX_KEY_BYTES,
        TOUCH_BATCH_KEYS * (MAX_KEY_BYTES + 16),
        config.max_bytes_per_message,
        config.snapshot_chunk_size,
    )
    framing = config.max_entries_per_message * 128 + 64 * 1024
    return 2 * (largest_entry * 4 // 3 + framing)


def _network(options: ServeOptions, body_limit: int) -> HttpNetwork:
    """The Raft transport, to be mounted on the node's app (it opens no listener itself):
    ``--raft-transport stream`` serves and uses the stream route besides the HTTP routes."""
    certfile, keyfile, cafile = _tls_files(options)
    kind = StreamNetwork if options.raft_transport == "stream" else HttpNetwork
    return kind(
        options.id,
        port=options.port,
        host=options.host,
        node_addresses={k: v for k, v in peer_routes(options).items() if k != options.id},
        timeout=options.network_timeout_s,
        cluster_token=options.cluster_token,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        ssl_cafile=cafile,
        client_max_size=body_limit,
        wire_format=options.raft_wire,
        client=options.raft_http_client,
    )


def _server_tls(options: ServeOptions) -> ssl.SSLContext | None:
    """The listener's TLS context; a CA makes it mutual TLS (peers and clients alike)."""
    certfile, keyfile, cafile = _tls_files(options)
    if certfile is None:
        return None
    return server_ssl_context(certfile, keyfile, cafile, require_client_cert=cafile is not None)


async def serve_node(
    options: ServeOptions,
    stop: asyncio.Event | None = None,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """Run one node until ``stop`` is set or SIGTERM/SIGINT arrives, then stop it gracefully;
    ``on_serving`` is called once it serves (its listeners are up)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, _on_signal, stop, sig)
    server = build_node_server(options)
    warn_if_exposed(options)
    log.info(
        "node starting",
        extra={"id": options.id, "listen": options.listen, "data_dir": str(options.data_dir)},
    )
    await server.start()
    try:
        resps = await _start_resp(server, options)
    except BaseException:
        await server.stop()
        raise
    if on_serving is not None:
        on_serving()
    failed = asyncio.create_task(server.node.wait_failed())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (failed, stopped):
            if not task.done():
                task.cancel()
        for resp in resps:
            await resp.stop()
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if failed.done() and not failed.cancelled():
        # Fail-stop (e.g. a failed fsync): exit non-zero instead of answering 503 forever.
        raise RuntimeError(f"raft node failed: {failed.result()!r}")


async def _start_resp(server: NodeServer, options: ServeOptions) -> list[Any]:
    """Start the Redis protocol listeners: ``--resp-port`` (commands run here or forwarded
    to the leader) and ``--resp-cluster-port`` (Redis Cluster: MOVED to the leader). With a
    cluster-mode port the node has one topology — one poller of the voters' ``/v1/status``,
    where each advertises its endpoints — shared by both listeners, which answer CLUSTER
    SLOTS from it; without one there is no poller, and CLUSTER SLOTS answers "cluster support
    disabled". Returns what to stop, in order."""
    wanted = [
        (p, cluster)
        for p, cluster in ((options.resp_port, False), (options.resp_cluster_port, True))
        if p is not None
    ]
    if not wanted:
        return []
    from raftcache.resp import start_resp_server
    from raftcache.resp.args import Limits as RespLimits
    from raftcache.resp.topology import Advertised, HttpStatusFetcher, Topology, join_address

    client_ssl = server_settings(options).client_ssl_context
    topology = None
    if options.resp_cluster_port is not None:
        # The full token when there is one, as the listeners present when they forward.
        token = options.client_token
        fetcher = HttpStatusFetcher(
            token=token if token is not None else options.client_token_ro,
            ssl_context=client_ssl,
        )
        topology = Topology(server.node, Advertised(), fetcher, on_stop=fetcher.close)
    started = []
    try:
        for port, cluster in wanted:
            started.append(
                await start_resp_server(
                    server.service,
                    server.node,
                    options.host,
                    port,
                    clock=time.time,
                    client_token=options.client_token,
                    client_token_ro=options.client_token_ro,
                    limits=RespLimits(max_value_bytes=options.max_value_bytes),
                    leader_wait_s=options.leader_wait_s,
                    peer_urls=peer_routes(options),
                    ssl_context=_server_tls(options),
                    client_ssl_context=client_ssl,
                    topology=topology,
                    cluster_mode=cluster,
                )
            )
    except BaseException:
        for resp in started:
            await resp.stop()
        if topology is not None:
            await topology.stop()
        raise
    host = advertise_host(options)
    # Each listener's bound port (``0`` asks for a free one), "" for a listener not started.
    bound = {
        cluster: join_address(host, r.port) for (_, cluster), r in zip(wanted, started, strict=True)
    }
    own = Advertised(bound.get(False, ""), bound.get(True, ""))
    server.app[CONTEXT].resp_endpoints = own.to_json()
    if topology is None:
        return started
    topology.set_own(own)  # the real one, now that every port is bound
    topology.start()
    return [*started, topology]


def advertise_host(options: ServeOptions) -> str:
    """The host clients are told to use: ``--advertise-host``, else the listen host, else (on
    a wildcard listen address) this node's host in ``--peers``, else — never a wildcard —
    the machine's name, with a warning."""
    if options.advertise_host:
        return options.advertise_host
    own = urlsplit(peer_routes(options).get(options.id, "")).hostname or ""
    for candidate in (options.host, own):
        if not is_unspecified(candidate):
            return candidate
    name = socket.gethostname()
    log.warning(
        "advertising this machine's name to Redis clients: the listen address and this "
        "node's --peers entry are wildcards; set --advertise-host to choose",
        extra={"advertise_host": name},
    )
    return name


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("shutdown requested", extra={"signal": sig.name})
    stop.set()


def _lean_wanted(http_front: str) -> bool:
    if http_front == "aiohttp":
        return False
    if http_front in ("lean", "lean-keys") and not lean_available():
        raise RuntimeError("--http-front lean needs httptools: pip install 'raftcache[speed]'")
    return lean_available()


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``raftcache serve`` runs on: uvloop for ``uvloop`` (an error when it is
    not installed) and for ``auto`` when it is; asyncio's own otherwise (None)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            hint = "pip install 'raftcache[speed]'"
            raise RuntimeError(f"--loop uvloop needs uvloop: {hint}") from None
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


def run_serve(options: ServeOptions) -> int:
    """Run ``raftcache serve`` to completion; returns the process exit code (0 on a clean
    shutdown, 1 when the node could not start or failed)."""
    configure_logging(options.log_format, options.log_level)
    try:
        with asyncio.Runner(loop_factory=loop_factory(options.loop)) as runner:
            runner.run(serve_node(options, on_serving=lambda: gcpolicy.tune(options.gc)))
    except (OSError, StorageError, PeersMismatchError) as exc:
        # Expected operator errors (port in use, data directory locked or foreign, --peers
        # naming a membership the data never had): one line.
        log.error("cannot start node", extra={"id": options.id, "reason": str(exc)})
        return 1
    except Exception:
        log.exception("node failed", extra={"id": options.id})
        return 1
    return 0
