"""The dashboard's cluster view: the peers' raw answers reduced to flat, validated figures.

Rule: pure — no I/O, no clock. Every figure is taken from a peer's JSON only if it has the
expected type (a peer of another version, or a hostile one, yields ``None`` figures, not an
exception), and the leader is judged like ``raftcache monitor`` judges it: among the nodes that
claim the role, the one with the highest term (two claimants happen for a moment during a term
change; both are listed in ``leaders`` so a split brain would be visible). Lag is how far a node's
applied index trails the leader's commit index. Rates (ops/s) need two successive views and are
the browser's business. Divergence alarms (docs/divergence.md) are replicated, so every node
reports the same set: ``alarms`` is their union over the nodes that answered (one per node id),
and a row is ``diverged`` when an alarm names it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raftcache.dashboard.poll import PeerAnswer

#: Cache counters copied from ``/v1/stats`` into each row.
CACHE_FIELDS = ("keys", "bytes", "hits", "misses", "evictions", "expirations")


def cluster_view(answers: Sequence[PeerAnswer], *, self_id: str | None = None) -> dict[str, Any]:
    """The JSON body of ``/dashboard/cluster.json``.

    Args:
        answers: one poll of every configured peer (``ClusterPoller.poll``).
        self_id: the id of the node serving the dashboard, shown as "served by".

    Returns:
        ``{"self", "leader", "leaders", "term", "commit_index", "up", "total", "nodes"}`` where
        ``nodes`` has one row per configured peer, then one per member that some peer reports
        but nobody configured a URL for (added with ``POST /v1/members``), sorted by id.
    """
    up = [a for a in answers if a.status is not None]
    claimants = [a for a in up if _status(a).get("role") == "leader"]
    leader = max(claimants, key=lambda a: _int(_status(a).get("term")) or 0, default=None)
    leader_status = _status(leader) if leader is not None else {}
    commit = _int(leader_status.get("commit_index"))
    if commit is None:
        commit = _max(_int(_status(a).get("commit_index")) for a in up)
    leader_raft = _raft(leader.stats) if leader is not None else {}
    rows = [_row(a, commit, leader_raft) for a in answers]
    known = {row["id"] for row in rows} | {a.node_id for a in answers}
    for member in sorted(_members(up) - known):
        rows.append(_missing_row(member))
    term = _int(leader_status.get("term"))
    alarms = _alarms(up)
    for row in rows:
        row["diverged"] = row["id"] in alarms
    return {
        "self": self_id,
        "leader": _str(leader_status.get("id")) if leader is not None else None,
        "leaders": sorted(_str(_status(a).get("id")) or a.node_id for a in claimants),
        "term": term if term is not None else _max(_int(_status(a).get("term")) for a in up),
        "commit_index": commit,
        "up": len(up),
        "total": len(rows),
        "nodes": sorted(rows, key=lambda row: str(row["id"])),
        "alarms": [alarms[node] for node in sorted(alarms)],
    }


def _alarms(answers: Iterable[PeerAnswer]) -> dict[str, dict[str, Any]]:
    """The divergence alarms the nodes report, by node id (validated; the first one wins)."""
    found: dict[str, dict[str, Any]] = {}
    for answer in answers:
        alarms = _status(answer).get("alarms")
        for alarm in alarms if isinstance(alarms, list) else []:
            if not isinstance(alarm, Mapping):
                continue
            node, reason = _str(alarm.get("node")), _str(alarm.get("reason"))
            if node is not None and node not in found:
                found[node] = {
                    "node": node,
                    "reason": reason or "",
                    "index": _int(alarm.get("index")),
                }
    return found


def _row(answer: PeerAnswer, commit: int | None, leader_raft: Mapping[str, Any]) -> dict[str, Any]:
    status = _status(answer)
    node_id = _str(status.get("id")) or answer.node_id
    applied = _int(status.get("last_applied"))
    cache = answer.stats.get("cache") if answer.stats is not None else None
    cache = cache if isinstance(cache, Mapping) else {}
    replication = leader_raft.get("replication_latency_ms")
    match_lag = leader_raft.get("follower_lag")
    return {
        "id": node_id,
        "configured_id": answer.node_id,
        "url": answer.url,
        "reachable": answer.status is not None,
        "error": answer.error,
        "role": _str(status.get("role")) or ("unreachable" if answer.status is None else None),
        "term": _int(status.get("term")),
        "leader": _str(status.get("leader")),
        "commit_index": _int(status.get("commit_index")),
        "last_applied": applied,
        "lag": max(commit - applied, 0) if commit is not None and applied is not None else None,
        "match_lag": _int(match_lag.get(node_id)) if isinstance(match_lag, Mapping) else None,
        "replication_ms": (
            _latency(replication.get(node_id)) if isinstance(replication, Mapping) else None
        ),
        "rtt_ms": None if answer.rtt_ms is None else round(answer.rtt_ms, 3),
        "members": _str_list(status.get("members")),
        **{name: _int(cache.get(name)) for name in CACHE_FIELDS},
    }


def _missing_row(node_id: str) -> dict[str, Any]:
    """A member that peers report but that no URL was configured for: shown, not polled."""
    return {
        "id": node_id,
        "configured_id": None,
        "url": None,
        "reachable": False,
        "error": "no URL configured for this member on the serving node",
        "role": "unknown",
        **dict.fromkeys(
            (
                "term",
                "leader",
                "commit_index",
                "last_applied",
                "lag",
                "match_lag",
                "replication_ms",
                "rtt_ms",
            )
        ),
        "members": [],
        **dict.fromkeys(CACHE_FIELDS),
    }


def _status(answer: PeerAnswer | None) -> Mapping[str, Any]:
    return answer.status if answer is not None and answer.status is not None else {}


def _raft(stats: Mapping[str, Any] | None) -> Mapping[str, Any]:
    raft = stats.get("raft") if stats is not None else None
    return raft if isinstance(raft, Mapping) else {}


def _members(answers: Iterable[PeerAnswer]) -> set[str]:
    found: set[str] = set()
    for answer in answers:
        found.update(_str_list(_status(answer).get("members")))
    return found


def _latency(value: Any) -> float | None:
    """A latency given as a number, or as a summary mapping (p50 / mean / last)."""
    if isinstance(value, Mapping):
        for key in ("p50", "mean", "avg", "last"):
            if _float(value.get(key)) is not None:
                return _float(value.get(key))
        return None
    return _float(value)


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return round(float(value), 3)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _str_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _max(values: Iterable[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None
