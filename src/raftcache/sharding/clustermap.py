"""The cluster map of a sharded cluster: stores, data groups and where each group's replicas are.

Rule: a map is an immutable value with a version; every change returns a new map one version
higher, and ``from_json`` refuses a document that breaks an invariant of docs/sharding.md —
a group with no voter, a replica on an unknown or removed store, two replicas of a group on
one host (but for a replica on a decommissioning store and its replacement, during the move),
a leader that is not a voter — naming what is wrong. The slot → group function is not
stored per slot: it is ``raftcache.slots.group_range`` of ``groups``, fixed at bootstrap.

Host labels are recorded twice, for readers of two releases. ``host`` is what a release before
labels took effect reads, and its ``from_json`` refuses a group with two replicas on one
``host``: so ``host`` never shows a clash — a store whose label would make one keeps its id
there (``raftcache.store.meta``, ``MetaMap.register``). ``label`` (JSON ``host_label``, a field
older readers ignore) is the label the store registered, clash or not; placement reads
``Store.host_label`` — the label, or ``host`` in a map written before it — and repairs a clash by
moving a replica (``raftcache.sharding.placement``). ``shared_hosts`` names a group's clashes.

The map also records where the meta group's own replicas are (``meta``, a placement numbered
``META``), as its driver last observed them: every store reads it to find the meta leader
after the meta replicas moved. It never counts in the data groups' balance.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final

from raftcache.slots import check_groups, group_range

#: The number of the meta group's placement (``ClusterMap.meta``): never a data group's.
META: Final = -1


class StoreState(StrEnum):
    """Where a store is in its life: serving, being emptied, or gone."""

    UP = "up"
    DECOMMISSIONING = "decommissioning"
    REMOVED = "removed"


@dataclass(frozen=True)
class Store:
    """One ``raftcache serve`` process of the cluster.

    Attributes:
        store_id: The store's id (its Raft node id in every group it hosts).
        host: The host as a reader of the previous release sees it: the label, or the
            store's id when the label would show two replicas of a group on one host (that
            reader refuses such a map). Never two replicas of a group on one ``host``.
        http_url: The client and Raft HTTP address, e.g. ``http://10.0.0.5:8001``.
        resp_address: ``host:port`` of the plain RESP port, or "" without one.
        cluster_address: ``host:port`` of the cluster-mode RESP port, or "" without one.
        state: See ``StoreState``.
        nonce: A random token the store drew when its data directory was created (``""``:
            not registered yet): a second process registering the same id with another
            token is refused, so two stores can never share one id.
        label: The host label the store registered (``--host-label``), clash or not; ""
            in a map written before labels were recorded apart (``host_label`` then
            falls back to ``host``).
    """

    store_id: str
    host: str
    http_url: str = ""
    resp_address: str = ""
    cluster_address: str = ""
    state: StoreState = StoreState.UP
    nonce: str = ""
    label: str = ""

    @property
    def host_label(self) -> str:
        """The host placement keeps a group's replicas apart on: the registered label."""
        return self.label or self.host

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.store_id,
            "host": self.host,
            "http_url": self.http_url,
            "resp_address": self.resp_address,
            "cluster_address": self.cluster_address,
            "state": self.state.value,
            **({"nonce": self.nonce} if self.nonce else {}),
            # A field older readers ignore (their ``from_json`` reads named keys only).
            **({"host_label": self.label} if self.label else {}),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Store:
        if not isinstance(obj, Mapping):
            raise ValueError(f"a store must be a JSON object, not {type(obj).__name__}")
        try:
            return cls(
                store_id=_text(obj["id"], "store id", empty=False),
                host=_text(obj["host"], "store host", empty=False),
                http_url=_text(obj.get("http_url", ""), "http_url"),
                resp_address=_text(obj.get("resp_address", ""), "resp_address"),
                cluster_address=_text(obj.get("cluster_address", ""), "cluster_address"),
                state=StoreState(obj.get("state", "up")),
                nonce=_text(obj.get("nonce", ""), "nonce"),
                label=_text(obj.get("host_label", ""), "host_label"),
            )
        except KeyError as exc:
            raise ValueError(f"a store lacks {exc.args[0]!r}") from None


