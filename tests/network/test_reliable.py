"""ReliableNetwork against a scripted transport: attempts, growing timeouts, what is retried."""

from __future__ import annotations

from typing import Any

import pytest

from raftcache.network import (
    InMemoryHub,
    InMemoryNetwork,
    NetworkError,
    NetworkRetryExhaustedError,
    NetworkTimeoutError,
    ReliableNetwork,
)
from raftcache.raft.messages import (
    AppendEntriesResponse,
    InstallSnapshotRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)

from .fakes import HANG, RecordingHandlers, ScriptedNetwork, sample_append

pytestmark = pytest.mark.looptime

VOTE = RequestVoteRequest(2, "me", 0, 0)
GRANTED = RequestVoteResponse(2, True)


def transient(n: int = 0) -> NetworkError:
    return NetworkError(f"connection reset #{n}")


def durations(fake: ScriptedNetwork) -> list[float]:
    return [round((a.ended or 0.0) - a.started, 6) for a in fake.attempts]


async def test_success_takes_one_attempt() -> None:
    fake = ScriptedNetwork([GRANTED])
    net = ReliableNetwork(fake)
    assert await net.send_request_vote("t", VOTE) == GRANTED
    assert len(fake.attempts) == 1
    assert fake.attempts[0].target == "t"
    assert fake.attempts[0].request is VOTE


async def test_transient_errors_are_retried_until_success() -> None:
    fake = ScriptedNetwork([transient(1), transient(2), GRANTED])
    assert await ReliableNetwork(fake).send_request_vote("t", VOTE) == GRANTED
    assert len(fake.attempts) == 3


async def test_exhaustion_after_one_plus_max_retries_attempts() -> None:
    errors = [transient(i) for i in range(10)]
    fake = ScriptedNetwork(list(errors))
    net = ReliableNetwork(fake, max_retries=4)
    with pytest.raises(NetworkRetryExhaustedError) as info:
        await net.send_append_entries("t", sample_append(1))
    assert len(fake.attempts) == 5
    assert info.value.last_error is errors[4]
    assert info.value.permanent is False
    assert "5 attempts" in str(info.value)


async def test_max_retries_zero_means_a_single_attempt() -> None:
    fake = ScriptedNetwork([transient()])
    with pytest.raises(NetworkRetryExhaustedError):
        await ReliableNetwork(fake, max_retries=0).send_request_vote("t", VOTE)
    assert len(fake.attempts) == 1


