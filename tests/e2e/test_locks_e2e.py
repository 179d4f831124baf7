"""Locks on real processes across a leader kill: redis-py's ``Lock`` (Lua scripts replicated
through the log) and ``Client.lock()`` (fencing tokens), three ``raftcache serve`` nodes."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from raftcache.client import Client
from tests.e2e.nodes import FAST_ELECTIONS, ProcessCluster, wait_for, wait_for_leader

pytestmark = pytest.mark.e2e


class FencedResource:
    """A resource that accepts writes only with a token at least the highest it has seen (the
    recipe of docs/clients.md)."""

    def __init__(self) -> None:
        self.highest = 0
        self.writes: list[tuple[int, str]] = []

    def write(self, token: int, data: str) -> bool:
        if token < self.highest:
            return False
        self.highest = token
        self.writes.append((token, data))
        return True


async def test_locks_survive_a_leader_kill(tmp_path: Path) -> None:
    # The elections (start, leader kill) are set-up; the locks' safety across them is the subject.
    cluster = ProcessCluster(tmp_path, extra_args=FAST_ELECTIONS)
    resp_ports = cluster.give_resp_ports()
    with cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)

            def rclient(node_id: str) -> redis.Redis:
                return redis.Redis(port=resp_ports[node_id], socket_timeout=10)

            # The cluster enables format 4 by itself once every node reports it.
            first = rclient(leader.node_id)

            async def scripts_enabled() -> bool | None:
                try:
                    return bool(first.eval("return 1", 0) == 1)
                except ResponseError:
                    return None

            await wait_for(scripts_enabled, "command format 4", cluster=cluster)
            survivors = [n for n in cluster.nodes if n != leader.node_id]
            owner_client = rclient(survivors[0])  # a follower: forwarded to the leader
            owner = owner_client.lock("resource", timeout=60)
            assert owner.acquire(blocking=False)

            with Client(cluster.endpoints) as native:
                fenced = native.lock("native", ttl=60)
                token1 = fenced.acquire(blocking=False)
                assert token1 is not None

                cluster.kill(leader.node_id)
                await wait_for_leader(cluster, http, among=cluster.live())

                # A second client cannot take either lock meanwhile.
                rival = rclient(survivors[1]).lock("resource", timeout=60)
                for _ in range(50):  # until the new leader answers
                    try:
                        assert not rival.acquire(blocking=False)
                        break
                    except RedisConnectionError:
                        continue
                assert native.lock("native", ttl=60).acquire(blocking=False) is None

                # The owner still holds it and releases it (EVALSHA/EVAL through a follower).
                assert owner.owned()
                assert owner.extend(5)
                owner.release()
                assert rival.acquire(blocking=False)
                rival.release()

                # Fencing: a new acquisition's token is higher; a stale holder is refused.
                resource = FencedResource()
                assert resource.write(token1, "first holder")
                native.delete("native")  # the first holder's lease ran out (simulated)
                second = native.lock("native", ttl=60)
                token2 = second.acquire(blocking=False)
                assert token2 is not None
                assert token2 > token1
                assert resource.write(token2, "second holder")
                assert not resource.write(token1, "the paused first holder wakes up")
                assert not fenced.extend()  # compare-and-set on its version: refused
                assert not fenced.release()
                assert second.held()
                assert second.release()
                third = native.lock("native", ttl=60)
                token3 = third.acquire(blocking=False)
                assert token3 is not None
                assert token3 > token2
                assert third.release()
