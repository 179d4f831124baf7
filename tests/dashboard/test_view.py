"""``cluster_view``: raw peer answers → the figures the page shows (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from raftcache.dashboard.poll import PeerAnswer
from raftcache.dashboard.view import cluster_view


def status(node_id: str, role: str, term: int, commit: int, applied: int, **extra: Any) -> Any:
    return {
        "id": node_id,
        "role": role,
        "term": term,
        "leader": extra.pop("leader", None),
        "commit_index": commit,
        "last_applied": applied,
        "members": extra.pop("members", ["n1", "n2", "n3"]),
        **extra,
    }


def stats(keys: int = 0, **raft: Any) -> Any:
    return {"cache": {"keys": keys, "bytes": 3 * keys, "hits": 1, "misses": 2}, "raft": raft}


def answer(node_id: str, st: Any, sts: Any = None, rtt: float | None = 1.0) -> PeerAnswer:
    return PeerAnswer(node_id, f"http://{node_id}:8001", st, sts, rtt if st else None)


def dead(node_id: str) -> PeerAnswer:
    return PeerAnswer(node_id, f"http://{node_id}:8001", None, None, None, "unreachable")


def by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in view["nodes"]}


def test_healthy_cluster_figures() -> None:
    leader_stats = stats(
        7, replication_latency_ms={"n2": 2.5, "n3": {"p50": 4.0}}, follower_lag={"n2": 0, "n3": 3}
    )
    view = cluster_view(
        [
            answer("n1", status("n1", "leader", 4, 100, 100, leader="n1"), leader_stats, 1.23456),
            answer("n2", status("n2", "follower", 4, 100, 98, leader="n1"), stats(7)),
            answer("n3", status("n3", "follower", 4, 97, 90, leader="n1"), stats(6)),
        ],
        self_id="n2",
    )
    assert view["self"] == "n2"
    assert view["leader"] == "n1"
    assert view["leaders"] == ["n1"]
    assert (view["term"], view["commit_index"], view["up"], view["total"]) == (4, 100, 3, 3)
    rows = by_id(view)
    # Lag: the leader's commit index minus the node's applied index.
    assert [rows[n]["lag"] for n in ("n1", "n2", "n3")] == [0, 2, 10]
    # The leader's view of each follower: replication latency (a number or a p50 summary)...
    assert rows["n2"]["replication_ms"] == 2.5
    assert rows["n3"]["replication_ms"] == 4.0
    assert rows["n1"]["replication_ms"] is None
    # ...and its match lag.
    assert rows["n3"]["match_lag"] == 3
    assert rows["n1"]["rtt_ms"] == 1.235
    assert (rows["n3"]["keys"], rows["n3"]["bytes"], rows["n3"]["hits"]) == (6, 18, 1)
    assert rows["n1"]["reachable"] is True
    assert rows["n1"]["error"] is None


def test_two_claimants_the_higher_term_leads_and_both_are_listed() -> None:
    view = cluster_view(
        [
            answer("n1", status("n1", "leader", 3, 50, 50)),
            answer("n2", status("n2", "leader", 4, 52, 52)),
            answer("n3", status("n3", "follower", 4, 52, 51)),
        ]
    )
    assert view["leader"] == "n2"
    assert view["leaders"] == ["n1", "n2"]
    assert view["term"] == 4
    assert view["commit_index"] == 52
    assert by_id(view)["n1"]["lag"] == 2


def test_no_leader_falls_back_to_the_highest_figures() -> None:
    view = cluster_view(
        [
            answer("n1", status("n1", "candidate", 9, 40, 40)),
            answer("n2", status("n2", "follower", 8, 42, 41)),
            dead("n3"),
        ]
    )
    assert view["leader"] is None
    assert view["leaders"] == []
    assert view["term"] == 9
    assert view["commit_index"] == 42
    assert view["up"] == 2
    row = by_id(view)["n3"]
    assert row["reachable"] is False
    assert row["role"] == "unreachable"
    assert row["error"] == "unreachable"
    assert row["lag"] is None


def test_nothing_answers() -> None:
    view = cluster_view([dead("n1"), dead("n2")])
    assert (view["leader"], view["term"], view["commit_index"], view["up"]) == (None, None, None, 0)
    assert [row["role"] for row in view["nodes"]] == ["unreachable", "unreachable"]


def test_junk_from_a_peer_gives_empty_figures_not_errors() -> None:
    junk_status = {
        "id": 7,
        "role": ["leader"],
        "term": "4",
        "leader": 1.5,
        "commit_index": True,
        "last_applied": None,
        "members": "n1,n2",
    }
    junk_stats = {"cache": [], "raft": {"replication_latency_ms": {"n1": float("nan")}}}
    view = cluster_view([answer("n1", junk_status, junk_stats)])
    row = by_id(view)["n1"]  # the configured id stands in for a non-string id
    assert row["role"] is None
    assert row["term"] is None
    assert row["leader"] is None
    assert row["commit_index"] is None
    assert row["lag"] is None
    assert row["members"] == []
    assert row["keys"] is None
    inf_stats = {"raft": {"replication_latency_ms": {"n2": float("inf")}}}
    view = cluster_view(
        [
            answer("n1", status("n1", "leader", 1, 1, 1), inf_stats),
            answer("n2", status("n2", "follower", 1, 1, 1)),
        ]
    )
    assert by_id(view)["n2"]["replication_ms"] is None


def test_members_without_a_configured_url_are_shown() -> None:
    members = ["n1", "n2", "n3", "n4"]
    view = cluster_view(
        [
            answer("n1", status("n1", "leader", 2, 9, 9, members=members)),
            answer("n2", status("n2", "follower", 2, 9, 9, members=members)),
            answer("n3", status("n3", "follower", 2, 9, 9)),
        ]
    )
    assert [row["id"] for row in view["nodes"]] == ["n1", "n2", "n3", "n4"]
    assert view["total"] == 4
    extra = by_id(view)["n4"]
    assert extra["url"] is None
    assert extra["reachable"] is False
    assert "no URL configured" in extra["error"]


# ---- stores hosting many groups: shapes of a real `raftcache cluster --nodes 4 --groups 4`'s
# /v1/status (routes_store._group_status), replicas placed as its bootstrap placed them.

SLOTS = {"g0": [0, 4095], "g1": [4096, 8191], "g2": [8192, 12287], "g3": [12288, 16383]}
PLACEMENT = {
    "g0": ["n1", "n2", "n3"],
    "g1": ["n1", "n2", "n4"],
    "g2": ["n1", "n3", "n4"],
    "g3": ["n2", "n3", "n4"],
}


def group_entry(
    gid: str, store: str, role: str, term: int, commit: int, applied: int, leader: str | None
) -> dict[str, Any]:
    if store not in PLACEMENT[gid]:
        return {
            "group": gid,
            "slots": SLOTS[gid],
            "hosted": False,
            **dict.fromkeys(("role", "leader", "term", "commit_index", "last_applied")),
            "members": PLACEMENT[gid],
        }
    return {
        "group": gid,
        "slots": SLOTS[gid],
        "hosted": True,
        "replica": store,
        "role": role,
        "leader": leader,
        "term": term,
        "commit_index": commit,
        "last_applied": applied,
        "members": PLACEMENT[gid],
    }


def store_status(store: str, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """A store's status: the one-group fields of its first hosted group, then the groups."""
    first = next(g for g in groups if g["hosted"])
    return {
        **status(
            store,
            first["role"],
            first["term"],
            first["commit_index"],
            first["last_applied"],
            leader=first["leader"],
            members=first["members"],
        ),
        "learners": [],
        "alarms": [],
        "sharding": {"groups": len(groups), "store": store},
        "groups": groups,
    }


