"""Batches of AppendEntries (``raftcache.network.batching``): what each group sees is exactly its
single RPC's outcome, however its request travelled.

In memory (virtual time) for the batcher and the serving half; over real loopback sockets for
the route, its capability and an older peer that has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from raftcache.network import HttpNetwork, NetworkError
from raftcache.network.batching import AppendBatcher, serve_append_batch
from raftcache.network.codec import encode
from raftcache.network.groups import GroupNetwork, GroupRouter
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.network.wrapper import NetworkWrapper, Send
from raftcache.protocol.messages import (
    DEFAULT_BATCH_HOLD,
    AppendEntriesBatch,
    AppendEntriesRequest,
    AppendEntriesResponse,
    LogEntry,
)
from raftcache.store import Store
from tests.raft.sim import FAST

from .fakes import RecordingHandlers
from .httpkit import OldPeer, connect, started_nodes, url_of

GROUPS = ("g0", "g1", "g2")


def append(group: str, term: int = 3, n: int = 1) -> AppendEntriesRequest:
    entries = [LogEntry(term, i + 1, f"{group}-{i}".encode()) for i in range(n)]
    return AppendEntriesRequest(term, "a", 0, 0, entries, 0, group=group)


class Stuck(RecordingHandlers):
    """Answers like ``RecordingHandlers`` but for ``stuck_group``, which waits on ``release``."""

    def __init__(self, node_id: str, stuck_group: str) -> None:
        super().__init__(node_id)
        self.stuck_group = stuck_group
        self.release = asyncio.Event()

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.group == self.stuck_group:
            await self.release.wait()
        return await super().handle_append_entries(req)


def stuck_router() -> tuple[Stuck, GroupRouter]:
    """Store ``b``'s router with every group of ``GROUPS`` on one ``Stuck`` (g1 hangs)."""
    stuck = Stuck("b", "g1")
    router = GroupRouter("b")
    for group in GROUPS:
        router.attach(group, stuck)
    return stuck, router


def memory_pair(
    hosted: tuple[str, ...] = GROUPS, **opts: Any
) -> tuple[InMemoryNetwork, AppendBatcher, dict[str, RecordingHandlers]]:
    """Store ``a`` sending through a batcher to store ``b``, which hosts ``hosted``."""
    hub = InMemoryHub()
    a = InMemoryNetwork("a", hub=hub, **opts)
    b = InMemoryNetwork("b", hub=hub)
    router = GroupRouter("b")
    handlers = {g: RecordingHandlers(f"b/{g}") for g in hosted}
    for group, h in handlers.items():
        router.attach(group, h)
    b.register_handlers(router)
    a.register_handlers(GroupRouter("a"))
    return a, AppendBatcher(a), handlers


@pytest.mark.looptime
async def test_appends_of_one_turn_leave_as_one_message_and_each_gets_its_own_answer() -> None:
    a, batcher, handlers = memory_pair()
    answers = await asyncio.gather(*(batcher.send_append_entries("b", append(g)) for g in GROUPS))
    assert a.stats.rpcs_sent == 1  # one message on the wire
    assert (batcher.batches, batcher.batched_items) == (1, 3)
    assert [r.match_index for r in answers] == [1, 1, 1]
    for group in GROUPS:
        [(method, req)] = handlers[group].completed
        assert (method, req.group, req.entries[0].command) == (
            "append_entries",
            group,
            f"{group}-0".encode(),
        )


@pytest.mark.looptime
async def test_appends_of_later_turns_and_a_lone_one_travel_alone() -> None:
    a, batcher, _ = memory_pair()
    await batcher.send_append_entries("b", append("g0"))
    await batcher.send_append_entries("b", append("g1"))
    assert a.stats.rpcs_sent == 2
    assert batcher.batches == 0


@pytest.mark.looptime
async def test_a_batch_stays_under_its_byte_budget_and_a_large_append_travels_alone() -> None:
    hub = InMemoryHub()
    a, b = InMemoryNetwork("a", hub=hub), InMemoryNetwork("b", hub=hub)
    b.register_handlers(RecordingHandlers("b"))
    batcher = AppendBatcher(a, max_bytes=10)
    sizes: list[int] = []
    sent = a.send_append_batch

    async def recording(target: str, reqs: Any, **kwargs: Any) -> Any:
        sizes.append(sum(len(e.command) for r in reqs for e in r.entries))
        return await sent(target, reqs, **kwargs)

    a.send_append_batch = recording  # type: ignore[method-assign]
    small = [append("g0", n=1), append("g1", n=1), append("g2", n=1)]  # 4 bytes each
    large = append("big", n=3)  # 15 bytes: over the budget alone
    outcomes = await asyncio.gather(
        *(batcher.send_append_entries("b", r) for r in [*small, large]), return_exceptions=True
    )
    assert all(isinstance(o, AppendEntriesResponse) for o in outcomes)
    assert sizes == [8]  # g0 + g1 in one batch; g2 (it would make 12) and the large one alone
    assert a.stats.rpcs_sent == 3