@dataclass(frozen=True)
class GroupPlacement:
    """Where one data group's replicas are.

    Attributes:
        group: The group's number, 0..G-1.
        voters: Stores whose replica votes, sorted.
        learners: Stores whose replica is catching up (a move in progress), sorted.
        leader: The store that led the group when last seen, or None.
    """

    group: int
    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()
    leader: str | None = None

    @property
    def replicas(self) -> tuple[str, ...]:
        """Voters then learners."""
        return self.voters + self.learners

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "leader": self.leader,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> GroupPlacement:
        if not isinstance(obj, Mapping):
            raise ValueError(f"a placement must be a JSON object, not {type(obj).__name__}")
        try:
            group = obj["group"]
            voters = _ids(obj["voters"], "voters")
            learners = _ids(obj.get("learners", []), "learners")
        except KeyError as exc:
            raise ValueError(f"a group lacks {exc.args[0]!r}") from None
        if type(group) is not int:
            raise ValueError(f"a group number must be an integer, not {group!r}")
        leader = obj.get("leader")
        if leader is not None:
            leader = _text(leader, "leader", empty=False)
        return cls(group, voters, learners, leader)


@dataclass(frozen=True)
class ClusterMap:
    """Stores, groups and placement at one version (see the module docstring).

    Attributes:
        version: Raised by one on every change.
        groups: G, the number of data groups (fixed at bootstrap).
        replication: RF, the replicas each group should have.
        stores: Every store ever registered, by id (removed ones stay, marked).
        placements: One per group, in group order.
        meta: The meta group's replicas (group ``META``), as last observed; None in a map
            written before they were recorded (they are then the bootstrap ones).
    """

    version: int
    groups: int
    replication: int
    stores: Mapping[str, Store] = field(default_factory=dict)
    placements: tuple[GroupPlacement, ...] = ()
    meta: GroupPlacement | None = None

    def __post_init__(self) -> None:
        self.check()

    # --- reading -----------------------------------------------------------------------------

    def placement(self, group: int) -> GroupPlacement:
        return self.placements[group]

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """``(first slot, last slot, group)`` for every group, in slot order."""
        out = []
        for group in range(self.groups):
            slots = group_range(group, self.groups)
            out.append((slots.start, slots.stop - 1, group))
        return out

    def live_stores(self) -> list[Store]:
        """Stores that are up (may receive replicas), in id order."""
        return [s for _, s in sorted(self.stores.items()) if s.state is StoreState.UP]

    def replica_counts(self) -> Counter[str]:
        """Replicas (voters and learners) per store; every store that is not removed appears."""
        counts: Counter[str] = Counter(
            {s: 0 for s, st in self.stores.items() if st.state is not StoreState.REMOVED}
        )
        for p in self.placements:
            counts.update(p.replicas)
        return counts

    def leader_counts(self) -> Counter[str]:
        """Group leaders per store; every store that is not removed appears."""
        counts: Counter[str] = Counter(
            {s: 0 for s, st in self.stores.items() if st.state is not StoreState.REMOVED}
        )
        counts.update(p.leader for p in self.placements if p.leader is not None)
        return counts

    def groups_of(self, store_id: str) -> list[int]:
        """The data groups with a replica on ``store_id``."""
        return [p.group for p in self.placements if store_id in p.replicas]

    def holds_meta(self, store_id: str) -> bool:
        """Whether the map records a replica of the meta group on ``store_id``."""
        return self.meta is not None and store_id in self.meta.replicas

    def held_by(self, store_id: str) -> int:
        """The replicas on ``store_id``: its data groups', and the meta group's."""
        return len(self.groups_of(store_id)) + self.holds_meta(store_id)

    def shared_hosts(
        self, p: GroupPlacement, leaving: Collection[str] = ()
    ) -> dict[str, list[str]]:
        """Host label → the stores holding two or more *staying* replicas of ``p`` there
        (sorted). A replica on a store that is not up, or in ``leaving`` (down too long),
        does not hold its host: its replacement may share it for the length of the move."""
        by_host: dict[str, list[str]] = {}
        for store_id in p.replicas:
            store = self.stores.get(store_id)
            if store is None or store.state is not StoreState.UP or store_id in leaving:
                continue
            by_host.setdefault(store.host_label, []).append(store_id)
        return {h: sorted(s) for h, s in sorted(by_host.items()) if len(s) > 1}

    # --- changing ----------------------------------------------------------------------------

    def with_store(self, store: Store) -> ClusterMap:
        """A map with ``store`` added or replaced, one version higher."""
        stores = dict(self.stores)
        stores[store.store_id] = store
        return replace(self, version=self.version + 1, stores=stores)

    def with_hosts_apart(self, placement: GroupPlacement) -> ClusterMap:
        """This map with the ``host`` of each store of ``placement`` that shares one with
        another staying replica of it set to the store's id (its ``label`` kept), so that
        ``placement`` can be recorded where a reader of the previous release would refuse it;
        this map itself when nothing clashes (see the module docstring)."""
        by_host: dict[str, list[str]] = {}
        for store_id in placement.replicas:
            store = self.stores.get(store_id)
            if store is not None and store.state is StoreState.UP:
                by_host.setdefault(store.host, []).append(store_id)
        stores = dict(self.stores)
        for ids in by_host.values():
            for store_id in ids if len(ids) > 1 else ():
                old = stores[store_id]
                stores[store_id] = replace(old, host=store_id, label=old.host_label)
        if stores == self.stores:
            return self
        return replace(self, version=self.version + 1, stores=stores)

    def with_placement(self, placement: GroupPlacement) -> ClusterMap:
        """A map with ``placement`` replacing its group's (the meta group's when its group is
        ``META``), one version higher."""
        if placement.group == META:
            return replace(self, version=self.version + 1, meta=placement)
        placements = list(self.placements)
        placements[placement.group] = placement
        return replace(self, version=self.version + 1, placements=tuple(placements))

    # --- checking and JSON -------------------------------------------------------------------

    def check(self) -> None:
        """ValueError naming the first broken invariant."""
        check_groups(self.groups)
        if type(self.version) is not int or self.version < 0:
            raise ValueError(
                f"the map version must be a non-negative integer, not {self.version!r}"
            )
        if type(self.replication) is not int or self.replication < 1:
            raise ValueError(f"the replication factor must be at least 1, not {self.replication!r}")
        for store_id, store in self.stores.items():
            if store.store_id != store_id:
                raise ValueError(f"store {store.store_id!r} is filed under {store_id!r}")
        if len(self.placements) != self.groups:
            raise ValueError(
                f"the map has {len(self.placements)} placements for {self.groups} groups"
            )
        for number, p in enumerate(self.placements):
            self._check_placement(number, p)
        if self.meta is not None:
            self._check_meta(self.meta)

    def _check_meta(self, p: GroupPlacement) -> None:
        """The meta group's placement: on stores of the map that are not removed (host labels
        are not checked: the bootstrap put it on the first stores, whatever their hosts)."""
        if p.group != META or not p.voters:
            raise ValueError("the meta group's placement needs its voters (and group -1)")
        if len(set(p.replicas)) != len(p.replicas):
            raise ValueError(f"the meta group lists a store twice: {list(p.replicas)}")
        for store_id in p.replicas:
            store = self.stores.get(store_id)
            if store is None or store.state is StoreState.REMOVED:
                raise ValueError(
                    f"the meta group has a replica on {'removed' if store else 'unknown'} "
                    f"store {store_id!r}"
                )
        if p.leader is not None and p.leader not in p.voters:
            raise ValueError(f"the meta group's leader {p.leader!r} is not a voter")

    def _check_placement(self, number: int, p: GroupPlacement) -> None:
        if p.group != number:
            raise ValueError(f"placement {number} is labelled group {p.group}")
        if not p.voters:
            raise ValueError(f"group {p.group} has no voter")
        if len(set(p.replicas)) != len(p.replicas):
            raise ValueError(f"group {p.group} lists a store twice: {list(p.replicas)}")
        if p.voters != tuple(sorted(p.voters)) or p.learners != tuple(sorted(p.learners)):
            raise ValueError(f"group {p.group}: voters and learners must be sorted")
        hosts: dict[str, str] = {}  # host → a staying replica there
        for store_id in p.replicas:
            store = self.stores.get(store_id)
            if store is None:
                raise ValueError(f"group {p.group} has a replica on unknown store {store_id!r}")
            if store.state is StoreState.REMOVED:
                raise ValueError(f"group {p.group} has a replica on removed store {store_id!r}")
            if store.state is StoreState.DECOMMISSIONING:
                continue  # its replacement may share its host while the replica moves
            if store.host in hosts:
                raise ValueError(
                    f"group {p.group} has two replicas on host {store.host!r}: "
                    f"{hosts[store.host]!r} and {store_id!r}"
                )
            hosts[store.host] = store_id
        if p.leader is not None and p.leader not in p.voters:
            raise ValueError(f"group {p.group}: leader {p.leader!r} is not a voter")

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "groups": self.groups,
            "replication": self.replication,
            "stores": [s.to_json() for _, s in sorted(self.stores.items())],
            "placements": [p.to_json() for p in self.placements],
            **({"meta": self.meta.to_json()} if self.meta is not None else {}),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ClusterMap:
        """The map ``to_json`` wrote; ValueError naming what is missing or inconsistent."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"a cluster map must be a JSON object, not {type(obj).__name__}")
        try:
            stores_json = obj["stores"]
            placements_json = obj["placements"]
            version, groups, replication = obj["version"], obj["groups"], obj["replication"]
        except KeyError as exc:
            raise ValueError(f"a cluster map lacks {exc.args[0]!r}") from None
        stores = [Store.from_json(s) for s in _list(stores_json, "stores")]
        by_id = {s.store_id: s for s in stores}
        if len(by_id) != len(stores):
            raise ValueError("a cluster map lists a store id twice")
        placements = tuple(
            GroupPlacement.from_json(p) for p in _list(placements_json, "placements")
        )
        meta_json = obj.get("meta")
        meta = None
        if meta_json is not None:
            if not isinstance(meta_json, Mapping):
                raise ValueError("the meta group's placement must be a JSON object")
            meta = GroupPlacement.from_json({**meta_json, "group": META})
        return cls(version, groups, replication, by_id, placements, meta)

    @classmethod
    def bootstrap(cls, stores: Iterable[Store], groups: int, replication: int = 3) -> ClusterMap:
        """The first map of a new cluster: each group on the ``replication`` least-loaded
        stores of distinct hosts, led by the one of them that leads fewest groups, so that
        replicas and leaders start balanced (within one where the hosts allow)."""
        check_groups(groups)
        members = sorted(stores, key=lambda s: s.store_id)
        if not members:
            raise ValueError("a cluster needs at least one store")
        by_id = {s.store_id: s for s in members}
        if len(by_id) != len(members):
            raise ValueError("store ids must be distinct")
        order = {s.store_id: i for i, s in enumerate(members)}
        counts = dict.fromkeys(by_id, 0)
        leads = dict.fromkeys(by_id, 0)
        placements = []
        for group in range(groups):
            start = group * replication

            def rank(s: Store, start: int = start) -> tuple[int, int]:
                return counts[s.store_id], (order[s.store_id] - start) % len(members)

            chosen: list[Store] = []
            for store in sorted(members, key=rank):
                if len(chosen) < replication and store.host not in {c.host for c in chosen}:
                    chosen.append(store)
            leader = min(chosen, key=lambda s: (leads[s.store_id], rank(s)))
            for store in chosen:
                counts[store.store_id] += 1
            leads[leader.store_id] += 1
            voters = tuple(sorted(s.store_id for s in chosen))
            placements.append(GroupPlacement(group, voters, (), leader.store_id))
        return cls(1, groups, replication, by_id, tuple(placements))


def _text(value: object, what: str, *, empty: bool = True) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise ValueError(f"{what} must be a {'' if empty else 'non-empty '}string, not {value!r}")
    return value


def _list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a JSON array, not {type(value).__name__}")
    return value


def _ids(value: object, what: str) -> tuple[str, ...]:
    return tuple(_text(v, what, empty=False) for v in _list(value, what))


__all__ = ["META", "ClusterMap", "GroupPlacement", "Store", "StoreState"]
