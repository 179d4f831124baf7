"""``SHARDS``: a store's record of its cluster's shape, written once and checked on restart."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from raftcache.sharding.clustermap import META, ClusterMap, GroupPlacement, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.store.layout import (
    SHARDS_FILE,
    LayoutMismatchError,
    ShardLayout,
    check_single_group_dir,
    open_layout,
)

STORES = ("n1", "n2", "n3", "n4", "n5", "n6")


def test_static_layout_places_each_group_on_distinct_stores_balanced() -> None:
    layout = ShardLayout.static(list(reversed(STORES)), 8, 3)
    assert layout.stores == STORES  # sorted: every store computes the same layout
    assert len(layout.placement) == 8
    for members in layout.placement.values():
        assert len(members) == len(set(members)) == 3
    counts = Counter(m for members in layout.placement.values() for m in members)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert sorted(layout.hosted_by("n1")) == sorted(
        g for g, m in layout.placement.items() if "n1" in m
    )


def test_fewer_stores_than_replicas_places_a_replica_on_each() -> None:
    layout = ShardLayout.static(["a", "b"], 4, 3)
    assert all(set(m) == {"a", "b"} for m in layout.placement.values())


def test_first_start_records_later_starts_read_the_record(tmp_path: Path) -> None:
    wanted = ShardLayout.static(STORES[:3], 4, 3)
    assert open_layout(tmp_path / "d", wanted) == wanted
    assert json.loads((tmp_path / "d" / SHARDS_FILE).read_text())["groups"] == 4
    # The record wins over what this release would compute: a record with another placement
    # of the same shape is what the store runs with.
    record = json.loads((tmp_path / "d" / SHARDS_FILE).read_text())
    record["placement"]["g0"] = ["n3", "n2", "n1"]
    (tmp_path / "d" / SHARDS_FILE).write_text(json.dumps(record))
    again = open_layout(tmp_path / "d", wanted)
    assert again.placement["g0"] == ("n3", "n2", "n1")


@pytest.mark.parametrize(
    ("groups", "replicas", "stores", "named"),
    [
        (8, 3, STORES[:3], "--groups: the data has 4, the flags ask for 8"),
        (4, 2, STORES[:3], "--replicas: the data has 3, the flags ask for 2"),
        (4, 3, STORES[:4], "--peers: the data has n1, n2, n3, the flags ask for n1, n2, n3, n4"),
    ],
)
def test_flags_that_disagree_with_the_record_are_refused_naming_the_difference(
    tmp_path: Path, groups: int, replicas: int, stores: tuple[str, ...], named: str
) -> None:
    open_layout(tmp_path, ShardLayout.static(STORES[:3], 4, 3))
    with pytest.raises(LayoutMismatchError, match=named):
        open_layout(tmp_path, ShardLayout.static(stores, groups, replicas))


def test_a_one_group_nodes_directory_is_not_opened_as_a_store(tmp_path: Path) -> None:
    (tmp_path / "IDENTITY").write_text("x")
    with pytest.raises(LayoutMismatchError, match="one-group node's data"):
        open_layout(tmp_path, ShardLayout.static(STORES[:3], 4, 3))
    assert not (tmp_path / SHARDS_FILE).exists()


def test_a_stores_directory_is_not_opened_as_a_one_group_node(tmp_path: Path) -> None:
    check_single_group_dir(tmp_path)  # nothing recorded: fine
    open_layout(tmp_path, ShardLayout.static(STORES[:3], 4, 3))
    with pytest.raises(LayoutMismatchError, match="--groups 4"):
        check_single_group_dir(tmp_path)


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        json.dumps({"format": 9}),
        json.dumps({"format": 1, "groups": 2, "replicas": 3, "stores": ["a"], "placement": {}}),
        json.dumps(
            {
                "format": 1,
                "groups": 1,
                "replicas": 3,
                "stores": ["a"],
                "placement": {"g0": ["b"]},
            }
        ),
    ],
)
def test_a_damaged_record_is_refused(tmp_path: Path, record: str) -> None:
    (tmp_path / SHARDS_FILE).write_text(record)
    with pytest.raises(LayoutMismatchError, match="damaged"):
        open_layout(tmp_path, ShardLayout.static(["a"], 1, 3))


def test_replicas_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="replicas must be"):
        ShardLayout.static(["a"], 2, 0)


def test_the_nonce_is_drawn_once_and_read_back(tmp_path: Path) -> None:
    """A store's identity in the map (docs/sharding.md): drawn when its directory is first
    written, the same on every later start; a record from before it reads as none."""
    first = open_layout(tmp_path / "a", ShardLayout.static(["s1", "s2", "s3"], 4, 3))
    assert len(first.nonce) == 16
    again = open_layout(tmp_path / "a", ShardLayout.static(["s1", "s2", "s3"], 4, 3))
    assert again.nonce == first.nonce
    other = open_layout(tmp_path / "b", ShardLayout.static(["s1", "s2", "s3"], 4, 3))
    assert other.nonce != first.nonce
    record = json.loads((tmp_path / "a" / "SHARDS").read_text())
    del record["nonce"]
    (tmp_path / "a" / "SHARDS").write_text(json.dumps(record))
    older = open_layout(tmp_path / "a", ShardLayout.static(["s1", "s2", "s3"], 4, 3))
    assert older.nonce == ""


def test_a_joining_store_records_meta_stores_it_can_read_back() -> None:
    """The store answering a join may name meta stores removed since (its hints lag); the
    record keeps the map's own list of them — stores of the layout — so it reads back."""
    stores = {s: StoreInfo(s, s, f"http://{s}") for s in ("s1", "s2", "s3", "s4")}
    stores["s1"] = StoreInfo("s1", "s1", "http://s1", state=StoreState.REMOVED)
    placements = (GroupPlacement(0, ("s2", "s3", "s4")), GroupPlacement(1, ("s2", "s3", "s4")))
    meta = GroupPlacement(META, ("s2", "s3", "s4"), leader="s4")
    cmap = ClusterMap(9, 2, 3, stores, placements, meta)
    layout = ShardLayout.joining(cmap, ["s1", "s2", "s3"])
    assert layout.meta == ("s2", "s3", "s4")
    assert ShardLayout.from_json(layout.to_json()).meta == ("s2", "s3", "s4")
    older = ShardLayout.joining(replace(cmap, meta=None), ["s1", "s2", "s3"])  # no record
    assert older.meta == ("s2", "s3")
    assert ShardLayout.from_json(older.to_json()).meta == ("s2", "s3")
