"""AppendEntries answers wait for what they vouch for, and for nothing else (issue 5).

A heartbeat, or an append of entries already on disk, is acknowledged while an fsync of other
entries is still running; an answer whose entries are not durable yet never leaves before they
are; and an answer overtaken by a newer term before its entries were durable claims nothing.
The storage's ``sync`` blocks on a ``threading.Event`` the test controls (the driver persists
in a worker thread), so "the fsync is still running" is a fact, not a window of time.
"""

from __future__ import annotations

import asyncio

from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    LogEntry,
    RequestVoteRequest,
)
from raftcache.raft.node import RaftNode
from tests.raft.gated_storage import WAIT, GatedStorage, running_follower


def _append(
    term: int, prev: int, prev_term: int, indexes: range, commit: int = 0
) -> AppendEntriesRequest:
    entries = [LogEntry(term, i, f"e{i}@{term}".encode()) for i in indexes]
    return AppendEntriesRequest(term, f"leader{term}", prev, prev_term, entries, commit)


async def _hold_during(
    node: RaftNode, storage: GatedStorage, req: AppendEntriesRequest
) -> asyncio.Task[AppendEntriesResponse]:
    """Start handling ``req`` and return once its fsync is running (and held)."""
    storage.hold()
    task = asyncio.create_task(node.handle_append_entries(req))
    assert await asyncio.to_thread(storage.entered.wait, WAIT)
    return task


async def test_a_heartbeat_is_answered_while_another_fsync_runs() -> None:
    async with running_follower() as (storage, node):
        first = await node.handle_append_entries(_append(2, 0, 0, range(1, 4)))
        assert first.success
        assert first.match_index == 3
        pending = await _hold_during(node, storage, _append(2, 3, 2, range(4, 6)))
        # Entries 1–3 are durable: the heartbeat vouches for nothing else.
        async with asyncio.timeout(WAIT):
            beat = await node.handle_append_entries(_append(2, 3, 2, range(0), commit=3))
        assert beat.success
        assert beat.match_index == 3
        # A resent append of durable entries is acknowledged at once too.
        async with asyncio.timeout(WAIT):
            again = await node.handle_append_entries(_append(2, 1, 2, range(2, 4)))
        assert again.success
        assert again.match_index == 3
        # The entries being written are not acknowledged before their fsync completes.
        assert not pending.done()
        assert [e.index for e in storage.durable().entries] == [1, 2, 3]
        storage.open.set()
        async with asyncio.timeout(WAIT):
            done = await pending
        assert done.success
        assert done.match_index == 5
        assert [e.index for e in storage.durable().entries] == [1, 2, 3, 4, 5]


async def test_an_answer_overtaken_by_a_new_term_before_its_fsync_claims_nothing() -> None:
    async with running_follower() as (storage, node):
        await node.handle_append_entries(_append(2, 0, 0, range(1, 4)))
        stale = await _hold_during(node, storage, _append(2, 3, 2, range(4, 6)))
        # A leader of term 3 overwrites 4–5 before they were durable.
        newer = asyncio.create_task(node.handle_append_entries(_append(3, 3, 2, range(4, 5))))
        await asyncio.sleep(0)  # let it step the core (its own answer waits for the disk)
        assert node.current_term == 3
        storage.open.set()
        async with asyncio.timeout(WAIT):
            old, new = await stale, await newer
        assert not old.success
        assert old.term == 3
        assert new.success
        assert new.match_index == 4
        assert new.term == 3
        durable = storage.durable()
        assert durable.term == 3
        assert [(e.index, e.term) for e in durable.entries] == [(1, 2), (2, 2), (3, 2), (4, 3)]


async def test_a_vote_still_waits_for_the_fsync_in_progress() -> None:
    """Votes keep the full flush: whatever was stepped before is durable when they leave.
    (A transfer's vote, so that the lease of the leader just heard from does not refuse it.)"""
    async with running_follower() as (storage, node):
        await node.handle_append_entries(_append(2, 0, 0, range(1, 2)))
        held = await _hold_during(node, storage, _append(2, 1, 2, range(2, 3)))
        vote = asyncio.create_task(
            node.handle_request_vote(RequestVoteRequest(5, "n2", 9, 4, leader_transfer=True))
        )
        await asyncio.sleep(0)
        assert not vote.done()
        storage.open.set()
        async with asyncio.timeout(WAIT):
            granted = await vote
            await held
        assert granted.vote_granted
        assert storage.durable().voted_for == "n2"
