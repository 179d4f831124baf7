"""``raftcache shards``: the map merged from the stores' reports (pure part: ``shard_rows``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from raftcache.cli.shards import map_version, shard_rows, shard_table


def _group(
    gid: str, slots: list[int], *, hosted: bool, leader: str | None, term: int, role: str
) -> dict[str, Any]:
    return {
        "group": gid,
        "slots": slots,
        "hosted": hosted,
        "members": ["n1", "n2", "n3"],
        "leader": leader,
        "term": term,
        "last_applied": 10 * term,
        "role": role,
    }


def test_the_highest_term_reported_names_the_leader() -> None:
    stale = {"groups": [_group("g0", [0, 8191], hosted=True, leader="n1", term=3, role="x")]}
    fresh = {
        "groups": [
            _group("g0", [0, 8191], hosted=True, leader="n2", term=4, role="leader"),
            _group("g1", [8192, 16383], hosted=False, leader=None, term=0, role="none"),
        ]
    }
    rows = shard_rows([stale, fresh, stale])
    assert [(r["group"], r["leader"], r["term"], r["applied"]) for r in rows] == [
        ("g0", "n2", 4, 40),
        ("g1", None, None, None),  # no replica of g1 reported: no leader claimed
    ]
    assert rows[0]["slots"] == [0, 8191]
    text = _render(rows)
    assert "0-8191" in text
    assert "none" in text


def test_a_one_group_node_is_the_whole_keyspace() -> None:
    node = {"role": "leader", "leader": "n1", "term": 2, "members": ["n2", "n1"], "last_applied": 7}
    rows = shard_rows([node])
    assert rows == [
        {
            "group": "g0",
            "slots": [0, 16383],
            "replicas": ["n1", "n2"],
            "leader": "n1",
            "term": 2,
            "applied": 7,
        }
    ]


def test_groups_sort_by_number_and_junk_is_ignored() -> None:
    report = {
        "groups": [
            _group(f"g{i}", [i, i], hosted=True, leader="n1", term=1, role="leader")
            for i in (10, 2, 1)
        ]
        + [{"group": 5}, "junk"]
    }
    assert [r["group"] for r in shard_rows([report])] == ["g1", "g2", "g10"]


def test_the_title_names_the_newest_map_version_reported() -> None:
    reports: list[dict[str, Any]] = [
        {"meta": {"map_version": 7}},
        {"meta": {"map_version": 9}},
        {"meta": {"map_version": None}},  # a store that has not read the map yet
        {"meta": {"map_version": True}},  # junk
        {},  # a one-group node: no meta group
    ]
    assert map_version(reports) == 9
    assert map_version([{}, {"meta": None}]) is None
    rows = shard_rows([{"groups": [_group("g0", [0, 16383], hosted=True, leader="n1", term=1,
                                          role="leader")]}])  # fmt: skip
    assert "map version 9" in _render(rows, 9)
    assert "map version" not in _render(rows)


def _render(rows: list[dict[str, Any]], version: int | None = None) -> str:
    console = Console(width=120, record=True)
    console.print(shard_table(rows, version))
    return console.export_text()
