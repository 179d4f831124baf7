"""Stores of many Raft groups (``raftcache serve --groups G``) for the scaling and memory runs.

Rule: a sharded cluster is started exactly as an operator would start it — the same
``raftcache serve`` processes as ``RaftcacheCluster``, with ``--groups G --replicas RF`` — and
is measured only once its leaders have settled: every group led by its preferred store (the
first store of its placement in ``<data-dir>/SHARDS``), as every replica of it reports, for a
second in a row. A one-group cluster (no ``--groups``, today's node) is its own baseline and
answers the same questions (``group_leaders``, ``group_keys``) with one group ``g0``. Pinning
to cores goes through ``taskset -a -p`` on every thread of a running store.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.suite import httpc
from benchmarks.suite.procs import ProcessGroup
from benchmarks.suite.raftcache_cluster import RaftcacheCluster, key_name
from raftcache.slots import key_group


class StoreCluster(RaftcacheCluster):
    """``stores`` processes hosting replicas of ``groups`` data groups (``replicas`` each)."""

    def __init__(
        self,
        group: ProcessGroup,
        python: str,
        workdir: Path,
        stores: int = 3,
        groups: int = 2,
        replicas: int = 3,
        tag: str = "st",
        extra_args: Sequence[str] = (),
    ) -> None:
        shape = ["--groups", str(groups), "--replicas", str(replicas)]
        super().__init__(group, python, workdir, stores, tag=tag, extra_args=[*shape, *extra_args])
        self.groups = groups
        self.label = f"raftcache-{stores}x{groups}g"

    def wait_leader(self, timeout_s: float) -> str:
        """Wait until every group has an agreed leader; returns (and keeps) g0's."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                leaders = self.reported_leaders()
            except (OSError, RuntimeError):
                leaders = {}
            if len(leaders) == self.groups and all(leaders.values()):
                self.leader = str(leaders["g0"])
                return self.leader
            time.sleep(0.2)
        raise TimeoutError(f"{self.label}: not every group has a leader after {timeout_s} s")

    def placement(self) -> dict[str, list[str]]:
        """Group id → its stores, preferred leader first, as the stores recorded them."""
        shards = json.loads((self.workdir / f"{self.tag}-{self.ids[0]}" / "SHARDS").read_text())
        placement: dict[str, list[str]] = shards["placement"]
        return placement

    def preferred_leaders(self) -> dict[str, str]:
        return {g: stores[0] for g, stores in self.placement().items()}

    def reported_leaders(self) -> dict[str, str | None]:
        """Group id → the store every hosted replica names as leader and which says it leads,
        or None while they disagree (or no replica knows one)."""
        named: dict[str, set[object]] = {}
        leading: dict[str, set[str]] = {}
        for nid in self.procs:
            for g in self.status(nid).get("groups") or []:  # type: ignore[attr-defined]
                if not g.get("hosted"):
                    continue
                named.setdefault(g["group"], set()).add(g.get("leader"))
                if g.get("role") == "leader":
                    leading.setdefault(g["group"], set()).add(nid)
        out: dict[str, str | None] = {}
        for gid, names in named.items():
            leader = next(iter(names)) if len(names) == 1 else None
            ok = isinstance(leader, str) and leading.get(gid) == {leader}
            out[gid] = leader if ok and isinstance(leader, str) else None
        return out

    def wait_settled(self, timeout_s: float = 30.0, stable_s: float = 1.0) -> dict[str, Any]:
        """Wait until every group has one agreed leader and the stores lead within one of
        each other, for ``stable_s`` seconds — the balance the meta group's placement driver
        keeps (it records whoever leads as the preferred leader, so the bootstrap's preferred
        stores no longer say where leaders end up).

        Returns what was seen: ``leaders`` (group → store), ``settled`` (False when the time
        ran out first: the leaders are then measured as they are, and the report says so),
        ``waited_s``, and ``preferred`` (the bootstrap's, for the report).
        """
        preferred = self.preferred_leaders()
        t0 = time.monotonic()
        since: float | None = None
        leaders: dict[str, str | None] = {}

        def balanced(seen: dict[str, str | None]) -> bool:
            if set(seen) != set(preferred) or None in seen.values():
                return False
            counts = [sum(1 for s in seen.values() if s == nid) for nid in self.ids]
            return max(counts) - min(counts) <= 1

        while time.monotonic() - t0 < timeout_s:
            try:
                leaders = self.reported_leaders()
            except (OSError, RuntimeError):
                leaders = {}
            if balanced(leaders):
                since = since if since is not None else time.monotonic()
                if time.monotonic() - since >= stable_s:
                    break
            else:
                since = None
            time.sleep(0.2)
        return {
            "leaders": leaders,
            "preferred": preferred,
            "settled": balanced(leaders),
            "waited_s": round(time.monotonic() - t0, 2),
        }


def group_count(cluster: RaftcacheCluster) -> int:
    return cluster.groups if isinstance(cluster, StoreCluster) else 1


