"""Transport metrics: per RPC type and per peer, counts, errors by kind, latency, bytes, breakers.

Rule: a ``NetworkMetrics`` is a passive sink. Transports and wrappers push what they observe
(``record``, ``record_bytes``, ``breaker_changed``); readers take a ``snapshot()`` (a plain,
JSON-ready dict for ``/v1/stats``) or export it to Prometheus with
``raftcache.network.prometheus.NetworkMetricsCollector``. Nothing here reads a clock: the
caller measures durations with its own (injected) clock and passes seconds.

Two directions are kept apart: ``outbound`` (RPCs this node sent: ``peer`` is the target) and
``inbound`` (RPCs this node served: ``peer`` is the sender named in the request, ``"?"`` when
the body could not be decoded). Bytes are counted on the wire (after compression) and as body
(before compression), so the compression ratio is visible.

Limits: at most ``max_peers`` distinct peer labels per direction and RPC type (a cluster has a
handful); further peers are folded into ``"other"`` so that a misbehaving sender cannot grow
memory or Prometheus label cardinality without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DEFAULT_BUCKETS",
    "Direction",
    "LatencyHistogram",
    "NetworkMetrics",
    "RpcStats",
    "rpc_name",
]

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the latency buckets: sub-millisecond loopback up to timeouts."""

Direction = Literal["outbound", "inbound"]


def rpc_name(message: Any) -> str:
    """The RPC label of a request or response object: ``"AppendEntries"`` etc."""
    name = type(message).__name__
    return name.removesuffix("Request").removesuffix("Response")


class LatencyHistogram:
    """Counts of observations per bucket (the last slot is ``+Inf``), their sum and count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out

    def snapshot(self) -> dict[str, Any]:
        buckets = {("+Inf" if b == float("inf") else f"{b:g}"): n for b, n in self.cumulative()}
        return {"count": self.count, "sum": self.sum, "buckets": buckets}


@dataclass(slots=True)
class RpcStats:
    """What happened to one RPC type with one peer, in one direction.

    ``calls`` counts calls that reached the transport (their latency is in ``latency``);
    ``errors`` counts failures by ``NetworkError.kind`` (a breaker's fast failures included,
    which never reached the transport and have no latency).
    """

    latency: LatencyHistogram
    calls: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0
    body_bytes_sent: int = 0
    body_bytes_received: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "latency_s": self.latency.snapshot(),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "body_bytes_sent": self.body_bytes_sent,
            "body_bytes_received": self.body_bytes_received,
        }


def error_kind(error: BaseException) -> str:
    """The metrics label of a failure: the ``NetworkError.kind``, else the exception's class."""
    kind = getattr(error, "kind", None)
    if isinstance(kind, str):
        return kind
    if isinstance(error, TimeoutError):
        return "timeout"
    return type(error).__name__


