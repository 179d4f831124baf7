"""The placement driver repairs a placement that puts two replicas of a group on one host.

Simulated: the stores' answers come from a fake that keeps each group's configuration as its
leader would (one change at a time, each planned from the current configuration index, the
learner promoted as the real ``/v1/members`` does). The groups were bootstrapped before the
labels were known — g0 on s1, s2, s3 and g1 on s1, s2, s4, while s1 and s2 share host h1 —
and the driver, given the labels, moves one replica of each off h1, then stops: each group
ends with three voters on three hosts, and the driver logged the clash it found (it used to
plan as if every store were its own host from then on, and never repaired it).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from raftcache.network.groups import store_of
from raftcache.sharding.placement import StepKind
from raftcache.store.driver import PlacementDriver

HOSTS = {"s1": "h1", "s2": "h1", "s3": "h2", "s4": "h3"}


class Groups:
    """Each group's configuration and leader, changed only as a leader would."""

    def __init__(self) -> None:
        self.voters = {"g0": ["s1", "s2", "s3"], "g1": ["s1", "s2", "s4"]}
        self.leader = {"g0": "s1", "g1": "s2"}
        self.config_index = {"g0": 1, "g1": 1}
        self.created: dict[str, str] = {}  # "<group>/<store>" → the replica made there

    async def __call__(self, method: str, store: str, path: str, body: Any) -> tuple[int, Any]:
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        gid = query.get("group", "")
        if method == "GET" and url.path == "/raft/store/groups":
            return 200, {"groups": self._report(store)}
        if method == "POST" and url.path == "/raft/store/replicas":
            replica = self.created.setdefault(f"{body['group']}/{store}", f"{store}.1")
            return 200, {"replica": replica, "existing": False}
        if url.path.startswith("/v1/") and store != self.leader[gid]:
            return 503, {"error": "not the leader"}
        if method == "POST" and url.path == "/v1/members":
            if body["config_index"] != self.config_index[gid]:
                return 409, {"error": "configuration changed"}
            self.voters[gid].append(body["id"])  # learner, caught up, promoted
            self.config_index[gid] += 2
            return 200, {}
        if method == "POST" and url.path == "/v1/leader/transfer":
            self.leader[gid] = store_of(body["to"])
            return 200, {}
        if method == "DELETE" and url.path.startswith("/v1/members/"):
            if int(query["config_index"]) != self.config_index[gid]:
                return 409, {"error": "configuration changed"}
            self.voters[gid].remove(unquote(url.path.removeprefix("/v1/members/")))
            self.config_index[gid] += 1
            return 200, {}
        return 200, {}  # deleting a removed replica's data, telling a store the placement

    def _report(self, store: str) -> list[dict[str, Any]]:
        return [self._entry(gid, store) for gid in self.voters if store in self._stores(gid)]

    def _stores(self, gid: str) -> set[str]:
        return {store_of(v) for v in self.voters[gid]}

    def _entry(self, gid: str, store: str) -> dict[str, Any]:
        voters = self.voters[gid]
        return {
            "group": gid,
            "replica": next(v for v in voters if store_of(v) == store),
            "role": "leader" if self.leader[gid] == store else "follower",
            "term": 2,
            "voters": list(voters),
            "learners": [],
            "commit_index": self.config_index[gid],
            "config_index": self.config_index[gid],
        }


async def test_the_driver_moves_a_replica_off_a_shared_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    groups = Groups()
    driver = PlacementDriver(
        {s: f"http://{s}" for s in HOSTS},
        groups=2,
        replication=3,
        request=groups,
        clock=lambda: 0.0,
        hosts=HOSTS,
    )
    with caplog.at_level(logging.WARNING, logger="raftcache.store.driver"):
        assert await driver.run(timeout_s=30.0, pause_s=0.0)
    for gid, voters in groups.voters.items():
        stores = [store_of(v) for v in voters]
        assert len(stores) == 3, (gid, voters)
        assert len({HOSTS[s] for s in stores}) == 3, (gid, voters)
    assert {store_of(v) for v in groups.voters["g0"]} - {"s1", "s2"} == {"s3", "s4"}
    kinds = [s.kind for s in driver.steps_done if s.kind is not StepKind.TRANSFER]
    assert kinds.count(StepKind.ADD) == kinds.count(StepKind.REMOVE) == 2  # one move each
    clashes = [
        str(getattr(r, "clash", ""))
        for r in caplog.records
        if r.getMessage() == "replicas share a host"
    ]
    assert sorted(clashes) == ["g0: s1, s2 on 'h1'", "g1: s1, s2 on 'h1'"]
    assert not [r for r in caplog.records if "ignored" in r.getMessage()]
