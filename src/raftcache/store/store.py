"""``Store``: one process's replicas of many Raft groups, over one transport.

Rule: the store owns its transport and the transport's ``GroupRouter``; every group it hosts is
a complete cache of one Raft group — its own storage (``<data_dir>/groups/<group id>``, today's
layout, so each group has its own log, snapshots and bootstrap record), ``CacheStateMachine``,
``RaftNode`` over a ``GroupNetwork`` view of the transport, and ``CacheService`` — built,
started and stopped together. A key belongs to one data group (``raftcache.slots``) and
``replica_for`` is the one way the layers above reach a group, so no key is ever served by
another group's replica. ``start`` opens the transport before any group campaigns (peers can
answer at once); ``stop`` stops every group, then the transport. See docs/sharding.md.

A store holds at most one replica of a group. The replicas it was bootstrapped with are named
by the store's id; a replica created later (``add_replica``, when placement moves one here) by
the store's next incarnation ``<store>.<n>``, recorded with every removal in the store's ledger
(``raftcache.store.ledger``), so that no replica id is ever used twice. The meta group's replica
(``meta``) follows the same rule: hosted when the store is a bootstrap meta voter whose replica
was never tombstoned, or when the ledger records a later incarnation — so a store whose meta
replica was removed never starts it again after a restart. Each replica's storage
is bound under the cluster id ``<cluster>/<group id>``, so a group's directory can never be
opened as another group's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.network.batching import AppendBatcher
from raftcache.network.groups import GroupNetwork, GroupRouter, store_of
from raftcache.network.interface import NetworkInterface
from raftcache.raft.config import RaftConfig
from raftcache.raft.events import PeerHealth
from raftcache.raft.node import RaftNode
from raftcache.raft.persist import PersistThread
from raftcache.slots import check_groups, key_group
from raftcache.storage.base import Storage
from raftcache.storage.file import FileStorage
from raftcache.store.ledger import LEDGER_FILE, LedgerMismatchError, ReplicaLedger
from raftcache.store.liveness import StoreLiveness

#: The id of data group ``g`` (the meta group, when it exists, is ``meta``).
log = logging.getLogger("raftcache.store")

GROUP_PREFIX: Final = "g"
#: The meta group's id on the wire and on disk (``raftcache.store.meta``).
META_GROUP: Final = "meta"


def group_id(group: int) -> str:
    """``g<group>``: the id a data group's requests carry and its directory is named by."""
    return f"{GROUP_PREFIX}{group}"


class RemoteGroup:
    """A data group this store holds no replica of: where to send its requests.

    It stands in for the group's ``RaftNode`` where the fronts only need to know whom to
    forward to (``node_id``, ``leader_id``, ``leader_address``): ``leader_id`` is the replica
    believed to lead — the last leader hint heard, else one of the group's stores, starting
    from a per-group offset so that stores spread their first guesses. Any replica is a good
    first target: a follower store forwards once more to its group's leader. ``moved`` is told
    when the guess did not take a request (it answered "not the leader", with or without a
    hint, or could not be reached), and picks the hint or the next replica.
    """

    __slots__ = ("_guess", "group", "members", "node_id")

    def __init__(self, store_id: str, group: str, members: Sequence[str]) -> None:
        if not members:
            raise ValueError(f"group {group} has no replicas")
        self.node_id = store_id
        self.group = group
        self.members: tuple[str, ...] = tuple(members)
        self._guess = zlib.crc32(f"{store_id}/{group}".encode()) % len(self.members)

    @property
    def leader_id(self) -> str:
        """The replica to send the group's next request to."""
        return self.members[self._guess]

    def leader_address(self) -> str | None:
        """None: the fronts reach a remote group's stores by their static addresses."""
        return None

    def moved(self, hint: str | None = None) -> None:
        """The current guess did not take a request: follow ``hint`` (the store it names,
        learnt as one of the group's if it was not listed), else try the next replica."""
        store = None if hint is None else store_of(hint)  # a hint may name a replica id
        if store is not None and store != self.node_id:
            # A replica of the group named it: trust it even when this store's placement does
            # not list it (a replica moved there after this store last heard, or before it
            # restarted from its bootstrap placement) — else its leader is never reached.
            if store not in self.members:
                self.members = (*self.members, store)
            self._guess = self.members.index(store)
        else:
            self._guess = (self._guess + 1) % len(self.members)


