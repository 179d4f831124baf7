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
