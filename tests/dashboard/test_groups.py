"""The dashboard of a cluster of stores: 3 real stores hosting 4 Raft groups (RF 3) over HTTP on
loopback, as ``raftcache serve --groups 4`` runs them (tests/store/stores_http.py), each serving
the dashboard (``create_store_app`` mounts it) — its view lists every group with the leader the
stores elected, every replica's lag, and each store's replicas and groups led."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from raftcache.store import group_id
from tests.store.stores_http import (
    RunningStores,
    bootstrap_placement,
    start_stores,
    store_ids,
)

GROUPS = 4
REPLICAS = 3


@pytest.fixture
async def stores() -> AsyncIterator[RunningStores]:
    ids = store_ids(3)
    placement = bootstrap_placement(ids, GROUPS, REPLICAS)
    _, running = await start_stores(ids, groups=GROUPS, placement=placement)
    started = RunningStores(GROUPS, running, aiohttp.ClientSession(), placement)
    try:
        await started.settled()
        yield started
    finally:
        await started.stop()


async def _get(stores: RunningStores, url: str) -> dict[str, Any]:
    async with stores.session.get(url) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def _view_when(
    stores: RunningStores, done: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    """s2's dashboard view once ``done(view)`` holds (the last one seen, on timeout)."""
    view: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                view = await _get(stores, stores.url("s2") + "/dashboard/cluster.json")
                if done(view):
                    return view
                await asyncio.sleep(0.05)
    except TimeoutError:
        return view


async def test_the_dashboard_shows_every_group_its_leader_and_lag(stores: RunningStores) -> None:
    leaders = await stores.settled()
    assert len(leaders) == GROUPS
    expected: list[dict[str, str | None]] = []

    def agrees(view: dict[str, Any]) -> bool:
        """The view names, for every group, the store whose replica is in the leader role."""
        expected.append({gid: stores.leader_of(gid) for gid in leaders})
        rows = view.get("sharding", {}).get("group_rows", [])
        return {row["group"]: row["leader"] for row in rows} == expected[-1]

    view = await _view_when(stores, agrees)
    sharding = view["sharding"]
    assert sharding["groups"] == GROUPS
    rows = {row["group"]: row for row in sharding["group_rows"]}
    assert list(rows) == [group_id(g) for g in range(GROUPS)]
    assert {gid: row["leader"] for gid, row in rows.items()} == expected[-1]
    assert None not in expected[-1].values()
    assert sharding["leaderless"] == []
    for row in rows.values():
        assert [r["store"] for r in row["replicas"]] == ["s1", "s2", "s3"]
        assert [r["role"] for r in row["replicas"]].count("leader") == 1
        assert all(r["lag"] is not None and r["lag"] >= 0 for r in row["replicas"])
        assert isinstance(row["term"], int)
        assert row["term"] >= 1
    per_store = {row["store"]: row for row in sharding["stores"]}
    assert sorted(per_store) == ["s1", "s2", "s3"]
    assert all(row["reachable"] for row in per_store.values())
    assert sum(row["replicas"] for row in per_store.values()) == GROUPS * REPLICAS
    assert sum(row["leads"] for row in per_store.values()) == GROUPS
    assert sharding["replicas"] == GROUPS * REPLICAS

    # Writes to every group: each group's commit index grows, and once the followers apply
    # them every replica's lag is back to 0.
    before = {gid: row["commit_index"] for gid, row in rows.items()}
    for i in range(40):
        async with stores.session.put(f"{stores.url('s1')}/v1/keys/k{i}", data=b"v") as resp:
            assert resp.status == 200, await resp.text()

    def caught_up(view: dict[str, Any]) -> bool:
        groups = view["sharding"]["group_rows"]
        return all(g["commit_index"] > before[g["group"]] and g["max_lag"] == 0 for g in groups)

    view = await _view_when(stores, caught_up)
    assert caught_up(view), view["sharding"]
    assert view["sharding"]["commit_index"] >= sum(before.values()) + 40


async def test_a_store_leading_a_group_reports_its_followers_lag(stores: RunningStores) -> None:
    leaders = await stores.settled()
    gid, leader = next(iter(leaders.items()))
    status = await _get(stores, stores.url(leader) + "/v1/status")
    entries = {entry["group"]: entry for entry in status["groups"]}
    assert entries[gid]["role"] == "leader"
    lag = entries[gid]["follower_lag"]
    assert sorted(lag) == sorted(s for s in ("s1", "s2", "s3") if s != leader)
    assert all(isinstance(v, int) and v >= 0 for v in lag.values())
    for other, entry in entries.items():
        if entry["role"] != "leader":
            assert "follower_lag" not in entry, other
