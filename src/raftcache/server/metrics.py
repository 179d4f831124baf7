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

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftcache.server.ports import NodePort

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLES = ("follower", "candidate", "leader")
# Stats that only ever grow are exported as counters; every other number is a gauge.
_MONOTONIC = frozenset(
    {
        "hits",
        "misses",
        "evictions",
        "expirations",
        "elections",
        "rpcs_sent",
        "rpcs_received",
        "rejected",
    }
)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _family(prefix: str, name: str, help_text: str, labels: list[str]) -> Metric:
    if name in _MONOTONIC:
        return CounterMetricFamily(f"{prefix}_{name}", help_text, labels=labels)
    return GaugeMetricFamily(f"{prefix}_{name}", help_text, labels=labels)


def stats_families(prefix: str, stats: Mapping[str, Any]) -> Iterator[Metric]:
    """Turn a stats dict into metric families: numbers directly, ``{label: number}`` maps as
    one family labelled ``key``, deeper maps flattened into that label as ``a.b``."""
    for name in sorted(stats):
        value = stats[name]
        help_text = f"{prefix.replace('_', ' ')} {name}"
        number = _number(value)
        if number is not None:
            family = _family(prefix, name, help_text, [])
            family.add_metric([], number)  # type: ignore[attr-defined]
            yield family
        elif isinstance(value, Mapping):
            family = _family(prefix, name, help_text, ["key"])
            for label, item in _flatten(value):
                family.add_metric([label], item)  # type: ignore[attr-defined]
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
        yield from stats_families("raftcache_raft", node.raft_stats())
        yield from stats_families("raftcache_cache", self.cache_stats)
        if self._admission_state is not None:
            yield from stats_families("raftcache_admission", self._admission_state())


def grouped_stats_families(
    prefix: str, per_group: Mapping[str, Mapping[str, Any]]
) -> Iterator[Metric]:
    """``stats_families`` over several groups' stats: one family per name, each sample
    labelled ``group`` (then ``key`` for a map, as there)."""
    families: dict[tuple[str, bool], Metric] = {}
    for gid, stats in per_group.items():
        for name in sorted(stats):
            value = stats[name]
            help_text = f"{prefix.replace('_', ' ')} {name}"
            number = _number(value)
            if number is not None:
                family = families.get((name, False))
                if family is None:
                    family = families[(name, False)] = _family(prefix, name, help_text, ["group"])
                family.add_metric([gid], number)  # type: ignore[attr-defined]
            elif isinstance(value, Mapping):
                family = families.get((name, True))
                if family is None:
                    labels = ["group", "key"]
                    family = families[(name, True)] = _family(prefix, name, help_text, labels)
                for label, item in _flatten(value):
                    family.add_metric([gid, label], item)  # type: ignore[attr-defined]
    for key in sorted(families):
        yield families[key]


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
        yield from grouped_stats_families(
            "raftcache_raft", {gid: node.raft_stats() for gid, node in hosted}
        )
        yield from grouped_stats_families("raftcache_cache", self.cache_stats)
        if self._admission_state is not None:
            yield from stats_families("raftcache_admission", self._admission_state())


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
        # Label children by (route, method[, code]): ``labels()`` validates and locks on every
        # call; the label sets are bounded (route patterns × methods × codes), so caching the
        # children is safe and saves that work on every request.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def _counter(self, route: str, method: str, status: int) -> Any:
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
