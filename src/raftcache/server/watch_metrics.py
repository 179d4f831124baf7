"""Prometheus metrics of watches: the streams a node serves and the history they read from.

Rule: like the node's other state (``server.metrics``), nothing is copied into gauges as it
changes: the ``WatchHub`` keeps plain counters that the stream code bumps (an integer add per
event batch) and this collector reads them, and the history's sizes, when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftcache.cache.watch import WatchHistory


class WatchCounters(Protocol):
    """The counters this collector reads. ``routes_watch.WatchHub`` keeps them; it imports this
    module to register the collector, so this module names the counters rather than the hub."""

    active: int
    opened: int
    refused: int
    compacted: int
    events_sent: int
    slow_consumers: int


class WatchCollector(Collector):
    """Reads a node's ``WatchHub`` counters and ``WatchHistory`` sizes at scrape time.

    Args:
        hub: the node's watch streams.
        history: returns the node's watch history (None when the node keeps none).
    """

    def __init__(self, hub: WatchCounters, history: Callable[[], WatchHistory | None]) -> None:
        self._hub = hub
        self._history = history

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        yield GaugeMetricFamily(
            "raftcache_watch_streams", "watch streams open on this node", value=hub.active
        )
        for name, help_text, value in (
            ("raftcache_watch_streams_opened", "watch streams started", hub.opened),
            ("raftcache_watch_refused", "watches refused: too many streams (503)", hub.refused),
            (
                "raftcache_watch_compacted",
                "watches refused or ended because their start left the history (410)",
                hub.compacted,
            ),
            ("raftcache_watch_events_sent", "change events sent to watchers", hub.events_sent),
            (
                "raftcache_watch_slow_consumers",
                "streams dropped because the client stopped reading",
                hub.slow_consumers,
            ),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        history = self._history()
        if history is None:
            return
        stats = history.stats()
        for key, help_text in (
            ("changes", "changes held in the watch history"),
            ("bytes", "bytes held in the watch history"),
            ("oldest_version", "the oldest version a watch can start from"),
            ("last_version", "the newest version in the watch history"),
        ):
            yield GaugeMetricFamily(f"raftcache_watch_history_{key}", help_text, value=stats[key])
        yield CounterMetricFamily(
            "raftcache_watch_history_resets",
            "times the history restarted (snapshot installed or restore)",
            value=stats["resets"],
        )
