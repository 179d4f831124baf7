"""Placement driven to its fix point after any sequence of joins, leaves and failures.

The driver is simulated: every step a plan returns succeeds at once, a group whose leader left
elects the live voter leading fewest groups. Checked after every step: the map's own invariants
(``ClusterMap.check``: no two replicas of a group on one host, leaders are voters), one step per
group per plan, a voter removed only from a group above its replication; at the fix point:
every group fully replicated on eligible stores, and replicas and leaders balanced within one
where every store has a host of its own.
"""

from __future__ import annotations

import random
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


def _live_majority(voters: tuple[str, ...], down: set[str]) -> bool:
    return 2 * sum(v not in down for v in voters) > len(voters)


def _stores(hosts: list[str]) -> list[Store]:
    return [Store(f"s{i}", host) for i, host in enumerate(hosts)]


def _elect(cmap: ClusterMap, down: set[str], rng: random.Random | None = None) -> ClusterMap:
    """Groups without a live leader elect the live voter leading fewest groups; a group
    without a live majority has no leader."""
    live = (
        set(eligible_stores(cmap, down))
        | {s for s, st in cmap.stores.items() if st.state is StoreState.DECOMMISSIONING} - down
    )
    for p in cmap.placements:
        if not _live_majority(p.voters, down):  # no quorum: no leader (check-quorum)
            if p.leader is not None:
                cmap = with_leader(cmap, p.group, None)
            continue
        if p.leader in live:
            continue
        candidates = [v for v in p.voters if v in live]
        if candidates:
            leads = cmap.leader_counts()
            chosen = (
                rng.choice(candidates)
                if rng is not None
                else min(candidates, key=lambda v: (leads[v], v))
            )
            cmap = with_leader(cmap, p.group, chosen)
    return cmap


def _drive(
    cmap: ClusterMap, down: set[str], rng: random.Random | None = None
) -> tuple[ClusterMap, list[Step]]:
    """Plan and apply until no step remains; returns the fix point and every step taken.
    With ``rng``, elections pick any live voter (a real election is not placement's choice)."""
    taken: list[Step] = []
    for _ in range(MAX_ROUNDS):
        cmap = _elect(cmap, down, rng)
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
            after = apply_step(cmap, step)  # ClusterMap.check runs on every new map
            if _live_majority(p.voters, down):  # no step ever costs a group its quorum
                assert _live_majority(after.placement(step.group).voters, down), (step, p)
            if step.kind is StepKind.REMOVE and step.store in p.voters and step.store not in down:
                assert len(p.voters) > rf, f"{step} leaves {p} below {rf} live voters"
                assert step.store != p.leader, f"{step}: leadership not handed over first"
            if step.kind is StepKind.TRANSFER:
                assert step.store in p.voters
            cmap = after
        taken += steps
    raise AssertionError(f"no fix point after {MAX_ROUNDS} rounds: {plan(cmap, down)}")


def _check_fix_point(cmap: ClusterMap, down: set[str], distinct_hosts: bool) -> None:
    eligible = eligible_stores(cmap, down)
    rf = effective_replication(cmap, down)
    for p in cmap.placements:
        assert not p.learners, p
        if not _live_majority(p.voters, down):
            continue  # nothing commits in such a group: no plan can change it
        assert p.leader in p.voters, p
        assert len(p.voters) == rf, (p, rf)
        assert not set(p.voters) & down, p  # dead voters are removed
        if not set(p.voters) <= set(eligible):
            # Stuck only when no eligible store sits on a host no staying replica uses.
            hosts = {cmap.stores[r].host for r in p.voters if r in eligible}
            assert all(cmap.stores[s].host in hosts or s in p.voters for s in eligible), (
                p,
                eligible,
            )
    counts = cmap.replica_counts()
    replicas = [counts[s] for s in eligible]
    for full in eligible:
        for empty in eligible:
            if counts[full] - counts[empty] < 2:
                continue
            host = cmap.stores[empty].host
            for p in cmap.placements:  # no single move could have evened them out
                if set(p.voters) & down:
                    continue  # a group that lost a voter for good is not moved (no quorum)
                hosts = {cmap.stores[r].host for r in p.replicas}
                assert not (full in p.voters and empty not in p.voters and host not in hosts)
    stuck = [p for p in cmap.placements if set(p.voters) & down]
    if distinct_hosts and not stuck:
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