def group_leaders(cluster: RaftcacheCluster) -> dict[str, str]:
    """Group id → leader store id now (a one-group cluster: ``g0`` → its leader)."""
    if not isinstance(cluster, StoreCluster):
        return {"g0": cluster.wait_leader(30.0)}
    leaders = cluster.reported_leaders()
    missing = sorted(g for g, s in leaders.items() if s is None)
    if missing:
        raise RuntimeError(f"{cluster.label}: no agreed leader for {', '.join(missing)}")
    return {g: s for g, s in leaders.items() if s is not None}


def group_keys(count: int, groups: int) -> dict[str, list[int]]:
    """Group id → the indexes of keys ``key_name(0..count-1)`` that group owns."""
    out: dict[str, list[int]] = {f"g{g}": [] for g in range(groups)}
    for i in range(count):
        out[f"g{key_group(key_name(i), groups)}"].append(i)
    return out


def load_grouped(
    cluster: RaftcacheCluster,
    count: int,
    value_size: int,
    batch: int = 1000,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Write keys 0..count-1 with ``POST /v1/batch``, ``batch`` sets per entry, each batch
    holding keys of one group only (a batch spanning groups is refused) and sent to that
    group's leader store. Returns the number of keys per group."""
    value = base64.b64encode(b"v" * value_size).decode()
    leaders = group_leaders(cluster)
    keys = group_keys(count, group_count(cluster))
    jobs = [
        (cluster.url(leaders[gid]), idx[start : start + batch])
        for gid, idx in keys.items()
        for start in range(0, len(idx), batch)
    ]
    # Interleave the groups' batches so every leader is busy from the start.
    jobs.sort(key=lambda job: job[1][0])

    def one(job: tuple[str, list[int]]) -> None:
        url, idx = job
        ops = [{"op": "set", "key": key_name(i), "value": value} for i in idx]
        httpc.json_call("POST", f"{url}/v1/batch", {"ops": ops}, timeout_s=60.0)
        if progress is not None:
            progress(len(idx))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, jobs))
    return {gid: len(idx) for gid, idx in keys.items()}


def wait_applied(cluster: RaftcacheCluster, timeout_s: float = 120.0) -> float:
    """Seconds until every hosted replica of every group has applied its leader's commit
    index as it was when this was called."""
    t0 = time.monotonic()
    targets: dict[str, int] = {}
    for gid, leader in group_leaders(cluster).items():
        targets[gid] = _replica_status(cluster, leader, gid)["commit_index"]
    while time.monotonic() - t0 < timeout_s:
        behind = [
            (nid, gid)
            for nid in cluster.procs
            for gid, status in _hosted(cluster, nid).items()
            if status["last_applied"] < targets[gid]
        ]
        if not behind:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"{cluster.label}: replicas not caught up after {timeout_s} s")


def _hosted(cluster: RaftcacheCluster, nid: str) -> dict[str, dict[str, Any]]:
    """Group id → (commit_index, last_applied, role) of each replica ``nid`` hosts."""
    status = cluster.status(nid)
    groups = status.get("groups")
    if not isinstance(groups, list):
        return {"g0": dict(status)}
    return {g["group"]: g for g in groups if g.get("hosted")}


def _replica_status(cluster: RaftcacheCluster, nid: str, gid: str) -> dict[str, Any]:
    return _hosted(cluster, nid)[gid]


def snapshot_all(cluster: RaftcacheCluster) -> None:
    """``POST /v1/snapshot`` on every replica of every group (``?group=`` on a store)."""
    for nid in cluster.procs:
        for gid in _hosted(cluster, nid):
            query = f"?group={gid}" if isinstance(cluster, StoreCluster) else ""
            httpc.json_call("POST", f"{cluster.url(nid)}/v1/snapshot{query}", {}, timeout_s=300)


def store_keys(cluster: RaftcacheCluster, nid: str) -> int:
    """Keys the replicas on store ``nid`` hold (``/v1/stats``, summed over its groups)."""
    stats = httpc.json_call("GET", f"{cluster.url(nid)}/v1/stats")
    return int(stats["cache"]["keys"])


# --- pinning -----------------------------------------------------------------------------


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def core_plan(
    stores: Sequence[str], leads: Mapping[str, int], cores: Sequence[int]
) -> tuple[dict[str, int], list[int] | None]:
    """Which core each store runs on, and the cores left to the load generator (None: it
    floats over every core).

    With more cores than stores, each store has a core of its own and wrk the rest. With
    fewer, the stores leading the most groups get a core each and the others share the last
    one (a leader's core is the one its writes need), and wrk floats: there is no core to
    spare for it.
    """
    if len(cores) > len(stores):
        return {s: cores[i + 1] for i, s in enumerate(stores)}, [
            c for c in cores if c not in cores[1 : len(stores) + 1]
        ]
    ranked = sorted(stores, key=lambda s: (-leads.get(s, 0), stores.index(s)))
    return {s: cores[min(i, len(cores) - 1)] for i, s in enumerate(ranked)}, None


def set_affinity(pid: int, cores: Sequence[int]) -> None:
    """Pin every thread of ``pid`` to ``cores`` (threads it starts later inherit it)."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", ",".join(str(c) for c in cores), str(pid)],
        check=True,
        capture_output=True,
        timeout=10,
    )
