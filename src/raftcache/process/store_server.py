"""The composition of ``raftcache serve --groups G`` (G > 1): one store hosting many groups.

Rule: as ``process.serve`` composes one node, this composes one store — the same options, the
same one HTTP port for the client API and every group's Raft traffic (one transport, the
store's ``GroupRouter`` behind it), and per hosted group a ``FileStorage`` under
``<data-dir>/groups/<group>``, a ``CacheStateMachine`` and a ``CacheService`` with today's
probes. The cluster's shape comes from ``<data-dir>/SHARDS`` (``raftcache.store.layout``),
recorded at the first start and checked on every later one.

Budgets that bound a node bound the store: ``--max-keys``, ``--max-bytes``,
``--watch-history`` and ``--watch-history-bytes`` are split evenly over the hosted groups
(keys spread evenly over groups by their hash), so a store never holds more than one node
would with the same flags.

Each group is led by its preferred store when that one can lead (``raftcache.store.balance``:
an election picks leaders at random). Shutdown is the front's (``FrontServer.stop``), with every
group this store leads handed over at once before the listener closes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.cache.watch import WatchHistory
from raftcache.network.prometheus import NetworkMetricsCollector
from raftcache.network.stream import StreamNetwork
from raftcache.process.config import ServeOptions
from raftcache.process.node_server import FrontServer
from raftcache.process.parts import (
    peer_routes,
    raft_body_limit,
    raft_config_of,
    raft_network,
    server_settings,
    server_tls,
)
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.server.app import create_store_app
from raftcache.server.context import CONTEXT
from raftcache.server.drain import DRAIN
from raftcache.server.format_probe import HttpCommandVersionProbe
from raftcache.server.handover import Handover, hand_over
from raftcache.server.routes_divergence import HttpDigestProbe
from raftcache.server.routes_watch import WatchSettings
from raftcache.store import Store
from raftcache.store.balance import PreferredLeaders
from raftcache.store.layout import ShardLayout, open_layout

log = logging.getLogger("raftcache.server")


class StoreServer(FrontServer):
    """A running store: its groups behind one HTTP port (see the module docstring). It may
    hold no replica at all (a store drained of every group, waiting to be filled or stopped).
    """

    def __init__(
        self,
        store: Store,
        app: web.Application,
        *,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout_s: float = 10.0,
        transfer_on_shutdown: bool = True,
        http_front: str = "auto",
        clock: Callable[[], float] = time.time,
        preferred_settle_s: float = 5.0,
        election_timeout_max_s: float = 2.0,
    ) -> None:
        super().__init__(
            app,
            label=store.store_id,
            host=host,
            port=port,
            ssl_context=ssl_context,
            shutdown_timeout_s=shutdown_timeout_s,
            transfer_on_shutdown=transfer_on_shutdown,
            http_front=http_front,
            clock=clock,
        )
        self.store = store
        self._election_max_s = election_timeout_max_s
        self._balancer = PreferredLeaders(
            store, clock=time.monotonic, around=self._held, settle_s=preferred_settle_s
        )

    def _election_timeout_max(self) -> float:
        return self._election_max_s

    async def _held(self, transfer: Awaitable[str]) -> str:
        # Client requests a transfer drops are held, then served by the new leader.
        self._handover.begin()
        try:
            return await transfer
        finally:
            self._handover.end()

    async def _start_replicas(self) -> None:
        await self.store.start()  # stops what it started if a group fails to start
        self._balancer.start()

    async def _abort_replicas(self) -> None:
        await self._balancer.stop()
        await self.store.stop(force=True)

    async def _stop_replicas(self) -> None:
        await self._balancer.stop()
        await self.store.stop()

    async def _hand_over(self) -> None:
        await self._balancer.stop()  # no transfer of its own while the store hands over
        leading = [r.node for r in self.store.replicas.values() if r.node.role is Role.LEADER]
        if not leading:
            return
        # One hand-over for the whole store, as requests see it (``handover_middleware``
        # holds them until every transfer ended); each transfer its own, run at once.
        self._handover.begin()
        try:
            await asyncio.gather(
                *(hand_over(n, Handover(), self._transfer_timeout_s()) for n in leading)
            )
        finally:
            self._handover.end()

    async def wait_failed(self) -> BaseException:
        """Wait until any group's node fail-stops: the whole store then stops (as a node).
        Replicas added later are watched too (the set is looked at again every second)."""
        while True:
            waits = [
                asyncio.ensure_future(r.node.wait_failed()) for r in self.store.replicas.values()
            ]
            try:
                if not waits:
                    await asyncio.sleep(1.0)
                    continue
                done, _ = await asyncio.wait(
                    waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                if done:
                    return next(iter(done)).result()
            finally:
                for wait in waits:
                    wait.cancel()


def _share(total: int | None, parts: int) -> int | None:
    return None if total is None else max(1, total // parts)


def build_store_server(
    options: ServeOptions, *, raft_config: RaftConfig | None = None
) -> StoreServer:
    """Compose one store from its options (``options.groups`` > 1)."""
    wanted = ShardLayout.static(list(options.peers), options.groups, options.replicas)
    layout = open_layout(options.data_dir, wanted)
    hosted = max(1, len(layout.hosted_by(options.id)))
    raft_config = raft_config or raft_config_of(options)
    settings = server_settings(options)
    network = raft_network(options, raft_body_limit(settings.limits, raft_config))

    def make_machine(gid: str) -> CacheStateMachine:
        return CacheStateMachine(
            max_keys=_share(options.max_keys, hosted),
            max_bytes=_share(options.max_bytes, hosted),
            watch=WatchHistory(
                max(1, options.watch_history // hosted),
                max(1, options.watch_history_bytes // hosted),
            ),
            max_command_version=options.max_command_format,
        )

    def make_service(gid: str, node: RaftNode, machine: CacheStateMachine) -> CacheService:
        return CacheService(
            node,
            machine,
            clock=time.time,
            command_version_probe=HttpCommandVersionProbe(
                node,
                peer_urls=settings.peer_urls,
                token=settings.client_token or settings.client_token_ro,
                ssl_context=settings.client_ssl_context,
            ),
            # The group's other replicas' /raft/digest?group=, with the cluster token.
            digest_probe=HttpDigestProbe(
                node,
                group=gid,
                peer_urls=settings.peer_urls,
                token=settings.cluster_token,
                ssl_context=settings.client_ssl_context,
            ),
            digest_check_interval_s=options.digest_check_interval_s,
        )

    store = Store(
        options.id,
        network,
        groups=layout.groups,
        placement=layout.placement,
        data_dir=options.data_dir,
        config=raft_config,
        clock=time.time,
        machine=make_machine,
        service=make_service,
        rng=random.Random(),
        peer_addresses=peer_routes(options),
    )
    watch = WatchSettings(heartbeat_s=options.watch_heartbeat_s, max_watchers=options.max_watchers)
    app = create_store_app(store, settings, mount=network.mount, watch=watch)
    app[CONTEXT].metrics.registry.register(NetworkMetricsCollector(network.metrics))
    if isinstance(network, StreamNetwork):
        app[DRAIN].on_drain.append(network.close_inbound_streams)
    log.info(
        "store layout",
        extra={
            "id": options.id,
            "groups": layout.groups,
            "hosted": ",".join(f"{g}:{r.node.node_id}" for g, r in store.replicas.items()),
        },
    )
    return StoreServer(
        store,
        app,
        election_timeout_max_s=raft_config.election_timeout_max,
        host=options.host,
        port=options.port,
        ssl_context=server_tls(options),
        shutdown_timeout_s=options.shutdown_timeout_s,
        transfer_on_shutdown=options.transfer_on_shutdown,
        http_front=options.http_front,
        clock=time.time,
    )
