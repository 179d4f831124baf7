"""Host labels that clash with a placement: the planner repairs them, never shrinks for them.

The bootstrap places replicas before the stores register their labels, so a map may record two
replicas of a group on one host (``Store.label``; ``host`` stays the store's id there, as the
previous release reads it). Checked here, on the pure planner, with the driver simulated as in
``test_placement`` (every step succeeds at once): a drain beside a clash adds before it
removes (3 → 4 → 3), six stores of one host keep three replicas through drains and dead
stores (and the meta group's drains are allowed), a clash is repaired by learner, promote,
remove of one of the pair (not its leader), and over random maps with clashes the planner
reaches a fix point where no group shares a host while enough hosts exist.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.sharding.clustermap import ClusterMap, GroupPlacement, Store, StoreState
from raftcache.sharding.placement import Step, StepKind, apply_step, drained, plan
from raftcache.store.driver import plan_meta
from raftcache.store.meta import meta_move_refusal
from tests.sharding.test_placement import _elect

MAX_ROUNDS = 2000


def _labelled(labels: dict[str, str]) -> dict[str, Store]:
    """Stores as the driver's map has them: ``host`` the id, the label apart."""
    return {s: Store(s, s, label=label) for s, label in labels.items()}


def _map(labels: dict[str, str], groups: list[tuple[str, ...]], replication: int = 3) -> ClusterMap:
    placements = tuple(
        GroupPlacement(g, tuple(sorted(voters)), (), min(voters)) for g, voters in enumerate(groups)
    )
    return ClusterMap(1, len(groups), replication, _labelled(labels), placements)


def _drain(cmap: ClusterMap, *stores: str) -> ClusterMap:
    for s in stores:
        cmap = cmap.with_store(replace(cmap.stores[s], state=StoreState.DECOMMISSIONING))
    return cmap


def _drive(
    cmap: ClusterMap, down: set[str], keep: int = 0, rng: random.Random | None = None
) -> tuple[ClusterMap, list[tuple[Step, GroupPlacement]], int]:
    """Plan and apply to the fix point; every step with its group before it, and the fewest
    voters any group had after a step taken while every voter was alive."""
    taken: list[tuple[Step, GroupPlacement]] = []
    fewest = min(len(p.voters) for p in cmap.placements)
    for _ in range(MAX_ROUNDS):
        cmap = _elect(cmap, down, rng)
        for store in drained(cmap):
            cmap = cmap.with_store(replace(cmap.stores[store], state=StoreState.REMOVED))
        steps = plan(cmap, down, keep=keep)
        if not steps:
            return cmap, taken, fewest
        assert len({s.group for s in steps}) == len(steps), steps
        for step in steps:
            before = cmap.placement(step.group)
            cmap = apply_step(cmap, step)
            after = cmap.placement(step.group)
            live = [v for v in before.voters if v not in down]
            if 2 * len(live) > len(before.voters):  # never below the group's live majority
                alive = [v for v in after.voters if v not in down]
                assert 2 * len(alive) > len(after.voters), (step, before)
            heirs = [
                v
                for v in before.voters
                if v != step.store and cmap.stores[v].state is StoreState.UP and v not in down
            ]
            if step.kind is StepKind.REMOVE and step.store in before.voters and heirs:
                assert step.store != before.leader, f"{step}: leadership not handed over"
            if not set(before.voters) & down:
                fewest = min(fewest, len(after.voters))
            taken.append((step, before))
    raise AssertionError(f"no fix point after {MAX_ROUNDS} rounds: {plan(cmap, down)}")


def _hosts(cmap: ClusterMap, p: GroupPlacement) -> list[str]:
    return sorted(cmap.stores[s].host_label for s in p.voters)


def test_a_drain_beside_a_clash_adds_its_replacement_before_removing_it() -> None:
    # Review probe 1: s0 and s1 share h0, s2 on h1 is idle, s3 on h2 drains.
    cmap = _map({"s0": "h0", "s1": "h0", "s2": "h1", "s3": "h2"}, [("s0", "s1", "s3")])
    cmap = _drain(cmap, "s3")
    assert plan(cmap) == [Step(0, StepKind.ADD, "s2")]  # 3 → 4 → 3, never 3 → 2 → 3
    cmap, taken, fewest = _drive(cmap, set())
    assert fewest == 3, taken
    assert cmap.placement(0).voters == ("s0", "s1", "s2")  # no host left to repair h0
    assert cmap.stores["s3"].state is StoreState.REMOVED


