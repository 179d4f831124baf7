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

Health: ``quorum`` says how many more voters may fail (the leader's members against the rows
that answered; ``at_risk`` when none may), each row carries its node's ``process`` figures
(version, uptime, resident memory, requests and 5xx answers) and ``reads`` (hits + misses), and
``totals`` sums the counters the page turns into rates (ops/s counts reads as well as commits).

Stores hosting many Raft groups (their status has ``sharding``) add ``sharding``: one row per
group — its leader judged the same way among the stores whose replica claims the role, else the
leader its replicas name; each replica's lag against that leader's commit index, and the
leader's match lag (its ``follower_lag``), its quorum margin — and one row per store with its
replicas and the groups it leads, so the balance shows; ``at_risk`` and ``quorum_lost`` list
the groups one failure from losing their quorum, or without one. A store's top-level figures
are those of its first hosted group only, which differs from store to store: the page reads
``sharding`` instead. A one-group cluster's view has no ``sharding`` key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raftcache.dashboard.poll import PeerAnswer
from raftcache.network.groups import store_of

#: Cache counters copied from ``/v1/stats`` into each row.
CACHE_FIELDS = ("keys", "bytes", "hits", "misses", "evictions", "expirations")
#: Counters of ``/v1/stats``'s ``process`` copied into each row (``rss_bytes`` may be None).
PROCESS_COUNTERS = ("rss_bytes", "requests", "server_errors")
#: Counters summed over the nodes that answered, for the page's rates (reads/s, errors/s).
TOTALS = ("reads", "requests", "server_errors")


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
    sharded = any(isinstance(_status(a).get("sharding"), Mapping) for a in up)
    members = _members(up)
    if sharded:  # stores report their replicas' ids (``<store>.<n>``): one row per store
        members = {store_of(m) for m in members}
    for member in sorted(members - known):
        rows.append(_missing_row(member))
    term = _int(leader_status.get("term"))
    alarms = _alarms(up)
    for row in rows:
        row["diverged"] = row["id"] in alarms
    voters = set(_str_list(leader_status.get("members"))) or members
    view: dict[str, Any] = {
        "self": self_id,
        "leader": _str(leader_status.get("id")) if leader is not None else None,
        "leaders": sorted(_str(_status(a).get("id")) or a.node_id for a in claimants),
        "term": term if term is not None else _max(_int(_status(a).get("term")) for a in up),
        "commit_index": commit,
        "up": len(up),
        "total": len(rows),
        "nodes": sorted(rows, key=lambda row: str(row["id"])),
        "alarms": [alarms[node] for node in sorted(alarms)],
        "totals": _totals(rows),
    }
    if not sharded:
        view["quorum"] = quorum_margin(
            len(voters), sum(1 for row in rows if row["reachable"] and row["id"] in voters)
        )
    if sharded:
        view["sharding"] = sharding_view(answers)
    return view


def quorum_margin(voters: int, up: int) -> dict[str, Any]:
    """How many more voters may fail before the quorum is lost: ``{"voters", "up", "needed",
    "tolerance", "at_risk", "lost"}``; ``at_risk``: one more failure loses it."""
    needed = voters // 2 + 1
    tolerance = up - needed
    return {
        "voters": voters,
        "up": up,
        "needed": needed,
        "tolerance": tolerance,
        "at_risk": voters > 0 and tolerance == 0,
        "lost": voters > 0 and tolerance < 0,
    }


def _totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, int | None]:
    """Each of ``TOTALS`` summed over the rows that report it (None when none does)."""
    out: dict[str, int | None] = {}
    for name in TOTALS:
        values = [row[name] for row in rows if isinstance(row.get(name), int)]
        out[name] = sum(values) if values else None
    return out


def sharding_view(answers: Sequence[PeerAnswer]) -> dict[str, Any]:
    """The groups and the stores of a cluster of stores (``view["sharding"]``).

    Returns:
        ``{"groups", "replicas", "leaderless", "commit_index", "group_rows", "stores"}``:
        ``groups`` the count the stores report, ``replicas`` how many replicas the rows list,
        ``leaderless`` the groups with no leader known, ``commit_index`` the sum of the groups'
        commit indexes (None while one is unknown: the page's throughput), ``group_rows`` one
        per group sorted by number, and ``stores`` one per store sorted by id.
    """
    stores: dict[str, PeerAnswer] = {}
    for answer in answers:
        stores.setdefault(_store_id(answer), answer)
    entries: dict[str, dict[str, Mapping[str, Any]]] = {}  # group -> store -> its entry
    counts: list[int] = []
    for store, answer in stores.items():
        status = _status(answer)
        sharding = status.get("sharding")
        if isinstance(sharding, Mapping) and _int(sharding.get("groups")) is not None:
            counts.append(sharding["groups"])
        groups = status.get("groups")
        for entry in groups if isinstance(groups, list) else []:
            gid = _str(entry.get("group")) if isinstance(entry, Mapping) else None
            if gid is not None:
                entries.setdefault(gid, {}).setdefault(store, entry)
    group_rows = [_group_row(gid, entries[gid], stores) for gid in sorted(entries, key=_group_key)]
    leads: dict[str, int] = {}
    hosted: dict[str, list[str]] = {}
    lags: dict[str, list[int]] = {}
    for group in group_rows:
        if group["leader"] is not None:
            leads[group["leader"]] = leads.get(group["leader"], 0) + 1
        for replica in group["replicas"]:
            hosted.setdefault(replica["store"], []).append(group["group"])
            if replica["lag"] is not None:
                lags.setdefault(replica["store"], []).append(replica["lag"])
    store_rows = [
        {
            "store": store,
            "reachable": store in stores and stores[store].status is not None,
            "replicas": len(hosted.get(store, [])),
            "leads": leads.get(store, 0),
            "groups": hosted.get(store, []),
            "max_lag": max(lags[store]) if store in lags else None,
        }
        for store in sorted(set(stores) | set(hosted))
    ]
    commits = [group["commit_index"] for group in group_rows]
    return {
        "groups": max(counts) if counts else len(group_rows),
        "replicas": sum(len(group["replicas"]) for group in group_rows),
        "leaderless": [group["group"] for group in group_rows if group["leader"] is None],
        "at_risk": [g["group"] for g in group_rows if g["quorum"]["at_risk"]],
        "quorum_lost": [g["group"] for g in group_rows if g["quorum"]["lost"]],
        "commit_index": (sum(commits) if commits and all(c is not None for c in commits) else None),
        "group_rows": group_rows,
        "stores": store_rows,
    }


