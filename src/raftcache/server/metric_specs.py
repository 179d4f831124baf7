"""The catalogue of the stats-derived Prometheus series: one spec per ``/v1/stats`` figure.

Rule: a figure of ``raft_stats()``, the cache's stats or the admission counters reaches
``/metrics`` only through a ``StatSpec`` here, which fixes its name, its type, its HELP text, the
label of a per-peer (or per-RPC, per-reason) map and the factor to base units (milliseconds
become seconds). Names follow Prometheus: base units in the name (``_seconds``, ``_bytes``),
counters end in ``_total`` (prometheus-client adds it to the family name given here), no ratio
that a query can derive. A figure without a spec is still exported, as a gauge with a generic
HELP text, so that a new figure is never silently lost — ``tests/server/test_metrics_exposition``
fails until it gets a spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ADMISSION_STATS", "CACHE_STATS", "RAFT_STATS", "StatSpec"]

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class StatSpec:
    """How one stats figure is exported.

    Attributes:
        name: the family name (a counter's without ``_total``: the client library adds it);
            empty: the figure is left out of ``/metrics`` on purpose (``help`` says why).
        kind: counter, gauge, or histogram (a ``{"count", "sum", "buckets"}`` snapshot).
        help: the HELP text.
        label: for a ``{label value: number}`` map, the label its keys become.
        scale: factor from the figure's unit to the metric's base unit.
    """

    name: str
    kind: Kind
    help: str
    label: str | None = None
    scale: float = 1.0


RAFT_STATS: dict[str, StatSpec] = {
    "elections": StatSpec(
        "raftcache_raft_elections", "counter", "Elections this node started as a candidate."
    ),
    "state_transitions": StatSpec(
        "raftcache_raft_state_transitions",
        "counter",
        "Role changes of this node (follower, candidate, leader).",
    ),
    "rpcs_sent": StatSpec(
        "raftcache_raft_rpcs_sent", "counter", "Raft RPCs this node sent, by RPC type.", "rpc"
    ),
    "rpcs_failed": StatSpec(
        "raftcache_raft_rpcs_failed",
        "counter",
        "Raft RPCs this node sent that failed or timed out, by RPC type.",
        "rpc",
    ),
    "rpcs_received": StatSpec(
        "raftcache_raft_rpcs_received",
        "counter",
        "Raft RPCs this node received, by RPC type.",
        "rpc",
    ),
    "replication_latency_ms": StatSpec(
        "raftcache_raft_replication_latency_seconds",
        "gauge",
        "Leader only: AppendEntries round trip to each follower (moving average).",
        "peer",
        0.001,
    ),
    "follower_lag": StatSpec(
        "raftcache_raft_follower_lag",
        "gauge",
        "Leader only: log entries each follower's log trails the leader's last index.",
        "peer",
    ),
    "voters_reachable": StatSpec(
        "raftcache_raft_voters_reachable",
        "gauge",
        "Leader only: voters (the leader included) heard from within an election timeout; "
        "at floor(members / 2) + 1, one more failure loses the quorum.",
    ),
    "disk_full": StatSpec(
        "raftcache_raft_disk_full",
        "gauge",
        "1 while this node refuses writes because its disk is full.",
    ),
    "fsync_seconds": StatSpec(
        "raftcache_raft_fsync_duration_seconds",
        "histogram",
        "Time of one fsync of the Raft log and state (one fsync covers a batch of writes).",
    ),
}

CACHE_STATS: dict[str, StatSpec] = {
    "keys": StatSpec("raftcache_cache_keys", "gauge", "Keys held."),
    "bytes": StatSpec("raftcache_cache_bytes", "gauge", "Bytes of the keys and values held."),
    "bytes_peak": StatSpec(
        "raftcache_cache_bytes_peak", "gauge", "Highest raftcache_cache_bytes so far."
    ),
    "max_keys": StatSpec(
        "raftcache_cache_max_keys", "gauge", "LRU bound on the number of keys (--max-keys)."
    ),
    "max_bytes": StatSpec(
        "raftcache_cache_max_bytes", "gauge", "LRU bound on keys and values bytes (--max-bytes)."
    ),
    "hits": StatSpec("raftcache_cache_hits", "counter", "Reads served here that found the key."),
    "misses": StatSpec(
        "raftcache_cache_misses", "counter", "Reads served here that did not find the key."
    ),
    "hit_rate": StatSpec("", "gauge", "derived: rate(hits) / (rate(hits) + rate(misses))"),
    "evictions": StatSpec(
        "raftcache_cache_evictions", "counter", "Keys evicted by the LRU bounds."
    ),
    "expirations": StatSpec(
        "raftcache_cache_expirations", "counter", "Keys removed because their TTL ran out."
    ),
    "sessions": StatSpec(
        "raftcache_cache_sessions", "gauge", "Client sessions held for exactly-once writes."
    ),
    "restore_staged_bytes": StatSpec(
        "raftcache_cache_restore_staged_bytes",
        "gauge",
        "Bytes of a restore staged but not committed yet.",
    ),
    "divergence_alarms": StatSpec(
        "raftcache_cache_divergence_alarms",
        "gauge",
        "Replicas found diverged (docs/divergence.md); above 0 needs an operator.",
    ),
    "digest_checks": StatSpec(
        "raftcache_cache_digest_checks", "counter", "State digests computed for divergence checks."
    ),
    "digest_local_faults": StatSpec(
        "raftcache_cache_digest_local_faults",
        "gauge",
        "Inconsistencies this replica found in its own snapshot or digest.",
    ),
}

ADMISSION_STATS: dict[str, StatSpec] = {
    "rejected": StatSpec(
        "raftcache_admission_rejected",
        "counter",
        "Client requests refused with 503 by admission control, by the bound they hit.",
        "reason",
    ),
    "inflight_requests": StatSpec(
        "raftcache_admission_inflight_requests", "gauge", "Client requests being served now."
    ),
    "pending_writes": StatSpec(
        "raftcache_admission_pending_writes", "gauge", "Writes being served now."
    ),
    "inflight_bytes": StatSpec(
        "raftcache_admission_inflight_bytes",
        "gauge",
        "Request body bytes held in memory now.",
    ),
    "max_inflight_requests": StatSpec(
        "raftcache_admission_max_inflight_requests",
        "gauge",
        "Bound on client requests served at once (--max-inflight-requests).",
    ),
    "max_pending_writes": StatSpec(
        "raftcache_admission_max_pending_writes",
        "gauge",
        "Bound on writes served at once (--max-pending-writes).",
    ),
    "max_inflight_bytes": StatSpec(
        "raftcache_admission_max_inflight_bytes",
        "gauge",
        "Bound on request body bytes held at once (--max-inflight-bytes).",
    ),
}
