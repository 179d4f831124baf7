"""The cluster map of a sharded cluster as the clients hold it: which store leads each group.

Rule: pure — no I/O, no clock. ``parse_shards`` reads one store's ``GET /v1/shards`` answer
(docs/api.md, "The cluster map"); ``ShardMap.merge`` makes one map of several stores' answers:
for each group, the leader named by a store hosting the group in the highest term (a store that
holds no replica of a group only guesses its leader, and a guess is used when nobody hosting
the group answered); for each store, the endpoint the user gave for it when one answered as
that store, else the URL the stores advertise. Keys go to groups by ``raftcache.slots`` — the
stores' own function, so a client and a store never disagree about where a key lives.

A hint (``X-Raftcache-Not-Leader``) or an unreachable leader patches one group of the map in
place (``follow``, ``forget``) until the next refresh replaces the whole map.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from raftcache.client.errors import ProtocolError, RaftcacheError, error_from_response
from raftcache.slots import key_group, key_slot


@dataclass(frozen=True, slots=True)
class ShardView:
    """One group as one store sees it. ``term`` None: the store holds no replica of the group,
    and ``leader`` is only its guess."""

    group: int
    leader: str | None
    term: int | None
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ShardsAnswer:
    """One store's ``GET /v1/shards``."""

    store: str | None
    groups: int
    version: int
    stores: Mapping[str, str]
    shards: tuple[ShardView, ...]


def _group_index(gid: Any, groups: int) -> int:
    if not isinstance(gid, str) or not gid.startswith("g") or not gid[1:].isdigit():
        raise ProtocolError(f"/v1/shards: not a group id: {gid!r:.40}")
    index = int(gid[1:])
    if index >= groups:
        raise ProtocolError(f"/v1/shards: group {gid} beyond the {groups} groups")
    return index


def _str_or_none(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"/v1/shards: {what} is not a string: {value!r:.40}")
    return value


def parse_shards(body: Mapping[str, Any]) -> ShardsAnswer:
    """One store's ``/v1/shards`` body, checked; ``ProtocolError`` when it is malformed."""
    groups = body.get("groups")
    version = body.get("version", 0)
    stores = body.get("stores", {})
    shards = body.get("shards")
    if type(groups) is not int or groups < 1:
        raise ProtocolError(f"/v1/shards: groups must be a positive int, got {groups!r:.40}")
    if type(version) is not int:
        raise ProtocolError(f"/v1/shards: version must be an int, got {version!r:.40}")
    if not isinstance(stores, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in stores.items()
    ):
        raise ProtocolError("/v1/shards: stores must map store ids to URLs")
    if not isinstance(shards, list):
        raise ProtocolError("/v1/shards: shards must be a list")
    views: list[ShardView] = []
    for shard in shards:
        if not isinstance(shard, dict):
            raise ProtocolError("/v1/shards: a shard is not an object")
        term = shard.get("term")
        members = shard.get("members", [])
        if term is not None and type(term) is not int:
            raise ProtocolError(f"/v1/shards: term must be an int or null, got {term!r:.40}")
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ProtocolError("/v1/shards: members must be a list of store ids")
        views.append(
            ShardView(
                _group_index(shard.get("group"), groups),
                _str_or_none(shard.get("leader"), "leader"),
                term,
                tuple(members),
            )
        )
    return ShardsAnswer(
        _str_or_none(body.get("store"), "store"), groups, version, dict(stores), tuple(views)
    )