@settings(max_examples=400, deadline=None)
@given(
    hosts=st.lists(st.integers(0, 5), min_size=1, max_size=7),
    distinct=st.booleans(),
    groups=st.integers(1, 12),
    replication=st.integers(1, 4),
    steps=events,
    seed=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
)
def test_placement_reaches_a_balanced_fix_point_after_any_history(
    hosts: list[int],
    distinct: bool,
    groups: int,
    replication: int,
    steps: list[tuple[str, int]],
    seed: int | None,
) -> None:
    labels = [f"h{i}" for i in range(len(hosts))] if distinct else [f"h{h}" for h in hosts]
    cmap = ClusterMap.bootstrap(_stores(labels), groups, replication)
    down: set[str] = set()
    rng = None if seed is None else random.Random(seed)
    cmap, _ = _drive(cmap, down, rng)
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
        cmap, _ = _drive(cmap, down, rng)
        _check_fix_point(cmap, down, distinct)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 7), groups=st.integers(1, 8), replication=st.integers(1, 4), data=st.data())
def test_any_valid_map_reaches_a_fix_point(
    n: int, groups: int, replication: int, data: st.DataObject
) -> None:
    """From maps a crashed driver may leave: learners, unknown leaders, groups above or below
    their replication — not only from ``bootstrap``."""
    hosts = [f"h{data.draw(st.integers(0, n - 1))}" for _ in range(n)]
    stores = {f"s{i}": Store(f"s{i}", hosts[i]) for i in range(n)}
    placements = []
    for g in range(groups):
        order = data.draw(st.permutations(sorted(stores)))
        chosen: list[str] = []
        for s in order[: data.draw(st.integers(1, n))]:
            if stores[s].host not in {stores[c].host for c in chosen}:
                chosen.append(s)
        learners = data.draw(st.integers(0, len(chosen) - 1))
        voters = tuple(sorted(chosen[learners:]))
        leader = data.draw(st.one_of(st.none(), st.sampled_from(voters)))
        placements.append(GroupPlacement(g, voters, tuple(sorted(chosen[:learners])), leader))
    cmap = ClusterMap(1, groups, replication, stores, tuple(placements))
    cmap, _ = _drive(cmap, set(), random.Random(data.draw(st.integers(0, 1000))))
    _check_fix_point(cmap, set(), distinct_hosts=len(set(hosts)) == n)


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


def test_a_store_down_too_long_is_removed_then_replaced() -> None:
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2", "h3"]), 1, 3)
    (p,) = cmap.placements
    dead = next(v for v in p.voters if v != p.leader)
    spare = next(s for s in cmap.stores if s not in p.voters)
    assert plan(cmap, down={dead}) == [Step(0, StepKind.REMOVE, dead)]  # it adds no tolerance
    cmap = apply_step(cmap, Step(0, StepKind.REMOVE, dead))
    assert plan(cmap, down={dead}) == [Step(0, StepKind.ADD, spare)]


def test_a_dead_store_is_replaced_by_a_store_on_its_host() -> None:
    # Review finding 4: s3 shares host h1 with the dead s1 and is the only possible target.
    stores = [Store("s0", "h0"), Store("s1", "h1"), Store("s2", "h2"), Store("s3", "h1")]
    cmap = ClusterMap.bootstrap(stores, 1, 3)
    (p,) = cmap.placements
    assert set(p.voters) == {"s0", "s1", "s2"}
    cmap, _ = _drive(cmap, {"s1"})
    assert cmap.placement(0).voters == ("s0", "s2", "s3")