def test_both_of_a_clashing_pair_drained_at_once_move_to_siblings_first() -> None:
    # Second review, bug A: s0 and s1 share h0 with two idle siblings (s4, s5), s2 is on h1;
    # draining s0 and s1 together must add before removing and end with three replicas, not
    # shrink to two because h0 has no staying replica left.
    labels = {"s0": "h0", "s1": "h0", "s4": "h0", "s5": "h0", "s2": "h1"}
    cmap = _drain(_map(labels, [("s0", "s1", "s2")]), "s0", "s1")
    assert plan(cmap)[0].kind is StepKind.ADD
    cmap, taken, fewest = _drive(cmap, set())
    assert fewest == 3, taken
    assert set(cmap.placement(0).voters) == {"s2", "s4", "s5"}
    assert all(len(before.voters) >= 4 for step, before in taken if step.kind is StepKind.REMOVE)


@pytest.mark.parametrize("keep", [0, 3])
def test_a_group_whose_three_stores_are_drained_at_once_stays_within_rf_plus_one(
    keep: int,
) -> None:
    # Third review: adding every replacement before removing any took a group whose three
    # stores were drained at once (a rack) to six voters, the meta group (keep=3) too.
    stores = {f"s{i}": Store(f"s{i}", f"h{i}") for i in range(6)}
    cmap = ClusterMap(1, 1, 3, stores, (GroupPlacement(0, ("s0", "s1", "s2"), (), "s0"),))
    cmap = _drain(cmap, "s0", "s1", "s2")
    cmap, taken, _ = _drive(cmap, set(), keep=keep)
    assert sorted(cmap.placement(0).voters) == ["s3", "s4", "s5"]
    assert max(len(before.voters) for _, before in taken) <= 4, taken


def test_six_stores_of_one_host_keep_three_replicas_through_drains() -> None:
    # Review probe 2: one machine's stores all register its name.
    labels = {f"s{i}": "m" for i in range(6)}
    cmap = ClusterMap.bootstrap([Store(s, s) for s in labels], 4, 3)  # labels unknown then
    cmap = replace(cmap, stores=_labelled(labels))
    for drains in (["s0"], ["s1", "s2"]):  # one drain, then two at once
        cmap, taken, fewest = _drive(_drain(cmap, *drains), set())
        assert fewest == 3, taken
        for p in cmap.placements:
            assert len(p.voters) == 3, p
            assert not set(p.voters) & set(drains), p
    # A dead store's replicas are replaced on the host, too: back to three.
    survivors = [s for s, st in cmap.stores.items() if st.state is StoreState.UP]
    assert len(survivors) == 3
    cmap = cmap.with_store(Store("s6", "s6", label="m"))
    dead = cmap.placement(0).voters[0]
    cmap, _, _ = _drive(cmap, {dead})
    for p in cmap.placements:
        assert len(p.voters) == 3, p
        assert dead not in p.voters, p


def test_six_stores_of_one_host_may_drain_a_meta_replica() -> None:
    labels = {f"s{i}": "m" for i in range(6)}
    cmap = _map(labels, [("s0", "s1", "s2")])
    cmap = cmap.with_placement(GroupPlacement(-1, ("s0", "s1", "s2"), (), "s0"))
    assert meta_move_refusal(cmap, "s1") is None
    drained_one = _drain(cmap, "s1")
    assert meta_move_refusal(drained_one, "s2") is None  # two drains at once, too
    # The meta group's own plan (its floor of three) moves it to siblings.
    meta = _drain(_map(labels, [("s0", "s1", "s2")]), "s1", "s2")
    meta, _, fewest = _drive(meta, set(), keep=3)
    assert fewest == 3
    assert len(meta.placement(0).voters) == 3
    assert not {"s1", "s2"} & set(meta.placement(0).voters)
    assert plan_meta(meta) == []
    # With no store to take it, the drain is still refused, naming why.
    alone = _map({s: "m" for s in ("s0", "s1", "s2")}, [("s0", "s1", "s2")])
    alone = alone.with_placement(GroupPlacement(-1, ("s0", "s1", "s2"), (), "s0"))
    why = meta_move_refusal(alone, "s1")
    assert why is not None
    assert "0 store(s) to take them" in why


