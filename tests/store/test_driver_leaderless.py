"""A group that lost its majority freezes no other group's repair (second review, finding 4):
the driver steps only groups whose leader answered, counting the others in the balance from
their replicas' own reports (or the map's record), docs/sharding.md "Placement"."""

from __future__ import annotations

from typing import Any

from raftcache.sharding.placement import StepKind
from raftcache.store.driver import PlacementDriver

STORES = ("s1", "s2", "s3", "s4", "s5")
# g0 lost its majority (s1, s2 dead); g1 lost one voter (s1) and can be repaired on s5.
HOSTED = {"g0": ("s1", "s2", "s3"), "g1": ("s1", "s3", "s4")}
LEADER = {"g1": "s3"}
DEAD = {"s1", "s2"}


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class Fake:
    """The stores' answers: each replica reports its configuration, as the route does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.removed: dict[str, set[str]] = {}  # group → replicas its leader removed

    async def __call__(self, method: str, store: str, path: str, body: Any) -> tuple[int, Any]:
        self.calls.append((method, store, path))
        if store in DEAD:
            raise OSError("connection refused")
        if method == "GET" and path == "/raft/store/groups":
            groups = []
            for gid, stores in HOSTED.items():
                if store not in stores:
                    continue
                role = "leader" if LEADER.get(gid) == store else "follower"
                voters = [v for v in stores if v not in self.removed.get(gid, set())]
                changes = len(self.removed.get(gid, ()))
                groups.append({
                    "group": gid, "replica": store, "role": role, "term": 3,
                    "voters": voters, "learners": [], "commit_index": 10 + changes,
                    "config_index": 1 + changes,
                })  # fmt: skip
            return 200, {"groups": groups}
        if method == "DELETE" and path.startswith("/v1/members/"):
            member, _, query = path.removeprefix("/v1/members/").partition("?")
            gid = query.split("group=")[1].split("&")[0]
            self.removed.setdefault(gid, set()).add(member)
        return 200, {"replica": f"{store}.1", "members": []}


def _driver(clock: Clock, fake: Fake) -> PlacementDriver:
    urls = {s: f"http://{s}" for s in STORES}
    return PlacementDriver(
        urls, groups=2, replication=3, request=fake, clock=clock, down_after_s=300
    )


async def test_a_leaderless_group_does_not_freeze_another_groups_repair() -> None:
    clock, fake = Clock(), Fake()
    driver = _driver(clock, fake)
    await driver.observe()
    clock.t = 1000.0  # s1 and s2 down for long
    steps = await driver.round()
    assert steps, "g1's dead voter is never replaced while g0 has no leader"
    assert all(step.group == 1 for step in steps)  # g0 (no leader) is never stepped
    assert any(step.kind is StepKind.REMOVE and step.store == "s1" for step in steps)
    # Nothing was asked of g0's stores but the observation.
    assert not [c for c in fake.calls if c[0] != "GET" and "g0" in c[2]]


async def test_a_group_nobody_reports_counts_as_the_map_recorded_it() -> None:
    clock, fake = Clock(), Fake()
    driver = _driver(clock, fake)
    hosted = dict(HOSTED)
    HOSTED["g0"] = ("s1", "s2", "s5")  # its surviving replica is on s5 ...
    DEAD.add("s5")  # ... which is silent too: nobody reports g0
    try:
        assert await driver.round() == []  # no record of g0 either: no map, wait
        driver.known = {"g0": ("s1", "s2", "s5")}
        await driver.observe()
        clock.t = 1000.0
        steps = await driver.round()
        assert steps
        assert all(step.group == 1 for step in steps)
    finally:
        HOSTED.update(hosted)
        DEAD.discard("s5")
