"""Leader discovery, retries, back-off, Retry-After and exactly-once writes under faults."""

from __future__ import annotations

import asyncio
import random

import pytest

from raftcache.client import AsyncClient, ConnectionFailed, Indeterminate, RetryPolicy, Unavailable
from tests.client.client_fakes import FakeCluster, FakeTime, Fault, closed_port_url


def make_client(
    endpoints: list[str], fake_time: FakeTime, *, timeout: float = 5.0, **kwargs: object
) -> AsyncClient:
    return AsyncClient(
        endpoints,
        timeout=timeout,
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        rng=random.Random(3),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_discovers_the_leader_and_prefers_it(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    cluster.leader = "n2"
    async with make_client(cluster.endpoints(), fake_time) as client:
        await client.set("k", b"v")
        await client.get("k")
        assert client.leader == cluster.urls["n2"]
    assert [r.node for r in cluster.key_requests()] == ["n2", "n2"]
    assert sum(r.raw_path == "/v1/status" for r in cluster.requests) == 3  # one discovery only


async def test_leader_change_503_then_success_on_the_new_leader(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster.endpoints(), fake_time) as client:
        await client.set("k", b"v1")
        assert client.leader == cluster.urls["n1"]
        # n1 loses leadership: it answers 503 once; n3 is the new leader.
        cluster.leader = "n3"
        cluster.faults.append(Fault(status=503, node="n1", retry_after="1"))
        assert await client.set("k", b"v2") > 0
        assert client.leader == cluster.urls["n3"]
    assert [r.node for r in cluster.key_requests()] == ["n1", "n1", "n3"]
    assert fake_time.sleeps
    assert fake_time.sleeps[0] >= 1.0
    assert cluster.store["k"][0] == b"v2"


async def test_retry_after_longer_than_the_deadline_gives_up_at_once(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    cluster.faults.append(Fault(status=503, retry_after="30"))
    async with make_client(cluster.endpoints(), fake_time, timeout=5.0) as client:
        with pytest.raises(Unavailable) as info:
            await client.set("k", b"v")
    assert info.value.retry_after == 30.0
    assert fake_time.sleeps == []
    assert cluster.applied == 0


async def test_no_attempt_is_started_that_the_deadline_would_cut_after_a_slow_503(
    cluster: FakeCluster,
) -> None:
    # Each node answers 503 only after 0.3 s (it waited for a leader): after the third, 0.1 s
    # is left — an attempt then would be cut by the deadline, and a write cut so is of unknown
    # outcome. The client stops at the 503 instead: nothing happened, and it says so.
    cluster.faults.extend(Fault(status=503, retry_after="0", hang_s=0.3) for _ in range(10))
    async with AsyncClient(cluster.endpoints(), timeout=1.0) as client:
        with pytest.raises(Unavailable) as info:
            await client.set("k", b"v")
    assert not isinstance(info.value, Indeterminate)
    assert info.value.status == 503
    assert len(cluster.key_requests()) == 3
    assert cluster.applied == 0


async def test_refused_connections_are_named_with_their_reason(fake_time: FakeTime) -> None:
    endpoints = [closed_port_url(), closed_port_url()]
    async with make_client(endpoints, fake_time, timeout=1.0) as client:
        with pytest.raises(ConnectionFailed) as info:
            await client.set("k", b"v")
    assert info.value.failures == dict.fromkeys(endpoints, "connection refused")


async def test_504_is_retried_with_the_same_seq_and_applied_once(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    # The first INCR is applied but its reply is lost as a 504 (leadership lost before the
    # client heard); the retry must be answered from the session table, not applied again.
    cluster.faults.append(Fault(status=504, apply_first=True, path_prefix="/v1/keys/c"))
    async with make_client(cluster.endpoints(), fake_time) as client:
        assert await client.incr("c") == 1
        assert await client.incr("c") == 2
    incrs = [r for r in cluster.key_requests() if r.raw_path.endswith("/incr")]
    seqs = [(r.headers["X-Raftcache-Client-Id"], r.headers["X-Raftcache-Seq"]) for r in incrs]
    assert seqs[0] == seqs[1]  # the retry
    assert seqs[2][1] == str(int(seqs[0][1]) + 1)  # the next write
    assert cluster.duplicates == 1
    assert cluster.store["c"][0] == b"2"


async def test_connection_refused_moves_to_the_next_endpoint_without_waiting(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    cluster.leader = None  # nobody to discover: the client must rotate by itself
    endpoints = [closed_port_url(), *cluster.endpoints()]
    async with make_client(endpoints, fake_time) as client:
        assert await client.set("k", b"v") > 0
    assert fake_time.sleeps == []
    assert [r.node for r in cluster.key_requests()] == ["n1"]


async def test_no_reachable_endpoint_raises_connection_failed_after_backoff(
    fake_time: FakeTime,
) -> None:
    endpoints = [closed_port_url(), closed_port_url()]
    retry = RetryPolicy(initial_s=0.1, maximum_s=0.8, jitter=0.5)
    async with make_client(endpoints, fake_time, timeout=3.0, retry=retry) as client:
        with pytest.raises(ConnectionFailed):
            await client.get("k")
    assert len(fake_time.sleeps) >= 3
    # Exponential with jitter: each wait within [base * (1 - jitter), base], capped at maximum.
    for k, waited in enumerate(fake_time.sleeps):
        base = min(0.1 * 2**k, 0.8)
        assert base * 0.5 <= waited <= base
    assert fake_time.now <= 1000.0 + 3.0


async def test_indeterminate_write_stays_indeterminate_when_later_attempts_fail(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    cluster.faults.append(Fault(status=504, apply_first=True))
    cluster.faults.extend(Fault(status=503) for _ in range(100))
    async with make_client(cluster.endpoints(), fake_time, timeout=2.0) as client:
        with pytest.raises(Indeterminate):
            await client.set("k", b"v")
    assert cluster.applied == 1


async def test_hung_attempt_is_cut_and_retried_once_applied(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    # The leader applies the write but hangs before answering: the attempt times out (real time,
    # 0.3 s) and the retry on another node gets the recorded answer.
    cluster.faults.append(Fault(status=200, apply_first=True, hang_s=1.0, node="n1"))
    async with make_client(cluster.endpoints(), fake_time, attempt_timeout=0.3) as client:
        version = await client.set("k", b"v")
    assert cluster.store["k"] == (b"v", version)
    assert cluster.applied == 1
    assert cluster.duplicates == 1


async def test_concurrent_writes_use_separate_session_lanes(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster.endpoints(), fake_time, client_id="cc") as client:
        values = await asyncio.gather(*(client.incr("n") for _ in range(20)))
        assert sorted(values) == list(range(1, 21))
        await client.incr("n")
    ids = {r.headers["X-Raftcache-Client-Id"] for r in cluster.key_requests()}
    assert "cc" in ids
    assert len(ids) > 1
    assert cluster.duplicates == 0
    # A later write, alone, reuses lane 0 with its next sequence number.
    last = cluster.key_requests()[-1]
    assert last.headers["X-Raftcache-Client-Id"] == "cc"
    assert int(last.headers["X-Raftcache-Seq"]) >= 2
