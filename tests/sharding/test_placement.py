"""Placement driven to its fix point after any sequence of joins, leaves and failures.

The driver is simulated: every step a plan returns succeeds at once, a group whose leader left
elects the live voter leading fewest groups. Checked after every step: the map's own invariants
(``ClusterMap.check``: no two replicas of a group on one host, leaders are voters), one step per
group per plan, a voter removed only from a group above its replication; at the fix point:
every group fully replicated on eligible stores, and replicas and leaders balanced within one
where every store has a host of its own.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.sharding.clustermap import ClusterMap, GroupPlacement, Store, StoreState
from raftcache.sharding.placement import (
    Step,
    StepKind,
    apply_step,
    drained,
    effective_replication,
    eligible_stores,
    plan,
    with_leader,
)

MAX_ROUNDS = 2000


def _stores(hosts: list[str]) -> list[Store]:
    return [Store(f"s{i}", host) for i, host in enumerate(hosts)]


def _elect(cmap: ClusterMap, down: set[str]) -> ClusterMap:
    """Groups without a live leader elect the eligible voter leading fewest groups."""
    live = (
        set(eligible_stores(cmap, down))
        | {s for s, st in cmap.stores.items() if st.state is StoreState.DECOMMISSIONING} - down
    )
    for p in cmap.placements:
        if p.leader in live:
            continue
        candidates = [v for v in p.voters if v in live]
        if candidates:
            leads = cmap.leader_counts()
            cmap = with_leader(cmap, p.group, min(candidates, key=lambda v: (leads[v], v)))
    return cmap


def _drive(cmap: ClusterMap, down: set[str]) -> tuple[ClusterMap, list[Step]]:
    """Plan and apply until no step remains; returns the fix point and every step taken."""
    taken: list[Step] = []
    for _ in range(MAX_ROUNDS):
        cmap = _elect(cmap, down)
        for store in drained(cmap):
            cmap = cmap.with_store(replace(cmap.stores[store], state=StoreState.REMOVED))
        steps = plan(cmap, down)
        if not steps:
            return cmap, taken
        groups = [s.group for s in steps]
        assert len(groups) == len(set(groups)), f"two steps for one group: {steps}"
        rf = effective_replication(cmap, down)
        for step in steps:
            p = cmap.placement(step.group)
            if step.kind is StepKind.REMOVE and step.store in p.voters:
                assert len(p.voters) > rf, f"{step} leaves {p} below {rf} voters"
            if step.kind is StepKind.TRANSFER:
                assert step.store in p.voters
            cmap = apply_step(cmap, step)  # ClusterMap.check runs on every new map
        taken += steps
    raise AssertionError(f"no fix point after {MAX_ROUNDS} rounds: {plan(cmap, down)}")


def _check_fix_point(cmap: ClusterMap, down: set[str], distinct_hosts: bool) -> None:
    eligible = eligible_stores(cmap, down)
    rf = effective_replication(cmap, down)
    for p in cmap.placements:
        assert not p.learners, p
        assert len(p.voters) == rf, (p, rf)
        if not set(p.voters) <= set(eligible):
            # Stuck only when no eligible store sits on a host the group does not use.
            hosts = {cmap.stores[r].host for r in p.replicas}
            assert all(cmap.stores[s].host in hosts for s in eligible), (p, eligible)
        if set(p.voters) - down:
            assert p.leader in p.voters, p
    counts = cmap.replica_counts()
    replicas = [counts[s] for s in eligible]
    for full in eligible:
        for empty in eligible:
            if counts[full] - counts[empty] < 2:
                continue
            host = cmap.stores[empty].host
            for p in cmap.placements:  # no single move could have evened them out
                hosts = {cmap.stores[r].host for r in p.replicas}
                assert not (full in p.voters and empty not in p.voters and host not in hosts)
    if distinct_hosts:
        assert max(replicas) - min(replicas) <= 1, counts
        leads = cmap.leader_counts()
        leaders = [leads[s] for s in eligible]
        assert max(leaders) - min(leaders) <= 1, leads


events = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(0, 9)),
        st.tuples(st.just("decommission"), st.integers(0, 20)),
        st.tuples(st.just("down"), st.integers(0, 20)),
        st.tuples(st.just("up"), st.integers(0, 20)),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    hosts=st.lists(st.integers(0, 5), min_size=1, max_size=7),
    distinct=st.booleans(),
    groups=st.integers(1, 12),
    replication=st.integers(1, 3),
    steps=events,
)
def test_placement_reaches_a_balanced_fix_point_after_any_history(
    hosts: list[int], distinct: bool, groups: int, replication: int, steps: list[tuple[str, int]]
) -> None:
    labels = [f"h{i}" for i in range(len(hosts))] if distinct else [f"h{h}" for h in hosts]
    cmap = ClusterMap.bootstrap(_stores(labels), groups, replication)
    down: set[str] = set()
    cmap, _ = _drive(cmap, down)
    _check_fix_point(cmap, down, distinct)
    for kind, n in steps:
        ids = sorted(cmap.stores)
        if kind == "join":
            host = f"h{len(ids)}" if distinct else f"h{n}"
            cmap = cmap.with_store(Store(f"s{len(ids)}", host))
        else:
            store = cmap.stores[ids[n % len(ids)]]
            if kind == "decommission" and store.state is StoreState.UP:
                if len(eligible_stores(cmap, down)) > 1:  # the operator keeps one store
                    cmap = cmap.with_store(replace(store, state=StoreState.DECOMMISSIONING))
            elif kind == "down" and len(eligible_stores(cmap, down | {store.store_id})) >= 1:
                down.add(store.store_id)
            elif kind == "up":
                down.discard(store.store_id)
        cmap, _ = _drive(cmap, down)
        _check_fix_point(cmap, down, distinct)


def test_bootstrap_starts_balanced() -> None:
    cmap = ClusterMap.bootstrap(_stores([f"h{i}" for i in range(6)]), 16, 3)
    assert sorted(cmap.replica_counts().values()) == [8] * 6
    assert max(cmap.leader_counts().values()) - min(cmap.leader_counts().values()) <= 1
    assert plan(cmap) == []


def test_a_joining_store_gets_its_share_one_move_per_group() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2"]), 8, 3)
    cmap = cmap.with_store(Store("s3", "h3"))
    first = plan(cmap)
    assert [s.kind for s in first] == [StepKind.ADD]  # one move at a time into one store
    assert first[0].store == "s3"
    cmap, taken = _drive(cmap, set())
    assert cmap.replica_counts()["s3"] == 6  # 24 replicas over 4 stores
    kinds = [s.kind for s in taken]
    assert kinds.count(StepKind.ADD) == kinds.count(StepKind.PROMOTE) == 6
    assert kinds.count(StepKind.REMOVE) == 6  # added before removed, never fewer than 3


def test_a_decommissioned_store_is_emptied_leadership_first() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2", "h3"]), 4, 3)
    victim = next(p.leader for p in cmap.placements)
    assert victim is not None
    led = {p.group for p in cmap.placements if p.leader == victim}
    cmap = cmap.with_store(replace(cmap.stores[victim], state=StoreState.DECOMMISSIONING))
    cmap, taken = _drive(cmap, set())
    assert cmap.stores[victim].state is StoreState.REMOVED
    assert victim not in {r for p in cmap.placements for r in p.replicas}
    for i, step in enumerate(taken):  # its leadership went before its replica
        if step.kind is StepKind.REMOVE and step.store == victim and step.group in led:
            transfers = [t for t in taken[:i] if t.group == step.group]
            assert transfers
            assert transfers[-1].kind is StepKind.TRANSFER


def test_a_store_down_too_long_is_replaced_add_before_remove() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2", "h3"]), 1, 3)
    (p,) = cmap.placements
    dead = next(v for v in p.voters if v != p.leader)
    steps = plan(cmap, down={dead})
    spare = next(s for s in cmap.stores if s not in p.voters)
    assert steps == [Step(0, StepKind.ADD, spare)]


def test_no_target_on_another_host_means_no_move() -> None:
    # Three stores, two hosts: RF 3 cannot be met; each group keeps one replica per host.
    cmap = ClusterMap.bootstrap(_stores(["a", "a", "b"]), 2, 3)
    assert all(len(p.voters) == 2 for p in cmap.placements)
    assert plan(cmap) == []


def test_a_stuck_learner_is_dropped_when_its_store_goes_down() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2", "h3"]), 1, 3)
    (p,) = cmap.placements
    spare = next(s for s in cmap.stores if s not in p.voters)
    cmap = apply_step(cmap, Step(0, StepKind.ADD, spare))
    assert plan(cmap) == [Step(0, StepKind.PROMOTE, spare)]
    assert plan(cmap, down={spare}) == [Step(0, StepKind.REMOVE, spare)]


def test_plans_are_the_same_on_every_driver() -> None:
    cmap = ClusterMap.bootstrap(_stores([f"h{i}" for i in range(5)]), 10, 3)
    cmap = cmap.with_store(Store("s5", "h5"))
    again = ClusterMap.from_json(cmap.to_json())
    assert again == cmap
    assert plan(cmap) == plan(again)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["placements"][0].update(voters=[]), "has no voter"),
        (lambda d: d["placements"][0].update(voters=["s0", "zz"]), "unknown store 'zz'"),
        (lambda d: d["placements"][0].update(leader="s5"), "is not a voter"),
        (lambda d: d["placements"].pop(), "placements for 4 groups"),
        (lambda d: d["stores"][1].update(host="h0"), "two replicas on host 'h0'"),
        (lambda d: d.pop("version"), "lacks 'version'"),
        (lambda d: d.update(groups=0), "number of groups"),
        (lambda d: d["stores"].append(dict(d["stores"][0])), "store id twice"),
    ],
)
def test_a_broken_map_is_refused_naming_the_problem(mutate, message) -> None:  # type: ignore[no-untyped-def]
    doc = ClusterMap.bootstrap(_stores([f"h{i}" for i in range(6)]), 4, 3).to_json()
    mutate(doc)
    with pytest.raises(ValueError, match=message):
        ClusterMap.from_json(doc)


def test_a_removed_store_cannot_hold_a_replica() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2"]), 1, 3)
    with pytest.raises(ValueError, match="removed store"):
        cmap.with_store(replace(cmap.stores["s0"], state=StoreState.REMOVED))


def test_slot_ranges_cover_the_keyspace() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0"]), 3, 1)
    assert cmap.slot_ranges() == [(0, 5460, 0), (5461, 10921, 1), (10922, 16383, 2)]
    assert GroupPlacement(0, ("s0",)).replicas == ("s0",)