@pytest.mark.looptime
async def test_an_append_over_the_budget_leaves_after_what_its_turn_queued_before_it() -> None:
    hub = InMemoryHub()
    a, b = InMemoryNetwork("a", hub=hub), InMemoryNetwork("b", hub=hub)
    handlers = RecordingHandlers("b")
    b.register_handlers(handlers)
    batcher = AppendBatcher(a, max_bytes=10)
    first = append("g0", n=1)  # 4 bytes: queued for the end of the turn
    second = append("g0", n=3)  # 15 bytes: over the budget, alone
    second.prev_log_index = 1
    for i, entry in enumerate(second.entries):
        entry.index = i + 2
    await asyncio.gather(
        batcher.send_append_entries("b", first), batcher.send_append_entries("b", second)
    )
    assert [len(r.entries) for _, r in handlers.calls] == [1, 3]


@pytest.mark.looptime
async def test_an_item_refused_fails_only_that_group() -> None:
    _, batcher, _ = memory_pair(hosted=("g0", "g2"))
    outcomes = await asyncio.gather(
        *(batcher.send_append_entries("b", append(g)) for g in GROUPS), return_exceptions=True
    )
    assert isinstance(outcomes[0], AppendEntriesResponse)
    assert isinstance(outcomes[2], AppendEntriesResponse)
    refused = outcomes[1]
    assert isinstance(refused, NetworkError)
    assert (refused.kind, refused.permanent) == ("group_not_hosted", False)
    assert "'g1'" in str(refused)


@pytest.mark.looptime
async def test_a_lost_batch_fails_every_item_with_an_error_of_its_own() -> None:
    _, batcher, handlers = memory_pair(drop_rate=1.0)
    outcomes = await asyncio.gather(
        *(batcher.send_append_entries("b", append(g)) for g in GROUPS), return_exceptions=True
    )
    assert all(isinstance(o, NetworkError) and o.kind == "drop" for o in outcomes)
    assert len({id(o) for o in outcomes}) == 3
    assert not any(h.calls for h in handlers.values())


@pytest.mark.looptime
async def test_a_stuck_group_holds_the_others_only_for_the_patience() -> None:
    stuck, router = stuck_router()
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await serve_append_batch(
        "b", router, AppendEntriesBatch([append(g) for g in GROUPS]), patience=0.25
    )
    assert loop.time() - started == pytest.approx(0.25)
    first, held, last = answer.items
    assert first.response is not None
    assert last.response is not None
    assert held.response is None
    assert held.kind == "timeout"
    assert "g1" in held.error
    stuck.release.set()  # the handler goes on and completes: nothing is lost on the receiver
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [r.group for _, r in stuck.completed].count("g1") == 1


@pytest.mark.looptime
async def test_a_handler_bug_is_that_items_permanent_error() -> None:
    router = GroupRouter("b")
    router.attach("g0", RecordingHandlers("ok"))
    router.attach("g1", RecordingHandlers("bad", error=RuntimeError("boom")))
    answer = await serve_append_batch("b", router, AppendEntriesBatch([append("g0"), append("g1")]))
    assert answer.items[0].response is not None
    assert (answer.items[1].kind, answer.items[1].permanent) == ("handler_error", True)
    assert "boom" in answer.items[1].error


@pytest.mark.looptime
async def test_closing_fails_what_waits_and_a_cancelled_sender_is_skipped() -> None:
    a, batcher, handlers = memory_pair()
    gone = asyncio.ensure_future(batcher.send_append_entries("b", append("g0")))
    kept = asyncio.ensure_future(batcher.send_append_entries("b", append("g1")))
    await asyncio.sleep(0)  # both queued, the flush not yet run
    gone.cancel()
    await asyncio.sleep(0)
    assert (await kept).match_index == 1
    assert [r.group for _, r in handlers["g0"].calls] == []
    assert a.stats.rpcs_sent == 1

    waiting = asyncio.ensure_future(batcher.send_append_entries("b", append("g2")))
    await asyncio.sleep(0)
    batcher.close()
    with pytest.raises(NetworkError, match="stopping"):
        await waiting


