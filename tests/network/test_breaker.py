"""CircuitBreakerNetwork: closed → open → half-open → closed, per target, under virtual time."""

from __future__ import annotations

import asyncio

import pytest

from raftcache.network import NetworkError, NetworkTimeoutError, ReliableNetwork
from raftcache.network.breaker import (
    BreakerState,
    CircuitBreaker,
    CircuitBreakerNetwork,
    CircuitOpenError,
)
from raftcache.network.metrics import NetworkMetrics
from raftcache.raft.messages import RequestVoteRequest, RequestVoteResponse

from .fakes import HANG, ScriptedNetwork

pytestmark = pytest.mark.looptime

VOTE = RequestVoteRequest(2, "me", 0, 0)
GRANTED = RequestVoteResponse(2, True)


def down(n: int = 0) -> NetworkError:
    return NetworkError(f"connection refused #{n}", kind="connection")


async def fail(net: CircuitBreakerNetwork, target: str = "t") -> NetworkError:
    with pytest.raises(NetworkError) as info:
        await net.send_request_vote(target, VOTE)
    return info.value


async def test_opens_after_threshold_consecutive_transient_failures() -> None:
    fake = ScriptedNetwork([down()])
    net = CircuitBreakerNetwork(fake, failure_threshold=3, reset_timeout=5.0)
    for _ in range(3):
        assert net.state("t") is BreakerState.CLOSED
        assert not isinstance(await fail(net), CircuitOpenError)
    assert net.state("t") is BreakerState.OPEN
    error = await fail(net)
    assert isinstance(error, CircuitOpenError)
    assert str(error) == "Circuit open for t"
    assert error.permanent is False
    assert error.kind == "circuit_open"
    assert error.retry_after == pytest.approx(5.0)
    assert len(fake.attempts) == 3  # the fast failure never reached the transport


async def test_a_success_resets_the_count() -> None:
    fake = ScriptedNetwork([down(1), down(2), GRANTED, down(3), down(4), GRANTED])
    net = CircuitBreakerNetwork(fake, failure_threshold=3)
    outcomes: list[object] = []
    for _ in range(6):
        try:
            outcomes.append(await net.send_request_vote("t", VOTE))
        except NetworkError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes == ["NetworkError", "NetworkError", GRANTED] * 2
    assert net.state("t") is BreakerState.CLOSED
    assert len(fake.attempts) == 6


async def test_timeouts_count_and_permanent_errors_do_not() -> None:
    permanent = NetworkError("Handler on node t raised: boom", permanent=True)
    fake = ScriptedNetwork([NetworkTimeoutError(), permanent, permanent, NetworkTimeoutError()])
    net = CircuitBreakerNetwork(fake, failure_threshold=2)
    for _ in range(3):
        await fail(net)
        assert net.state("t") is BreakerState.CLOSED
    await fail(net)  # the second transient failure: permanent ones in between did not reset
    assert net.state("t") is BreakerState.OPEN


async def test_half_open_probe_closes_on_success() -> None:
    loop = asyncio.get_running_loop()
    fake = ScriptedNetwork([down(), down(), GRANTED])
    net = CircuitBreakerNetwork(fake, failure_threshold=2, reset_timeout=1.5)
    await fail(net)
    await fail(net)
    opened = loop.time()
    await asyncio.sleep(1.0)
    error = await fail(net)
    assert isinstance(error, CircuitOpenError)
    assert error.retry_after == pytest.approx(opened + 1.5 - loop.time())
    await asyncio.sleep(0.5)
    assert await net.send_request_vote("t", VOTE) == GRANTED
    assert net.state("t") is BreakerState.CLOSED
    assert len(fake.attempts) == 3


