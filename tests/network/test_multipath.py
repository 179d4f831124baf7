"""MultiPathNetwork: least-in-flight choice, failover, AppendEntries pinning (virtual time)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftcache.network import InMemoryHub, InMemoryNetwork, NetworkError
from raftcache.network.multipath import MultiPathNetwork
from raftcache.raft.messages import AppendEntriesRequest, RequestVoteRequest

from .fakes import HANG, RecordingHandlers, ScriptedNetwork, sample_append

pytestmark = pytest.mark.looptime

VOTE = RequestVoteRequest(2, "a", 0, 0)


class TwoPaths:
    """Node ``a`` reaching node ``b`` over two hubs; b's handlers record which path served."""

    def __init__(self, delay: float = 0.0, **opts: Any) -> None:
        self.hubs = [InMemoryHub(), InMemoryHub()]
        self.served: list[int] = []
        self.handlers = RecordingHandlers("b", delay=delay)
        paths = []
        for i, hub in enumerate(self.hubs):
            InMemoryNetwork("b", hub=hub).register_handlers(_Tagged(self.handlers, i, self.served))
            paths.append(InMemoryNetwork("a", hub=hub))
        self.net = MultiPathNetwork(paths, **opts)
        self.net.register_handlers(RecordingHandlers("a"))


class _Tagged:
    """Handlers that note the path index before delegating."""

    def __init__(self, inner: RecordingHandlers, index: int, served: list[int]) -> None:
        self.inner, self.index, self.served = inner, index, served

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def tagged(req: Any) -> Any:
            self.served.append(self.index)
            return await method(req)

        return tagged


async def test_idle_paths_share_the_load() -> None:
    two = TwoPaths()
    for _ in range(6):
        await two.net.send_request_vote("b", VOTE)
    assert sorted(two.served) == [0, 0, 0, 1, 1, 1]


async def test_least_in_flight_goes_to_the_less_busy_path() -> None:
    two = TwoPaths(delay=1.0)
    stats = two.net.path_stats
    first = asyncio.create_task(two.net.send_request_vote("b", VOTE))
    await asyncio.sleep(0.1)
    busy = next(i for i, s in enumerate(stats) if s.in_flight == 1)
    # Three more calls: the idle path gets the next, then both have one and they alternate.
    later = [asyncio.create_task(two.net.send_request_vote("b", VOTE)) for _ in range(3)]
    await asyncio.sleep(0.1)
    assert two.served[:2] == [busy, 1 - busy]
    assert sorted(s.in_flight for s in stats) == [2, 2]
    await asyncio.gather(first, *later)
    assert [s.in_flight for s in stats] == [0, 0]
    assert two.served.count(busy) == 2


async def test_failover_to_the_other_path_on_a_transient_error() -> None:
    two = TwoPaths()
    two.hubs[0].partition("a", "b")
    for _ in range(4):
        await two.net.send_request_vote("b", VOTE)
    assert two.served == [1, 1, 1, 1]
    stats = two.net.path_stats
    # Path 0 failed once and is then tried last (unhealthy) instead of first: no more failures.
    assert (stats[0].failures, stats[1].failovers) == (1, 1)
    assert not two.net.healthy(0, "b")
    assert two.net.healthy(0, "other")  # health is per peer


async def test_an_unhealthy_path_is_tried_again_after_unhealthy_for() -> None:
    two = TwoPaths(unhealthy_for=2.0)
    two.hubs[0].partition("a", "b")
    await two.net.send_request_vote("b", VOTE)
    two.hubs[0].heal_all()
    await asyncio.sleep(2.0)
    assert two.net.healthy(0, "b")
    for _ in range(4):
        await two.net.send_request_vote("b", VOTE)
    assert 0 in two.served


async def test_all_paths_failing_raises_the_last_error() -> None:
    two = TwoPaths()
    two.hubs[0].partition("a", "b")
    two.hubs[1].partition("a", "b")
    with pytest.raises(NetworkError, match="Network partition") as info:
        await two.net.send_request_vote("b", VOTE)
    assert info.value.permanent is False
    assert [s.calls for s in two.net.path_stats] == [1, 1]


