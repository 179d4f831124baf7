"""The meta group's content: the cluster map, one replicated value (docs/sharding.md).

Rule: the map lives in one more Raft group, ``meta``, bootstrapped on up to ``MAX_META_VOTERS``
of the bootstrap stores; its replicas then move as a data group's do
(``raftcache.store.driver``), and the map records where they are (``ClusterMap.meta``). Its
state machine is a cache like any group's, and the map is one key of it, ``map``, holding a
``ClusterMap`` as JSON — so the map is replicated, persisted, snapshotted and backed up exactly
as cached data is, and never lives in a side file. Every change is a read-modify-write of that
key, compare-and-set on the key's version (its log index): two stores registering at once, or a
deposed meta leader's driver writing late, can never overwrite a newer map; the loser reads
again and re-applies its change. The map's own ``version`` rises by one per change (invariant
7).

What the map records, and who writes it:
- stores (id, host label, addresses, state): each store registers itself at start (a joining
  store that way enters the cluster); an operator marks one decommissioning (drain) or up
  again, and removed once it holds no replica — a removed id is never registered again;
- each group's placement, as the placement driver last observed it in the groups'
  configurations (invariant 2: the groups are the truth; the map is what routing and the
  operators read, and what a restarted store learns where groups moved from) — the meta
  group's own too, which is how every store finds the meta group after its replicas moved.

A store holding a meta replica can be drained (the driver moves the replica first) only when
every meta replica then leaving — this one, and those on stores already draining, removed or
down — has a taker of its own among the stores up (and not down) that hold no meta replica,
counted as the planner counts room on hosts (``placement.host_room``: one per host no staying
replica uses, every one on a host two staying replicas share), as many as keep the meta group
at its replication. Otherwise the drain is refused (409) naming why: two drains under way at once
must never leave the meta group on fewer voters than it had (``meta_move_refusal``); the
driver's plan never removes a live meta voter below three before its replacement is in
(``driver.plan_meta``) either.

Reads for routing may be stale (a store's own meta replica, ``stale``); the driver and the
operators' changes read linearizably through the meta leader.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Final

from raftcache.cache.errors import PreconditionFailedError
from raftcache.cache.service import CacheService
from raftcache.network.groups import store_of
from raftcache.sharding.clustermap import META, ClusterMap, GroupPlacement, Store, StoreState
from raftcache.sharding.placement import host_room
from raftcache.store.store import META_GROUP, group_id

__all__ = [
    "META_GROUP",
    "MetaConflictError",
    "MetaMap",
    "first_map",
    "meta_move_refusal",
    "meta_replication",
    "meta_voters",
    "registered",
]
#: The key of the meta group's cache that holds the map.
MAP_KEY: Final = "map"
#: The meta group's bootstrap voters: the first of the bootstrap stores, at most this many
#: (three tolerate one failure, as a data group of replication 3 does). The driver then keeps
#: ``meta_replication`` of them.
MAX_META_VOTERS: Final = 3
#: Compare-and-set attempts of one change before giving up (each loses only to a newer map).
_ATTEMPTS: Final = 20


class MetaConflictError(ValueError):
    """A change the map refuses: a removed id registering again, removing a store that still
    holds replicas, an unknown store (answered 409). A host label that shows two of a group's
    replicas on one host is recorded, never refused (``MetaMap.register``)."""


def meta_voters(stores: Sequence[str]) -> tuple[str, ...]:
    """The meta group's bootstrap voters among the cluster's bootstrap ``stores``."""
    return tuple(sorted(stores)[:MAX_META_VOTERS])


def meta_replication(replication: int) -> int:
    """The replicas the meta group aims for: the data groups' replication, and never fewer
    than ``MAX_META_VOTERS`` (the map is small, and every join and move needs it); bounded by
    the distinct hosts of the stores that are up, as a data group is (``plan``)."""
    return max(replication, MAX_META_VOTERS)


def meta_move_refusal(cmap: ClusterMap, store_id: str, down: Collection[str] = ()) -> str | None:
    """Why the meta replica on ``store_id`` cannot move away now (None: it can, or the map
    records none there).

    Staying: the meta replicas on other stores that are up and not ``down`` (silent past
    ``--store-down-after``, as the driver counts them). Every other meta replica is leaving
    — ``store_id``'s, and those on stores draining, removed or down — and the meta group
    keeps its replication only if each has a taker of its own among the stores up, not down,
    holding no meta replica, counted as the planner counts them (``placement.host_room``): one
    per host no staying replica uses, every one on a host two or more staying replicas share
    (one machine's stores under one label: a move to a sibling store). As many takers are
    needed as leaving replicas, up to what the replication asks of the staying ones."""
    if cmap.meta is None or store_id not in cmap.meta.replicas:
        return None

    def stays(s: str) -> bool:
        info = cmap.stores.get(s)
        return s != store_id and s not in down and info is not None and info.state is StoreState.UP

    staying = [s for s in cmap.meta.replicas if stays(s)]
    leaving = sorted(s for s in cmap.meta.replicas if not stays(s))
    spare = [
        s.store_id
        for s in cmap.live_stores()
        if s.store_id not in down and s.store_id not in cmap.meta.replicas
    ]
    hosts = {s: st.host_label for s, st in cmap.stores.items()}
    room = host_room(hosts, staying, leaving, spare)  # as the planner counts (``plan``)
    takers = sorted(s for s in spare if hosts[s] in room)
    needed = min(len(leaving), max(0, meta_replication(cmap.replication) - len(staying)))
    if sum(room.values()) >= needed:
        return None
    silent = f"; down: {', '.join(sorted(down))}" if down else ""
    return (
        f"store {store_id} holds a replica of the meta group and no other store can take it: "
        f"{len(leaving)} meta replica(s) would be leaving ({', '.join(leaving)}) with "
        f"{sum(room.values())} store(s) to take them ({', '.join(takers) or 'none'}; "
        f"a taker is up, holds no meta replica and is on a host the staying ones "
        f"({', '.join(sorted(staying)) or 'none'}) do not use, or already share{silent}): "
        "add a store first, or let the drain under way finish"
    )


def first_map(
    groups: int,
    replication: int,
    placement: Mapping[str, Sequence[str]],
    urls: Mapping[str, str],
    meta: Sequence[str] = (),
) -> ClusterMap:
    """The map of a new cluster from its bootstrap layout: each bootstrap store counts as its
    own host until it registers its label; ``placement`` is group id → stores, the preferred
    leader first (``raftcache.store.layout``); ``meta`` the meta group's bootstrap voters."""
    stores = {s: Store(s, s, urls.get(s, "")) for gid in placement for s in placement[gid]}
    for s, url in urls.items():
        stores.setdefault(s, Store(s, s, url))
    placements = tuple(
        GroupPlacement(g, tuple(sorted(placement[group_id(g)]))) for g in range(groups)
    )
    for s in meta:
        stores.setdefault(s, Store(s, s, urls.get(s, "")))
    meta_placement = GroupPlacement(META, tuple(sorted(meta))) if meta else None
    return ClusterMap(1, groups, replication, stores, placements, meta_placement)


def observed_placement(
    group: int, voters: Sequence[str], learners: Sequence[str], leader: str | None
) -> GroupPlacement:
    """A group's placement as its configuration names it (replica ids → their stores)."""
    voter_stores = tuple(sorted({store_of(v) for v in voters}))
    learner_stores = tuple(sorted({store_of(v) for v in learners} - set(voter_stores)))
    lead = store_of(leader) if leader is not None else None
    return GroupPlacement(
        group, voter_stores, learner_stores, lead if lead in voter_stores else None
    )


def registered(current: ClusterMap | None, store: Store) -> ClusterMap:
    """``current`` with ``store`` registered: added, or its addresses and host label updated
    (its state kept). ``store.host`` is the label it was started with. The label is recorded
    as given, always (``Store.label``: placement reads it); ``host`` takes it too unless that
    would show two replicas of a group on one ``host`` — the bootstrap placed them before the
    labels were known, or the store restarted with another label — which a reader of the
    previous release refuses: ``host`` is then the store's id, and the driver repairs the
    clash by a move. A label never makes a store refused. MetaConflictError: no map yet, a
    removed id, or another process's id."""
    if current is None:
        raise MetaConflictError("the cluster map is not written yet")
    known = current.stores.get(store.store_id)
    if known is not None and known.state is StoreState.REMOVED:
        raise MetaConflictError(
            f"store id {store.store_id} was removed from this cluster: ids are never "
            f"reused (start the store under a new --id with an empty --data-dir)"
        )
    if known is not None and known.nonce and store.nonce != known.nonce:
        raise MetaConflictError(
            f"store id {store.store_id} is registered by another process (at "
            f"{known.http_url}): two stores started with one id, or a data directory "
            "made elsewhere; give this store its own --id and an empty --data-dir"
        )
    wanted = store if known is None else replace(store, state=known.state)
    wanted = replace(wanted, label=store.host_label)
    fallbacks = [store.store_id] + ([known.host] if known is not None else [])
    for host in [wanted.host, *fallbacks]:
        candidate = replace(wanted, host=host)
        if candidate == known:
            return current
        try:
            return current.with_store(candidate)
        except ValueError as exc:
            why = exc
    raise MetaConflictError(f"store {store.store_id} refused: {why}")


class MetaMap:
    """Reads and changes the map through this store's replica of the meta group.

    Changes must run on the meta leader (its ``CacheService`` raises ``NotLeaderError``
    elsewhere; the routes forward). ``read`` at ``stale`` serves from the local replica.
    """

    def __init__(self, service: CacheService) -> None:
        self.service = service

    async def read(self, consistency: str = "linearizable") -> ClusterMap | None:
        """The map (None before the first leader wrote it)."""
        found = await self._read(consistency)
        return None if found is None else found[0]

    async def _read(self, consistency: str) -> tuple[ClusterMap, int] | None:
        item = await self.service.get(MAP_KEY, consistency, touch=False)
        if item is None:
            return None
        return ClusterMap.from_json(json.loads(item.value)), item.version

    async def change(self, edit: Callable[[ClusterMap | None], ClusterMap | None]) -> ClusterMap:
        """Apply ``edit`` to the current map and write the result compare-and-set; again on a
        newer map when another change won. ``edit`` returns the map unchanged (or None with
        no map) to write nothing; it may raise ``MetaConflictError``."""
        for _ in range(_ATTEMPTS):
            found = await self._read("linearizable")
            current, version = (None, None) if found is None else found
            new = edit(current)
            if new is None or new == current:
                if current is None:
                    raise MetaConflictError("the cluster map is not written yet")
                return current
            body = json.dumps(new.to_json(), separators=(",", ":")).encode()
            try:
                if version is None:
                    await self.service.set(MAP_KEY, body, if_absent=True)
                else:
                    await self.service.set(MAP_KEY, body, if_version=version)
            except PreconditionFailedError:
                continue  # another change won: read it and apply ours to it
            return new
        raise MetaConflictError("the cluster map kept changing; try again")

    async def initialise(self, first: ClusterMap) -> ClusterMap:
        """Write ``first`` unless a map exists (every meta leader may try; one wins)."""
        return await self.change(lambda current: first if current is None else current)

    async def register(self, store: Store) -> ClusterMap:
        """Add ``store``, or update its addresses and host label (its state is kept):
        ``registered``."""
        return await self.change(lambda current: registered(current, store))

    async def set_state(
        self, store_id: str, state: StoreState, down: Collection[str] = ()
    ) -> ClusterMap:
        """Mark a store up, decommissioning (refused when its meta replica cannot move:
        ``meta_move_refusal``, with the stores the driver counts ``down``), or removed (only
        once it holds no replica, the meta group's included)."""

        def edit(current: ClusterMap | None) -> ClusterMap | None:
            if current is None:
                raise MetaConflictError("the cluster map is not written yet")
            known = current.stores.get(store_id)
            if known is None:
                raise MetaConflictError(f"no store {store_id!r} in this cluster")
            if known.state is state:
                return current
            if known.state is StoreState.REMOVED:
                raise MetaConflictError(f"store {store_id} was removed; ids are never reused")
            held = current.groups_of(store_id)
            if state is StoreState.REMOVED and held:
                raise MetaConflictError(
                    f"store {store_id} still holds replicas of {len(held)} group(s) "
                    f"(g{held[0]}…): drain it first"
                )
            if state is StoreState.REMOVED and current.holds_meta(store_id):
                raise MetaConflictError(
                    f"store {store_id} still holds a replica of the meta group: drain it first"
                )
            why = None if state is StoreState.UP else meta_move_refusal(current, store_id, down)
            if why is not None:
                raise MetaConflictError(why)
            try:
                return current.with_store(replace(known, state=state))
            except ValueError as exc:
                raise MetaConflictError(str(exc)) from None

        return await self.change(edit)

    async def record(self, placements: Sequence[GroupPlacement]) -> ClusterMap:
        """Record what the driver observed of each group (those that changed; the meta
        group's is numbered ``META``)."""

        def edit(current: ClusterMap | None) -> ClusterMap | None:
            if current is None:
                return None
            new = current
            for p in placements:
                if p.group == META and current.meta != p:
                    try:
                        new = new.with_placement(p)
                    except ValueError:
                        continue
                elif 0 <= p.group < current.groups and current.placement(p.group) != p:
                    try:
                        new = new.with_placement(p)
                    except ValueError:
                        try:  # replicas sharing a ``host`` (placement reads labels):
                            new = new.with_hosts_apart(p).with_placement(p)
                        except ValueError:
                            continue  # not recordable (e.g. a replica on an unregistered store)
            return new

        return await self.change(edit)
