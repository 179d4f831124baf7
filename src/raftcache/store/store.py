"""``Store``: one process's replicas of many Raft groups, over one transport.

Rule: the store owns its transport and the transport's ``GroupRouter``; every group it hosts is
a complete cache of one Raft group — its own storage (``<data_dir>/groups/<group id>``, today's
layout, so each group has its own log, snapshots and bootstrap record), ``CacheStateMachine``,
``RaftNode`` over a ``GroupNetwork`` view of the transport, and ``CacheService`` — built,
started and stopped together. A key belongs to one data group (``raftcache.slots``) and
``replica_for`` is the one way the layers above reach a group, so no key is ever served by
another group's replica. ``start`` opens the transport before any group campaigns (peers can
answer at once); ``stop`` stops every group, then the transport. See docs/sharding.md.

Each group's Raft node is named by the store's id (a store holds at most one replica of a
group) and is bound to its storage under the cluster id ``<cluster>/<group id>``, so a group's
directory can never be opened as another group's.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.network.groups import GroupNetwork, GroupRouter
from raftcache.network.interface import NetworkInterface
from raftcache.raft.config import RaftConfig
from raftcache.raft.node import RaftNode
from raftcache.slots import check_groups, key_group
from raftcache.storage.base import Storage
from raftcache.storage.file import FileStorage

#: The id of data group ``g`` (the meta group, when it exists, is ``meta``).
GROUP_PREFIX: Final = "g"


def group_id(group: int) -> str:
    """``g<group>``: the id a data group's requests carry and its directory is named by."""
    return f"{GROUP_PREFIX}{group}"


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


#: Builds one group's storage: (group id) → a ``Storage`` (tests pass memory storages).
StorageFactory = Callable[[str], Storage]
#: Builds one group's state machine and service around its node (tests tune the cache).
MachineFactory = Callable[[str], CacheStateMachine]


class Store:
    """The replicas of the groups this store hosts (see the module docstring).

    Args:
        store_id: This store's id: its Raft node id in every group.
        network: The store's transport, not started; the store registers its router on it.
        groups: G, the number of data groups of the cluster.
        placement: Group id → the stores holding it (this store must be among them to host
            it); groups this store is not in are not hosted.
        storage: Makes a group's storage (default: a ``FileStorage`` under ``data_dir``).
        data_dir: Where the groups' directories live (with the default ``storage``).
        config: Raft timing, shared by every group.
        clock: Wall-clock seconds (stamped into writes).
        machine: Makes a group's state machine (default: a ``CacheStateMachine()``).
        cluster_id: The cluster's id; each group binds its storage to ``<id>/<group id>``.
        rng: Seeds each group's election timeouts.
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
        cluster_id: str = "raftcache",
        rng: random.Random | None = None,
    ) -> None:
        self.store_id = store_id
        self.groups = check_groups(groups)
        if storage is None:
            if data_dir is None:
                raise ValueError("a store needs a data_dir or a storage factory")
            storage = _file_storages(data_dir)
        self.network = network
        self.router = GroupRouter(store_id)
        network.register_handlers(self.router)
        rng = rng or random.Random()
        make_machine = machine or (lambda gid: CacheStateMachine())
        self.replicas: dict[str, GroupReplica] = {}
        for g in range(groups):
            gid = group_id(g)
            members = list(placement.get(gid, ()))
            if store_id not in members:
                continue
            state = make_machine(gid)
            node = RaftNode(
                store_id,
                members,
                GroupNetwork(network, self.router, gid),
                storage(gid),
                state,
                config,
                cluster_id=f"{cluster_id}/{gid}",
                rng=random.Random(rng.getrandbits(64)),
                group=gid,
            )
            service = CacheService(node, state, clock=clock)
            self.replicas[gid] = GroupReplica(gid, node, state, service)
        self._started = False

    def group_of(self, key: str) -> str:
        """The id of the data group that owns ``key``."""
        return group_id(key_group(key, self.groups))

    def replica_for(self, key: str) -> GroupReplica:
        """This store's replica of ``key``'s group; ``GroupNotHereError`` when it has none."""
        gid = self.group_of(key)
        replica = self.replicas.get(gid)
        if replica is None:
            raise GroupNotHereError(self.store_id, gid)
        return replica

    async def start(self) -> None:
        """The transport, then every group (their nodes, then their services)."""
        await self.network.start()
        try:
            for replica in self.replicas.values():
                await replica.node.start()
                await replica.service.start()
        except BaseException:
            await self.stop(force=True)
            raise
        self._started = True

    async def stop(self, *, force: bool = False) -> None:
        """Every group (services, then nodes, concurrently), then the transport. Idempotent."""
        if not self._started and not force:
            return
        self._started = False
        await asyncio.gather(
            *(_stop_replica(r) for r in self.replicas.values()), return_exceptions=True
        )
        await self.network.stop()


def _file_storages(data_dir: Path) -> StorageFactory:
    def make(gid: str) -> Storage:
        directory = data_dir / "groups" / gid
        directory.mkdir(parents=True, exist_ok=True)
        return FileStorage(directory)

    return make


async def _stop_replica(replica: GroupReplica) -> None:
    try:
        await replica.service.stop()
    finally:
        await replica.node.stop()  # stops its view of the network and closes its storage
