"""The shape of a sharded cluster as a store's data directory records it: ``SHARDS``.

Rule: a cluster's number of data groups ``G``, its replication and the replicas of every group
are fixed when its stores first start (``raftcache serve --groups G``), written once into
``<data-dir>/SHARDS`` before any group is created, and read back — never recomputed — on every
later start. Flags that disagree with the record are refused with ``LayoutMismatchError``,
naming the difference, as ``--peers`` that disagree with a group's bootstrap record are
(``PeersMismatchError``): a store that silently started with another ``G`` would look for keys
in the wrong groups, and one started with other stores would place replicas nobody else has.
A directory of a one-group node (today's layout: its files at the top) is never reopened as a
store of ``G > 1`` groups, nor a store's as a one-group node.

Static placement: each bootstrap store counts as its own host (so ``replicas`` distinct stores
per group), placed by ``ClusterMap.bootstrap``, which balances replicas and leaders within one.
The record also names the meta group's voters (``meta``: the first ``MAX_META_VOTERS``
bootstrap stores; absent in a record written before the meta group existed — that cluster
runs without one) and, for a store that joined a running cluster (``serve --join``), the
addresses it learnt then (``urls``) and that it joined (``joined``): its placement is the
map's at that time, its stores are every store the map listed, and ``--peers`` is not
compared (the map, not the flags, says who the peers are).

The file is JSON, written to a temporary name, synced, renamed and the directory synced, so a
crash leaves either no record (the store bootstraps again, identically) or the whole one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from raftcache.sharding.clustermap import ClusterMap, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.slots import check_groups
from raftcache.storage.fsio import FileOps, atomic_write
from raftcache.store.meta import meta_voters
from raftcache.store.store import group_id

SHARDS_FILE: Final = "SHARDS"
GROUPS_DIR: Final = "groups"
FORMAT: Final = 1
#: The largest replication a group may be asked for (a group of more voters gains nothing
#: a cache needs and slows every commit).
MAX_REPLICAS: Final = 7


class LayoutMismatchError(ValueError):
    """The data directory records another cluster shape than the flags ask for."""


@dataclass(frozen=True, slots=True)
class ShardLayout:
    """The shape of a sharded cluster.

    Attributes:
        groups: ``G``, the number of data groups.
        replicas: the replication asked for at bootstrap (each group has
            ``min(replicas, len(stores))`` replicas).
        stores: the bootstrap stores' ids, sorted.
        placement: group id (``g0`` …) → the ids of the stores holding it, its *preferred
            leader* first (balanced over the stores by ``ClusterMap.bootstrap``; a store
            leading a group hands it to the preferred leader when that one is caught up:
            ``raftcache.store.balance``).
        meta: the meta group's voters (empty: a cluster without a meta group).
        urls: store id → base URL learnt when joining (empty for a bootstrap store).
        joined: this store joined a running cluster (``--peers`` is not compared).
    """

    groups: int
    replicas: int
    stores: tuple[str, ...]
    placement: Mapping[str, tuple[str, ...]]
    meta: tuple[str, ...] = ()
    urls: Mapping[str, str] = field(default_factory=dict)
    joined: bool = False
    #: Drawn when the directory is first written: this store's proof of identity in the
    #: map (``Store.nonce``); "" in a record written before it existed.
    nonce: str = field(default_factory=lambda: secrets.token_hex(8))

    @classmethod
    def static(cls, stores: Sequence[str], groups: int, replicas: int) -> ShardLayout:
        """The bootstrap layout of ``stores`` (each its own host) for ``groups`` groups."""
        check_groups(groups)
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, not {replicas}")
        ids = tuple(sorted(stores))
        cmap = ClusterMap.bootstrap([StoreInfo(s, s) for s in ids], groups, replicas)
        placement = {
            group_id(p.group): (p.leader, *(v for v in p.voters if v != p.leader))
            for p in cmap.placements
            if p.leader is not None
        }
        return cls(groups, replicas, ids, placement, meta=meta_voters(ids))

    @classmethod
    def joining(cls, cmap: ClusterMap, meta: Sequence[str]) -> ShardLayout:
        """The layout of a store joining the cluster ``cmap`` describes (it holds nothing:
        the placement driver moves replicas onto it). ``meta``: the meta stores the answering
        store named; the map's own record of them wins (the answering store's may be stale,
        naming a store removed since — and the record must name stores of the layout)."""
        live = {s: i for s, i in cmap.stores.items() if i.state is not StoreState.REMOVED}
        if cmap.meta is not None:
            meta = cmap.meta.voters
        meta = tuple(m for m in meta if m in live) or tuple(meta)
        placement = {
            group_id(p.group): (
                *([p.leader] if p.leader else []),
                *(v for v in (*p.voters, *p.learners) if v != p.leader),
            )
            for p in cmap.placements
        }
        return cls(
            cmap.groups,
            cmap.replication,
            tuple(sorted(live)),
            placement,
            meta=tuple(meta),
            urls={s: i.http_url for s, i in live.items() if i.http_url},
            joined=True,
        )

    def hosted_by(self, store_id: str) -> list[str]:
        """The groups ``store_id`` holds a replica of, in slot order."""
        return [g for g, members in self.placement.items() if store_id in members]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "groups": self.groups,
            "replicas": self.replicas,
            "stores": list(self.stores),
            "placement": {g: list(m) for g, m in self.placement.items()},
            **({"meta": list(self.meta)} if self.meta else {}),
            **({"urls": dict(self.urls)} if self.urls else {}),
            **({"joined": True} if self.joined else {}),
            **({"nonce": self.nonce} if self.nonce else {}),
        }

    @classmethod
    def from_json(cls, data: object) -> ShardLayout:
        """Parse a record; ValueError naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} record")
        groups, replicas = data.get("groups"), data.get("replicas")
        stores, placement = data.get("stores"), data.get("placement")
        if not isinstance(groups, int) or not isinstance(replicas, int):
            raise ValueError("groups and replicas must be integers")
        check_groups(groups)
        if not isinstance(stores, list) or not all(isinstance(s, str) for s in stores):
            raise ValueError("stores must be a list of ids")
        if not isinstance(placement, dict) or sorted(placement) != sorted(
            group_id(g) for g in range(groups)
        ):
            raise ValueError(f"placement must name each of the {groups} groups once")
        parsed: dict[str, tuple[str, ...]] = {}
        for g in range(groups):
            members = placement[group_id(g)]
            if (
                not isinstance(members, list)
                or not members
                or not all(m in stores for m in members)
            ):
                raise ValueError(f"group {group_id(g)}: replicas must be stores of the cluster")
            parsed[group_id(g)] = tuple(members)
        meta, urls = data.get("meta", []), data.get("urls", {})
        if not isinstance(meta, list) or not all(m in stores for m in meta):
            raise ValueError("meta must list stores of the cluster")
        if not isinstance(urls, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in urls.items()
        ):
            raise ValueError("urls must map store ids to URLs")
        joined = data.get("joined", False) is True
        nonce = data.get("nonce", "")
        if not isinstance(nonce, str):
            raise ValueError("nonce must be a string")
        return cls(groups, replicas, tuple(stores), parsed, tuple(meta), dict(urls), joined, nonce)