class ShardMap:
    """Which store leads each of ``groups`` data groups, and each store's URL.

    Not thread-safe: it lives on the client's event loop.
    """

    __slots__ = ("groups", "leaders", "stores", "terms")

    def __init__(
        self,
        groups: int,
        leaders: Sequence[str | None],
        stores: Mapping[str, str],
        terms: Sequence[int] | None = None,
    ) -> None:
        if len(leaders) != groups:
            raise ValueError(f"{groups} groups need {groups} leaders, got {len(leaders)}")
        self.groups = groups
        #: Group index → the store id believed to lead it (None: unknown).
        self.leaders: list[str | None] = list(leaders)
        #: Group index → the term the leader was seen in (0: a guess or a hint).
        self.terms: list[int] = list(terms) if terms is not None else [0] * groups
        #: Store id → the base URL requests to it go to.
        self.stores: dict[str, str] = dict(stores)

    @classmethod
    def merge(cls, answers: Iterable[tuple[str, ShardsAnswer]]) -> ShardMap | None:
        """One map from several stores' answers (``(endpoint URL, answer)``), or None when
        none answered. Answers that disagree about the number of groups are outvoted by the
        largest number's (they cannot disagree but in a misconfigured cluster)."""
        given = list(answers)
        if not given:
            return None
        groups = max(a.groups for _, a in given)
        given = [(url, a) for url, a in given if a.groups == groups]
        stores: dict[str, str] = {}
        for _, answer in given:
            for store, url in answer.stores.items():
                stores.setdefault(store, url.rstrip("/"))
        for url, answer in given:  # the user's address of a store wins over the advertised one
            if answer.store is not None:
                stores[answer.store] = url
        best: list[tuple[int, str] | None] = [None] * groups
        guesses: list[str | None] = [None] * groups
        for _, answer in given:
            for view in answer.shards:
                if view.leader is None:
                    continue
                if view.term is None:
                    guesses[view.group] = guesses[view.group] or view.leader
                    continue
                seen = best[view.group]
                if seen is None or view.term > seen[0]:
                    best[view.group] = (view.term, view.leader)
        leaders = [b[1] if b is not None else g for b, g in zip(best, guesses, strict=True)]
        terms = [b[0] if b is not None else 0 for b in best]
        return cls(groups, leaders, stores, terms)

    def group_of(self, key: str) -> int:
        """The index of the group that owns ``key``."""
        return key_group(key, self.groups)

    def leader_url(self, group: int) -> str | None:
        """The URL of the store believed to lead ``group`` (None: unknown)."""
        leader = self.leaders[group]
        return self.stores.get(leader) if leader is not None else None

    def follow(self, group: int, hint: str | None) -> bool:
        """A store answered that ``hint`` (a replica id: a store id, or ``<store>.<n>`` for a
        replica moved there) leads ``group``: True when the map now names its store (one whose
        URL it knows), False when the hint is of no use (None, unknown)."""
        if hint is not None and hint not in self.stores:
            # A replica moved onto a store after bootstrap is named ``<store>.<n>``.
            hint = hint.partition(".")[0]
        if hint is None or hint not in self.stores:
            return False
        self.leaders[group] = hint
        return True

    def forget(self, group: int) -> None:
        """The leader of ``group`` did not answer: no longer send its keys there."""
        self.leaders[group] = None

    def keep_newer(self, older: ShardMap, groups: Iterable[int]) -> None:
        """Keep ``older``'s leader (or its lack of one) for ``groups``: what was learnt of
        them after this map was asked for — a hint followed, a leader that did not answer."""
        if older.groups != self.groups:
            return
        for group in groups:
            leader = older.leaders[group]
            if leader is None or leader in self.stores:
                self.leaders[group] = leader

    def as_dict(self) -> dict[str, Any]:
        """The map as plain data (for ``AsyncClient.shards`` and logs)."""
        return {
            "groups": self.groups,
            "leaders": {f"g{g}": leader for g, leader in enumerate(self.leaders)},
            "stores": dict(self.stores),
        }


def crossslot_error(keys: Sequence[str], groups: int) -> RaftcacheError | None:
    """The 400 a store gives a batch whose keys span groups (its exact text and body, a
    ``BadRequestError``), raised here before anything is sent; None when every key is of one
    group."""
    first: dict[int, str] = {}
    for key in keys:
        first.setdefault(key_group(key, groups), key)
    if len(first) <= 1:
        return None
    by_group = {f"g{g}": first[g] for g in sorted(first)}
    named = ", ".join(
        f"{gid} (slot {key_slot(key)}: {orjson.dumps(key).decode()})"
        for gid, key in by_group.items()
    )
    text = (
        f"CROSSSLOT: keys span groups {named}; a batch is atomic within one group"
        " — use a {hash tag}"
    )
    body = {"error": text, "crossslot": True, "groups": list(by_group)}
    return error_from_response(400, body, where="POST /v1/batch")
