"""A store's meta agent registers its record again when the map's differs, once per meta leader.

A meta leader of the previous release rewrites the map without the ``host_label`` field it does
not know, so a store's label falls back to its ``host`` (its id, where its label would show a
clash). Asking the same leader again every round would be a loop; never asking again would keep
the label lost after leadership moves to a store of this release. The agent asks once per meta
leader (second review of the host labels, bug B). The agent runs here against a fake store (no
meta replica of its own: every read and registration goes to the meta leader it names).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from raftcache.sharding.clustermap import ClusterMap, GroupPlacement
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.store.agent import MetaAgent


@dataclass
class FakeStore:
    """What the agent reads of a store that hosts no meta replica."""

    store_id: str = "s2"
    meta: Any = None
    meta_voters: tuple[str, ...] = ("s1", "s3", "s4")
    placement: dict[str, list[str]] = field(default_factory=dict)

    def learn_address(self, store_id: str, url: str) -> None:
        pass

    def set_placement(self, gid: str, stores: list[str]) -> None:
        self.placement[gid] = stores


def _map(label: str | None) -> ClusterMap:
    """s2's record as a previous-release leader leaves it (no label: its id) or as asked."""
    stores = {
        "s1": StoreInfo("s1", "a", "http://s1", label="a"),
        "s2": StoreInfo("s2", "s2", "http://s2", label=label or ""),
        "s3": StoreInfo("s3", "b", "http://s3", label="b"),
        "s4": StoreInfo("s4", "c", "http://s4", label="c"),
    }
    placement = GroupPlacement(0, ("s1", "s2", "s3"), (), "s1")
    return ClusterMap(3, 1, 3, stores, (placement,))


async def test_a_record_an_old_leader_dropped_is_registered_again_with_a_new_leader() -> None:
    me = StoreInfo("s2", "s2", "http://s2", label="a")  # shares host a with s1
    old_leader_map = _map(None)  # the previous release's leader dropped the label
    assert old_leader_map.stores["s2"].host_label != me.host_label
    store = FakeStore()
    agent = MetaAgent(store, me, request=None, first=lambda: old_leader_map)  # type: ignore[arg-type]
    hint = "s1"
    sent: list[str] = []

    async def read(consistency: str = "linearizable") -> ClusterMap:
        return old_leader_map

    async def register(info: StoreInfo) -> ClusterMap:
        sent.append(hint)
        return old_leader_map  # an old leader keeps dropping the label

    agent.read = read  # type: ignore[method-assign]
    agent.register = register  # type: ignore[method-assign,assignment]
    agent.leader_hint = lambda: hint  # type: ignore[method-assign]
    for _ in range(5):
        await agent.round()
    assert sent == ["s1"]  # asked once, not every round
    hint = "s3"  # leadership moved (to a store of this release)
    for _ in range(5):
        await agent.round()
    assert sent == ["s1", "s3"]  # asked again, once, of the new leader
    fixed = replace(old_leader_map, stores={**old_leader_map.stores, "s2": me})

    async def read_fixed(consistency: str = "linearizable") -> ClusterMap:
        return fixed

    agent.read = read_fixed  # type: ignore[method-assign]
    hint = "s4"
    await agent.round()
    assert sent == ["s1", "s3"]  # the map holds the label now: nothing to ask