@pytest.mark.looptime
async def test_a_group_view_over_the_batcher_stamps_its_group() -> None:
    _, batcher, handlers = memory_pair()
    views = [GroupNetwork(batcher, GroupRouter("a"), g) for g in GROUPS]
    reqs = [AppendEntriesRequest(3, "a", 0, 0, [], 0) for _ in GROUPS]
    await asyncio.gather(*(v.send_append_entries("b", r) for v, r in zip(views, reqs, strict=True)))
    assert batcher.batches == 1
    assert [h.completed[0][1].group for h in handlers.values()] == list(GROUPS)


# -- over HTTP --------------------------------------------------------------------------------


@pytest.fixture
async def routed_pair(request: pytest.FixtureRequest) -> AsyncIterator[tuple[HttpNetwork, Any]]:
    """Store ``a`` (client: the param) and store ``b`` serving g0 and g2 (not g1)."""
    router = GroupRouter("b")
    hosted = {g: RecordingHandlers(f"b/{g}") for g in ("g0", "g2")}
    for group, h in hosted.items():
        router.attach(group, h)
    async with started_nodes() as make:
        a = await make("a", client=request.param)
        b = await make("b", handlers=router)
        connect(a, b)
        yield a, b


@pytest.mark.parametrize("routed_pair", ["lean", "aiohttp"], indirect=True)
async def test_http_batches_go_to_the_route_once_the_peer_said_it_serves_it(
    routed_pair: tuple[HttpNetwork, HttpNetwork],
) -> None:
    a, b = routed_pair
    assert not a.peer_capabilities("b").batch  # nothing heard yet: one RPC each
    first = await a.send_append_batch("b", [append("g0"), append("g2")])
    assert all(isinstance(o, AppendEntriesResponse) for o in first)
    assert a.peer_capabilities("b").batch
    before = a.metrics.snapshot()["outbound"].get("AppendEntriesBatch", {})
    assert before == {}
    outcomes = await a.send_append_batch("b", [append(g, n=2) for g in GROUPS])
    assert [type(o).__name__ for o in outcomes] == [
        "AppendEntriesResponse",
        "NetworkError",
        "AppendEntriesResponse",
    ]
    assert outcomes[1].kind == "group_not_hosted"  # type: ignore[union-attr]
    assert [o.match_index for o in outcomes if isinstance(o, AppendEntriesResponse)] == [2, 2]
    inbound = b.metrics.snapshot()["inbound"]
    assert inbound["AppendEntriesBatch"]["a"]["ok"] == 1


async def test_an_older_peer_gets_one_rpc_per_item() -> None:
    async with OldPeer().running() as old, started_nodes() as make:
        a = await make("a")
        a.set_peer_address("old", url_of(old.port))
        for _ in range(2):  # the second time too: the old peer never advertised the route
            outcomes = await a.send_append_batch("old", [append(g) for g in GROUPS])
            assert all(isinstance(o, AppendEntriesResponse) for o in outcomes)
        assert len(old.requests) == 6
        assert not a.peer_capabilities("old").batch


async def test_a_peer_replaced_by_an_older_build_gets_the_items_again_one_by_one() -> None:
    # It advertised the route (a newer build did, at that address), then answers 404 on it.
    peer = OldPeer(advertise={"Raft-Batch": "append-entries"})
    async with peer.running() as old, started_nodes() as make:
        a = await make("a")
        a.set_peer_address("old", url_of(old.port))
        await a.send_append_entries("old", append("g0"))
        assert a.peer_capabilities("old").batch
        peer.advertise = {}  # replaced, same address: an older build that says nothing
        outcomes = await a.send_append_batch("old", [append(g) for g in GROUPS])
        assert all(isinstance(o, AppendEntriesResponse) for o in outcomes)
        assert [r.group for _, r in old.handlers.completed] == ["g0", *GROUPS]
        assert not a.peer_capabilities("old").batch
        refused = a.metrics.snapshot()["outbound"]["AppendEntriesBatch"]["old"]
        assert refused["errors"] == {"not_found": 1}


