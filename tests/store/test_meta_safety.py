"""Attacks on the meta group's own replica moves (docs/sharding.md, "The meta group's replicas
move"), each one a way the map's group could lose its quorum or be lost from sight:

- drains that overlap — a second (or third) meta store drained while the first drain is under
  way — or whose only taker is a store silent past ``--store-down-after``: the drain must be
  refused (``meta_move_refusal``), and independently the meta plan (``plan_meta``) must never
  remove a live meta voter before its replacement is in, so the meta group never runs on
  fewer than three voters (pure, then end to end over HTTP);
- a store that never learnt the addresses of the stores the meta group moved to: the "not the
  meta leader" answer must carry the leader's address, and the store must follow it;
- the hint a meta replica that knows no leader gives, and a meta membership change without
  the configuration index it was planned from."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import aiohttp

from raftcache.network.groups import store_of
from raftcache.sharding.clustermap import META, ClusterMap, GroupPlacement, Store, StoreState
from raftcache.sharding.placement import StepKind, apply_step
from raftcache.store.agent import FORWARDED, MetaAgent, MetaUnavailableError
from raftcache.store.driver import LazyRequester, plan_meta
from raftcache.store.meta import first_map, meta_move_refusal, meta_replication
from tests.store.test_meta_group import _meta_config, _start, _stop, _until

IDS = ("s1", "s2", "s3", "s4")
D = StoreState.DECOMMISSIONING


def _map(states: dict[str, StoreState]) -> ClusterMap:
    """4 stores on 4 hosts, the meta group on s1 s2 s3 (s1 leading), one data group."""
    stores = {s: Store(s, f"h-{s}", f"http://{s}", state=states.get(s, StoreState.UP)) for s in IDS}
    data = (GroupPlacement(0, ("s1", "s3", "s4"), (), "s1"),)
    meta = GroupPlacement(META, ("s1", "s2", "s3"), (), "s1")
    return ClusterMap(1, 1, 3, stores, data, meta)


def _meta_plan_min_voters(cmap: ClusterMap, down: frozenset[str] = frozenset()) -> int:
    """Run the meta group's plan to its end (as ``PlacementDriver.meta_map`` builds its
    one-group map: the same stores, the meta placement as group 0); the fewest voters the
    meta group had on the way."""
    assert cmap.meta is not None
    one = ClusterMap(
        1, 1, meta_replication(cmap.replication), cmap.stores,
        (GroupPlacement(0, cmap.meta.voters, cmap.meta.learners, cmap.meta.leader),),
    )  # fmt: skip
    fewest = len(one.placements[0].voters)
    for _ in range(50):
        steps = plan_meta(one, down)
        if not steps:
            break
        step = steps[0]
        if step.kind is StepKind.REMOVE and step.store == one.placements[0].leader:
            break  # the driver drops it (never removes the meta leader)
        one = apply_step(one, step)
        fewest = min(fewest, len(one.placements[0].voters))
    return fewest


def test_a_second_drain_is_refused_when_the_meta_group_would_drop_below_three() -> None:
    """Draining s2 is fine (s4 takes its meta replica). Draining s3 too must be refused — only
    s1 and s4 would be left to hold the meta group — and, were both draining anyway, the meta
    plan must add before it removes and never go below three voters."""
    one = _map({"s2": D})
    assert meta_move_refusal(_map({}), "s2") is None  # the first drain: fine
    fewest = _meta_plan_min_voters(_map({"s2": D, "s3": D}))
    refused = meta_move_refusal(one, "s3")
    assert refused is not None or fewest >= 3, (
        f"second drain accepted; the meta group then drops to {fewest} voter(s)"
    )
    assert refused is not None
    assert "no other store can take it" in refused
    assert fewest >= 3


def test_draining_every_meta_store_of_four_is_refused() -> None:
    """s2, s3 then s1 drained one after another, each while the earlier ones are under way:
    were they all accepted, the plan would run the meta group on one voter before s4 is even
    added."""
    accepted = [
        meta_move_refusal(_map({}), "s2") is None,
        meta_move_refusal(_map({"s2": D}), "s3") is None,
        meta_move_refusal(_map({"s2": D, "s3": D}), "s1") is None,
    ]
    fewest = _meta_plan_min_voters(_map({"s1": D, "s2": D, "s3": D}))
    assert not all(accepted) or fewest >= 3, (
        f"all three drains accepted; the meta group then drops to {fewest} voter(s)"
    )
    assert accepted == [True, False, False]
    assert fewest >= 3


def test_a_drain_whose_only_taker_is_down_does_not_shrink_the_meta_group() -> None:
    """s4 silent past --store-down-after (the map still says up: it never records down). With
    the driver's down stores the drain of s2 is refused; without them (a new meta leader's
    driver has not timed s4 out yet) it is accepted, and then the meta plan must not remove
    live s2 before a replacement exists — none ever comes while s4 is dead."""
    assert meta_move_refusal(_map({}), "s2") is None  # accepted: s4 counts as a taker
    why = meta_move_refusal(_map({}), "s2", down={"s4"})
    assert why is not None
    assert "down: s4" in why
    drained = _map({"s2": D})
    fewest = _meta_plan_min_voters(drained, down=frozenset({"s4"}))
    assert fewest >= 3, f"the meta group went down to {fewest} voter(s) on a drain"


async def test_a_second_drain_over_http_is_refused_and_the_meta_group_keeps_three() -> None:
    """The first attack end to end, through the routes: the second drain is refused (409)
    and the meta leader's driver never takes the meta group below three voters."""
    cluster, _ = await _start(list(IDS), meta=["s1", "s2", "s3"], spare=0, groups=2)
    fewest = 3
    try:
        await _until(lambda: cluster.meta_leader() is not None, 20)
        await _until(lambda: all(cluster.agent(s).map is not None for s in IDS), 20)
        statuses = []
        async with aiohttp.ClientSession() as session:
            for sid in ("s2", "s3"):
                async with session.put(
                    f"{cluster.urls['s4']}/raft/meta/stores/{sid}",
                    json={"state": "decommissioning"},
                ) as answer:
                    statuses.append((answer.status, await answer.text()))

        def settled() -> bool:
            nonlocal fewest
            config = _meta_config(cluster)
            if config is not None:
                fewest = min(fewest, len(config[0]))
            gone = {"s2"} if statuses[1][0] == 409 else {"s2", "s3"}
            return config is not None and not config[1] and not gone & config[0]

        await _until(settled, 40, "the drains carried out")
        refused = statuses[1][0] == 409
        assert refused or fewest >= 3, (statuses, f"meta voters went down to {fewest}")
        assert statuses[0][0] == 200, statuses
        assert refused, statuses
        assert "no other store can take it" in statuses[1][1], statuses
        assert fewest >= 3
        assert _meta_config(cluster) == ({"s1", "s3", "s4"}, set())
    finally:
        await _stop(cluster)


