"""InMemoryNetwork timing and loss: the delay formula, drops, and seeded reproducibility.

Time is virtual (``looptime``): delays are exact and a seeded run is reproducible.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from raftcache.network import InMemoryHub, InMemoryNetwork, NetworkError
from raftcache.raft.messages import RequestVoteRequest

from .fakes import VOTE, expect_error, pair

pytestmark = pytest.mark.looptime


@pytest.fixture
def hub() -> InMemoryHub:
    return InMemoryHub()


async def test_delay_applies_to_request_and_reply(hub: InMemoryHub, looptime: Any) -> None:
    a, _, handlers = pair(hub, base_delay=0.25)
    arrivals: list[float] = []
    loop = asyncio.get_running_loop()
    handlers.on_call = lambda m, r: arrivals.append(loop.time())
    await a.send_request_vote("b", VOTE)
    assert arrivals == [0.25]
    assert looptime == 0.5


async def test_jittered_delays_follow_the_formula(hub: InMemoryHub) -> None:
    base, jitter, seed = 0.1, 0.8, 42
    a, _, handlers = pair(hub, base_delay=base, jitter=jitter, seed=seed)
    loop = asyncio.get_running_loop()
    arrivals: dict[int, float] = {}
    handlers.on_call = lambda m, r: arrivals.update({r.term: loop.time()})
    finished: dict[int, float] = {}

    async def one(term: int) -> None:
        await a.send_request_vote("b", RequestVoteRequest(term, "a", 0, 0))
        finished[term] = loop.time()

    await asyncio.gather(*(one(t) for t in range(20)))
    # The model: four draws per RPC, in send order, from random.Random(seed).
    rng = random.Random(seed)
    for term in range(20):
        rng.random()
        to = base * (1 + rng.uniform(-jitter, jitter))
        rng.random()
        back = base * (1 + rng.uniform(-jitter, jitter))
        assert arrivals[term] == pytest.approx(to, abs=1e-5)
        assert finished[term] == pytest.approx(to + back, abs=1e-5)
    order = sorted(arrivals, key=arrivals.__getitem__)
    assert order != sorted(order)  # with this much jitter, messages overtake each other


async def test_drop_rate_one_fails_promptly_and_never_delivers(
    hub: InMemoryHub, looptime: Any
) -> None:
    a, _, handlers = pair(hub, base_delay=5.0, drop_rate=1.0)
    for _ in range(50):
        await expect_error(
            a.send_request_vote("b", VOTE), "Request from a to b was dropped", permanent=False
        )
    assert looptime == 0
    assert handlers.calls == []
    assert a.stats.requests_dropped == 50


async def test_drop_rate_zero_delivers_everything(hub: InMemoryHub) -> None:
    a, _, handlers = pair(hub, base_delay=0.01, jitter=0.5, drop_rate=0.0, seed=3)
    results = await asyncio.gather(*(a.send_request_vote("b", VOTE) for _ in range(100)))
    assert all(r.vote_granted for r in results)
    assert len(handlers.completed) == 100


async def test_lost_replies_mean_the_handler_ran(hub: InMemoryHub) -> None:
    a, _, handlers = pair(hub, drop_rate=0.5, seed=11)
    outcomes: list[str] = []
    errors: list[NetworkError] = []
    for _ in range(200):
        try:
            await a.send_request_vote("b", VOTE)
            outcomes.append("ok")
        except NetworkError as exc:
            errors.append(exc)
            outcomes.append("request" if "Request" in str(exc) else "reply")
    assert not any(e.permanent for e in errors)
    assert outcomes.count("request") == a.stats.requests_dropped > 0
    assert outcomes.count("reply") == a.stats.replies_dropped > 0
    assert len(handlers.completed) == outcomes.count("ok") + outcomes.count("reply")


async def test_settings_can_change_at_run_time(hub: InMemoryHub, looptime: Any) -> None:
    a, _, _ = pair(hub)
    a.set_drop_rate(1.0)
    with pytest.raises(NetworkError, match="dropped"):
        await a.send_request_vote("b", VOTE)
    a.set_drop_rate(0.0)
    a.set_delay(0.5, jitter=0.0)
    await a.send_request_vote("b", VOTE)
    assert looptime == 1.0
    with pytest.raises(ValueError, match="drop_rate"):
        a.set_drop_rate(1.5)
    with pytest.raises(ValueError, match=">= 0"):
        a.set_delay(-1)
    with pytest.raises(ValueError, match="drop_rate"):
        InMemoryNetwork("c", hub=hub, drop_rate=-0.1)


async def run_scenario(seed: int) -> list[tuple[int, str, float]]:
    """Forty concurrent RPCs over a lossy, jittery link; what happened to each and when."""
    hub = InMemoryHub()
    a, _, _ = pair(hub, base_delay=0.05, jitter=0.9, drop_rate=0.3, seed=seed)
    loop = asyncio.get_running_loop()
    log: list[tuple[int, str, float]] = []

    async def one(term: int) -> None:
        try:
            await a.send_request_vote("b", RequestVoteRequest(term, "a", 0, 0))
            log.append((term, "ok", loop.time()))
        except NetworkError as exc:
            log.append((term, str(exc), loop.time()))

    start = loop.time()
    await asyncio.gather(*(one(t) for t in range(40)))
    return [(t, what, round(at - start, 6)) for t, what, at in log]


async def test_same_seed_same_delays_drops_and_order() -> None:
    first = await run_scenario(seed=2024)
    second = await run_scenario(seed=2024)
    other = await run_scenario(seed=2025)
    assert first == second
    assert first != other
    assert {what for _, what, _ in first} >= {"ok", "Request from a to b was dropped"}
