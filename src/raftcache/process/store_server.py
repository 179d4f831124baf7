"""The composition of ``raftcache serve --groups G`` (G > 1): one store hosting many groups.

Rule: as ``process.serve`` composes one node, this composes one store — the same options, the
same one HTTP port for the client API and every group's Raft traffic (one transport, the
store's ``GroupRouter`` behind it), and per hosted group a ``FileStorage`` under
``<data-dir>/groups/<group>``, a ``CacheStateMachine`` and a ``CacheService`` with today's
probes. The cluster's shape comes from ``<data-dir>/SHARDS`` (``raftcache.store.layout``),
recorded at the first start and checked on every later one.

Budgets: ``--max-keys`` and ``--max-bytes`` give every group the same bound, the flag ÷ G,
on every store. Eviction runs on every replica as it applies a write, so the replicas of a
group must share one bound or they evict different keys and diverge (a store hosting fewer
groups than another would otherwise give each a larger share); a store holding h of the G
groups holds at most h/G of the flag, never more than one node would with the same flags
(give every store the same flags, as every node of a group). ``--watch-history`` and
``--watch-history-bytes`` (local, not replicated) are split the same way.

Each group is led by its preferred store when that one can lead (``raftcache.store.balance``:
an election picks leaders at random). Shutdown is the front's (``FrontServer.stop``), with every
group this store leads handed over at once before the listener closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable
from urllib.parse import urlsplit

from aiohttp import web

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.cache.watch import WatchHistory
from raftcache.process.config import ServeOptions, is_unspecified
from raftcache.process.node_server import FrontServer, Listener
from raftcache.process.parts import (
    attach_data_dir,
    attach_transport,
    listener_of,
    peer_routes,
    raft_body_limit,
    raft_config_of,
    raft_network,
    server_settings,
)
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.resp.topology import join_address
from raftcache.server.app import create_store_app
from raftcache.server.format_probe import HttpCommandVersionProbe
from raftcache.server.handover import Handover, hand_over
from raftcache.server.routes_divergence import HttpDigestProbe
from raftcache.server.routes_watch import WatchSettings
from raftcache.sharding.clustermap import ClusterMap, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.store import Store
from raftcache.store.agent import MetaAgent
from raftcache.store.balance import PreferredLeaders
from raftcache.store.driver import LazyRequester
from raftcache.store.known import read_known, write_known
from raftcache.store.layout import SHARDS_FILE, LayoutMismatchError, ShardLayout, open_layout
from raftcache.store.meta import first_map

log = logging.getLogger("raftcache.server")


class StoreServer(FrontServer):
    """A running store: its groups behind one HTTP port (see the module docstring). It may
    hold no replica at all (a store drained of every group, waiting to be filled or stopped).
    """

    def __init__(
        self,
        store: Store,
        app: web.Application,
        listener: Listener,
        *,
        preferred_settle_s: float = 5.0,
        election_timeout_max_s: float = 2.0,
        agent: MetaAgent | None = None,
        requester: LazyRequester | None = None,
    ) -> None:
        super().__init__(app, label=store.store_id, listener=listener)
        self.store = store
        #: The store's meta agent (None: a cluster without a meta group).
        self.agent = agent
        self._requester = requester
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
        if self.agent is not None:
            self.agent.start()

    async def _stop_agent(self) -> None:
        if self.agent is not None:
            await self.agent.stop()
        if self._requester is not None:
            await self._requester.close()

    async def _abort_replicas(self) -> None:
        await self._stop_agent()
        await self._balancer.stop()
        await self.store.stop(force=True)

    async def _stop_replicas(self) -> None:
        await self._stop_agent()
        await self._balancer.stop()
        await self.store.stop()

    def prepare_to_stop(self) -> None:
        self.store.prepare_to_stop()  # replicas added during the stop decline too

    async def _hand_over(self) -> None:
        await self._stop_agent()  # no placement step starts while the store hands over
        await self._balancer.stop()  # no transfer of its own while the store hands over
        leading = [r.node for r in self.store.all_replicas() if r.node.role is Role.LEADER]
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
            waits = [asyncio.ensure_future(r.node.wait_failed()) for r in self.store.all_replicas()]
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
    """Compose one store from its options (``options.groups`` > 1, or ``--join``)."""
    layout = _layout(options)
    # One bound per group, the same on every store (see the module docstring): never the
    # number of groups this store happens to host, which differs between stores and changes
    # as replicas move.
    groups = layout.groups
    raft_config = raft_config or raft_config_of(options)
    # One address book for the whole store: the transport, forwarding, RESP and the meta
    # agent read this very dict, and the agent adds the stores that join later.
    # The stores learnt from the map before the last stop come after SHARDS' (they are newer)
    # and before --peers (the operator's word wins): a store down while every store its
    # SHARDS names was removed still reaches the cluster (raftcache.store.known).
    known = read_known(options.data_dir)
    addresses = {**layout.urls, **known.urls, **peer_routes(options)}
    settings = dataclasses.replace(server_settings(options), peer_urls=addresses)
    network = raft_network(options, raft_body_limit(settings.limits, raft_config))
    for peer, url in addresses.items():
        if peer != options.id:
            network.set_peer_address(peer, url)

    def make_machine(gid: str) -> CacheStateMachine:
        return CacheStateMachine(
            max_keys=_share(options.max_keys, groups),
            max_bytes=_share(options.max_bytes, groups),
            watch=WatchHistory(
                max(1, options.watch_history // groups),
                max(1, options.watch_history_bytes // groups),
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
        peer_addresses=addresses,
        meta=layout.meta,
        batch_appends=options.raft_batch,
    )
    if layout.meta and known.meta:  # where to look for the meta leader: hints only
        store.meta_voters = known.meta
    agent = requester = None
    if layout.meta:
        requester = LazyRequester(
            addresses,
            client_token=settings.client_token,
            cluster_token=settings.cluster_token,
            ssl_context=settings.client_ssl_context,
            timeout_s=max(10.0, options.network_timeout_s),
        )
        agent = MetaAgent(
            store,
            _own_record(options, addresses[options.id], layout.nonce),
            request=requester,
            first=lambda: first_map(
                layout.groups, layout.replicas, layout.placement, addresses, layout.meta
            ),
            down_after_s=options.store_down_after_s,
            on_learn=lambda urls, meta: write_known(options.data_dir, urls, meta),
        )
    watch = WatchSettings(heartbeat_s=options.watch_heartbeat_s, max_watchers=options.max_watchers)
    app = create_store_app(store, settings, mount=network.mount, watch=watch, meta=agent)
    attach_transport(app, network)
    attach_data_dir(app, options.data_dir)
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
        listener_of(options),
        election_timeout_max_s=raft_config.election_timeout_max,
        agent=agent,
        requester=requester,
    )


def _layout(options: ServeOptions) -> ShardLayout:
    """The recorded layout, or the first one: the bootstrap stores' (``--peers``), or — for a
    store joining with ``--join`` — the running cluster's, read from the store named."""
    recorded = (options.data_dir / SHARDS_FILE).exists()
    if options.join is None:
        wanted = ShardLayout.static(list(options.peers), options.groups, options.replicas)
    elif recorded:  # joined before: the record says everything (--peers is not compared)
        wanted = ShardLayout(options.groups, options.replicas, (), {}, joined=True)
    else:
        wanted = _join_layout(options)
    layout = open_layout(options.data_dir, wanted)
    given = options.sources.get("groups", "default") != "default"
    if options.join is not None and given and options.groups != layout.groups:
        raise LayoutMismatchError(
            f"--groups {options.groups}: the cluster joined has {layout.groups} groups"
        )
    return layout


