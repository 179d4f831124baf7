"""NodeStats: counters and latency figures a Raft node keeps about itself (for /v1/stats).

Rule: cheap to update on the hot path (dict increments, an exponentially weighted average),
read only when someone asks.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from raftcache.network.metrics import LatencyHistogram

_EWMA_WEIGHT = 0.2

#: Upper bounds (seconds) of the fsync histogram: a battery-backed cache to a saturated disk.
FSYNC_BUCKETS = (
    0.0001,
    0.00025,
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
)


class NodeStats:
    def __init__(self) -> None:
        self.rpcs_sent: defaultdict[str, int] = defaultdict(int)
        self.rpcs_failed: defaultdict[str, int] = defaultdict(int)
        self.rpcs_received: defaultdict[str, int] = defaultdict(int)
        self.replication_latency_ms: dict[str, float] = {}
        #: Durations of ``Storage.sync`` (observed by the persist thread, or the loop).
        self.fsync = LatencyHistogram(FSYNC_BUCKETS)

    def rpc_sent(self, kind: str) -> None:
        self.rpcs_sent[kind] += 1

    def rpc_failed(self, kind: str) -> None:
        self.rpcs_failed[kind] += 1

    def rpc_received(self, kind: str) -> None:
        self.rpcs_received[kind] += 1

    def replication_rtt(self, peer: str, ms: float) -> None:
        old = self.replication_latency_ms.get(peer)
        self.replication_latency_ms[peer] = ms if old is None else old + _EWMA_WEIGHT * (ms - old)

    def as_dict(
        self,
        *,
        elections: int,
        state_transitions: int,
        follower_lag: dict[str, int],
        voters_reachable: int | None = None,
        disk_full: bool = False,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "elections": elections,
            "state_transitions": state_transitions,
            "rpcs_sent": dict(sorted(self.rpcs_sent.items())),
            "rpcs_failed": dict(sorted(self.rpcs_failed.items())),
            "rpcs_received": dict(sorted(self.rpcs_received.items())),
            "replication_latency_ms": {
                p: round(v, 3) for p, v in sorted(self.replication_latency_ms.items())
            },
            "follower_lag": follower_lag,
            "disk_full": disk_full,
            "fsync_seconds": self.fsync.snapshot(),
        }
        if voters_reachable is not None:  # a leader's view only
            out["voters_reachable"] = voters_reachable
        return out
