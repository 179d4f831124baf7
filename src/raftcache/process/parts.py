"""What the ``serve`` options make: Raft timing, the HTTP server's settings and listener, the
Raft transport and the TLS contexts — shared by the composition of a node (``process.serve``)
and of a store (``process.store_server``).

Rule: functions of ``ServeOptions`` (and ``attach_transport``, which wires a transport into
an app the same way for both); nothing here starts anything.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from aiohttp import web

from raftcache.network.http import HttpNetwork
from raftcache.network.prometheus import NetworkMetricsCollector
from raftcache.network.stream import StreamNetwork
from raftcache.network.tls import client_ssl_context, server_ssl_context
from raftcache.process.config import ServeOptions
from raftcache.process.node_server import Listener
from raftcache.raft.config import RaftConfig
from raftcache.server.admission import AdmissionLimits
from raftcache.server.context import CONTEXT, ServerSettings
from raftcache.server.drain import DRAIN
from raftcache.server.validation import MAX_KEY_BYTES, Limits

#: Keys in the cache's largest access batch (``CacheService``'s default ``touch_batch_size``).
TOUCH_BATCH_KEYS = 10_000


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
        propose_timeout=options.propose_timeout_s,
    )
    config.validate()
    return config


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


def raft_network(options: ServeOptions, body_limit: int) -> HttpNetwork:
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


def server_tls(options: ServeOptions) -> ssl.SSLContext | None:
    """The listener's TLS context; a CA makes it mutual TLS (peers and clients alike)."""
    certfile, keyfile, cafile = _tls_files(options)
    if certfile is None:
        return None
    return server_ssl_context(certfile, keyfile, cafile, require_client_cert=cafile is not None)


def listener_of(options: ServeOptions) -> Listener:
    """Where the HTTP front listens and how it stops, from the ``serve`` options."""
    return Listener(
        options.host,
        options.port,
        ssl_context=server_tls(options),
        shutdown_timeout_s=options.shutdown_timeout_s,
        transfer_on_shutdown=options.transfer_on_shutdown,
        http_front=options.http_front,
        clock=time.time,
    )


def attach_data_dir(app: web.Application, data_dir: Path) -> None:
    """Show the free and total bytes of the data directory's file system on ``/metrics``."""
    app[CONTEXT].metrics.watch_data_dir(data_dir)


def attach_transport(app: web.Application, network: HttpNetwork) -> None:
    """Show the transport's own figures (per RPC type and peer) on the app's ``/metrics``;
    a stream transport's inbound streams, which never end on their own, close on drain
    (peers reconnect)."""
    app[CONTEXT].metrics.registry.register(NetworkMetricsCollector(network.metrics))
    if isinstance(network, StreamNetwork):
        app[DRAIN].on_drain.append(network.close_inbound_streams)
