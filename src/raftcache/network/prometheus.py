"""Export ``NetworkMetrics`` to Prometheus, read at scrape time.

Rule: the collector copies nothing in advance: each ``collect()`` walks the metrics object as it
is then, so the hot path of an RPC never touches prometheus-client. Register it in the node's own
registry (``registry.register(NetworkMetricsCollector(network.metrics))``), never globally:
several nodes may share a process. Labels are bounded: direction, rpc (three values), peer (the
cluster's members, capped by ``NetworkMetrics.max_peers``), error kind (a fixed vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from raftcache.network.metrics import NetworkMetrics

__all__ = ["BREAKER_STATES", "NetworkMetricsCollector"]

BREAKER_STATES = ("closed", "open", "half_open")


class NetworkMetricsCollector(Collector):
    """A prometheus-client collector over a ``NetworkMetrics``.

    Families (``prefix`` defaults to ``raftcache_network``): ``_rpcs`` (counter), ``_rpc_errors``
    (counter, by ``kind``), ``_rpc_duration_seconds`` (histogram), ``_bytes_sent``,
    ``_bytes_received``, ``_body_bytes_sent``, ``_body_bytes_received`` (counters, labelled
    ``direction``, ``rpc``, ``peer``), ``_breaker_state`` (gauge, 1 for the current state of each
    peer's breaker) and ``_breaker_opened`` (counter).

    Args:
        metrics: the metrics to export.
        prefix: metric name prefix.
    """

    def __init__(self, metrics: NetworkMetrics, prefix: str = "raftcache_network") -> None:
        self.metrics = metrics
        self.prefix = prefix

    def describe(self) -> Iterator[CounterMetricFamily]:
        return iter(())  # families depend on what was observed: no fixed description

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        p, labels = self.prefix, ["direction", "rpc", "peer"]
        calls = CounterMetricFamily(f"{p}_rpcs", "RPCs that reached the transport", labels=labels)
        errors = CounterMetricFamily(
            f"{p}_rpc_errors", "failed RPCs by error kind", labels=[*labels, "kind"]
        )
        latency = HistogramMetricFamily(
            f"{p}_rpc_duration_seconds", "RPC latency", labels=labels, unit=""
        )
        byte_families = {
            name: CounterMetricFamily(f"{p}_{name}", help_text, labels=labels)
            for name, help_text in (
                ("bytes_sent", "bytes sent on the wire (after compression)"),
                ("bytes_received", "bytes received on the wire (before decompression)"),
                ("body_bytes_sent", "message bytes sent (before compression)"),
                ("body_bytes_received", "message bytes received (after decompression)"),
            )
        }
        for direction, rpc, peer, stats in self.metrics.items():
            values = [direction, rpc, peer]
            calls.add_metric(values, stats.calls)
            for kind, n in sorted(stats.errors.items()):
                errors.add_metric([*values, kind], n)
            hist = stats.latency
            buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in hist.cumulative()]
            latency.add_metric(values, buckets, hist.sum)
            for name, family in byte_families.items():
                family.add_metric(values, getattr(stats, name))
        yield calls
        yield errors
        yield latency
        yield from byte_families.values()
        yield from self._breakers()

    def _breakers(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        p = self.prefix
        state = GaugeMetricFamily(
            f"{p}_breaker_state", "1 for the current state of the breaker", labels=["peer", "state"]
        )
        opened = CounterMetricFamily(
            f"{p}_breaker_opened", "times the breaker opened", labels=["peer"]
        )
        transitions = self.metrics.breaker_transitions()
        for peer, current in self.metrics.breaker_states().items():
            for candidate in BREAKER_STATES:
                state.add_metric([peer, candidate], 1.0 if candidate == current else 0.0)
            opened.add_metric([peer], transitions.get((peer, "open"), 0))
        yield state
        yield opened
