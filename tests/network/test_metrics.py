"""NetworkMetrics, its Prometheus export, MeteredNetwork and HttpNetwork's own metering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from raftcache.network import InMemoryHub, InMemoryNetwork, NetworkError
from raftcache.network.breaker import CircuitBreakerNetwork
from raftcache.network.metered import MeteredNetwork
from raftcache.network.metrics import LatencyHistogram, NetworkMetrics, rpc_name
from raftcache.network.prometheus import NetworkMetricsCollector
from raftcache.raft.messages import AppendEntriesResponse, RequestVoteRequest

from .fakes import RecordingHandlers, sample_append
from .httpkit import Factory, connect, started_nodes

VOTE = RequestVoteRequest(2, "a", 0, 0)


@pytest.fixture
async def make_node() -> AsyncIterator[Factory]:
    async with started_nodes() as make:
        yield make


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    h = LatencyHistogram((0.01, 0.1, 1.0))
    for v in (0.005, 0.01, 0.05, 0.5, 3.0):
        h.observe(v)
    assert h.cumulative() == [(0.01, 2), (0.1, 3), (1.0, 4), (float("inf"), 5)]
    assert h.sum == pytest.approx(3.565)
    assert h.snapshot()["buckets"] == {"0.01": 2, "0.1": 3, "1": 4, "+Inf": 5}


def test_record_counts_errors_by_kind_and_bytes() -> None:
    m = NetworkMetrics()
    m.record("outbound", "AppendEntries", "n2", 0.002)
    m.record("outbound", "AppendEntries", "n2", 0.2, NetworkError("x", kind="partition"))
    m.record("outbound", "AppendEntries", "n2", 1.0, TimeoutError())
    m.record_rejected("outbound", "AppendEntries", "n2", NetworkError("y", kind="circuit_open"))
    m.record_bytes("outbound", "AppendEntries", "n2", sent=100, body_sent=400, received=20)
    s = m.snapshot()["outbound"]["AppendEntries"]["n2"]
    assert (s["calls"], s["ok"]) == (3, 1)
    assert s["errors"] == {"circuit_open": 1, "partition": 1, "timeout": 1}
    assert (s["bytes_sent"], s["body_bytes_sent"]) == (100, 400)
    assert (s["bytes_received"], s["body_bytes_received"]) == (20, 20)
    assert s["latency_s"]["count"] == 3
    assert m.totals("outbound") == {
        "calls": 3,
        "ok": 1,
        "errors": 3,
        "bytes_sent": 100,
        "bytes_received": 20,
    }
    orjson.dumps(m.snapshot())  # JSON-ready for /v1/stats


def test_peer_labels_are_bounded() -> None:
    m = NetworkMetrics(max_peers=3)
    for i in range(10):
        m.record("inbound", "RequestVote", f"p{i}", 0.001)
    peers = m.snapshot()["inbound"]["RequestVote"]
    assert sorted(peers) == ["other", "p0", "p1", "p2"]
    assert peers["other"]["calls"] == 7


def test_rpc_names_and_bucket_validation() -> None:
    assert rpc_name(VOTE) == "RequestVote"
    assert rpc_name(AppendEntriesResponse(1, True)) == "AppendEntries"
    with pytest.raises(ValueError, match="increasing"):
        NetworkMetrics(buckets=(1.0, 0.5))


def test_prometheus_export() -> None:
    m = NetworkMetrics()
    m.record("outbound", "AppendEntries", "n2", 0.003)
    m.record("outbound", "AppendEntries", "n2", 0.3, NetworkError("x", kind="timeout"))
    m.record_bytes("outbound", "AppendEntries", "n2", sent=10, body_sent=40, received=5)
    m.breaker_changed("n2", "closed", transition=False)
    m.breaker_changed("n2", "open")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NetworkMetricsCollector(m))
    samples = scrape(registry)
    rpc = (("direction", "outbound"), ("peer", "n2"), ("rpc", "AppendEntries"))
    assert samples[("raftcache_network_rpcs_total", rpc)] == 2
    errors = "raftcache_network_rpc_errors_total"
    assert samples[(errors, tuple(sorted((*rpc, ("kind", "timeout")))))] == 1
    bucket = "raftcache_network_rpc_duration_seconds_bucket"
    assert samples[(bucket, tuple(sorted((*rpc, ("le", "0.005")))))] == 1
    assert samples[(bucket, tuple(sorted((*rpc, ("le", "+Inf")))))] == 2
    assert samples[("raftcache_network_rpc_duration_seconds_count", rpc)] == 2
    assert samples[("raftcache_network_rpc_duration_seconds_sum", rpc)] == pytest.approx(0.303)
    assert samples[("raftcache_network_bytes_sent_total", rpc)] == 10
    assert samples[("raftcache_network_body_bytes_sent_total", rpc)] == 40
    state = "raftcache_network_breaker_state"
    assert samples[(state, (("peer", "n2"), ("state", "open")))] == 1
    assert samples[(state, (("peer", "n2"), ("state", "closed")))] == 0
    assert samples[("raftcache_network_breaker_opened_total", (("peer", "n2"),))] == 1


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the text exposition, keyed by name and sorted labels."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.looptime
async def test_metered_in_memory_network_both_directions() -> None:
    hub = InMemoryHub()
    a = MeteredNetwork(InMemoryNetwork("a", hub=hub, base_delay=0.01))
    b = MeteredNetwork(InMemoryNetwork("b", hub=hub))
    a.register_handlers(RecordingHandlers("a"))
    b.register_handlers(RecordingHandlers("b", delay=0.05))
    await a.send_request_vote("b", VOTE)
    hub.partition("a", "b")
    with pytest.raises(NetworkError):
        await a.send_append_entries("b", sample_append(1))
    hub.heal_all()
    call = asyncio.create_task(a.send_append_entries("b", sample_append(1)))
    await asyncio.sleep(0.02)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    out = a.metrics.snapshot()["outbound"]
    assert out["RequestVote"]["b"]["ok"] == 1
    assert out["RequestVote"]["b"]["latency_s"]["sum"] == pytest.approx(0.07)
    assert out["AppendEntries"]["b"]["errors"] == {"cancelled": 1, "partition": 1}
    await asyncio.sleep(0.1)  # the delivered request still runs on b
    inbound = b.metrics.snapshot()["inbound"]
    assert inbound["RequestVote"]["a"]["ok"] == 1
    assert inbound["RequestVote"]["a"]["latency_s"]["sum"] == pytest.approx(0.05)
    assert inbound["AppendEntries"]["leader"]["ok"] == 1  # sample_append names "leader"


@pytest.mark.looptime
async def test_wrappers_share_the_metrics_of_what_they_wrap() -> None:
    metered = MeteredNetwork(InMemoryNetwork("a", hub=InMemoryHub()))
    breaker = CircuitBreakerNetwork(metered)
    assert breaker.metrics is metered.metrics


async def test_http_network_meters_itself(make_node: Factory) -> None:
    a, b = await make_node("a"), await make_node("b")
    connect(a, b)
    await a.send_request_vote("b", VOTE)
    await a.send_append_entries("b", sample_append(3))
    await b.stop()
    with pytest.raises(NetworkError):
        await a.send_request_vote("b", VOTE)
    with pytest.raises(NetworkError):
        await a.send_request_vote("nobody", VOTE)
    out = a.metrics.snapshot()["outbound"]
    assert out["RequestVote"]["b"]["ok"] == 1
    assert out["RequestVote"]["b"]["errors"] == {"connection": 1}
    assert "nobody" not in out["RequestVote"]  # never reached the transport: no address
    assert out["AppendEntries"]["b"]["bytes_sent"] > 0
    assert out["AppendEntries"]["b"]["bytes_received"] > 0
    inbound = b.metrics.snapshot()["inbound"]
    assert inbound["RequestVote"]["a"]["calls"] == 1
    assert (
        inbound["AppendEntries"]["leader"]["bytes_received"]
        == (out["AppendEntries"]["b"]["bytes_sent"])
    )


async def test_http_handler_errors_are_counted_on_both_sides(make_node: Factory) -> None:
    a = await make_node("a")
    b = await make_node("b", handlers=RecordingHandlers("b", error=RuntimeError("boom")))
    connect(a, b)
    with pytest.raises(NetworkError, match="boom"):
        await a.send_request_vote("b", VOTE)
    assert a.metrics.rpc("outbound", "RequestVote", "b").errors == {"permanent": 1}
    assert b.metrics.rpc("inbound", "RequestVote", "a").errors == {"handler_error": 1}