def open_layout(data_dir: Path, wanted: ShardLayout) -> ShardLayout:
    """The layout to run with: the one ``data_dir`` records (checked against ``wanted``, the
    flags'), or ``wanted``, recorded now on a first start. ``LayoutMismatchError`` when the
    record disagrees with the flags or the directory holds a one-group node's data."""
    record = data_dir / SHARDS_FILE
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    if text is None:
        leftovers = sorted(p.name for p in data_dir.iterdir()) if data_dir.exists() else []
        if leftovers:
            raise LayoutMismatchError(
                f"{data_dir} holds a one-group node's data ({', '.join(leftovers[:3])}…): the "
                f"number of groups is fixed when a cluster is created; start it without "
                f"--groups, or give this store an empty --data-dir"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(record, json.dumps(wanted.to_json(), indent=1) + "\n")
        return wanted
    try:
        recorded = ShardLayout.from_json(json.loads(text))
    except ValueError as exc:
        raise LayoutMismatchError(f"{record} is damaged: {exc}") from None
    compared = [
        ("--groups", recorded.groups, wanted.groups),
        ("--replicas", recorded.replicas, wanted.replicas),
        ("--peers", ", ".join(recorded.stores), ", ".join(wanted.stores)),
    ]
    if recorded.joined or wanted.joined:
        compared = compared[:1] if not wanted.joined else []  # the map says who the peers are
    differences = [
        f"{what}: the data has {have}, the flags ask for {want}"
        for what, have, want in compared
        if have != want
    ]
    if differences:
        raise LayoutMismatchError(
            f"{data_dir} belongs to another cluster shape — " + "; ".join(differences)
        )
    return recorded


def check_single_group_dir(data_dir: Path) -> None:
    """Refuse to open a store's directory (one recording ``SHARDS``) as a one-group node."""
    record = data_dir / SHARDS_FILE
    if record.exists():
        try:
            groups = json.loads(record.read_text(encoding="utf-8")).get("groups", "?")
        except (OSError, ValueError, AttributeError):
            groups = "?"
        raise LayoutMismatchError(
            f"{data_dir} holds a store of a cluster created with --groups {groups}: start it "
            f"with the same --groups (the number of groups is fixed when a cluster is created)"
        )


def _write_atomically(path: Path, text: str) -> None:
    atomic_write(FileOps(), str(path), text.encode(), fsync=True)
