"""A replica still being filled for a move serves no read of its own (docs/sharding.md): it
is a learner until promoted, and may be arbitrarily far behind — even a ``stale`` read goes to
the group's leader (as etcd's learners serve no reads)."""

from __future__ import annotations

import aiohttp
import pytest

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.service import CacheService
from raftcache.protocol.configuration import Configuration
from raftcache.raft.errors import NotLeaderError
from raftcache.store import group_id
from tests.store.stores_http import keys_of, settle, start_stores


async def test_a_read_on_a_learner_is_not_answered_from_it() -> None:
    urls, running = await start_stores(["s1", "s2", "s3", "s4"], groups=2)
    try:
        leaders = await settle(lambda: {s: r.store for s, r in running.items()}, ["g0", "g1"])
        gid = group_id(0)
        outsider = next(s for s, r in running.items() if gid not in r.store.replicas)
        key = keys_of(0, 2, 1, "learner")[0]
        leader = running[leaders[gid]].store.replicas[gid]
        await leader.service.set(key, b"v")
        learner = await running[outsider].store.add_replica(gid, leader.node.members)
        assert learner.node.node_id not in learner.node.members  # not a voter: never added
        async with aiohttp.ClientSession() as session:
            for consistency in ("stale",):  # lease and linearizable never were served here
                async with session.get(
                    f"{urls[outsider]}/v1/keys/{key}?consistency={consistency}"
                ) as answer:
                    # Never the learner's own (empty) answer, 404: the leader's, or — this
                    # learner was never added, so it knows no leader to send it to — 503.
                    text = await answer.text()
                    assert answer.status in (200, 503), (consistency, text)
                    if answer.status == 200:
                        assert text == "v"
                    else:
                        assert "no leader known" in text
        assert learner.machine.stats()["keys"] == 0  # it holds nothing
    finally:
        for r in running.values():
            await r.stop()


class _Node:
    node_id = "n1"
    leader_id = "n2"
    role = None

    def __init__(self) -> None:
        self.configuration = Configuration.of(["n1", "n2", "n3"])


async def test_the_service_serves_stale_reads_from_voters_only() -> None:
    """The rule itself, on ``CacheService`` over a node that is, then is not, a voter."""
    node = _Node()
    service = CacheService(node, CacheStateMachine(), clock=lambda: 0.0)  # type: ignore[arg-type]
    assert await service.get("k", "stale") is None  # a voter: served here
    node.configuration = Configuration.of(["n2", "n3"]).with_learner("n1", None)
    with pytest.raises(NotLeaderError) as refused:
        await service.get("k", "stale")
    assert refused.value.leader_id == "n2"