async def test_a_batch_with_an_invalid_item_is_refused_whole_naming_it() -> None:
    async with started_nodes() as make:
        b = await make("b")
        bad = append("g1", n=2)
        bad.entries[1].index = 7  # not contiguous
        body = encode(AppendEntriesBatch([append("g0"), bad]))
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url_of(b.port) + "/raft/append-batch",
                data=body,
                headers={"Content-Type": "application/json"},
            ) as resp,
        ):
            assert resp.status == 400
            error = orjson.loads(await resp.read())
        assert error["code"] == "bad_request"
        assert "items[1]" in error["error"]
        assert "entries[1].index" in error["error"]
        empty = encode(AppendEntriesBatch([]))
        async with (
            aiohttp.ClientSession() as session,
            session.post(url_of(b.port) + "/raft/append-batch", data=empty) as resp,
        ):
            assert resp.status == 400
            assert "1 to 1024 items" in orjson.loads(await resp.read())["error"]
        for hold in (0.0, 11.0):  # a receiver holds no batch for nothing or for ages
            body = encode(AppendEntriesBatch([append("g0")], hold=hold))
            async with (
                aiohttp.ClientSession() as session,
                session.post(url_of(b.port) + "/raft/append-batch", data=body) as resp,
            ):
                assert resp.status == 400
                assert "hold must be in (0, 10] s" in orjson.loads(await resp.read())["error"]
        assert b._server.handlers is not None
        assert not b._server.handlers.calls  # type: ignore[attr-defined]


# -- review: what a batch must not change ------------------------------------------------------


def heartbeat(group: str, term: int = 3) -> AppendEntriesRequest:
    return AppendEntriesRequest(term, "a", 0, 0, [], 0, group=group)


@pytest.mark.looptime
async def test_an_append_waiting_for_its_fsync_is_not_given_up_because_a_heartbeat_was_quick() -> (
    None
):
    # g0's heartbeat is answered at once; g1's append waits 0.3 s for its fsync (a busy disk),
    # well within any RPC timeout: alone it would have succeeded, so in a batch it must too.
    router = GroupRouter("b")
    router.attach("g0", RecordingHandlers("b/g0"))
    router.attach("g1", RecordingHandlers("b/g1", delay=0.3))
    answer = await serve_append_batch(
        "b", router, AppendEntriesBatch([heartbeat("g0"), append("g1")])
    )
    quick, slow = answer.items
    assert quick.response is not None
    assert slow.response is not None, slow.error
    assert slow.response.match_index == 1


@pytest.mark.looptime
async def test_an_append_waiting_for_its_fsync_is_not_given_up_because_another_was_refused() -> (
    None
):
    # g9 is not hosted here: its append is refused at once, and says nothing of the disk.
    router = GroupRouter("b")
    router.attach("g1", RecordingHandlers("b/g1", delay=0.3))
    answer = await serve_append_batch("b", router, AppendEntriesBatch([append("g9"), append("g1")]))
    refused, slow = answer.items
    assert refused.kind == "group_not_hosted"
    assert slow.response is not None, slow.error


@pytest.mark.looptime
async def test_a_stuck_append_holds_the_heartbeats_beside_it_only_for_a_bounded_time() -> None:
    stuck, router = stuck_router()
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await serve_append_batch(
        "b", router, AppendEntriesBatch([heartbeat("g0"), append("g1"), heartbeat("g2")])
    )
    assert loop.time() - started == pytest.approx(DEFAULT_BATCH_HOLD)
    assert [a.response is not None for a in answer.items] == [True, False, True]
    assert answer.items[1].kind == "timeout"
    # A sender with a short RPC timeout asks for a short hold, and gets it.
    started = loop.time()
    answer = await serve_append_batch(
        "b", router, AppendEntriesBatch([heartbeat("g0"), append("g1")], hold=0.05)
    )
    assert loop.time() - started == pytest.approx(0.05)
    assert answer.items[1].kind == "timeout"
    started = loop.time()  # nor does the patience outlast a shorter hold
    answer = await serve_append_batch(
        "b", router, AppendEntriesBatch([append("g0"), append("g1")], hold=0.05)
    )
    assert loop.time() - started == pytest.approx(0.05)
    assert answer.items[1].kind == "timeout"
    stuck.release.set()


@pytest.mark.looptime
async def test_the_batchers_hold_reaches_the_receiver() -> None:
    hub = InMemoryHub()
    a, b = InMemoryNetwork("a", hub=hub), InMemoryNetwork("b", hub=hub)
    stuck = Stuck("b", "g1")
    router = GroupRouter("b")
    router.attach("g0", RecordingHandlers("b/g0", delay=0.3))
    router.attach("g1", stuck)
    b.register_handlers(router)
    batcher = AppendBatcher(a, hold=0.05)  # a store whose RPC timeout is 0.2 s
    loop = asyncio.get_running_loop()
    started = loop.time()
    sends = (batcher.send_append_entries("b", append(g)) for g in ("g0", "g1"))
    outcomes = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
    assert loop.time() - started < 0.2
    assert all(isinstance(o, NetworkError) and o.kind == "timeout" for o in outcomes), outcomes
    stuck.release.set()


