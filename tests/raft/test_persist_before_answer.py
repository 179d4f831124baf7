"""Persist before you answer (docs/safety.md#persist-before-answering), checked through the
driver's handlers.

A vote or an AppendEntries acknowledgement must never leave a node before the term, the vote and
the entries it vouches for are durable; a failed fsync stops the node (fail-stop).
"""

from __future__ import annotations

import asyncio
import random

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.core import Role
from raftcache.raft.errors import IndeterminateError, NodeStoppedError, StoppedAfterAppendError
from raftcache.raft.messages import (
    AppendEntriesRequest,
    LogEntry,
    RequestVoteRequest,
)
from raftcache.raft.node import RaftNode
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import FAST, ListMachine

pytestmark = pytest.mark.looptime


def _node(storage: MemoryStorage) -> RaftNode:
    net = InMemoryNetwork("n1", hub=InMemoryHub(), seed=1)
    return RaftNode(
        "n1", ["n1", "n2", "n3"], net, storage, ListMachine(), FAST, rng=random.Random(1)
    )


async def test_vote_is_durable_before_the_response_returns() -> None:
    storage = MemoryStorage()
    node = _node(storage)
    await node.start()
    try:
        resp = await node.handle_request_vote(RequestVoteRequest(7, "n2", 0, 0))
        assert resp.vote_granted
        durable = storage.durable()
        assert (durable.term, durable.voted_for) == (7, "n2")
    finally:
        await node.stop()


async def test_entries_are_durable_before_append_is_acknowledged() -> None:
    storage = MemoryStorage()
    node = _node(storage)
    await node.start()
    try:
        entries = [LogEntry(3, i, f"e{i}".encode()) for i in range(1, 6)]
        resp = await node.handle_append_entries(AppendEntriesRequest(3, "n2", 0, 0, entries, 0))
        assert resp.success
        assert resp.match_index == 5
        durable = storage.durable()
        assert [e.index for e in durable.entries] == [1, 2, 3, 4, 5]
        assert durable.term == 3
    finally:
        await node.stop()


async def test_concurrent_appends_share_one_sync() -> None:
    storage = MemoryStorage()
    syncs = 0
    real_sync = storage.sync

    def counting_sync() -> None:
        nonlocal syncs
        syncs += 1
        real_sync()

    storage.sync = counting_sync  # type: ignore[method-assign]
    node = _node(storage)
    await node.start()
    try:
        await node.handle_append_entries(AppendEntriesRequest(2, "n2", 0, 0, [], 0))
        before = syncs
        reqs = [
            AppendEntriesRequest(2, "n2", i - 1, 2 if i > 1 else 0, [LogEntry(2, i, b"x")], 0)
            for i in range(1, 21)
        ]
        results = await asyncio.gather(*(node.handle_append_entries(r) for r in reqs))
        assert all(r.success for r in results)
        assert syncs - before < len(reqs), "group commit: fewer syncs than requests"
    finally:
        await node.stop()


async def test_failed_fsync_stops_the_node() -> None:
    storage = MemoryStorage()
    node = _node(storage)
    await node.start()
    storage.fail()
    with pytest.raises(NodeStoppedError):
        await node.handle_request_vote(RequestVoteRequest(9, "n2", 0, 0))
    assert storage.durable().term != 9
    with pytest.raises(NodeStoppedError):
        await node.handle_request_vote(RequestVoteRequest(10, "n3", 0, 0))
    await node.stop()


async def test_a_proposal_pending_when_the_node_fails_may_still_take_effect() -> None:
    """It was appended before the fsync failed: its outcome is unknown, and a caller must not
    be told it certainly did not happen. A proposal after the stop certainly did not."""
    storage = MemoryStorage()
    net = InMemoryNetwork("n1", hub=InMemoryHub(), seed=1)
    node = RaftNode("n1", ["n1"], net, storage, ListMachine(), FAST, rng=random.Random(1))
    await node.start()
    try:
        async with asyncio.timeout(5):
            while node.role is not Role.LEADER:
                await asyncio.sleep(0.01)
        await node.propose(b"a")
        storage.fail()
        with pytest.raises(NodeStoppedError) as pending:
            await node.propose(b"b")
        assert isinstance(pending.value, StoppedAfterAppendError)
        assert isinstance(pending.value, IndeterminateError)
        with pytest.raises(NodeStoppedError) as refused:
            await node.propose(b"c")
        assert not isinstance(refused.value, IndeterminateError)
    finally:
        await node.stop()
