"""Proposal and read timeouts come from the ticker's deadline sweep (``raft/deadlines.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from raftcache.raft.deadlines import Deadlines
from raftcache.raft.errors import IndeterminateError
from raftcache.raft.node import RaftNode
from tests.raft.sim import SimCluster


class ExpiredError(Exception):
    pass


def _expire(key: object) -> BaseException:
    return ExpiredError(key)


async def test_sweep_expires_only_past_deadlines_and_drops_finished() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines()
    a, b, c, done = (loop.create_future() for _ in range(4))
    d.add(100.0, 1.0, a, _expire, "a")  # due at 101
    d.add(100.5, 1.0, b, _expire, "b")  # due at 101.5
    d.add(100.0, 5.0, c, _expire, "c")  # due at 105, another queue
    d.add(100.0, 0.5, done, _expire, "done")
    done.set_result(1)
    assert len(d) == 4

    d.sweep(100.9)
    assert not a.done()
    assert not b.done()
    assert not c.done()
    assert len(d) == 3  # the finished one left its queue, the others wait

    d.sweep(101.0)
    assert isinstance(a.exception(), ExpiredError)
    assert a.exception().args == ("a",)  # type: ignore[union-attr]
    assert not b.done()
    assert not c.done()

    b.cancel()
    d.sweep(102.0)
    assert b.cancelled()
    assert not c.done()
    assert len(d) == 1

    d.sweep(105.0)
    assert isinstance(c.exception(), ExpiredError)
    assert len(d) == 0
    assert d._queues == {}  # empty queues are removed, whatever durations callers used


async def test_a_finished_head_does_not_hold_later_deadlines() -> None:
    loop = asyncio.get_running_loop()
    d = Deadlines()
    futs = [loop.create_future() for _ in range(3)]
    for i, f in enumerate(futs):
        d.add(float(i), 10.0, f, _expire, i)
    futs[0].set_result(None)
    d.sweep(11.0)  # the second is due (at 11), the third not (at 12)
    assert isinstance(futs[1].exception(), ExpiredError)
    assert not futs[2].done()


@contextlib.asynccontextmanager
async def _leader_alone(seed: int) -> AsyncIterator[RaftNode]:
    """A 3-node cluster's leader, after one commit, with both followers failed."""
    c = SimCluster(3, seed=seed)
    await c.start()
    try:
        leader = await c.wait_leader()
        await leader.propose(b"ok")
        for i in c.ids:
            if i != leader.node_id:
                c.hub.fail_node(i)
        yield leader
    finally:
        await c.stop()


async def test_proposal_without_quorum_times_out_and_is_forgotten() -> None:
    async with _leader_alone(21) as leader:
        before = leader.commit_index
        # Shorter than the election timeout (0.15-0.3 s): still the leader when it expires,
        # or just deposed by check-quorum; either way the outcome is reported as unknown.
        with pytest.raises((TimeoutError, IndeterminateError)):
            await leader.propose(b"lost?", timeout=0.05)
        assert leader._proposals == {}
        assert leader.commit_index == before


async def test_read_barrier_without_quorum_times_out() -> None:
    async with _leader_alone(22) as leader:
        with pytest.raises(TimeoutError):
            await leader.read_index(timeout=0.05)
        assert leader._reads == {}
