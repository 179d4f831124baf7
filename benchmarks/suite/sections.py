"""The sections of a run: HTTP floor, raftcache vs etcd over HTTP, 5 nodes, restart/memory.

Rule: systems compared in one table run side by side — both clusters are up together and
their points alternate (raftcache first on even repetitions, etcd first on odd ones), so a
neighbour's burst of load hits both rather than whichever happened to run then.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.peers.etcd import EtcdCluster
from benchmarks.suite import httpc
from benchmarks.suite.machine import rss_mb
from benchmarks.suite.points import run_once, summarize
from benchmarks.suite.procs import ProcessGroup, free_port, wait_port
from benchmarks.suite.raftcache_cluster import RaftcacheCluster, key_name
from benchmarks.suite.settings import RAFT_SERIES, Settings
from benchmarks.suite.workloads import WORKLOADS, HttpCluster, Shape
from benchmarks.suite.wrk import WrkJob

Tick = Callable[[str], None]


def shape_of(settings: Settings) -> Shape:
    return Shape(settings.keys, settings.value_size, settings.read_ratio)


def floor_section(
    group: ProcessGroup, python: str, workdir: Path, settings: Settings, tick: Tick
) -> list[dict[str, Any]]:
    """The bare aiohttp server answering a fixed 200, at each connection count."""
    port = free_port()
    argv = [python, "-m", "benchmarks.peers.floor_server", str(port)]
    proc = group.start(argv, log_path=workdir / "floor.log")
    points = []
    try:
        wait_port(port, 30, proc)
        for conns in settings.connections:
            job = WrkJob(f"http://127.0.0.1:{port}", "floor.lua", (), conns)
            reps = []
            for _ in range(settings.reps):
                tick(f"floor c={conns}")
                reps.append(run_once(job, {"server": proc.pid}, settings))
            points.append(summarize("aiohttp-floor", "fixed-200", conns, reps))
    finally:
        group.stop(proc)
    return points


def side_by_side(
    clusters: list[HttpCluster],
    workloads: tuple[str, ...],
    connections: tuple[int, ...],
    settings: Settings,
    tick: Tick,
) -> list[dict[str, Any]]:
    """Every (workload, connections) point of every cluster, alternating systems per rep."""
    shape = shape_of(settings)
    points = []
    for workload in workloads:
        for conns in connections:
            reps: dict[str, list[dict[str, Any]]] = {c.label: [] for c in clusters}
            for rep in range(settings.reps):
                order = clusters if rep % 2 == 0 else list(reversed(clusters))
                for cluster in order:
                    tick(f"{cluster.label} {workload} c={conns}")
                    job = cluster.job(workload, conns, shape)
                    reps[cluster.label].append(run_once(job, cluster.pids(), settings))
            points += [summarize(c.label, workload, conns, reps[c.label]) for c in clusters]
    return points


def http_section(
    group: ProcessGroup,
    python: str,
    workdir: Path,
    settings: Settings,
    tick: Tick,
    nodes: int = 3,
    workloads: tuple[str, ...] = WORKLOADS,
    connections: tuple[int, ...] | None = None,
) -> list[dict[str, Any]]:
    """raftcache and etcd clusters of ``nodes`` members, all up, loaded in turn (with the
    extra raftcache series of ``settings.raft_series``, e.g. the stream transport)."""
    rcs = [RaftcacheCluster(group, python, workdir, nodes, tag=f"rc{nodes}")]
    rcs += [
        RaftcacheCluster(group, python, workdir, nodes, f"rc{nodes}{name}", name, RAFT_SERIES[name])
        for name in settings.raft_series
    ]
    etcd = EtcdCluster(group, workdir, nodes)
    try:
        for rc in rcs:
            rc.start()
        etcd.start()
        clusters: list[HttpCluster] = [*rcs, etcd]
        for cluster in clusters:
            cluster.prefill(shape_of(settings))
        return side_by_side(
            clusters, workloads, connections or settings.connections, settings, tick
        )
    finally:
        for proc in [*(p for rc in rcs for p in rc.procs.values()), *etcd.procs.values()]:
            group.stop(proc)


def _wait_serving(cluster: RaftcacheCluster, nid: str, key: str, index: int) -> float:
    """Seconds from now until ``nid`` serves ``key`` (stale read) with applied ≥ ``index``."""
    t0 = time.monotonic()
    url = cluster.url(nid)
    while time.monotonic() - t0 < 300:
        try:
            status, _ = httpc.request("GET", f"{url}/v1/keys/{key}?consistency=stale", timeout_s=5)
            if status == 200 and int(str(cluster.status(nid)["last_applied"])) >= index:
                return time.monotonic() - t0
        except (OSError, RuntimeError):
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{nid} did not serve {key} within 300 s")


def _restart(cluster: RaftcacheCluster, group: ProcessGroup, nid: str, key: str) -> dict[str, Any]:
    index = int(str(cluster.status(cluster.leader)["commit_index"]))
    _wait_serving(cluster, nid, key, index)  # the node has everything before it stops
    group.stop(cluster.procs[nid], grace_s=30)
    t0 = time.monotonic()
    proc = cluster.start_node(nid)
    wait_port(cluster.ports[nid], 120, proc)
    listening = time.monotonic() - t0
    serving = listening + _wait_serving(cluster, nid, key, index)
    return {"listening_s": listening, "serving_s": serving, "rss_mb": rss_mb(proc.pid)}


def restart_section(
    group: ProcessGroup, python: str, workdir: Path, settings: Settings, tick: Tick
) -> dict[str, Any]:
    """Load N keys × 100 B, read each node's RSS, restart a follower (log replay, snapshot)."""
    cluster = RaftcacheCluster(group, python, workdir, 3, tag="mem")
    try:
        cluster.start()
        rss_empty = {nid: rss_mb(p.pid) for nid, p in cluster.procs.items()}
        tick(f"restart: loading {settings.restart_keys:,} keys")
        t0 = time.monotonic()
        cluster.load_keys(settings.restart_keys, settings.value_size)
        load_s = time.monotonic() - t0
        last_key = key_name(settings.restart_keys - 1)
        follower = next(n for n in cluster.ids if n != cluster.leader)
        for nid in cluster.ids:
            _wait_serving(cluster, nid, last_key, 0)
        rss_loaded = {nid: rss_mb(p.pid) for nid, p in cluster.procs.items()}
        tick("restart: follower from its log")
        from_log = _restart(cluster, group, follower, last_key)
        # Every node snapshots and compacts its log: the RSS then is the state alone. With
        # 1,000 sets per entry the whole load is ~1,000 entries, far below the entry-count
        # threshold of automatic snapshots, so until now each node held all of it in memory.
        for nid in cluster.ids:
            httpc.json_call("POST", f"{cluster.url(nid)}/v1/snapshot", {}, timeout_s=300)
        rss_compacted = {nid: rss_mb(p.pid) for nid, p in cluster.procs.items()}
        tick("restart: follower from a snapshot")
        from_snapshot = _restart(cluster, group, follower, last_key)
        return {
            "keys": settings.restart_keys,
            "value_size": settings.value_size,
            "load_s": load_s,
            "load_keys_per_s": settings.restart_keys / load_s,
            "leader": cluster.leader,
            "rss_empty_mb": rss_empty,
            "rss_loaded_mb": rss_loaded,
            "rss_compacted_mb": rss_compacted,
            "restarted": follower,
            "restart_from_log": from_log,
            "restart_from_snapshot": from_snapshot,
        }
    finally:
        for proc in cluster.procs.values():
            group.stop(proc, grace_s=30)