async def test_a_store_that_never_saw_the_meta_stores_follows_the_hint() -> None:
    """A store whose KNOWN/SHARDS name no store now holding a meta replica (they joined while
    it was down) asks a store it does know; that store answers 503 naming the meta leader and
    its address, which the store learns and asks. Here: meta on s1 s2 s3; the looking store,
    s9, knows only s4."""
    cluster, _ = await _start(list(IDS), meta=["s1", "s2", "s3"], spare=0, groups=2)
    try:
        await _until(lambda: cluster.meta_leader() is not None, 20)
        await _until(lambda: cluster.agent("s4").map is not None, 20)
        addresses = {"s4": cluster.urls["s4"], "s9": "http://127.0.0.1:9"}
        stub: Any = SimpleNamespace(
            store_id="s9", meta=None, meta_voters=(), addresses=addresses,
            learn_address=addresses.__setitem__,
        )  # fmt: skip
        requester = LazyRequester(addresses, client_token=None, cluster_token=None)
        cluster.requesters.append(requester)
        lookup = MetaAgent(
            stub, Store("s9", "h9", addresses["s9"]), request=requester,
            first=lambda: first_map(2, 3, cluster.placement, cluster.urls, cluster.meta),
        )  # fmt: skip
        try:
            cmap = await lookup.read("linearizable")
        except MetaUnavailableError as exc:
            raise AssertionError(f"the meta leader was never reached: {exc}") from None
        assert cmap is not None
        learnt = set(addresses) - {"s4", "s9"}
        assert learnt
        assert learnt <= {"s1", "s2", "s3"}
        assert all(addresses[s] == cluster.urls[s] for s in learnt)

        # The answer itself: the hint and its address, from a store that does not lead.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{cluster.urls['s4']}/raft/meta/map?{FORWARDED}=1") as a,
        ):
            assert a.status == 503
            body = await a.json()
        assert body["leader"] in {"s1", "s2", "s3"}
        assert body["leader_url"] == cluster.urls[body["leader"]]
    finally:
        await _stop(cluster)


def test_a_meta_replica_that_knows_no_leader_hints_another_meta_store() -> None:
    """Its replica electing (no leader known): the hint falls back to the meta stores the map
    last named, itself skipped — never None while any other is known."""
    electing = SimpleNamespace(node=SimpleNamespace(leader_id=None))
    store: Any = SimpleNamespace(
        store_id="s1", meta=electing, meta_voters=("s1", "s3", "s2"), addresses={}
    )
    agent = MetaAgent(
        store, Store("s1", "h1", "http://s1"), request=_never,
        first=lambda: first_map(1, 3, {"g0": ["s1"]}, {}),
    )  # fmt: skip
    assert agent.leader_hint() == "s3"
    store.meta_voters = ("s1",)
    assert agent.leader_hint() is None
    electing.node.leader_id = "s2.1"
    assert agent.leader_hint() == "s2"


async def _never(method: str, store: str, path: str, body: Any) -> tuple[int, Any]:
    raise AssertionError(f"no request expected: {method} {store}{path}")


async def test_meta_membership_changes_need_their_configuration_index() -> None:
    """POST and DELETE /raft/meta/members without ``config_index`` are refused (400 naming
    it), before anything else is looked at; and ``on_learn`` (which writes KNOWN, with an
    fsync) runs off the event loop's thread."""
    cluster, _ = await _start(["s1", "s2", "s3"], meta=["s1", "s2", "s3"], spare=0, groups=1)
    try:
        await _until(lambda: cluster.meta_leader() is not None, 20)
        leader = cluster.meta_leader()
        assert leader is not None
        url = cluster.urls[leader.store_id]
        async with aiohttp.ClientSession() as session:
            body = {"id": "s9.1", "url": "http://127.0.0.1:9"}
            async with session.post(f"{url}/raft/meta/members", json=body) as answer:
                assert answer.status == 400
                assert "config_index is required" in (await answer.json())["error"]
            async with session.delete(f"{url}/raft/meta/members/s2") as answer:
                assert answer.status == 400
                assert "config_index is required" in (await answer.json())["error"]
            async with session.delete(f"{url}/raft/meta/members/s2?config_index=x") as answer:
                assert answer.status == 400
        assert leader.meta is not None
        assert {store_of(m) for m in leader.meta.node.members} == {"s1", "s2", "s3"}
        await _until(lambda: len(cluster.learnt) == 3, 10)
        assert cluster.learnt_on_loop == set()  # KNOWN is written off the event loop
    finally:
        await _stop(cluster)