class GroupNotHereError(LookupError):
    """The key's group has no replica on this store (another store serves it)."""

    def __init__(self, store_id: str, group: str) -> None:
        super().__init__(f"store {store_id} holds no replica of group {group}")
        self.group = group


@dataclass
class GroupReplica:
    """One hosted group: its Raft node, state machine and cache service."""

    group: str
    node: RaftNode
    machine: CacheStateMachine
    service: CacheService


#: Builds the storage of this store's replica of a group: (group id) → a ``Storage``, a new
#: empty one for a new replica (tests pass memory storages; the default is a ``FileStorage`` in
#: ``<data-dir>/groups/<group id>``, emptied before a new incarnation is created there).
StorageFactory = Callable[[str], Storage]
#: Builds one group's state machine (tests tune the cache; ``serve`` passes its options).
MachineFactory = Callable[[str], CacheStateMachine]
#: Builds one group's cache service around its node and state machine (``serve`` adds its
#: probes and timing; the default is a plain ``CacheService``).
ServiceFactory = Callable[[str, RaftNode, CacheStateMachine], CacheService]


class Store:
    """The replicas of the groups this store hosts (see the module docstring).

    Args:
        store_id: This store's id: its Raft node id in every group.
        network: The store's transport, not started; the store registers its router on it.
        groups: G, the number of data groups of the cluster.
        placement: Group id → the stores holding it, for every group (this store hosts the
            groups it is among; the others are reached through ``remote``).
        storage: Makes a group's storage (default: a ``FileStorage`` under ``data_dir``).
        data_dir: Where the groups' directories live (with the default ``storage``).
        config: Raft timing, shared by every group.
        clock: Wall-clock seconds (stamped into writes).
        machine: Makes a group's state machine (default: a ``CacheStateMachine()``).
        service: Makes a group's cache service (default: a ``CacheService`` on ``clock``).
        peer_addresses: Store id → base URL, recorded in each group's bootstrap membership.
            Kept, not copied: ``learn_address`` adds the stores learnt later (the map).
        meta: The meta group's voters (``raftcache.store.meta``); this store hosts a replica
            of it when it is among them. Empty: a cluster without a meta group.
        ledger: The replicas created and removed since bootstrap (default: the data
            directory's ``REPLICAS``, or a new in-memory one; tests pass one to restarts).
        cluster_id: The cluster's id; each group binds its storage to ``<id>/<group id>``.
        rng: Seeds each group's election timeouts.
        quiesce: Let idle groups go quiet (``RaftConfig.quiesce``), with a ``StoreLiveness``
            to wake them when a peer store fails.
        batch_appends: Send the AppendEntries of every group to one peer store made in one
            event-loop turn as one batch (``raftcache.network.batching``); False: one RPC each.
    """

    def __init__(
        self,
        store_id: str,
        network: NetworkInterface,
        *,
        groups: int,
        placement: Mapping[str, Sequence[str]],
        storage: StorageFactory | None = None,
        data_dir: Path | None = None,
        config: RaftConfig | None = None,
        clock: Callable[[], float],
        machine: MachineFactory | None = None,
        service: ServiceFactory | None = None,
        cluster_id: str = "raftcache",
        rng: random.Random | None = None,
        peer_addresses: Mapping[str, str] | None = None,
        ledger: ReplicaLedger | None = None,
        meta: Sequence[str] = (),
        quiesce: bool = True,
        batch_appends: bool = True,
    ) -> None:
        self.store_id = store_id
        self.groups = check_groups(groups)
        self._data_dir = data_dir
        if storage is None and data_dir is None:
            raise ValueError("a store needs a data_dir or a storage factory")
        #: Tests' storages by group; None: a ``FileStorage`` per replica under ``data_dir``.
        self._storage = storage
        self.network = network
        raft = config or RaftConfig()
        #: What the groups send through: the transport, behind a batcher unless turned off.
        #: A receiver holds a batch at most twice a quarter of the RPC timeout.
        self.batcher = AppendBatcher(network, hold=raft.rpc_timeout / 4) if batch_appends else None
        self.router = GroupRouter(store_id)
        network.register_handlers(self.router)
        self._rng = rng or random.Random()
        self._make_machine = machine or (lambda gid: CacheStateMachine())

        def plain_service(gid: str, node: RaftNode, state: CacheStateMachine) -> CacheService:
            return CacheService(node, state, clock=clock)

        self._make_service = service or plain_service
        self._config = dataclasses.replace(raft, quiesce=quiesce)
        #: The one writer thread of every hosted replica (from ``start`` to ``stop``): a batch
        #: covers every group, one wake-up and one report to the loop, not one per group.
        self._persist_thread: PersistThread | None = None
        #: Wakes quiet groups when a peer store fails (None: groups never go quiet).
        self.liveness: StoreLiveness | None = None
        if quiesce:
            self.liveness = StoreLiveness(
                store_id,
                network,
                lambda: [r.node for r in self.all_replicas()],
                # Four pings per down_after: a failure is seen within it, at a tenth of
                # the heartbeats' rate with the default timings.
                interval=max(raft.heartbeat_interval, raft.election_timeout_min / 4),
                down_after=raft.election_timeout_min,
                # The loop's clock: the Raft nodes' (monotonic in a process, virtual in a
                # simulation, where the real clock would stretch every wait).
                clock=lambda: asyncio.get_running_loop().time(),
            )
            liveness = self.liveness
            self.router.health = lambda: liveness.health_epoch
        #: One view of the peer stores for every group: a store that goes down is one "peer
        #: lost" line, not one per group (``raftcache.raft.events``).
        self.peer_health = PeerHealth(store_id, raft.election_timeout_max)
        self._cluster_id = cluster_id
        self._peer_addresses: dict[str, str] = (
            peer_addresses if isinstance(peer_addresses, dict) else dict(peer_addresses or {})
        )
        #: What this store created and removed since bootstrap (``raftcache.store.ledger``).
        self.ledger = ledger or ReplicaLedger(
            store_id, None if data_dir is None else data_dir / LEDGER_FILE
        )
        self.replicas: dict[str, GroupReplica] = {}
        #: Group id → the stores holding its replicas (every group of the cluster).
        self.placement: dict[str, tuple[str, ...]] = {}
        #: The groups this store holds no replica of.
        self.remote: dict[str, RemoteGroup] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: Removals under way (``remove_replica``), which ``stop`` waits for.
        self._retiring: set[asyncio.Future[str]] = set()
        # First what to host and whether the directories agree (nothing opened yet, so a
        # refusal leaves nothing locked), then the replicas.
        hosting: dict[str, tuple[str, Sequence[str]]] = {}
        for g in range(groups):
            gid = group_id(g)
            members = list(placement.get(gid, ()))
            if not members:
                raise ValueError(f"the placement gives group {gid} no replicas")
            record = self.ledger.record(gid)
            if record is not None:  # created here after bootstrap
                hosting[gid] = (record.replica, record.voters)
                members = [*(m for m in members if m != store_id), store_id]
            elif store_id in members and not self.ledger.removed(gid, store_id):
                hosting[gid] = (store_id, members)
            else:
                members = [m for m in members if m != store_id] or members
            self._check_directories(gid, hosting[gid][0] if gid in hosting else None)
            self.placement[gid] = tuple(members)
            if gid not in hosting:
                self.remote[gid] = RemoteGroup(store_id, gid, self.placement[gid])
        for gid, (replica_id, voters) in hosting.items():
            self.replicas[gid] = self._build(gid, replica_id, voters)
        #: Whether the cluster has a meta group (its bootstrap voters were given).
        self.has_meta = bool(meta)
        #: The stores believed to hold the meta group's replicas, its leader first when known:
        #: the bootstrap voters at first, then what the map and the driver say
        #: (``set_placement(META_GROUP, …)``). Only where to look for the meta leader.
        self.meta_voters: tuple[str, ...] = tuple(meta)
        #: This store's replica of the meta group (None: it holds none). Hosted as a data
        #: group's is: the bootstrap replica unless tombstoned, else the ledger's record — so
        #: a store whose meta replica was removed never starts it again (it would come back
        #: as a voter of a configuration that dropped it).
        self.meta: GroupReplica | None = None
        self._plain_service = plain_service
        if self.has_meta:
            record = self.ledger.record(META_GROUP)
            hosted: tuple[str, Sequence[str]] | None = None
            if record is not None:
                hosted = (record.replica, record.voters)
            elif store_id in meta and not self.ledger.removed(META_GROUP, store_id):
                hosted = (store_id, tuple(meta))
            self._check_directories(META_GROUP, hosted[0] if hosted else None)
            if hosted is not None:
                self.meta = self._build_meta(*hosted)
        self._started = False
        #: The store's stop has begun (``prepare_to_stop``): every replica it hosts — one
        #: created from now on too — declines to become a leadership-transfer target.
        self._leaving = False
        #: Called with a group's id after this store's replica of it was added or removed
        #: (the fronts rebuild their view of that group).
        self._listeners: list[Callable[[str], None]] = []

    def _build_meta(self, replica_id: str, voters: Sequence[str]) -> GroupReplica:
        """The meta group's replica: a plain cache (the map is one key of it)."""
        return self._build(
            META_GROUP,
            replica_id,
            voters,
            state=CacheStateMachine(),
            make_service=self._plain_service,
        )

    def hosted(self, gid: str) -> GroupReplica | None:
        """This store's replica of ``gid`` (a data group, or ``META_GROUP``), if any."""
        return self.meta if gid == META_GROUP else self.replicas.get(gid)

    def knows(self, gid: str) -> bool:
        """Whether ``gid`` is a group of this cluster (the meta group included)."""
        return gid in self.placement or (gid == META_GROUP and self.has_meta)

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(group id)`` after every ``add_replica``/``remove_replica``."""
        self._listeners.append(listener)

    def _changed(self, gid: str) -> None:
        for listener in list(self._listeners):
            listener(gid)

    def _build(
        self,
        gid: str,
        replica_id: str,
        voters: Sequence[str],
        *,
        state: CacheStateMachine | None = None,
        make_service: ServiceFactory | None = None,
    ) -> GroupReplica:
        state = state if state is not None else self._make_machine(gid)
        if self._storage is not None:
            storage = self._storage(gid)
        else:
            directory = self._directory(gid, replica_id)
            assert directory is not None
            directory.mkdir(parents=True, exist_ok=True)
            storage = FileStorage(directory)
        node = RaftNode(
            replica_id,
            list(voters),
            GroupNetwork(self.batcher or self.network, self.router, gid),
            storage,
            state,
            self._config,
            cluster_id=f"{self._cluster_id}/{gid}",
            rng=random.Random(self._rng.getrandbits(64)),
            group=gid,
            peer_addresses=self._peer_addresses,
            peer_health=self.peer_health,
            persist_thread=self._persist_thread,
        )
        return GroupReplica(
            gid, node, state, (make_service or self._make_service)(gid, node, state)
        )

    def _directory(self, gid: str, replica_id: str) -> Path | None:
        """Where a replica's files live: ``groups/<group>`` for the replica the store was
        bootstrapped with, ``groups/<group>-<replica id>`` for a later incarnation (so that
        deleting one incarnation never touches another's files)."""
        if self._data_dir is None or self._storage is not None:
            return None
        name = gid if replica_id == self.store_id else f"{gid}-{replica_id}"
        return self._data_dir / "groups" / name

    def _discard_directory(self, gid: str, replica_id: str) -> None:
        directory = self._directory(gid, replica_id)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _check_directories(self, gid: str, hosted: str | None) -> None:
        """At start: finish removals a crash cut short (a tombstoned replica's directory is
        deleted); refuse a directory of a replica the ledger does not know (a lost or
        rolled-back ledger must never cost a voter its data)."""
        if self._data_dir is None or self._storage is not None:
            return
        root = self._data_dir / "groups"
        if not root.is_dir():
            return
        for entry in sorted(root.iterdir()):
            name = entry.name
            if name != gid and not name.startswith(gid + "-"):
                continue
            replica_id = self.store_id if name == gid else name[len(gid) + 1 :]
            if replica_id == hosted:
                continue
            if self.ledger.removed(gid, replica_id):
                shutil.rmtree(entry, ignore_errors=True)
                continue
            raise LedgerMismatchError(
                f"{entry} holds replica {replica_id} of {gid}, which the store's ledger "
                f"({LEDGER_FILE}) neither hosts nor records as removed: refusing to start "
                "rather than lose its data (restore the ledger, or move the directory away)"
            )

    def _lock(self, gid: str) -> asyncio.Lock:
        # One replica change of a group at a time on this store: a removal finishes (its
        # files deleted) before a new incarnation of the group is created, and the reverse.
        return self._locks.setdefault(gid, asyncio.Lock())

    async def add_replica(self, gid: str, voters: Sequence[str]) -> GroupReplica:
        """Create this store's replica of ``gid``, empty, under a new id (the next
        incarnation: ``raftcache.store.ledger``), knowing the group's ``voters`` (none of them
        this store's: the new replica is no voter, never campaigns, and waits for the group's
        leader to add it as a learner and send it the log). Recorded in the ledger before its
        directory exists; started at once when the store runs. Returns the replica (its
        ``node.node_id`` is the id the leader must add)."""
        if not self.knows(gid):
            raise ValueError(f"no group {gid} in this cluster")
        own = [v for v in voters if store_of(v) == self.store_id]
        if not voters or own:
            raise ValueError(
                f"a new replica of {gid} needs the group's voters, none of them this store's "
                f"(got {list(voters)[:8]})"
            )
        async with self._lock(gid):
            if self.hosted(gid) is not None:
                raise ValueError(f"store {self.store_id} already holds a replica of {gid}")
            replica_id = self.ledger.next_replica_id(gid)
            self.ledger.created(gid, replica_id, voters)
            self._discard_directory(gid, replica_id)  # never used: ids are never reused
            if gid == META_GROUP:
                self.meta = replica = self._build_meta(replica_id, voters)
                if self._started:
                    await self._start_replica(replica)
                return replica
            replica = self._build(gid, replica_id, voters)
            self.replicas[gid] = replica
            self.remote.pop(gid, None)
            self.placement[gid] = (
                *(m for m in self.placement[gid] if m != self.store_id),
                self.store_id,
            )
            if self._started:
                await self._start_replica(replica)
        self._changed(gid)
        return replica

    def set_placement(self, gid: str, stores: Sequence[str]) -> None:
        """Record that ``gid``'s replicas are on ``stores`` now, the preferred leader first
        (``raftcache.store.balance``), as the driver tells every store after a move: where
        this store sends the group's requests when it holds no replica of it. Its own
        replica, if any, stays listed; a store that holds none is left out."""
        if gid == META_GROUP and self.has_meta:
            if stores:  # only where to look for the meta leader: no view to rebuild
                self.meta_voters = tuple(dict.fromkeys(stores))
            return
        if gid not in self.placement:
            raise ValueError(f"no group {gid} in this cluster")
        members = list(dict.fromkeys(stores))  # in order: the preferred leader first
        if gid in self.replicas and self.store_id not in members:
            members.append(self.store_id)
        elif gid not in self.replicas:
            members = [m for m in members if m != self.store_id]
        if not members:
            raise ValueError(f"group {gid} needs at least one store")
        if tuple(members) == self.placement[gid]:
            return
        self.placement[gid] = tuple(members)
        if gid in self.remote:
            self.remote[gid] = RemoteGroup(self.store_id, gid, self.placement[gid])
        self._changed(gid)

    async def remove_replica(
        self, gid: str, replica_id: str | None = None, *, removed_at: int | None = None
    ) -> str:
        """Stop and delete this store's replica of ``gid`` (only ``replica_id``, when given:
        a stale request never deletes a newer incarnation) — only once the group's committed
        configuration no longer names it (docs/sharding.md invariant 6): the caller saw the
        group's leader commit a configuration without it at index ``removed_at``, and the
        replica is refused when its own configuration names it at that index or later (it
        was added again: the caller's view is stale).
        Tombstoned before its data is deleted, so its id is never created again. Returns the
        removed replica's id."""
        async with self._lock(gid):
            replica = self.hosted(gid)
            if replica is None:
                raise LookupError(f"store {self.store_id} holds no replica of {gid}")
            if replica_id is not None and replica.node.node_id != replica_id:
                raise ValueError(
                    f"store {self.store_id} holds replica {replica.node.node_id} of {gid}, "
                    f"not {replica_id}"
                )
            core = replica.node.core
            if removed_at is not None and core is not None:
                # Invariant 6 checked here too, not only by the caller: a configuration this
                # replica holds, at or after the index its removal was seen committed at, that
                # names it means the caller's view is stale (it was added again since).
                own = core.configuration
                if replica.node.node_id in own.all_ids() and core.config_index >= removed_at:
                    raise ValueError(
                        f"replica {replica.node.node_id} of {gid} is a member of its own "
                        f"configuration at index {core.config_index} (removal seen at "
                        f"{removed_at}): not deleted"
                    )
            if gid == META_GROUP:
                self.meta = None
            else:
                del self.replicas[gid]
                others = tuple(m for m in self.placement[gid] if m != self.store_id)
                self.placement[gid] = others or self.placement[gid]
                self.remote[gid] = RemoteGroup(self.store_id, gid, self.placement[gid])
                self._changed(gid)  # the fronts stop using it before it stops
            # Once out of the store, the replica is stopped, tombstoned and deleted whatever
            # happens to the caller: a request handler cancelled midway (its client gone, the
            # server stopping) must not leave it half-stopped — still answering Raft messages,
            # its connections open — and untombstoned. ``stop`` waits for it.
            retire = asyncio.ensure_future(self._retire(gid, replica))
            self._retiring.add(retire)
            retire.add_done_callback(self._retiring.discard)
            return await asyncio.shield(retire)

    async def _retire(self, gid: str, replica: GroupReplica) -> str:
        await _stop_replica(replica)
        removed = replica.node.node_id
        self.ledger.tombstone(gid, removed)
        self._discard_directory(gid, removed)
        return removed

    def group_of(self, key: str) -> str:
        """The id of the data group that owns ``key``."""
        return group_id(key_group(key, self.groups))

    def group_ids(self) -> list[str]:
        """Every data group of the cluster, in slot order (``g0`` … ``g<G-1>``)."""
        return [group_id(g) for g in range(self.groups)]

    def replica_for(self, key: str) -> GroupReplica:
        """This store's replica of ``key``'s group; ``GroupNotHereError`` when it has none."""
        gid = self.group_of(key)
        replica = self.replicas.get(gid)
        if replica is None:
            raise GroupNotHereError(self.store_id, gid)
        return replica

    @property
    def addresses(self) -> Mapping[str, str]:
        """Store id → base URL of every store this store knows (bootstrap and learnt)."""
        return self._peer_addresses

    def learn_address(self, store_id: str, url: str) -> None:
        """Reach store ``store_id`` at ``url`` from now on (a store that joined, or moved):
        the transport and the fronts' forwarding both read it."""
        if not url or self._peer_addresses.get(store_id) == url:
            return
        self._peer_addresses[store_id] = url
        if store_id != self.store_id:
            self.network.set_peer_address(store_id, url)

    async def _start_replica(self, replica: GroupReplica) -> None:
        """Start a replica added while the store runs (its node, then its service)."""
        await replica.node.start()
        if self._leaving:
            replica.node.prepare_to_stop()  # created after the stop began: it declines too
        await replica.service.start()

    def prepare_to_stop(self) -> None:
        """The store's stop has begun: every replica declines leadership transfers from now
        on (``RaftNode.prepare_to_stop``), those added later as well. Until ``start``."""
        self._leaving = True
        for replica in self.all_replicas():
            replica.node.prepare_to_stop()

    def all_replicas(self) -> list[GroupReplica]:
        """Every hosted replica: the data groups', then the meta group's."""
        return [*self.replicas.values(), *([self.meta] if self.meta is not None else [])]

    async def start(self) -> None:
        """The transport, then every group (their nodes, then their services)."""
        self._leaving = False  # a new run (each node's new core starts without it too)
        await self.network.start()
        if self._config.persist_in_thread and self._persist_thread is None:
            self._persist_thread = PersistThread(f"raft-persist-{self.store_id}")
        try:
            for replica in self.all_replicas():
                replica.node.persist_thread = self._persist_thread
                await replica.node.start()
                await replica.service.start()
            if self.liveness is not None:
                await self.liveness.start()
        except BaseException:
            await self.stop(force=True)
            raise
        self._started = True

    async def stop(self, *, force: bool = False) -> None:
        """Every group (services, then nodes, concurrently), then the transport. Idempotent."""
        if not self._started and not force:
            return
        self._started = False
        if self.liveness is not None:
            await self.liveness.stop()
        await asyncio.gather(
            *(_stop_replica(r) for r in self.all_replicas()), *self._retiring,
            return_exceptions=True,
        )  # fmt: skip
        thread, self._persist_thread = self._persist_thread, None
        for replica in self.all_replicas():
            replica.node.persist_thread = None  # a node started alone later writes on its own
        if thread is not None and not await asyncio.to_thread(thread.stop, 30.0):
            log.error("%s: the persist thread did not end", self.store_id)
        if self.batcher is not None:
            self.batcher.close()
        await self.network.stop()


async def _stop_replica(replica: GroupReplica) -> None:
    try:
        await replica.service.stop()
    finally:
        await replica.node.stop()  # stops its view of the network and closes its storage
