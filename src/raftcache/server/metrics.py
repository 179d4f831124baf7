"""Prometheus metrics of one node: HTTP traffic plus Raft and cache state read at scrape time.

Rule: each node owns its own ``CollectorRegistry`` (several nodes may share a process, in tests
or embedded use), so nothing is registered globally. Request counters and latency histograms are
updated by the HTTP middleware and labelled by the route *pattern* (``/v1/keys/{key}``), never
by the raw path, so that label cardinality stays bounded. Node and cache state are not copied
into gauges on every change: a collector reads them when Prometheus scrapes.

On a store hosting many groups (``server.groups``) the per-group series — Raft state, Raft and
cache stats, forwarded requests — carry a ``group`` label (``GroupStateCollector``); the HTTP
and admission series stay the store's own. A single-group node's output is unchanged.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from raftcache.server.metric_specs import ADMISSION_STATS, CACHE_STATS, RAFT_STATS, StatSpec
from raftcache.server.ports import NodePort

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLES = ("follower", "candidate", "leader")
#: When this process loaded the server (its uptime in ``/v1/stats``; ``/metrics`` has the
#: kernel's ``process_start_time_seconds``).
_LOADED_AT = time.monotonic()
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _unspecified(prefix: str, name: str, value: object) -> StatSpec:
    """The spec of a figure the catalogue does not know yet (see ``metric_specs``)."""
    label = "key" if isinstance(value, Mapping) else None
    return StatSpec(f"{prefix}_{name}", "gauge", f"{name} from /v1/stats (no spec yet).", label)


def _new_family(spec: StatSpec, labels: list[str]) -> Metric:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    if spec.kind == "histogram":
        return HistogramMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


def _add_histogram(family: Metric, labels: list[str], value: object, scale: float) -> None:
    """A ``LatencyHistogram.snapshot()`` (cumulative buckets by bound) as one sample set."""
    if not isinstance(value, Mapping) or not isinstance(value.get("buckets"), Mapping):
        return
    total = _number(value.get("sum"))
    buckets = [(str(le), float(n)) for le, n in value["buckets"].items()]
    family.add_metric(labels, buckets, (total or 0.0) * scale)  # type: ignore[attr-defined]


def stats_families(
    specs: Mapping[str, StatSpec],
    prefix: str,
    per_group: Mapping[str, Mapping[str, Any]],
    *,
    grouped: bool,
) -> Iterator[Metric]:
    """The families of stats dicts, by their specs: every spec'd family (with no sample when no
    group has the figure), then any figure without a spec. ``per_group`` maps a group id to its
    stats; ``grouped`` puts that id in a ``group`` label (a single node passes ``{"": stats}``).
    """
    unknown = sorted({name for stats in per_group.values() for name in stats} - set(specs))
    for name in [*specs, *unknown]:
        spec = specs.get(name)
        if spec is None:
            first = next(s[name] for s in per_group.values() if name in s)
            spec = _unspecified(prefix, name, first)
        if not spec.name:
            continue  # left out on purpose (a derivable ratio)
        extra = [spec.label] if spec.label and spec.kind != "histogram" else []
        family = _new_family(spec, (["group"] if grouped else []) + extra)
        for gid, stats in per_group.items():
            labels = [gid] if grouped else []
            value = stats.get(name)
            if spec.kind == "histogram":
                _add_histogram(family, labels, value, spec.scale)
            elif extra:
                if isinstance(value, Mapping):
                    for key, item in _flatten(value):
                        family.add_metric([*labels, key], item * spec.scale)  # type: ignore[attr-defined]
            else:
                number = _number(value)
                if number is not None:
                    family.add_metric(labels, number * spec.scale)  # type: ignore[attr-defined]
        yield family


def _flatten(value: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key in sorted(value, key=str):
        item = value[key]
        label = f"{prefix}{key}"
        number = _number(item)
        if number is not None:
            yield label, number
        elif isinstance(item, Mapping):
            yield from _flatten(item, f"{label}.")


class NodeStateCollector(Collector):
    """Reads the node's Raft state and the last cache stats snapshot at scrape time."""

    def __init__(
        self,
        node: NodePort,
        forwarded_total: Callable[[], int],
        admission_state: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._node = node
        self._forwarded_total = forwarded_total
        self._admission_state = admission_state
        self.cache_stats: Mapping[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        node = self._node
        role = str(getattr(getattr(node, "role", None), "value", getattr(node, "role", "")))
        for name, help_text, value in (
            ("raftcache_raft_term", "current Raft term", node.current_term),
            ("raftcache_raft_commit_index", "highest committed log index", node.commit_index),
            ("raftcache_raft_last_applied", "highest applied log index", node.last_applied),
            ("raftcache_raft_members", "number of voting members", len(node.members)),
            ("raftcache_raft_leader_known", "1 when a leader is known", node.leader_id is not None),
            ("raftcache_raft_is_leader", "1 when this node is the leader", role == "leader"),
        ):
            yield GaugeMetricFamily(name, help_text, value=float(value))
        roles = GaugeMetricFamily("raftcache_raft_role", "1 for the current role", labels=["role"])
        for candidate in ROLES:
            roles.add_metric([candidate], 1.0 if candidate == role else 0.0)
        yield roles
        yield CounterMetricFamily(
            "raftcache_http_forwarded",
            "client requests forwarded to the leader",
            value=float(self._forwarded_total()),
        )
        raft = {"": node.raft_stats()}
        yield from stats_families(RAFT_STATS, "raftcache_raft", raft, grouped=False)
        cache = {"": self.cache_stats}
        yield from stats_families(CACHE_STATS, "raftcache_cache", cache, grouped=False)
        if self._admission_state is not None:
            admission = {"": self._admission_state()}
            yield from stats_families(
                ADMISSION_STATS, "raftcache_admission", admission, grouped=False
            )


#: One group of a store for its metrics: its id, its node (None: not hosted here) and how many
#: of its requests were forwarded.
GroupState = tuple[str, NodePort | None, Callable[[], int]]


class GroupStateCollector(Collector):
    """``NodeStateCollector`` for a store: every group's series labelled ``group``.

    ``cache_stats`` maps a hosted group's id to its last cache stats snapshot."""

    def __init__(
        self,
        groups: Sequence[GroupState],
        admission_state: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._groups = list(groups)
        self._admission_state = admission_state
        self.cache_stats: Mapping[str, Any] = {}

    def set_node(self, group: str, node: NodePort | None) -> None:
        """``group``'s node from now on (None: no longer hosted here): a replica moved."""
        self._groups = [(gid, node if gid == group else n, t) for gid, n, t in self._groups]

    def collect(self) -> Iterator[Metric]:
        hosted = [(gid, node) for gid, node, _ in self._groups if node is not None]
        gauges = (
            ("raftcache_raft_term", "current Raft term", lambda n: n.current_term),
            (
                "raftcache_raft_commit_index",
                "highest committed log index",
                lambda n: n.commit_index,
            ),
            ("raftcache_raft_last_applied", "highest applied log index", lambda n: n.last_applied),
            ("raftcache_raft_members", "number of voting members", lambda n: len(n.members)),
            (
                "raftcache_raft_leader_known",
                "1 when a leader is known",
                lambda n: n.leader_id is not None,
            ),
            (
                "raftcache_raft_is_leader",
                "1 when this node is the leader",
                lambda n: _role(n) == "leader",
            ),
        )
        for name, help_text, read in gauges:
            family = GaugeMetricFamily(name, help_text, labels=["group"])
            for gid, node in hosted:
                family.add_metric([gid], float(read(node)))
            yield family
        roles = GaugeMetricFamily(
            "raftcache_raft_role", "1 for the current role", labels=["group", "role"]
        )
        for gid, node in hosted:
            role = _role(node)
            for candidate in ROLES:
                roles.add_metric([gid, candidate], 1.0 if candidate == role else 0.0)
        yield roles
        forwarded = CounterMetricFamily(
            "raftcache_http_forwarded",
            "client requests forwarded to the leader",
            labels=["group"],
        )
        for gid, _, total in self._groups:
            forwarded.add_metric([gid], float(total()))
        yield forwarded
        raft = {gid: node.raft_stats() for gid, node in hosted}
        yield from stats_families(RAFT_STATS, "raftcache_raft", raft, grouped=True)
        yield from stats_families(CACHE_STATS, "raftcache_cache", self.cache_stats, grouped=True)
        if self._admission_state is not None:
            admission = {"": self._admission_state()}
            yield from stats_families(
                ADMISSION_STATS, "raftcache_admission", admission, grouped=False
            )


class BuildInfoCollector(Collector):
    """``raftcache_build_info{version, python}`` 1: what runs, for joins and dashboards."""

    def collect(self) -> Iterator[Metric]:
        from raftcache import __version__

        family = GaugeMetricFamily(
            "raftcache_build_info",
            "Always 1; the labels say which raftcache and which Python this node runs.",
            labels=["version", "python"],
        )
        family.add_metric([__version__, platform.python_version()], 1.0)
        yield family


class DataDirCollector(Collector):
    """Free and total bytes of the file system holding the data directory, read at scrape
    time (a node whose disk fills refuses writes: ``raftcache_raft_disk_full``)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def collect(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(
            "raftcache_disk_free_bytes",
            "Bytes available to this node on the file system of its data directory.",
        )
        size = GaugeMetricFamily(
            "raftcache_disk_size_bytes",
            "Size in bytes of the file system of this node's data directory.",
        )
        try:
            usage = shutil.disk_usage(self._path)
        except OSError:
            pass  # gone or unreadable: no sample rather than a wrong one
        else:
            free.add_metric([], float(usage.free))
            size.add_metric([], float(usage.total))
        yield free
        yield size


def _resident_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _role(node: NodePort) -> str:
    return str(getattr(getattr(node, "role", None), "value", getattr(node, "role", "")))


class ServerMetrics:
    """The metrics of one node's HTTP server, in a registry of their own.

    Args:
        node: the Raft node whose state is exported at scrape time.
        forwarded_total: reads how many requests were forwarded to the leader so far.
        admission_state: reads the admission counters (occupancy, limits, refusals).
        groups: on a store, its groups (their series labelled ``group``; ``node`` and
            ``forwarded_total`` are then unused, and ``render`` takes the hosted groups'
            cache stats by group id).
    """

    def __init__(
        self,
        node: NodePort,
        forwarded_total: Callable[[], int],
        admission_state: Callable[[], Mapping[str, Any]] | None = None,
        *,
        groups: Sequence[GroupState] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "raftcache_http_requests",
            "HTTP requests served, by route pattern, method and status code",
            ["route", "method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "raftcache_http_request_duration_seconds",
            "HTTP request latency, by route pattern and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._state: NodeStateCollector | GroupStateCollector
        if groups is None:
            self._state = NodeStateCollector(node, forwarded_total, admission_state)
        else:
            self._state = GroupStateCollector(groups, admission_state)
        self.registry.register(self._state)
        self.registry.register(BuildInfoCollector())
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
        # process_start_time_seconds ... (from /proc: nothing on other systems).
        ProcessCollector(registry=self.registry)
        # Label children by (route, method[, code]): ``labels()`` validates and locks on every
        # call; the label sets are bounded (route patterns × methods × codes), so caching the
        # children is safe and saves that work on every request.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}
        #: Requests answered, and those answered 5xx, for ``/v1/stats`` (the dashboard).
        self.answered = 0
        self.server_errors = 0

    def _counter(self, route: str, method: str, status: int) -> Any:
        self.answered += 1
        if status >= 500:
            self.server_errors += 1
        key = (route, method, status)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.requests.labels(route, method, str(status))
        return child

    def _histogram(self, route: str, method: str) -> Any:
        key = (route, method)
        child = self._timed.get(key)
        if child is None:
            child = self._timed[key] = self.latency.labels(route, method)
        return child

    def process_stats(self) -> dict[str, Any]:
        """The ``"process"`` part of ``/v1/stats``: what runs, for how long, how much memory
        it holds, and how many requests it answered (5xx among them)."""
        from raftcache import __version__

        return {
            "version": __version__,
            "python": platform.python_version(),
            "uptime_s": round(time.monotonic() - _LOADED_AT, 3),
            "rss_bytes": _resident_bytes(),
            "requests": self.answered,
            "server_errors": self.server_errors,
        }

    def watch_data_dir(self, path: Path) -> None:
        """Export the free and total bytes of ``path``'s file system from now on."""
        self.registry.register(DataDirCollector(path))

    def set_group(self, group: str, node: NodePort | None) -> None:
        """On a store: the node of ``group`` from now on (None: not hosted here any more)."""
        if isinstance(self._state, GroupStateCollector):
            self._state.set_node(group, node)

    def count(self, route: str, method: str, status: int) -> None:
        """Count a request answered before any work (a refusal): no latency to record, and
        keeping it out of the histogram keeps that one about the requests served."""
        self._counter(route, method, status).inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and record its latency."""
        self._counter(route, method, status).inc()
        self._histogram(route, method).observe(seconds)

    def render(self, cache_stats: Mapping[str, Any]) -> bytes:
        """The Prometheus text exposition, with ``cache_stats`` as the cache's current state
        (on a store: group id → that group's cache stats)."""
        self._state.cache_stats = cache_stats
        return generate_latest(self.registry)