def test_decommissioning_moves_a_replica_to_a_sibling_on_the_same_host() -> None:
    stores = [Store("s0", "h0"), Store("s1", "h1"), Store("s2", "h2"), Store("s3", "h1")]
    cmap = ClusterMap.bootstrap(stores, 1, 3)
    cmap = cmap.with_store(replace(cmap.stores["s1"], state=StoreState.DECOMMISSIONING))
    cmap, taken = _drive(cmap, set())
    assert cmap.stores["s1"].state is StoreState.REMOVED
    assert cmap.placement(0).voters == ("s0", "s2", "s3")
    assert [s.kind for s in taken if s.kind is not StepKind.TRANSFER][:2] == [
        StepKind.ADD,  # added before the live replica leaves: h1 holds two for one move
        StepKind.PROMOTE,
    ]


def test_a_live_voter_is_never_removed_when_a_dead_one_remains() -> None:
    # Review finding 3: s1 down too long, s2 leaving but alive; only two hosts stay eligible.
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2"]), 1, 3)
    cmap = cmap.with_store(replace(cmap.stores["s2"], state=StoreState.DECOMMISSIONING))
    assert plan(cmap, down={"s1"}) == [Step(0, StepKind.REMOVE, "s1")]


def test_with_a_floor_a_live_voter_is_added_for_before_it_is_removed() -> None:
    """Two of four stores drained at once: only two hosts stay eligible. Both a data group (no
    floor) and one with ``keep=3`` (the meta group's floor) add the spare first; the data group
    then shrinks to the two eligible stores, and the floored one keeps its last leaving voter
    rather than go below three."""
    cmap = ClusterMap.bootstrap(_stores(["h0", "h1", "h2", "h3"]), 1, 3)
    (p,) = cmap.placements
    spare = next(s for s in cmap.stores if s not in p.voters)
    leaving = [v for v in p.voters if v != p.leader]
    for s in leaving:
        cmap = cmap.with_store(replace(cmap.stores[s], state=StoreState.DECOMMISSIONING))
    assert plan(cmap) == [Step(0, StepKind.ADD, spare)]  # never 3 → 2 before the spare is in
    assert plan(cmap, keep=3) == [Step(0, StepKind.ADD, spare)]
    data, fewest_data = cmap, 3
    for _ in range(10):
        steps = plan(data)
        if not steps:
            break
        data = apply_step(data, steps[0])
        fewest_data = min(fewest_data, len(data.placement(0).voters))
    assert set(data.placement(0).voters) == {p.leader, spare}  # the two eligible stores
    assert fewest_data == 2  # only at the end, once the leaving voters are gone
    fewest = 3
    for _ in range(10):
        steps = plan(cmap, keep=3)
        if not steps:
            break
        cmap = apply_step(cmap, steps[0])
        fewest = min(fewest, len(cmap.placement(0).voters))
    assert fewest == 3
    voters = set(cmap.placement(0).voters)
    assert {p.leader, spare} < voters
    assert len(voters & set(leaving)) == 1  # one leaving voter stays: nothing can take it


def test_ties_between_colliding_ids_are_broken_by_the_id() -> None:
    # Review finding 12: these two ids have the same CRC-32 suffix for every group.
    a, b = "yd5cous7", "o16ztj0g"
    stores = [
        Store("s0", "h0"),
        Store("s1", "h1"),
        Store("s2", "h2"),
        Store(a, "ha"),
        Store(b, "hb"),
    ]
    cmap = ClusterMap.bootstrap(stores[:3], 1, 3)
    cmap = cmap.with_store(stores[3]).with_store(stores[4])
    (p,) = cmap.placements
    victim = next(v for v in p.voters if v != p.leader)
    cmap = apply_step(cmap, Step(0, StepKind.REMOVE, victim))
    assert plan(cmap) == [Step(0, StepKind.ADD, min(a, b))]


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