def _group_row(
    gid: str, by_store: Mapping[str, Mapping[str, Any]], stores: Mapping[str, PeerAnswer]
) -> dict[str, Any]:
    """One group: its leader, term, commit index and every replica, from the stores' entries."""
    hosted = {s: e for s, e in by_store.items() if e.get("hosted") is True}
    replica_ids = {s: _str(e.get("replica")) or s for s, e in hosted.items()}
    claimants = [s for s, e in hosted.items() if e.get("role") == "leader"]
    leader = max(claimants, key=lambda s: _int(hosted[s].get("term")) or 0, default=None)
    if leader is None:  # the leader's store did not answer: the leader its replicas name
        named = [
            (_int(e.get("term")) or 0, _str(e.get("leader")))
            for e in hosted.values()
            if _str(e.get("leader")) is not None
        ]
        if named:
            leader_replica = max(named, key=lambda n: n[0])[1] or ""
            owner = [s for s, r in replica_ids.items() if r == leader_replica]
            leader = owner[0] if owner else _replica_store(leader_replica)
    leader_entry = hosted.get(leader, {}) if leader is not None else {}
    commit = _int(leader_entry.get("commit_index"))
    if commit is None:
        commit = _max(_int(e.get("commit_index")) for e in hosted.values())
    term = _int(leader_entry.get("term"))
    if term is None:
        term = _max(_int(e.get("term")) for e in hosted.values())
    follower_lag = leader_entry.get("follower_lag")
    follower_lag = follower_lag if isinstance(follower_lag, Mapping) else {}
    # Raft's members (replica ids) as the leader sees them, else as any replica does; only when
    # no replica answered, the static placement of a store that holds none.
    sources = [leader_entry, *hosted.values(), *by_store.values()]
    members = next((_str_list(e.get("members")) for e in sources if e.get("members")), [])
    member_stores = {_replica_store(m) for m in members}
    replicas = []
    for store in sorted(set(hosted) | member_stores):
        entry = hosted.get(store)
        if entry is None:
            answer = stores.get(store)
            role = "unreachable" if answer is not None and answer.status is None else "unknown"
            replicas.append(_missing_replica(store, role))
            continue
        applied = _int(entry.get("last_applied"))
        replica = replica_ids[store]
        replicas.append(
            {
                "store": store,
                "replica": replica,
                "role": _str(entry.get("role")),
                "term": _int(entry.get("term")),
                "leader": _str(entry.get("leader")),
                "commit_index": _int(entry.get("commit_index")),
                "last_applied": applied,
                "lag": max(commit - applied, 0)
                if commit is not None and applied is not None
                else None,
                "match_lag": 0 if store == leader else _int(follower_lag.get(replica)),
            }
        )
    slots = by_store[next(iter(by_store))].get("slots")
    lags = [r["lag"] for r in replicas if r["lag"] is not None]
    return {
        "group": gid,
        "slots": slots
        if isinstance(slots, list) and all(_int(v) is not None for v in slots)
        else None,
        "leader": leader,
        "leader_replica": replica_ids.get(leader) if leader is not None else None,
        "leaders": sorted(claimants),
        "term": term,
        "commit_index": commit,
        "max_lag": max(lags) if lags else None,
        "replicas": replicas,
        "quorum": quorum_margin(
            len(members) or len(replicas),
            sum(1 for r in replicas if r["role"] not in ("unreachable", "unknown")),
        ),
    }


def _missing_replica(store: str, role: str) -> dict[str, Any]:
    """A member of a group whose store did not answer (or was not polled): named, no figures."""
    return {
        "store": store,
        "replica": None,
        "role": role,
        **dict.fromkeys(("term", "leader", "commit_index", "last_applied", "lag", "match_lag")),
    }


def _store_id(answer: PeerAnswer) -> str:
    return _str(_status(answer).get("id")) or answer.node_id


def _replica_store(replica_id: str) -> str:
    """The store of a replica id: ``<store>`` or ``<store>.<n>`` (``network.groups.store_of``)."""
    return replica_id.partition(".")[0]


def _group_key(gid: str) -> tuple[int, str]:
    """``g2`` before ``g10``."""
    number = gid[1:]
    return (int(number), gid) if gid[:1] == "g" and number.isdigit() else (1 << 62, gid)


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
    process = answer.stats.get("process") if answer.stats is not None else None
    process = process if isinstance(process, Mapping) else {}
    hits, misses = _int(cache.get("hits")), _int(cache.get("misses"))
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
        "reads": hits + misses if hits is not None and misses is not None else None,
        "version": _str(process.get("version")),
        "uptime_s": _float(process.get("uptime_s")),
        **{name: _int(process.get(name)) for name in PROCESS_COUNTERS},
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
        **dict.fromkeys(("reads", "version", "uptime_s", *PROCESS_COUNTERS)),
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
