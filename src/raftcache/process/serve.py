"""The composition root of ``raftcache serve``: builds one node (or, with ``--groups`` > 1, one
store: ``process.store_server``) and runs it until a signal.

Rule: this is the only module of the node that reads the wall clock (``time.time``, handed to
the cache service, the Redis listener and the lean front's ``Date``) and creates a
``random.Random()`` (handed to the Raft node). It wires HttpNetwork (mounted on the node's app,
so one port serves Raft and the client API; no ``ReliableNetwork``: Raft retries on its own,
and a bare transport with a short timeout keeps heartbeats fresh; ``--raft-transport stream``:
``StreamNetwork``, mounted the same way), ``FileStorage(data_dir)``, ``CacheStateMachine``,
``RaftNode`` and ``CacheService``.

Shutdown order: ``process.node_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from raftcache import __version__
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.cache.watch import WatchHistory
from raftcache.network.httpclient import resolve_client
from raftcache.process import gcpolicy
from raftcache.process.config import ServeOptions, is_unspecified
from raftcache.process.exposure import warn_if_exposed
from raftcache.process.logs import configure_logging
from raftcache.process.memlimit import CGROUP_ROOT, cgroup_memory_limit, default_max_bytes
from raftcache.process.node_server import (
    MAX_HEADER_BYTES,
    MAX_REQUEST_LINE_BYTES,
    FrontServer,
    NodeServer,
)
from raftcache.process.parts import (
    TOUCH_BATCH_KEYS,
    attach_data_dir,
    attach_transport,
    listener_of,
    peer_routes,
    raft_body_limit,
    raft_config_of,
    raft_network,
    server_settings,
    server_tls,
)
from raftcache.process.store_server import StoreServer, build_store_server
from raftcache.raft.config import RaftConfig
from raftcache.raft.errors import PeersMismatchError
from raftcache.raft.node import RaftNode
from raftcache.server.app import create_app
from raftcache.server.context import CONTEXT
from raftcache.server.format_probe import HttpCommandVersionProbe
from raftcache.server.routes_divergence import HttpDigestProbe
from raftcache.server.routes_watch import WatchSettings
from raftcache.storage.base import Storage, StorageError
from raftcache.storage.file import FileStorage
from raftcache.store.layout import LayoutMismatchError, check_single_group_dir
from raftcache.store.ledger import LedgerMismatchError

__all__ = [
    "CGROUP_ROOT_TEST_SEAM",
    "MAX_HEADER_BYTES",
    "MAX_REQUEST_LINE_BYTES",
    "TOUCH_BATCH_KEYS",
    "NodeServer",
    "advertise_host",
    "build_node_server",
    "loop_factory",
    "peer_routes",
    "raft_body_limit",
    "raft_config_of",
    "raft_network",
    "run_serve",
    "serve_node",
    "server_settings",
    "server_tls",
]

log = logging.getLogger("raftcache.server")

#: Test seam only, not an option: the cgroup mount to read the memory limit from instead of
#: /sys/fs/cgroup (tests/e2e/test_memory_default.py points it at a fake one).
CGROUP_ROOT_TEST_SEAM = "RAFTCACHE_TEST_SEAM_CGROUP_ROOT"


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
    network = raft_network(options, raft_body_limit(server_settings(options).limits, raft_config))
    if storage is None:
        check_single_group_dir(options.data_dir)
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
    attach_transport(app, network)
    attach_data_dir(app, options.data_dir)
    return NodeServer(node, service, app, listener_of(options))


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
    server = _build_server(options)
    warn_if_exposed(options)
    log.info("node starting", extra=start_facts(options, server))
    await server.start()
    try:
        resps = await _start_resp(server, options)
    except BaseException:
        await server.stop()
        raise
    if on_serving is not None:
        on_serving()
    failed = asyncio.create_task(server.wait_failed())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({failed, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (failed, stopped):
            if not task.done():
                task.cancel()
        server.prepare_to_stop()  # at once: the Redis listeners take a moment to stop
        for resp in resps:
            await resp.stop()
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if failed.done() and not failed.cancelled():
        # Fail-stop (e.g. a failed fsync): exit non-zero instead of answering 503 forever.
        raise RuntimeError(f"raft node failed: {failed.result()!r}")


def start_facts(options: ServeOptions, server: FrontServer) -> dict[str, Any]:
    """What the start line tells an operator: which node, which build, what it runs on (the
    HTTP front, the event loop, the Raft transport) and where its data is."""
    loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    transport = f"{options.raft_transport}/{options.raft_wire}"
    if options.raft_transport == "http":
        transport += f"/{resolve_client(options.raft_http_client)}"
    facts: dict[str, Any] = {
        "id": options.id,
        "version": __version__,
        "listen": options.listen,
        "http_front": server.http_front,
        "loop": "uvloop" if loop == "uvloop" else "asyncio",
        "transport": transport,
        "data_dir": str(options.data_dir),
    }
    if options.groups > 1:
        facts["groups"] = options.groups
    return facts


def _build_server(options: ServeOptions) -> FrontServer:
    """A store of many groups for ``--groups`` > 1, else one node."""
    if options.groups > 1 or options.join is not None:
        return build_store_server(options)
    return build_node_server(options)


async def _start_resp(server: FrontServer, options: ServeOptions) -> list[Any]:
    """Start the Redis protocol listeners: ``--resp-port`` (commands run here or forwarded
    to the leader) and ``--resp-cluster-port`` (Redis Cluster: MOVED to the leader). The node
    has one topology — one poller of the voters' ``/v1/status``, where each advertises its
    endpoints — shared by both listeners: ROLE, INFO replication and SENTINEL name the leader
    from it; CLUSTER SLOTS and friends answer from it only with a cluster-mode port (without
    one: "cluster support disabled"). Returns what to stop, in order."""
    wanted = [
        (p, cluster)
        for p, cluster in ((options.resp_port, False), (options.resp_cluster_port, True))
        if p is not None
    ]
    if not wanted:
        return []
    from raftcache.resp import start_resp_server
    from raftcache.resp.args import Limits as RespLimits
    from raftcache.resp.topology import (
        Advertised,
        HttpStatusFetcher,
        Topology,
        join_address,
        store_topology,
    )

    client_ssl = server_settings(options).client_ssl_context
    store = server.store if isinstance(server, StoreServer) else None
    node = server.node if isinstance(server, NodeServer) else None
    service = server.service if isinstance(server, NodeServer) else None
    # A store's one address book (stores that join are added to it); a node's --peers.
    peer_urls = store.addresses if store is not None else peer_routes(options)
    # The full token when there is one, as the listeners present when they forward.
    token = options.client_token
    fetcher = HttpStatusFetcher(
        token=token if token is not None else options.client_token_ro,
        ssl_context=client_ssl,
    )
    topology: Topology
    if store is not None:  # one shard per data group, leaders from the stores' status
        topology = store_topology(
            store, Advertised(), fetcher, peer_urls=peer_urls, on_stop=fetcher.close
        )
    else:
        assert node is not None  # a node server when it is not a store's
        topology = Topology(node, Advertised(), fetcher, on_stop=fetcher.close)
    # CLUSTER SLOTS and friends only with a cluster-mode port; ROLE, INFO and SENTINEL always.
    cluster_view = topology if options.resp_cluster_port is not None else None
    started = []
    try:
        for port, cluster in wanted:
            started.append(
                await start_resp_server(
                    service,
                    node,
                    options.host,
                    port,
                    clock=time.time,
                    client_token=options.client_token,
                    client_token_ro=options.client_token_ro,
                    limits=RespLimits(max_value_bytes=options.max_value_bytes),
                    leader_wait_s=options.leader_wait_s,
                    peer_urls=peer_urls,
                    ssl_context=server_tls(options),
                    client_ssl_context=client_ssl,
                    topology=cluster_view,
                    cluster_mode=cluster,
                    store=store,
                    peers=topology,
                    sentinel_name=options.sentinel_name,
                )
            )
    except BaseException:
        for resp in started:
            await resp.stop()
        await topology.stop()
        raise
    host = advertise_host(options)
    # Each listener's bound port (``0`` asks for a free one), "" for a listener not started.
    bound = {
        cluster: join_address(host, r.port) for (_, cluster), r in zip(wanted, started, strict=True)
    }
    own = Advertised(bound.get(False, ""), bound.get(True, ""))
    server.app[CONTEXT].resp_endpoints = own.to_json()
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


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``raftcache serve`` runs on: uvloop for ``uvloop`` (an error when it is
    not installed) and for ``auto`` when it is; asyncio's own otherwise (None)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            hint = "a dependency of raftcache on CPython outside Windows: pip install uvloop"
            raise RuntimeError(f"--loop uvloop needs uvloop, missing here ({hint})") from None
        return None
    return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)


def with_memory_default(options: ServeOptions) -> ServeOptions:
    """``options`` with ``max_bytes`` derived from the cgroup memory limit when it is unset
    and there is one (``process.memlimit``), said in one log line; else ``options``."""
    if options.max_bytes is not None:
        return options
    root = os.environ.get(CGROUP_ROOT_TEST_SEAM)
    limit = cgroup_memory_limit(CGROUP_ROOT if root is None else Path(root))
    if limit is None:
        return options
    max_bytes = default_max_bytes(limit.bytes)
    log.info(
        "max-bytes defaulted to %d (%d MiB) from the cgroup memory limit %d (%s): every "
        "replica needs the same bound, so give each the same limit or set --max-bytes",
        max_bytes,
        max_bytes >> 20,
        limit.bytes,
        limit.source,
        extra={"max_bytes": max_bytes, "memory_limit": limit.bytes, "source": str(limit.source)},
    )
    sources = {**options.sources, "max_bytes": "cgroup"}
    return dataclasses.replace(options, max_bytes=max_bytes, sources=sources)


def run_serve(options: ServeOptions) -> int:
    """Run ``raftcache serve`` to completion; returns the process exit code (0 on a clean
    shutdown, 1 when the node could not start or failed)."""
    configure_logging(options.log_format, options.log_level)
    options = with_memory_default(options)
    try:
        with asyncio.Runner(loop_factory=loop_factory(options.loop)) as runner:
            runner.run(serve_node(options, on_serving=lambda: gcpolicy.tune(options.gc)))
    except (
        OSError,
        StorageError,
        PeersMismatchError,
        LayoutMismatchError,
        LedgerMismatchError,
    ) as exc:
        # Expected operator errors (port in use, data directory locked or foreign, --peers
        # naming a membership the data never had, --groups other than the data's): one line.
        log.error("cannot start node", extra={"id": options.id, "reason": str(exc)})
        return 1
    except Exception:
        log.exception("node failed", extra={"id": options.id})
        return 1
    return 0