def test_a_store_asks_for_a_quarter_of_its_rpc_timeout(tmp_path: Path) -> None:
    store = Store(
        "s1",
        InMemoryNetwork("s1", hub=InMemoryHub()),
        groups=1,
        placement={"g0": ["s1", "s2", "s3"]},
        data_dir=tmp_path,
        config=FAST,
        clock=time.time,
    )
    assert store.batcher is not None
    assert store.batcher.hold == FAST.rpc_timeout / 4


@pytest.mark.looptime
async def test_a_heartbeat_is_not_answered_behind_another_groups_fsync() -> None:
    # Alone, g0's heartbeat is answered at once whatever g1's disk does: a batch must not make
    # it wait for g1's fsync (a ReadIndex of g0 confirms leadership with it).
    a, batcher, handlers = memory_pair()
    handlers["g1"].delay = 0.3  # its fsync
    beat = asyncio.ensure_future(batcher.send_append_entries("b", heartbeat("g0")))
    write = asyncio.ensure_future(batcher.send_append_entries("b", append("g1")))
    await beat
    assert not write.done()
    assert handlers["g1"].completed == []
    assert (await write).match_index == 1
    assert a.stats.rpcs_sent == 2


@pytest.mark.looptime
async def test_closing_before_the_batch_task_first_runs_still_fails_its_waiters() -> None:
    _, batcher, _ = memory_pair()
    sends = [asyncio.ensure_future(batcher.send_append_entries("b", append(g))) for g in GROUPS]
    await asyncio.sleep(0)  # queued; the flush is next in the loop's queue
    asyncio.get_running_loop().call_soon(batcher.close)  # right after it: the store stopping
    outcomes = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
    assert all(isinstance(o, NetworkError) and o.kind == "stopped" for o in outcomes)


class Short(InMemoryNetwork):
    """A transport with a bug: it answers a batch with one outcome too few."""

    async def send_append_batch(
        self, target: str, reqs: Sequence[AppendEntriesRequest], *, hold: float = 1.0
    ) -> list[AppendEntriesResponse | Exception]:
        return (await super().send_append_batch(target, reqs, hold=hold))[:-1]


@pytest.mark.looptime
async def test_a_batch_answered_with_too_few_outcomes_fails_every_item_and_hangs_none() -> None:
    hub = InMemoryHub()
    a = Short("a", hub=hub)
    b = InMemoryNetwork("b", hub=hub)
    router = GroupRouter("b")
    for group in GROUPS:
        router.attach(group, RecordingHandlers(f"b/{group}"))
    b.register_handlers(router)
    batcher = AppendBatcher(a)
    sends = [batcher.send_append_entries("b", append(g)) for g in GROUPS]
    outcomes = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 5)
    assert all(isinstance(o, NetworkError) and o.permanent for o in outcomes), outcomes
    assert not batcher._sending


class Buggy(NetworkWrapper):
    """A transport with one-batch-at-a-time RPCs and a bug hit by g1's requests alone."""

    async def _call(self, rpc: str, send: Send, target: str, req: Any) -> Any:
        if req.group == "g1":
            raise RuntimeError("a bug")
        return await send(target, req)


@pytest.mark.looptime
async def test_an_items_bug_is_raised_to_its_group_alone() -> None:
    a, _, handlers = memory_pair()
    batcher = AppendBatcher(Buggy(a))  # no batch message: one RPC each
    outcomes = await asyncio.gather(
        *(batcher.send_append_entries("b", append(g)) for g in GROUPS), return_exceptions=True
    )
    assert isinstance(outcomes[0], AppendEntriesResponse)
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[2], AppendEntriesResponse)
    assert [len(handlers[g].completed) for g in GROUPS] == [1, 0, 1]


async def test_a_batch_too_large_for_the_peer_is_sent_as_single_rpcs() -> None:
    router = GroupRouter("b")
    for group in GROUPS:
        router.attach(group, RecordingHandlers(f"b/{group}"))
    async with started_nodes() as make:
        a = await make("a")
        b = await make("b", handlers=router, client_max_size=64 * 1024)
        connect(a, b)
        await a.send_append_entries("b", append("g0"))
        assert a.peer_capabilities("b").batch
        reqs = [append(g) for g in GROUPS]
        for req in reqs:  # each fits the peer's limit alone, not together
            req.entries[0].command = b"x" * 30_000
        outcomes = await a.send_append_batch("b", reqs)
        assert all(isinstance(o, AppendEntriesResponse) for o in outcomes), outcomes
        assert a.peer_capabilities("b").batch  # still: a smaller batch is welcome
