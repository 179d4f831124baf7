"""Two drivers, or one acting on an old observation: what the second review found.

A driver deleting an "orphan" from an observation older than the orphan's promotion deleted a
voter; a PROMOTE planned before a newer driver removed the learner added it back. Both are
refused now: the driver reads the leader again before deleting, the store refuses to delete a
replica its own configuration names at the removal's index or later, and a promote carries the
configuration index it was planned from (invariant 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from raftcache.sharding.placement import Step, StepKind
from raftcache.store import GroupReplica
from raftcache.store.driver import PlacementDriver, http_requester
from tests.store.test_driver import Cluster, cluster  # noqa: F401  (the fixture)


async def _leader(of: Cluster, gid: str = "g0") -> GroupReplica:
    for _ in range(200):
        leader = of.leader(gid)
        core = None if leader is None else leader.node.core
        if (
            leader is not None
            and core is not None
            and leader.node.commit_index >= core.config_index
        ):
            return leader
        await asyncio.sleep(0.05)
    raise AssertionError("no leader")


async def test_orphan_deletion_with_a_stale_leader_view_deletes_a_voter(
    cluster: Cluster,  # noqa: F811
) -> None:
    """(b) Driver A observes: the leader's report (config without s4.1) is taken, then a
    second driver moves g0 onto s4 (s4.1 becomes a VOTER), then s4's report (hosting s4.1)
    is taken. A's _delete_orphans deletes s4.1 -- a voter -- and nothing on the store checks."""
    loop = asyncio.get_running_loop()
    leader = await _leader(cluster)
    leader_store = leader.node.node_id
    leader_answered = asyncio.Event()
    release_s4 = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        real = http_requester(session, cluster.urls, client_token=None, cluster_token=None)

        async def request(method: str, store: str, path: str, body: Any) -> tuple[int, Any]:
            if method == "GET" and path == "/raft/store/groups" and store == "s4":
                await release_s4.wait()  # s4's report is taken after the move
            answer = await real(method, store, path, body)
            if method == "GET" and store == leader_store:
                leader_answered.set()
            return answer

        driver_a = PlacementDriver(
            cluster.urls, groups=2, replication=3, request=request, clock=loop.time
        )
        observing = asyncio.create_task(driver_a.observe())
        await leader_answered.wait()
        # Driver B (or the in-cluster driver) moves g0 onto s4 meanwhile.
        new = await cluster.stores["s4"].add_replica("g0", leader.node.members)
        await leader.node.add_member(new.node.node_id, cluster.urls["s4"])
        assert new.node.node_id in leader.node.members  # a voter now
        release_s4.set()
        seen = await observing
        assert seen.groups["g0"].replicas["s4"] == new.node.node_id
        await driver_a._delete_orphans(seen)  # what round() does next
    voter = new.node.node_id
    still_voter = voter in leader.node.members
    held = "g0" in cluster.stores["s4"].replicas
    tombstoned = cluster.stores["s4"].ledger.removed("g0", voter)
    assert not (still_voter and (not held or tombstoned)), (
        f"voter {voter} deleted: held={held} tombstoned={tombstoned} members={leader.node.members}"
    )


async def test_a_stale_promote_undoes_a_newer_removal(cluster: Cluster) -> None:  # noqa: F811
    """(a) PROMOTE carries no config_index, and add_member of an id that is no member adds
    it as a learner again: a driver acting on an old observation (learner s4.1 present)
    re-adds and promotes a learner a newer driver removed (invariant 3 claims otherwise)."""
    loop = asyncio.get_running_loop()
    leader = await _leader(cluster)
    new = await cluster.stores["s4"].add_replica("g0", leader.node.members)
    rid = new.node.node_id
    core = leader.node.core
    assert core is not None
    await leader.node._propose_config(
        core.configuration.with_learner(rid, cluster.urls["s4"]), None
    )
    async with aiohttp.ClientSession() as session:
        req = http_requester(session, cluster.urls, client_token=None, cluster_token=None)
        driver_a = PlacementDriver(
            cluster.urls, groups=2, replication=3, request=req, clock=loop.time
        )
        stale = await driver_a.observe()
        assert rid in stale.groups["g0"].learners
        # Driver B (drain s4) removes the learner, planned from the current configuration.
        url = cluster.urls[leader.node.node_id]
        assert leader.node.core is not None
        idx = leader.node.core.config_index
        async with session.delete(f"{url}/v1/members/{rid}?group=g0&config_index={idx}") as r:
            assert r.status == 200, await r.text()
        assert rid not in {*leader.node.members, *leader.node.learners}
        # Driver A carries out its PROMOTE from the old observation.
        err = None
        try:
            await asyncio.wait_for(
                driver_a._carry_out("g0", Step(0, StepKind.PROMOTE, "s4"), stale), 20
            )
        except Exception as exc:  # a refusal is the right outcome
            err = exc
    members = {*leader.node.members, *leader.node.learners}
    assert rid not in members, (
        f"stale PROMOTE re-added {rid}: voters={leader.node.members} err={err!r}"
    )
