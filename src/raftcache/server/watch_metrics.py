"""Prometheus metrics of watches: the streams a node serves and the history they read from.

Rule: like the node's other state (``server.metrics``), nothing is copied into gauges as it
changes: the ``WatchHub`` keeps plain counters that the stream code bumps (an integer add per
event batch) and this collector reads them, and the history's sizes, when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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


#: One group's watch state: its label values, its hub, and how to read its history.
WatchPart = tuple[tuple[str, ...], WatchCounters, Callable[[], WatchHistory | None]]

_COUNTERS = (
    ("raftcache_watch_streams_opened", "watch streams started", "opened"),
    ("raftcache_watch_refused", "watches refused: too many streams (503)", "refused"),
    (
        "raftcache_watch_compacted",
        "watches refused or ended because their start left the history (410)",
        "compacted",
    ),
    ("raftcache_watch_events_sent", "change events sent to watchers", "events_sent"),
    (
        "raftcache_watch_slow_consumers",
        "streams dropped because the client stopped reading",
        "slow_consumers",
    ),
)
_HISTORY = (
    ("changes", "changes held in the watch history"),
    ("bytes", "bytes held in the watch history"),
    ("oldest_version", "the oldest version a watch can start from"),
    ("last_version", "the newest version in the watch history"),
)


def watch_families(parts: Sequence[WatchPart], labels: Sequence[str] = ()) -> Iterator[Metric]:
    """The watch metrics of one hub (``labels`` empty) or of several, one labelled sample per
    hub in every family (a store's groups: ``labels`` is ``("group",)``)."""
    names = list(labels)
    streams = GaugeMetricFamily(
        "raftcache_watch_streams", "watch streams open on this node", labels=names
    )
    for values, hub, _ in parts:
        streams.add_metric(list(values), hub.active)
    yield streams
    for name, help_text, attribute in _COUNTERS:
        family = CounterMetricFamily(name, help_text, labels=names)
        for values, hub, _ in parts:
            family.add_metric(list(values), getattr(hub, attribute))
        yield family
    stats = [(values, found.stats()) for values, _, read in parts if (found := read()) is not None]
    if not stats:
        return
    for key, help_text in _HISTORY:
        gauge = GaugeMetricFamily(f"raftcache_watch_history_{key}", help_text, labels=names)
        for values, figures in stats:
            gauge.add_metric(list(values), figures[key])
        yield gauge
    resets = CounterMetricFamily(
        "raftcache_watch_history_resets",
        "times the history restarted (snapshot installed or restore)",
        labels=names,
    )
    for values, figures in stats:
        resets.add_metric(list(values), figures["resets"])
    yield resets


class WatchCollector(Collector):
    """Reads a node's ``WatchHub`` counters and ``WatchHistory`` sizes at scrape time.

    Args:
        hub: the node's watch streams.
        history: returns the node's watch history (None when the node keeps none).
    """

    def __init__(self, hub: WatchCounters, history: Callable[[], WatchHistory | None]) -> None:
        self._parts: list[WatchPart] = [((), hub, history)]

    def collect(self) -> Iterator[Metric]:
        return watch_families(self._parts)


class GroupWatchCollector(Collector):
    """The watch metrics of a store's groups, each sample labelled ``group``.

    Args:
        parts: per group, its id, its hub and how to read its history.
    """

    def __init__(
        self, parts: Sequence[tuple[str, WatchCounters, Callable[[], WatchHistory | None]]]
    ) -> None:
        self._parts: list[WatchPart] = [((gid,), hub, history) for gid, hub, history in parts]

    def collect(self) -> Iterator[Metric]:
        return watch_families(self._parts, ("group",))