async def test_permanent_errors_do_not_fail_over() -> None:
    permanent = NetworkError("Handler on node b raised: boom", permanent=True)
    a, b = ScriptedNetwork([permanent], node_id="a"), ScriptedNetwork([permanent], node_id="a")
    net = MultiPathNetwork([a, b])
    with pytest.raises(NetworkError, match="boom"):
        await net.send_request_vote("b", VOTE)
    assert len(a.attempts) + len(b.attempts) == 1


async def test_attempt_timeout_fails_a_hung_path_over() -> None:
    hung = ScriptedNetwork([HANG], node_id="a")
    two = TwoPaths()
    ok = two.net.paths[1]
    net = MultiPathNetwork([hung, ok], attempt_timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await net.send_request_vote("b", VOTE)  # path 0 first (rotation), hangs, fails over
    assert loop.time() - started == pytest.approx(0.5)
    assert hung.attempts[0].cancelled
    assert net.path_stats[1].failovers == 1


async def test_append_entries_stay_on_the_pinned_path() -> None:
    two = TwoPaths(delay=1.0)
    calls = [asyncio.create_task(two.net.send_append_entries("b", sample_append(1)))]
    for _ in range(5):
        await asyncio.sleep(0)
        calls.append(asyncio.create_task(two.net.send_append_entries("b", sample_append(1))))
    await asyncio.sleep(0)
    votes = [asyncio.create_task(two.net.send_request_vote("b", VOTE)) for _ in range(2)]
    await asyncio.gather(*calls, *votes)
    pin = two.net.pinned("b")
    assert pin is not None
    appends = [i for (m, _), i in zip(two.handlers.calls, two.served, strict=True) if "append" in m]
    assert appends == [pin] * 6
    # The votes went where fewer calls were in flight: the other path.
    assert two.served[-2:] == [1 - pin, 1 - pin]


async def test_the_pin_moves_when_its_path_fails() -> None:
    two = TwoPaths()
    await two.net.send_append_entries("b", sample_append(1))
    pin = two.net.pinned("b")
    assert pin is not None
    two.hubs[pin].isolate("b")
    await two.net.send_append_entries("b", sample_append(1))
    assert two.net.pinned("b") == 1 - pin
    two.hubs[pin].rejoin("b")
    for _ in range(3):
        await two.net.send_append_entries("b", sample_append(1))
    assert two.served[-3:] == [1 - pin] * 3  # a healthy pin stays put


async def test_unpinned_append_entries_are_balanced() -> None:
    two = TwoPaths(pin_append_entries=False)
    for _ in range(4):
        await two.net.send_append_entries("b", AppendEntriesRequest(1, "a", 0, 0))
    assert sorted(two.served) == [0, 0, 1, 1]
    assert two.net.pinned("b") is None


async def test_lifecycle_and_addresses_reach_every_path() -> None:
    a, b = ScriptedNetwork([HANG], node_id="n1"), ScriptedNetwork([HANG], node_id="n1")
    net = MultiPathNetwork([a, b])
    handlers = RecordingHandlers()
    net.register_handlers(handlers)
    await net.start()
    net.set_peer_address("n2", "http://x:1")
    await net.stop()
    assert (a.handlers, b.handlers) == (handlers, handlers)
    assert (a.started, b.started, a.stopped, b.stopped) == (1, 1, 1, 1)
    assert a.peers == b.peers == {"n2": "http://x:1"}
    assert net.node_id == "n1"
    assert net.snapshot()["paths"][0] == {"in_flight": 0, "calls": 0, "failures": 0, "failovers": 0}


def test_paths_must_share_the_node_id() -> None:
    with pytest.raises(ValueError, match="same node_id"):
        MultiPathNetwork([ScriptedNetwork([HANG], node_id="a"), ScriptedNetwork([HANG])])
    with pytest.raises(ValueError, match="at least one"):
        MultiPathNetwork([])
