"""Maps with host labels stay readable by the previous release, and its maps by this one.

A rolling upgrade (or a downgrade) runs stores of two releases on one meta group, so each must
read the map the other writes. The previous release's ``ClusterMap.from_json`` refuses a group
with two replicas on one ``host``: this release records a store's label apart
(``host_label``), keeping ``host`` the store's id where the label clashes. The previous
release's module is ``clustermap_previous.py.txt``, verbatim (``git show
a8b7003:src/raftcache/sharding/clustermap.py``), loaded as a module of its own.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftcache.sharding.clustermap import ClusterMap, GroupPlacement, Store
from raftcache.store.meta import MetaConflictError, first_map, registered

PREVIOUS = Path(__file__).with_name("clustermap_previous.py.txt")


@pytest.fixture(scope="module")
def previous() -> Iterator[Any]:
    """The previous release's ``raftcache.sharding.clustermap``."""
    name = "clustermap_previous"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up
    try:
        exec(compile(PREVIOUS.read_text(), str(PREVIOUS), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[name]


def _bootstrapped() -> ClusterMap:
    """Three bootstrap stores (each its own host until it registers) with two groups on all
    three, and one joining store."""
    urls = {s: f"http://10.0.0.{i}:8000" for i, s in enumerate(["s1", "s2", "s3"])}
    placement = {"g0": ["s1", "s2", "s3"], "g1": ["s2", "s3", "s1"]}
    return first_map(2, 3, placement, urls, meta=["s1", "s2", "s3"])


def _register(cmap: ClusterMap, labels: dict[str, str]) -> ClusterMap:
    for s, label in labels.items():
        cmap = registered(cmap, Store(s, label, f"http://{s}:8000", nonce=f"n-{s}"))
    return cmap


def test_a_clash_recorded_now_is_read_by_the_previous_release(previous: Any) -> None:
    cmap = _register(_bootstrapped(), {"s1": "h1", "s2": "h1", "s3": "h2", "s4": "h3"})
    labels = {s: st.host_label for s, st in cmap.stores.items()}
    assert labels == {"s1": "h1", "s2": "h1", "s3": "h2", "s4": "h3"}
    assert cmap.shared_hosts(cmap.placement(0)) == {"h1": ["s1", "s2"]}  # the planner sees it
    doc = cmap.to_json()
    old = previous.ClusterMap.from_json(doc)  # the previous release reads it
    assert {s: st.host for s, st in old.stores.items()} == {
        "s1": "h1",
        "s2": "s2",  # its label would show the clash: its id, as the previous release kept
        "s3": "h2",
        "s4": "h3",
    }
    assert ClusterMap.from_json(doc) == cmap
    # Had the labels gone into ``host``, the previous release would refuse the map.
    naive = {
        **doc,
        "stores": [{**s, "host": s.get("host_label", s["host"])} for s in doc["stores"]],
    }
    with pytest.raises(ValueError, match="two replicas on host 'h1'"):
        previous.ClusterMap.from_json(naive)


def test_a_placement_on_stores_sharing_a_host_is_recorded_readably(previous: Any) -> None:
    # s4 and s5 joined on one label (host = label, no replica yet); the planner's move to a
    # sibling put both in g0 — recorded with their ``host`` set apart.
    cmap = _register(_bootstrapped(), {"s1": "m", "s2": "m", "s3": "m", "s4": "m", "s5": "m"})
    assert cmap.stores["s4"].host == cmap.stores["s5"].host == "m"
    moved = GroupPlacement(0, ("s1", "s4", "s5"), (), "s1")
    with pytest.raises(ValueError, match="two replicas on host 'm'"):
        cmap.with_placement(moved)
    recorded = cmap.with_hosts_apart(moved).with_placement(moved)
    assert recorded.placement(0) == moved
    assert {s: recorded.stores[s].host_label for s in recorded.stores} == dict.fromkeys(
        recorded.stores, "m"
    )
    old = previous.ClusterMap.from_json(recorded.to_json())
    assert old.placements[0].voters == ("s1", "s4", "s5")


def test_a_map_of_the_previous_release_is_read_now(previous: Any) -> None:
    stores = [previous.Store(f"s{i}", f"h{i % 3}") for i in range(5)]
    doc = previous.ClusterMap.bootstrap(stores, 4, 3).to_json()
    cmap = ClusterMap.from_json(doc)
    assert {s: st.host_label for s, st in cmap.stores.items()} == {
        f"s{i}": f"h{i % 3}" for i in range(5)
    }
    assert cmap.to_json() == doc  # nothing added: no label was recorded apart


def test_a_restart_with_another_label_is_never_refused() -> None:
    cmap = _register(_bootstrapped(), {"s1": "h1", "s2": "h2", "s3": "h3"})
    assert cmap.stores["s2"].host == "h2"
    relabelled = registered(cmap, Store("s2", "h1", "http://s2:8000", nonce="n-s2"))
    assert relabelled.stores["s2"].host_label == "h1"  # recorded: the planner repairs it
    assert relabelled.stores["s2"].host == "s2"  # never a clash for the previous release
    again = registered(relabelled, Store("s2", "h1", "http://s2:8000", nonce="n-s2"))
    assert again is relabelled  # registering the same twice writes nothing
    back = registered(relabelled, Store("s2", "h2", "http://s2:8000", nonce="n-s2"))
    assert back.stores["s2"].host == back.stores["s2"].host_label == "h2"
    with pytest.raises(MetaConflictError, match="another process"):
        registered(back, Store("s2", "h2", "http://s2:8000", nonce="other"))
