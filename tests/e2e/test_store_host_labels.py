"""Host labels on real processes: the driver moves replicas that share a host apart.

Four ``raftcache serve --groups 2 --replicas 3`` stores, n1 and n2 on host ``h1``
(``--host-label``), n3 on ``h2``, n4 on ``h3``. The bootstrap places replicas before any store
knows another's label, so both data groups and the meta group start with n1 and n2 together;
the stores register their labels, and the meta leader's driver moves one replica of each off
``h1`` (a learner added on the free host, promoted, one of the pair removed). Every group's
configuration, as its leader reports it, ends with three voters on three distinct hosts; the
map records every label, and its ``host`` field never shows two replicas of a group on one
host (the previous release's reader refuses that).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from raftcache.network.groups import store_of
from tests.e2e.nodes import FAST_ELECTIONS, ProcessCluster, wait_for

pytestmark = pytest.mark.e2e

LABELS = {"n1": "h1", "n2": "h1", "n3": "h2", "n4": "h3"}
GROUPS = ("g0", "g1", "meta")


async def _configurations(
    cluster: ProcessCluster, http: aiohttp.ClientSession
) -> dict[str, dict[str, Any]] | None:
    """Each group's entry as its leader reports it (None until every group has one)."""
    leaders: dict[str, dict[str, Any]] = {}
    for node in cluster.live():
        try:
            async with http.get(f"{node.url}/raft/store/groups") as answer:
                body = await answer.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        for entry in body.get("groups", ()):
            if entry.get("role") == "leader":
                leaders[entry["group"]] = entry
    return leaders if set(GROUPS) <= set(leaders) else None


async def test_replicas_sharing_a_host_are_moved_apart(tmp_path: Any) -> None:
    cluster = ProcessCluster(
        tmp_path, 4, extra_args=["--groups", "2", "--replicas", "3", *FAST_ELECTIONS]
    )
    for node_id, label in LABELS.items():
        cluster.node_args[node_id] = ["--host-label", label]
    with cluster:
        cluster.start_all()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def spread() -> dict[str, dict[str, Any]] | None:
                seen = await _configurations(cluster, http)
                if seen is None:
                    return None
                for entry in seen.values():
                    stores = [store_of(v) for v in entry["voters"]]
                    hosts = {LABELS[s] for s in stores}
                    if entry["learners"] or len(stores) != 3 or len(hosts) != 3:
                        return None
                return seen

            seen = await wait_for(spread, "every group on three distinct hosts", cluster=cluster)
            for entry in seen.values():  # n1 and n2 share h1: never both in a group now
                stores = {store_of(v) for v in entry["voters"]}
                assert not {"n1", "n2"} <= stores, entry
            # SHARDS, written at the first start: the bootstrap, blind to the labels, put
            # both groups on n1 and n2 together; the driver moved them apart.
            shards = json.loads((cluster.nodes["n1"].data_dir / "SHARDS").read_text())
            together = [g for g, m in shards["placement"].items() if {"n1", "n2"} <= set(m)]
            assert together == ["g0", "g1"], shards

            async def labelled() -> dict[str, Any] | None:
                async with http.get(f"{cluster.nodes['n3'].url}/raft/meta/map") as answer:
                    cmap = (await answer.json()).get("map") or {}
                labels = {s["id"]: s.get("host_label") for s in cmap.get("stores", ())}
                voters = [set(p["voters"]) for p in cmap.get("placements", ())]
                if labels != LABELS or any({"n1", "n2"} <= v for v in voters):
                    return None
                return cmap

            cmap = await wait_for(labelled, "the map records the labels", cluster=cluster)
            hosts = {s["id"]: s["host"] for s in cmap["stores"]}
            for p in cmap["placements"]:
                assert len({hosts[s] for s in p["voters"]}) == len(p["voters"]), cmap
        assert not cluster.crashed()