async def test_failed_probe_reopens_for_another_cool_down() -> None:
    fake = ScriptedNetwork([down()])
    net = CircuitBreakerNetwork(fake, failure_threshold=1, reset_timeout=1.0)
    await fail(net)
    await asyncio.sleep(1.0)
    assert not isinstance(await fail(net), CircuitOpenError)  # the probe went through
    assert net.state("t") is BreakerState.OPEN
    await asyncio.sleep(0.9)
    assert isinstance(await fail(net), CircuitOpenError)
    assert len(fake.attempts) == 2


async def test_one_probe_at_a_time() -> None:
    fake = ScriptedNetwork([down(), HANG])
    net = CircuitBreakerNetwork(fake, failure_threshold=1, reset_timeout=1.0)
    await fail(net)
    await asyncio.sleep(1.0)
    probe = asyncio.create_task(net.send_request_vote("t", VOTE))
    await asyncio.sleep(0.1)
    assert net.state("t") is BreakerState.HALF_OPEN
    error = await fail(net)
    assert isinstance(error, CircuitOpenError)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # A cancelled probe frees the slot: the next call probes (and hangs in turn).
    fake.script[:] = [GRANTED]
    assert await net.send_request_vote("t", VOTE) == GRANTED
    assert net.state("t") is BreakerState.CLOSED


async def test_breakers_are_per_target() -> None:
    fake = ScriptedNetwork([down()])
    net = CircuitBreakerNetwork(fake, failure_threshold=1)
    await fail(net, "a")
    assert net.state("a") is BreakerState.OPEN
    assert net.state("b") is BreakerState.CLOSED
    assert not isinstance(await fail(net, "b"), CircuitOpenError)
    assert net.states() == {"a": "open", "b": "open"}


async def test_reliable_network_does_not_retry_an_open_circuit() -> None:
    fake = ScriptedNetwork([down()])
    breaker = CircuitBreakerNetwork(fake, failure_threshold=1, reset_timeout=10.0)
    net = ReliableNetwork(breaker, max_retries=5)
    with pytest.raises(CircuitOpenError):
        await net.send_request_vote("t", VOTE)  # first attempt fails and opens; then refused
    assert len(fake.attempts) == 1


async def test_metrics_record_states_and_fast_failures() -> None:
    metrics = NetworkMetrics()
    fake = ScriptedNetwork([down(), down(), GRANTED])
    net = CircuitBreakerNetwork(fake, failure_threshold=2, reset_timeout=1.0, metrics=metrics)
    assert net.metrics is metrics
    await fail(net)
    assert metrics.breaker_states() == {"t": "closed"}
    await fail(net)
    await fail(net)  # refused
    snap = metrics.snapshot()
    assert snap["breakers"] == {"t": {"state": "open", "opened": 1}}
    assert snap["outbound"]["RequestVote"]["t"]["errors"] == {"circuit_open": 1}
    await asyncio.sleep(1.0)
    await net.send_request_vote("t", VOTE)
    transitions = metrics.breaker_transitions()
    assert transitions == {("t", "closed"): 1, ("t", "half_open"): 1, ("t", "open"): 1}


def state_of(b: CircuitBreaker) -> BreakerState:
    return b.state  # a call, so that mypy does not narrow b.state across the steps below


def test_breaker_state_machine_without_a_network() -> None:
    b = CircuitBreaker(failure_threshold=2, reset_timeout=5.0)
    b.on_failure(0.0)
    assert state_of(b) is BreakerState.CLOSED
    b.on_failure(1.0)
    assert state_of(b) is BreakerState.OPEN
    assert b.admit(2.0) == pytest.approx(4.0)
    assert b.admit(6.0) is None
    assert state_of(b) is BreakerState.HALF_OPEN
    assert b.admit(6.0) == 0.0  # the probe is in flight
    b.on_success()
    assert state_of(b) is BreakerState.CLOSED
    assert b.admit(6.0) is None


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreakerNetwork(ScriptedNetwork([GRANTED]), failure_threshold=0)
    with pytest.raises(ValueError, match="reset_timeout"):
        CircuitBreakerNetwork(ScriptedNetwork([GRANTED]), reset_timeout=0)