#: group -> (leader store, term, leader's commit); every other replica a follower.
LEADERS = {"g0": ("n2", 3, 40), "g1": ("n4", 1, 12), "g2": ("n4", 2, 30), "g3": ("n3", 1, 7)}


def four_stores(
    applied: dict[tuple[str, str], int] | None = None,
    leaders: dict[str, tuple[str | None, int, int]] | None = None,
    follower_lag: dict[str, dict[str, int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each store's status; ``applied`` (group, store) → its applied index (default: the
    commit), ``follower_lag``: the leader's ``follower_lag`` of a group."""
    applied = applied or {}
    leaders = {**LEADERS, **(leaders or {})}
    statuses = {}
    for store in ("n1", "n2", "n3", "n4"):
        groups = []
        for gid, (leader, term, commit) in leaders.items():
            role = "leader" if store == leader else "follower"
            entry = group_entry(
                gid, store, role, term, commit, applied.get((gid, store), commit), leader
            )
            if role == "leader" and follower_lag and gid in follower_lag:
                entry["follower_lag"] = follower_lag[gid]
            groups.append(entry)
        statuses[store] = store_status(store, groups)
    return statuses


def groups_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["group"]: row for row in view["sharding"]["group_rows"]}


def replicas_of(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["store"]: r for r in group["replicas"]}


def test_a_one_group_cluster_has_no_sharding() -> None:
    view = cluster_view([answer("n1", status("n1", "leader", 1, 5, 5))])
    assert "sharding" not in view


def test_stores_groups_leaders_lag_and_balance() -> None:
    statuses = four_stores(
        applied={("g0", "n1"): 35, ("g2", "n1"): 29},
        follower_lag={"g0": {"n1": 5, "n3": 0}},
    )
    view = cluster_view([answer(s, st) for s, st in statuses.items()], self_id="n1")
    sharding = view["sharding"]
    assert (sharding["groups"], sharding["replicas"], sharding["leaderless"]) == (4, 12, [])
    assert sharding["commit_index"] == 40 + 12 + 30 + 7
    groups = groups_of(view)
    assert list(groups) == ["g0", "g1", "g2", "g3"]
    assert {g: (r["leader"], r["term"], r["commit_index"]) for g, r in groups.items()} == LEADERS
    assert groups["g0"]["slots"] == [0, 4095]
    assert groups["g0"]["leaders"] == ["n2"]
    g0 = replicas_of(groups["g0"])
    assert sorted(g0) == PLACEMENT["g0"]
    assert [g0[s]["role"] for s in ("n1", "n2", "n3")] == ["follower", "leader", "follower"]
    # Lag as on one group: the leader's commit index minus the replica's applied index...
    assert [g0[s]["lag"] for s in ("n1", "n2", "n3")] == [5, 0, 0]
    assert groups["g0"]["max_lag"] == 5
    assert replicas_of(groups["g2"])["n1"]["lag"] == 1
    # ...and the leader's match lag of each follower.
    assert g0["n1"]["match_lag"] == 5
    assert g0["n3"]["match_lag"] == 0
    assert replicas_of(groups["g1"])["n1"]["match_lag"] is None  # the leader gave none
    stores = {row["store"]: row for row in sharding["stores"]}
    assert {s: (r["replicas"], r["leads"]) for s, r in stores.items()} == {
        "n1": (3, 0),
        "n2": (3, 1),
        "n3": (3, 1),
        "n4": (3, 2),
    }
    assert stores["n1"]["groups"] == ["g0", "g1", "g2"]
    assert stores["n1"]["max_lag"] == 5
    assert stores["n4"]["max_lag"] == 0
    assert sum(r["replicas"] for r in stores.values()) == 4 * 3


def test_a_group_without_a_leader_is_flagged() -> None:
    statuses = four_stores(leaders={"g1": (None, 5, 12)})
    for store in ("n1", "n2", "n4"):  # the election of term 5 is under way
        entry = next(g for g in statuses[store]["groups"] if g["group"] == "g1")
        entry["role"] = "candidate" if store == "n4" else "follower"
    view = cluster_view([answer(s, st) for s, st in statuses.items()])
    sharding = view["sharding"]
    assert sharding["leaderless"] == ["g1"]
    g1 = groups_of(view)["g1"]
    assert (g1["leader"], g1["leader_replica"], g1["leaders"]) == (None, None, [])
    assert (g1["term"], g1["commit_index"]) == (5, 12)  # the highest the replicas report
    assert replicas_of(g1)["n4"]["role"] == "candidate"
    stores = {row["store"]: row for row in sharding["stores"]}
    assert sum(r["leads"] for r in stores.values()) == 3
    assert stores["n4"]["leads"] == 1  # g2 only


def test_an_unreachable_leader_store_is_named_by_its_followers() -> None:
    statuses = four_stores(applied={("g2", "n1"): 20})
    # g2's replica on n4 is a later incarnation: Raft names it n4.1.
    for store in ("n1", "n3"):
        entry = next(g for g in statuses[store]["groups"] if g["group"] == "g2")
        entry["leader"] = "n4.1"
        entry["members"] = ["n1", "n3", "n4.1"]
    answers = [answer(s, statuses[s]) for s in ("n1", "n2", "n3")] + [dead("n4")]
    view = cluster_view(answers)
    g2 = groups_of(view)["g2"]
    assert (g2["leader"], g2["leaders"]) == ("n4", [])
    assert view["sharding"]["leaderless"] == []
    n4 = replicas_of(g2)["n4"]
    assert (n4["role"], n4["lag"], n4["replica"]) == ("unreachable", None, None)
    # No leader's commit index: lag against the highest a replica reports, as on one group.
    assert g2["commit_index"] == 30
    assert replicas_of(g2)["n1"]["lag"] == 10
    stores = {row["store"]: row for row in view["sharding"]["stores"]}
    assert stores["n4"]["reachable"] is False
    assert stores["n4"]["replicas"] == 3  # from the others' member lists
    assert stores["n4"]["leads"] == 2  # g1 and g2, as their followers say
    assert view["sharding"]["commit_index"] == 40 + 12 + 30 + 7


def test_two_claimants_in_a_group_the_higher_term_leads() -> None:
    statuses = four_stores()
    stale = next(g for g in statuses["n1"]["groups"] if g["group"] == "g0")
    stale.update(role="leader", term=2, leader="n1", commit_index=38)
    view = cluster_view([answer(s, st) for s, st in statuses.items()])
    g0 = groups_of(view)["g0"]
    assert (g0["leader"], g0["leaders"], g0["term"]) == ("n2", ["n1", "n2"], 3)


def test_junk_group_entries_give_empty_figures_not_errors() -> None:
    junk = store_status("n1", [group_entry("g0", "n1", "leader", 1, 3, 3, "n1")])
    junk["groups"] += [
        "g1",
        {"group": 7},
        {"group": "g2", "hosted": True, "role": 1, "term": "2", "members": "n1", "slots": "x"},
    ]
    view = cluster_view([answer("n1", junk), answer("n2", {"sharding": [], "groups": {}})])
    groups = groups_of(view)
    assert list(groups) == ["g0", "g2"]
    g2 = groups["g2"]
    assert (g2["leader"], g2["term"], g2["slots"]) == (None, None, None)
    assert replicas_of(g2)["n1"]["role"] is None
    assert view["sharding"]["leaderless"] == ["g2"]


def test_quorum_margin_warns_when_one_more_failure_loses_it() -> None:
    up = [answer(n, status(n, "follower", 2, 9, 9, leader="n1")) for n in ("n1", "n2", "n3")]
    assert cluster_view(up)["quorum"] == {
        "voters": 3,
        "up": 3,
        "needed": 2,
        "tolerance": 1,
        "at_risk": False,
        "lost": False,
    }
    one_down = cluster_view([*up[:2], dead("n3")])["quorum"]
    assert (one_down["tolerance"], one_down["at_risk"], one_down["lost"]) == (0, True, False)
    two_down = cluster_view([up[0], dead("n2"), dead("n3")])["quorum"]
    assert (two_down["tolerance"], two_down["at_risk"], two_down["lost"]) == (-1, False, True)
    # Five voters, two down: still one failure to spare.
    five = ["n1", "n2", "n3", "n4", "n5"]
    rows = [answer(n, status(n, "follower", 2, 9, 9, members=five)) for n in five[:3]]
    view = cluster_view([*rows, dead("n4"), dead("n5")])
    assert (view["quorum"]["tolerance"], view["quorum"]["at_risk"]) == (0, True)


def test_memory_errors_version_uptime_and_reads_per_node_and_totals() -> None:
    def with_process(requests: int, errors: int, rss: int) -> Any:
        process = {
            "version": "0.1.0",
            "python": "3.11.9",
            "uptime_s": 12.5,
            "rss_bytes": rss,
            "requests": requests,
            "server_errors": errors,
        }
        return {**stats(4), "process": process}

    view = cluster_view(
        [
            answer("n1", status("n1", "leader", 2, 9, 9), with_process(10, 1, 50_000_000)),
            answer("n2", status("n2", "follower", 2, 9, 9), with_process(5, 0, 40_000_000)),
            answer("n3", status("n3", "follower", 2, 9, 9), stats(4)),  # an older node
            dead("n4"),
        ]
    )
    rows = by_id(view)
    assert (rows["n1"]["version"], rows["n1"]["uptime_s"], rows["n1"]["rss_bytes"]) == (
        "0.1.0",
        12.5,
        50_000_000,
    )
    assert (rows["n1"]["requests"], rows["n1"]["server_errors"]) == (10, 1)
    assert rows["n1"]["reads"] == 3  # hits + misses: what the page adds to the commit rate
    assert (rows["n3"]["version"], rows["n3"]["rss_bytes"], rows["n3"]["reads"]) == (None, None, 3)
    assert rows["n4"]["reads"] is None
    assert view["totals"] == {"reads": 9, "requests": 15, "server_errors": 1}
    junk = cluster_view([answer("n1", status("n1", "leader", 2, 9, 9), {"process": "x"})])
    assert junk["totals"] == {"reads": None, "requests": None, "server_errors": None}


def test_a_group_one_failure_from_losing_its_quorum_is_at_risk() -> None:
    statuses = four_stores()
    view = cluster_view([answer(s, st) for s, st in statuses.items()])
    assert (view["sharding"]["at_risk"], view["sharding"]["quorum_lost"]) == ([], [])
    assert groups_of(view)["g0"]["quorum"]["tolerance"] == 1
    # n1 does not answer: every group with a replica on it has one failure left.
    view = cluster_view([dead(s) if s == "n1" else answer(s, st) for s, st in statuses.items()])
    hosted_on_n1 = sorted(g for g, stores in PLACEMENT.items() if "n1" in stores)
    assert view["sharding"]["at_risk"] == hosted_on_n1
    assert "quorum" not in view  # a store's top-level figures are its first group's only