def test_a_clash_is_repaired_by_one_move_added_before_removed() -> None:
    # Stores labelled h1, h1, h2, h3; the bootstrap put the group on the first three.
    cmap = _map({"s0": "h1", "s1": "h1", "s2": "h2", "s3": "h3"}, [("s0", "s1", "s2")])
    assert cmap.placement(0).leader == "s0"
    steps = []
    voters = [len(cmap.placement(0).voters)]
    while step := plan(cmap):
        assert len(step) == 1  # one step per group per plan
        steps.append(step[0])
        cmap = apply_step(cmap, step[0])
        voters.append(len(cmap.placement(0).voters))
    assert steps == [
        Step(0, StepKind.ADD, "s3"),
        Step(0, StepKind.PROMOTE, "s3"),
        Step(0, StepKind.REMOVE, "s1"),  # of the pair, not its leader s0
    ]
    assert voters == [3, 3, 4, 3]
    assert _hosts(cmap, cmap.placement(0)) == ["h1", "h2", "h3"]


def test_a_clash_with_no_free_host_keeps_its_replicas() -> None:
    cmap = _map({"s0": "h1", "s1": "h1", "s2": "h2"}, [("s0", "s1", "s2")])
    assert plan(cmap) == []  # three replicas on two hosts outlive a store, two would not


def test_a_clash_on_the_pairs_leader_removes_the_other() -> None:
    cmap = _map({"s0": "h1", "s1": "h1", "s2": "h2", "s3": "h3"}, [("s0", "s1", "s2")])
    cmap = apply_step(
        apply_step(cmap, Step(0, StepKind.ADD, "s3")), Step(0, StepKind.PROMOTE, "s3")
    )
    cmap = cmap.with_placement(replace(cmap.placement(0), leader="s1"))
    assert plan(cmap) == [Step(0, StepKind.REMOVE, "s0")]


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(2, 8),
    hosts=st.integers(1, 5),
    groups=st.integers(1, 6),
    replication=st.integers(1, 4),
    data=st.data(),
)
def test_any_map_with_clashes_reaches_a_fix_point_without_them(
    n: int, hosts: int, groups: int, replication: int, data: st.DataObject
) -> None:
    """Random labels and placements with clashes (and learners, unknown leaders, a drained
    store): the planner terminates; each step keeps a live majority and removes a live voter
    only above the group's RF or from a draining store; at the fix point no group shares a
    host while a host it does not use could take a replica, and with RF hosts none does."""
    labels = {f"s{i}": f"h{data.draw(st.integers(0, hosts - 1))}" for i in range(n)}
    stores = sorted(labels)
    placements = []
    for g in range(groups):
        chosen = data.draw(st.permutations(stores))[: data.draw(st.integers(1, min(n, 4)))]
        learners = data.draw(st.integers(0, len(chosen) - 1))
        voters = tuple(sorted(chosen[learners:]))
        leader = data.draw(st.one_of(st.none(), st.sampled_from(voters)))
        placements.append(GroupPlacement(g, voters, tuple(sorted(chosen[:learners])), leader))
    cmap = ClusterMap(1, groups, replication, _labelled(labels), tuple(placements))
    draining = data.draw(st.sets(st.sampled_from(stores), max_size=n - 1))
    cmap = _drain(cmap, *draining)
    rng = random.Random(data.draw(st.integers(0, 1000)))
    cmap, taken, _ = _drive(cmap, set(), rng=rng)
    for step, before in taken:
        if step.kind is StepKind.REMOVE and step.store in before.voters:
            leaving = cmap.stores[step.store].state is not StoreState.UP or step.store in draining
            assert leaving or len(before.voters) > replication, (step, before)
    eligible = [s for s, st in cmap.stores.items() if st.state is StoreState.UP]
    eligible_hosts = {labels[s] for s in eligible}
    for p in cmap.placements:
        assert not p.learners, p
        assert set(p.voters) <= set(eligible), p
        used = {labels[s] for s in p.voters}
        if cmap.shared_hosts(p):
            assert used == eligible_hosts, (p, eligible_hosts)  # no free host was left
        if len(eligible_hosts) >= replication:
            assert not cmap.shared_hosts(p), p
            assert len(p.voters) == replication, p