def _join_layout(options: ServeOptions) -> ShardLayout:
    """Read the map from ``--join``'s store (blocking: nothing runs yet) and make the layout
    of a new, empty store of that cluster. Exits through ``LayoutMismatchError`` naming why
    when the store cannot be read or the id is taken."""
    assert options.join is not None
    request = urllib.request.Request(options.join + "/raft/meta/map")
    if options.cluster_token:
        request.add_header("Authorization", f"Bearer {options.cluster_token}")
    context = server_settings(options).client_ssl_context
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        raise LayoutMismatchError(
            f"--join {options.join}: the store answered {exc.code} "
            f"({exc.read()[:200].decode(errors='replace')})"
        ) from None
    except (OSError, ValueError) as exc:
        raise LayoutMismatchError(
            f"--join {options.join}: cannot read the cluster map: {exc}"
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("map"), dict):
        raise LayoutMismatchError(
            f"--join {options.join}: no cluster map there (a cluster without a meta group "
            "cannot be joined: only stores of its bootstrap --peers can take replicas)"
        )
    cmap = ClusterMap.from_json(body["map"])
    known = cmap.stores.get(options.id)
    if known is not None and known.state is StoreState.REMOVED:
        raise LayoutMismatchError(
            f"store id {options.id} was removed from this cluster: ids are never reused"
        )
    if known is not None:
        # Its directory has no SHARDS, so this is not that store's data: a store whose
        # directory was lost must not come back as empty voters under its old id.
        raise LayoutMismatchError(
            f"store id {options.id} is already in this cluster (at {known.http_url}): a new "
            "store, or one whose data directory was lost, joins under a new --id"
        )
    meta = [str(m) for m in body.get("meta", [])]
    return ShardLayout.joining(cmap, meta)


def _own_record(options: ServeOptions, url: str, nonce: str) -> StoreInfo:
    """What this store registers in the map: id, host label, addresses."""
    host = options.advertise_host
    if host is None:
        host = options.host if not is_unspecified(options.host) else urlsplit(url).hostname
    shown = host or socket.gethostname()

    def resp(port: int | None) -> str:
        return "" if port in (None, 0) else join_address(shown, port)

    return StoreInfo(
        options.id,
        options.host_label or socket.gethostname(),
        url,
        resp(options.resp_port),
        resp(options.resp_cluster_port),
        nonce=nonce,
    )