async def test_timeouts_grow_and_are_capped_and_each_attempt_is_cancelled(looptime: Any) -> None:
    fake = ScriptedNetwork([HANG])
    net = ReliableNetwork(
        fake, max_retries=4, initial_timeout=1.0, backoff_multiplier=2.0, max_timeout=5.0
    )
    with pytest.raises(NetworkRetryExhaustedError) as info:
        await net.send_install_snapshot("t", InstallSnapshotRequest(1, "me", 1, 1, 0, b"", True))
    assert durations(fake) == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert all(a.cancelled for a in fake.attempts)
    assert looptime == 17.0
    assert isinstance(info.value.last_error, NetworkTimeoutError)
    assert [net.timeout_for(k) for k in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_custom_backoff_multiplier(looptime: Any) -> None:
    fake = ScriptedNetwork([HANG, HANG, GRANTED])
    net = ReliableNetwork(fake, initial_timeout=0.5, backoff_multiplier=3.0)
    assert await net.send_request_vote("t", VOTE) == GRANTED
    assert durations(fake) == [0.5, 1.5, 0.0]
    assert looptime == 2.0


@pytest.mark.parametrize(
    "error",
    [
        NetworkError("Target node t not available", permanent=True),
        NetworkError("Node t is failed", permanent=True),
        NetworkError("Handler on node t raised: boom", permanent=True),
    ],
)
async def test_permanent_errors_are_raised_at_once_unwrapped(error: NetworkError) -> None:
    fake = ScriptedNetwork([error, GRANTED])
    with pytest.raises(NetworkError) as info:
        await ReliableNetwork(fake).send_request_vote("t", VOTE)
    assert info.value is error
    assert len(fake.attempts) == 1


async def test_permanent_error_after_transient_ones_stops_retrying() -> None:
    permanent = NetworkError("No address configured for node t", permanent=True)
    fake = ScriptedNetwork([transient(), permanent, GRANTED])
    with pytest.raises(NetworkError) as info:
        await ReliableNetwork(fake).send_request_vote("t", VOTE)
    assert info.value is permanent
    assert len(fake.attempts) == 2


async def test_retry_on_timeout_false_raises_the_timeout_as_is(looptime: Any) -> None:
    fake = ScriptedNetwork([transient(1), transient(2), HANG, GRANTED])
    net = ReliableNetwork(fake, retry_on_timeout=False, initial_timeout=1.0)
    with pytest.raises(NetworkTimeoutError) as info:
        await net.send_request_vote("t", VOTE)
    assert not isinstance(info.value, NetworkRetryExhaustedError)
    assert len(fake.attempts) == 3  # the transient errors were still retried
    assert looptime == 4.0  # the third attempt's timeout: 1 * 2**2
    assert "timed out" in str(info.value)


async def test_retry_on_error_false_raises_the_error_as_is() -> None:
    error = transient(3)
    fake = ScriptedNetwork([HANG, HANG, error, GRANTED])
    net = ReliableNetwork(fake, retry_on_error=False, initial_timeout=0.1)
    with pytest.raises(NetworkError) as info:
        await net.send_request_vote("t", VOTE)
    assert info.value is error
    assert len(fake.attempts) == 3  # the timeouts were still retried


async def test_both_switches_off_means_one_attempt() -> None:
    fake = ScriptedNetwork([HANG])
    net = ReliableNetwork(fake, retry_on_error=False, retry_on_timeout=False, initial_timeout=1)
    with pytest.raises(NetworkTimeoutError):
        await net.send_request_vote("t", VOTE)
    assert len(fake.attempts) == 1


async def test_a_timeout_reported_by_the_transport_counts_as_a_timeout() -> None:
    own = NetworkTimeoutError("HTTP timeout")
    fake = ScriptedNetwork([own, GRANTED])
    with pytest.raises(NetworkTimeoutError) as info:
        await ReliableNetwork(fake, retry_on_timeout=False).send_request_vote("t", VOTE)
    assert info.value is own
    fake = ScriptedNetwork([own, GRANTED])
    assert await ReliableNetwork(fake, retry_on_error=False).send_request_vote("t", VOTE) == GRANTED


async def test_other_exceptions_propagate_untouched() -> None:
    bug = KeyError("bug")
    fake = ScriptedNetwork([bug, GRANTED])
    with pytest.raises(KeyError) as info:
        await ReliableNetwork(fake).send_request_vote("t", VOTE)
    assert info.value is bug
    assert len(fake.attempts) == 1


async def test_retry_delay_pauses_between_attempts(looptime: Any) -> None:
    fake = ScriptedNetwork([transient(), transient(), transient(), GRANTED])
    net = ReliableNetwork(fake, retry_delay=0.5, backoff_multiplier=2.0, max_timeout=1.5)
    assert await net.send_request_vote("t", VOTE) == GRANTED
    assert [a.started for a in fake.attempts] == [0.0, 0.5, 1.5, 3.0]  # pauses 0.5, 1, 1.5 (cap)
    assert looptime == 3.0


async def test_delegates_everything_else() -> None:
    fake = ScriptedNetwork([GRANTED], node_id="n7")
    net = ReliableNetwork(fake)
    handlers = RecordingHandlers()
    assert net.node_id == "n7"
    net.register_handlers(handlers)
    await net.start()
    net.set_peer_address("n2", "http://x:1")
    await net.stop()
    assert fake.handlers is handlers
    assert (fake.started, fake.stopped) == (1, 1)
    assert fake.peers == {"n2": "http://x:1"}
    assert net.underlying is fake


def test_invalid_settings_are_refused() -> None:
    fake = ScriptedNetwork([GRANTED])
    with pytest.raises(ValueError, match="max_retries"):
        ReliableNetwork(fake, max_retries=-1)
    with pytest.raises(ValueError, match="timeouts"):
        ReliableNetwork(fake, initial_timeout=0)
    with pytest.raises(ValueError, match="backoff_multiplier"):
        ReliableNetwork(fake, backoff_multiplier=0.5)


async def test_over_a_lossy_in_memory_network() -> None:
    hub = InMemoryHub()
    sender = InMemoryNetwork("a", hub=hub, drop_rate=0.3, base_delay=0.01, seed=5)
    receiver = InMemoryNetwork("b", hub=hub)
    handlers = RecordingHandlers("b")
    receiver.register_handlers(handlers)
    net = ReliableNetwork(sender, max_retries=8, initial_timeout=0.1)
    results = [await net.send_append_entries("b", sample_append(1, term=t)) for t in range(30)]
    assert results == [AppendEntriesResponse(t, True, 1, 0, 0, 1) for t in range(30)]
    assert sender.stats.requests_dropped + sender.stats.replies_dropped > 0
    # A lost reply means the handler ran: the receiver saw at least one duplicate.
    assert len(handlers.completed) == 30 + sender.stats.replies_dropped
    hub.partition("a", "b")
    with pytest.raises(NetworkRetryExhaustedError) as info:
        await net.send_install_snapshot("b", InstallSnapshotRequest(1, "a", 1, 1, 0, b"", True))
    assert "partition" in str(info.value.last_error)
    hub.fail_node("b")
    with pytest.raises(NetworkError, match="Node b is failed"):
        await net.send_request_vote("b", VOTE)