class NetworkMetrics:
    """Counters and histograms of one node's transport (see the module rule).

    Args:
        buckets: latency bucket upper bounds, in seconds, increasing.
        max_peers: distinct peer labels kept per direction and RPC type.

    Example:
        >>> m = NetworkMetrics()
        >>> m.record("outbound", "AppendEntries", "n2", 0.003)
        >>> m.snapshot()["outbound"]["AppendEntries"]["n2"]["ok"]
        1
    """

    OTHER = "other"

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS, max_peers: int = 256) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("buckets must be non-empty, increasing and distinct")
        self.buckets = tuple(buckets)
        self.max_peers = max_peers
        self._stats: dict[tuple[Direction, str], dict[str, RpcStats]] = {}
        self._breakers: dict[str, str] = {}
        self._breaker_transitions: dict[tuple[str, str], int] = {}

    # -- recording ------------------------------------------------------------------------------

    def rpc(self, direction: Direction, rpc: str, peer: str) -> RpcStats:
        """The stats of ``rpc`` with ``peer`` in ``direction`` (created on first use)."""
        by_peer = self._stats.get((direction, rpc))
        if by_peer is None:
            by_peer = self._stats[(direction, rpc)] = {}
        stats = by_peer.get(peer)
        if stats is None:
            if len(by_peer) >= self.max_peers and peer != self.OTHER:
                return self.rpc(direction, rpc, self.OTHER)
            stats = by_peer[peer] = RpcStats(LatencyHistogram(self.buckets))
        return stats

    def record(
        self,
        direction: Direction,
        rpc: str,
        peer: str,
        seconds: float,
        error: BaseException | None = None,
    ) -> None:
        """One call that reached the transport and ended after ``seconds`` (failed: ``error``)."""
        stats = self.rpc(direction, rpc, peer)
        stats.calls += 1
        stats.latency.observe(seconds)
        if error is None:
            stats.ok += 1
        else:
            kind = error_kind(error)
            stats.errors[kind] = stats.errors.get(kind, 0) + 1

    def record_rejected(
        self, direction: Direction, rpc: str, peer: str, error: BaseException
    ) -> None:
        """A call failed before reaching the transport (a breaker's fast failure)."""
        stats = self.rpc(direction, rpc, peer)
        kind = error_kind(error)
        stats.errors[kind] = stats.errors.get(kind, 0) + 1

    def record_bytes(
        self,
        direction: Direction,
        rpc: str,
        peer: str,
        *,
        sent: int = 0,
        received: int = 0,
        body_sent: int | None = None,
        body_received: int | None = None,
    ) -> None:
        """Bytes on the wire (``sent``/``received``) and before compression (``body_*``,
        default: the same as on the wire)."""
        stats = self.rpc(direction, rpc, peer)
        stats.bytes_sent += sent
        stats.bytes_received += received
        stats.body_bytes_sent += sent if body_sent is None else body_sent
        stats.body_bytes_received += received if body_received is None else body_received

    def breaker_changed(self, peer: str, state: str, *, transition: bool = True) -> None:
        """A circuit breaker towards ``peer`` entered ``state`` (closed, open, half_open);
        ``transition=False`` only records the state (a breaker just created)."""
        self._breakers[peer] = state
        if not transition:
            return
        key = (peer, state)
        self._breaker_transitions[key] = self._breaker_transitions.get(key, 0) + 1

    # -- reading --------------------------------------------------------------------------------

    def items(self) -> Iterator[tuple[Direction, str, str, RpcStats]]:
        """Every ``(direction, rpc, peer, stats)``, sorted."""
        for direction, rpc in sorted(self._stats):
            by_peer = self._stats[(direction, rpc)]
            for peer in sorted(by_peer):
                yield direction, rpc, peer, by_peer[peer]

    def breaker_states(self) -> dict[str, str]:
        """The last known breaker state per peer (peers never seen by a breaker are absent)."""
        return dict(sorted(self._breakers.items()))

    def breaker_transitions(self) -> dict[tuple[str, str], int]:
        """How many times the breaker towards each peer entered each state."""
        return dict(sorted(self._breaker_transitions.items()))

    def totals(self, direction: Direction) -> dict[str, int]:
        """Sums over every RPC type and peer of one direction (calls, ok, errors, bytes)."""
        out = {"calls": 0, "ok": 0, "errors": 0, "bytes_sent": 0, "bytes_received": 0}
        for d, _, _, s in self.items():
            if d == direction:
                out["calls"] += s.calls
                out["ok"] += s.ok
                out["errors"] += sum(s.errors.values())
                out["bytes_sent"] += s.bytes_sent
                out["bytes_received"] += s.bytes_received
        return out

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy: ``{"outbound": {rpc: {peer: {...}}}, "inbound": ..., "breakers":
        {peer: {"state", "opened"}}}``."""
        out: dict[str, Any] = {"outbound": {}, "inbound": {}, "breakers": {}}
        for direction, rpc, peer, stats in self.items():
            out[direction].setdefault(rpc, {})[peer] = stats.snapshot()
        for peer, state in self.breaker_states().items():
            opened = self._breaker_transitions.get((peer, "open"), 0)
            out["breakers"][peer] = {"state": state, "opened": opened}
        return out
