"""InMemoryNetwork and InMemoryHub: delivery, isolation, faults, seeded delays and drops.

Time is virtual (``looptime``): delays are exact and a seeded run is reproducible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from raftcache.network import InMemoryHub, InMemoryNetwork, NetworkError
from raftcache.raft.messages import (
    AppendEntriesResponse,
    InstallSnapshotRequest,
    LogEntry,
    RequestVoteResponse,
)

from .fakes import VOTE, RecordingHandlers, expect_error, pair, sample_append

pytestmark = pytest.mark.looptime


@pytest.fixture
def hub() -> InMemoryHub:
    return InMemoryHub()


@pytest.fixture(autouse=True)
def clean_default_hub() -> Iterator[None]:
    InMemoryNetwork.reset()
    yield
    InMemoryNetwork.reset()


# -- delivery and isolation -----------------------------------------------------------------


async def test_each_rpc_reaches_the_matching_handler(hub: InMemoryHub) -> None:
    a, _, handlers = pair(hub)
    assert await a.send_request_vote("b", VOTE) == RequestVoteResponse(5, True)
    resp = await a.send_append_entries("b", sample_append(3))
    assert resp == AppendEntriesResponse(3, True, match_index=3, last_log_index=3)
    snap = await a.send_install_snapshot(
        "b", InstallSnapshotRequest(1, "a", 9, 1, 10, b"xyz", False)
    )
    assert snap.next_offset == 13
    assert [m for m, _ in handlers.calls] == ["request_vote", "append_entries", "install_snapshot"]
    assert handlers.calls[0][1] == VOTE


async def test_receiver_cannot_mutate_what_the_sender_holds(hub: InMemoryHub) -> None:
    def vandalize(method: str, req: Any) -> None:
        req.term = 1000
        req.entries[0].command = b"changed"
        req.entries[1].term = 77
        req.entries.append(LogEntry(9, 9, b"extra"))

    a, b, _ = pair(hub)
    b.register_handlers(RecordingHandlers("b", on_call=vandalize))
    sent = sample_append(2)
    before = repr(sent)
    await a.send_append_entries("b", sent)
    assert repr(sent) == before


async def test_sender_cannot_mutate_what_the_receiver_returned(hub: InMemoryHub) -> None:
    kept: list[AppendEntriesResponse] = []

    class Keeper(RecordingHandlers):
        async def handle_append_entries(self, req: Any) -> AppendEntriesResponse:
            resp = await super().handle_append_entries(req)
            kept.append(resp)
            return resp

    a, b, _ = pair(hub)
    b.register_handlers(Keeper("b"))
    got = await a.send_append_entries("b", sample_append(1))
    got.match_index = -5
    assert kept[0].match_index == 1


async def test_a_node_may_send_to_itself(hub: InMemoryHub) -> None:
    a, _, _ = pair(hub)
    assert (await a.send_request_vote("a", VOTE)).vote_granted


# -- permanent errors -----------------------------------------------------------------------


async def test_unknown_target_is_not_available(hub: InMemoryHub) -> None:
    a, _, _ = pair(hub)
    await expect_error(
        a.send_request_vote("zz", VOTE), "Target node zz not available", permanent=True
    )


async def test_target_without_handlers(hub: InMemoryHub) -> None:
    a = InMemoryNetwork("a", hub=hub)
    InMemoryNetwork("c", hub=hub)
    await expect_error(
        a.send_request_vote("c", VOTE), "Node c has no handlers registered", permanent=True
    )


async def test_failed_target_and_failed_sender(hub: InMemoryHub) -> None:
    a, _, handlers = pair(hub)
    hub.fail_node("b")
    await expect_error(a.send_request_vote("b", VOTE), "Node b is failed", permanent=True)
    hub.recover_node("b")
    hub.fail_node("a")
    await expect_error(a.send_request_vote("b", VOTE), "Node a is failed", permanent=True)
    hub.recover_node("a")
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert len(handlers.calls) == 1


async def test_handler_exception_is_permanent(hub: InMemoryHub) -> None:
    a, b, _ = pair(hub)
    b.register_handlers(RecordingHandlers("b", error=RuntimeError("disk on fire")))
    err = await expect_error(
        a.send_request_vote("b", VOTE),
        "Handler on node b raised: RuntimeError('disk on fire')",
        permanent=True,
    )
    assert isinstance(err.__cause__, RuntimeError)


async def test_handler_returning_the_wrong_type_is_permanent(hub: InMemoryHub) -> None:
    class Confused(RecordingHandlers):
        async def handle_request_vote(self, req: Any) -> Any:
            return AppendEntriesResponse(1, True)

    a, b, _ = pair(hub)
    b.register_handlers(Confused("b"))
    with pytest.raises(NetworkError, match="returned AppendEntriesResponse") as info:
        await a.send_request_vote("b", VOTE)
    assert info.value.permanent


# -- partitions -----------------------------------------------------------------------------


async def test_partition_is_symmetric_transient_and_heals(hub: InMemoryHub) -> None:
    a, b, handlers = pair(hub)
    b.register_handlers(handlers)
    a.partition("a", "b")
    await expect_error(
        a.send_request_vote("b", VOTE), "Network partition between a and b", permanent=False
    )
    await expect_error(
        b.send_request_vote("a", VOTE), "Network partition between b and a", permanent=False
    )
    a.heal_partition("b", "a")
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    a.partition("a", "b")
    a.heal_all()
    assert (await b.send_request_vote("a", VOTE)).vote_granted
    assert len(handlers.calls) == 1


async def test_isolate_cuts_a_node_from_everyone_including_newcomers(hub: InMemoryHub) -> None:
    a, _, _ = pair(hub)
    hub.isolate("b")
    late = InMemoryNetwork("late", hub=hub)
    for sender in (a, late):
        with pytest.raises(NetworkError, match="partition") as info:
            await sender.send_request_vote("b", VOTE)
        assert not info.value.permanent
    assert hub.isolated_nodes() == ["b"]
    hub.rejoin("b")
    assert (await late.send_request_vote("b", VOTE)).vote_granted


async def test_partition_is_checked_again_at_delivery(hub: InMemoryHub, looptime: Any) -> None:
    a, _, handlers = pair(hub, base_delay=1.0)
    call = asyncio.create_task(a.send_request_vote("b", VOTE))
    await asyncio.sleep(0.5)
    hub.partition("a", "b")
    await expect_error(call, "Network partition between a and b", permanent=False)
    assert looptime == 1.0
    assert handlers.calls == []


async def test_partition_on_the_way_back_means_the_handler_ran(
    hub: InMemoryHub, looptime: Any
) -> None:
    a, _, handlers = pair(hub, base_delay=1.0)
    call = asyncio.create_task(a.send_request_vote("b", VOTE))
    await asyncio.sleep(1.5)
    assert len(handlers.completed) == 1
    hub.partition("a", "b")
    with pytest.raises(NetworkError, match="partition") as info:
        await call
    assert not info.value.permanent
    assert looptime == 2.0


async def test_failure_during_flight_is_seen_at_delivery(hub: InMemoryHub) -> None:
    a, _, handlers = pair(hub, base_delay=1.0)
    call = asyncio.create_task(a.send_request_vote("b", VOTE))
    await asyncio.sleep(0.5)
    hub.fail_node("b")
    await expect_error(call, "Node b is failed", permanent=True)
    assert handlers.calls == []


# -- stop, restart, reset -------------------------------------------------------------------


async def test_stopped_target_looks_crashed_then_comes_back(hub: InMemoryHub) -> None:
    a, b, _ = pair(hub)
    await b.stop()
    await expect_error(
        a.send_request_vote("b", VOTE), "Target node b is unreachable (stopped)", permanent=False
    )
    await expect_error(b.send_request_vote("a", VOTE), "Node b is stopped", permanent=True)
    await b.start()
    assert (await a.send_request_vote("b", VOTE)).vote_granted


async def test_stop_cancels_handlers_running_on_the_node(hub: InMemoryHub) -> None:
    a, b, _ = pair(hub)
    slow = RecordingHandlers("b", delay=10.0)
    b.register_handlers(slow)
    call = asyncio.create_task(a.send_request_vote("b", VOTE))
    await asyncio.sleep(1.0)
    assert len(slow.calls) == 1
    await b.stop()
    with pytest.raises(NetworkError, match="reset") as info:
        await call
    assert not info.value.permanent
    assert slow.completed == []


async def test_cancelling_the_caller_does_not_cancel_the_remote_handler(hub: InMemoryHub) -> None:
    a, b, _ = pair(hub, base_delay=0.1)
    slow = RecordingHandlers("b", delay=1.0)
    b.register_handlers(slow)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await a.send_request_vote("b", VOTE)
    assert slow.completed == []
    await asyncio.sleep(1.0)
    assert len(slow.completed) == 1


async def test_a_new_network_with_the_same_id_takes_over(hub: InMemoryHub) -> None:
    a, old, _ = pair(hub)
    await old.stop()
    new = InMemoryNetwork("b", hub=hub)
    handlers = RecordingHandlers("b2")
    new.register_handlers(handlers)
    assert hub.network("b") is new
    await old.stop()  # stopping the old incarnation again does not unregister the new one
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert len(handlers.calls) == 1


async def test_reset_clears_failures_partitions_and_registrations(hub: InMemoryHub) -> None:
    a, b, _ = pair(hub)
    hub.fail_node("a")
    hub.partition("a", "b")
    hub.isolate("b")
    hub.reset()
    assert hub.failed_nodes() == []
    assert hub.partitions() == []
    assert hub.isolated_nodes() == []
    assert hub.node_ids() == []
    await expect_error(
        a.send_request_vote("b", VOTE), "Target node b not available", permanent=True
    )
    await b.start()  # start() registers again
    assert (await a.send_request_vote("b", VOTE)).vote_granted


# -- the default hub and the class-level operations -----------------------------------------


async def test_classmethods_act_on_the_default_hub() -> None:
    a = InMemoryNetwork("a")
    b = InMemoryNetwork("b")
    b.register_handlers(RecordingHandlers("b"))
    assert a.hub is InMemoryHub.default()
    InMemoryNetwork.fail_node("b")
    await expect_error(a.send_request_vote("b", VOTE), "Node b is failed", permanent=True)
    InMemoryNetwork.recover_node("b")
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    InMemoryNetwork.partition("a", "b")
    with pytest.raises(NetworkError, match="partition"):
        await a.send_request_vote("b", VOTE)
    InMemoryNetwork.heal_all()
    InMemoryNetwork.reset()
    await expect_error(
        a.send_request_vote("b", VOTE), "Target node b not available", permanent=True
    )


async def test_private_hubs_are_separate_from_the_default_hub(hub: InMemoryHub) -> None:
    a, _, _ = pair(hub)
    a.fail_node("b")  # on an instance: its own hub
    assert hub.is_failed("b")
    assert not InMemoryHub.default().is_failed("b")
    InMemoryNetwork.fail_node("a")  # on the class: the default hub
    assert not hub.is_failed("a")
    await expect_error(a.send_request_vote("b", VOTE), "Node b is failed", permanent=True)
    default_b = InMemoryNetwork("b")
    default_b.register_handlers(RecordingHandlers("b"))
    with pytest.raises(NetworkError, match="not available"):
        await InMemoryNetwork("a2").send_request_vote("zz", VOTE)


def test_hub_listing_is_sorted(hub: InMemoryHub) -> None:
    for node_id in ("n3", "n1", "n2"):
        InMemoryNetwork(node_id, hub=hub)
    hub.partition("n3", "n1")
    hub.partition("n2", "n1")
    hub.partition("n1", "n1")  # ignored
    hub.fail_node("n3")
    hub.fail_node("n2")
    assert hub.node_ids() == ["n1", "n2", "n3"]
    assert [n.node_id for n in hub] == ["n1", "n2", "n3"]
    assert hub.partitions() == [("n1", "n2"), ("n1", "n3")]
    assert hub.failed_nodes() == ["n2", "n3"]
    assert not hub.is_partitioned("n1", "n1")
