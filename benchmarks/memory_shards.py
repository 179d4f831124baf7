"""``make bench-memory-shards``: RSS per store with the keyspace split over groups (≤ 3 min).

Rule: two clusters up side by side in one run, loaded with the same keys — ``BENCH_SHARD_KEYS``
(1,000,000) × 100 B, ``POST /v1/batch`` with 1,000 sets per entry as the suite's ``restart``
section loads them, each batch holding one group's keys and sent to that group's leader:

- ``one-group``: 3 ``raftcache serve`` nodes of today's one-group cluster (every node holds
  every key);
- ``sharded``: 6 stores, ``--groups 2 --replicas 3``, so each store hosts one replica of one of
  the two groups and should hold about half the keys.

Each process's RSS (``VmRSS`` of ``/proc/<pid>/status``) is read empty, once every replica has
applied the whole load, and again after ``POST /v1/snapshot`` on every replica (the log
compacted: the state alone). The keys each store holds (``/v1/stats``) are read too, so the
report shows the split is what it should be. Results go to ``results/memory-shards.{json,md}``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.scaling import header
from benchmarks.suite.machine import machine_info, rss_mb, source_info
from benchmarks.suite.procs import ProcessGroup, install_signal_handlers
from benchmarks.suite.raftcache_cluster import RaftcacheCluster
from benchmarks.suite.stores import (
    StoreCluster,
    group_leaders,
    load_grouped,
    snapshot_all,
    store_keys,
    wait_applied,
)

VALUE_SIZE = 100


def _rss(cluster: RaftcacheCluster) -> dict[str, float]:
    return {nid: round(rss_mb(p.pid), 1) for nid, p in cluster.procs.items()}


def _hosted_groups(cluster: RaftcacheCluster) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for nid in cluster.ids:
        groups = cluster.status(nid).get("groups")
        if isinstance(groups, list):
            out[nid] = [g["group"] for g in groups if g.get("hosted")]
        else:
            out[nid] = ["g0"]
    return out


def measure(group: ProcessGroup, python: str, work: Path, keys: int) -> dict[str, Any]:
    one = RaftcacheCluster(group, python, work, 3, tag="one")
    sharded = StoreCluster(group, python, work, stores=6, groups=2, replicas=3, tag="shard")
    clusters: dict[str, RaftcacheCluster] = {"one-group": one, "sharded": sharded}
    out: dict[str, Any] = {"keys": keys, "value_size": VALUE_SIZE, "clusters": {}}
    try:
        one.start()
        sharded.start()
        settle = sharded.wait_settled()
        for name, cluster in clusters.items():
            out["clusters"][name] = {
                "label": cluster.label,
                "leaders": group_leaders(cluster),
                "hosted": _hosted_groups(cluster),
                "rss_empty_mb": _rss(cluster),
            }
        out["clusters"]["sharded"]["settle"] = settle
        for name, cluster in clusters.items():
            print(f"… loading {keys:,} keys into {name}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            per_group = load_grouped(cluster, keys, VALUE_SIZE, batch=1000)
            load_s = time.monotonic() - t0
            caught_up = wait_applied(cluster)
            c = out["clusters"][name]
            c.update(
                keys_per_group=per_group,
                load_s=round(load_s, 2),
                load_keys_per_s=round(keys / load_s),
                caught_up_s=round(caught_up, 2),
            )
        for name, cluster in clusters.items():
            c = out["clusters"][name]
            c["rss_loaded_mb"] = _rss(cluster)
            c["keys_held"] = {nid: store_keys(cluster, nid) for nid in cluster.ids}
        for name, cluster in clusters.items():
            print(f"… snapshots on every replica of {name}", file=sys.stderr, flush=True)
            snapshot_all(cluster)
        for name, cluster in clusters.items():
            out["clusters"][name]["rss_compacted_mb"] = _rss(cluster)
        return out
    finally:
        for cluster in clusters.values():
            for proc in cluster.procs.values():
                group.stop(proc, grace_s=30)


def _mean(values: dict[str, float]) -> float:
    return statistics.fmean(values.values())


def markdown(result: dict[str, Any]) -> list[str]:
    one, sh = result["clusters"]["one-group"], result["clusters"]["sharded"]
    lines = [
        f"## RSS per store: {result['keys']:,} keys × {result['value_size']} B, 6 stores of "
        "2 groups (replication 3) vs 3 one-group nodes",
        "",
        "Both clusters up side by side, loaded with the same keys (`POST /v1/batch`, 1,000 sets "
        "per entry, each batch one group's keys to its leader). RSS = `VmRSS`, MiB; compacted = "
        "after `POST /v1/snapshot` on every replica.",
        "",
        "| cluster | process | groups hosted | keys held | RSS empty | RSS loaded "
        "| RSS compacted |",
        "|---|---|---|--:|--:|--:|--:|",
    ]
    for name, c in (("3 one-group nodes", one), ("6 stores, G=2, RF 3", sh)):
        for nid in sorted(c["rss_loaded_mb"]):
            lines.append(
                f"| {name} | {nid} | {' '.join(c['hosted'][nid])} | {c['keys_held'][nid]:,} "
                f"| {c['rss_empty_mb'][nid]:.0f} | {c['rss_loaded_mb'][nid]:.0f} "
                f"| {c['rss_compacted_mb'][nid]:.0f} |"
            )
    ratios = []
    for field in ("rss_empty_mb", "rss_loaded_mb", "rss_compacted_mb"):
        a, b = _mean(sh[field]), _mean(one[field])
        ratios.append(f"{field.split('_')[1]} {a:.0f} vs {b:.0f} MiB = {a / b:.2f} ×")
    added = [
        (_mean(sh[f]) - _mean(sh["rss_empty_mb"])) / (_mean(one[f]) - _mean(one["rss_empty_mb"]))
        for f in ("rss_loaded_mb", "rss_compacted_mb")
    ]
    keys_share = _mean({k: float(v) for k, v in sh["keys_held"].items()}) / result["keys"]
    lines += [
        "",
        "Mean RSS per process, store of G=2 vs one-group node: " + "; ".join(ratios) + ".",
        f"Above the empty process: loaded {added[0]:.2f} ×, compacted {added[1]:.2f} ×; a store "
        f"holds {100 * keys_share:.1f}% of the keys on average.",
        f"Load: one-group {one['load_s']:.1f} s ({one['load_keys_per_s']:,} keys/s), sharded "
        f"{sh['load_s']:.1f} s ({sh['load_keys_per_s']:,} keys/s); leaders: sharded "
        f"{sh['leaders']}, one-group {one['leaders']}.",
        f"Run time: {result['elapsed_s']:.0f} s.",
        "",
    ]
    return lines


def main() -> int:
    install_signal_handlers()
    keys = int(os.environ.get("BENCH_SHARD_KEYS", "1000000"))
    out_dir = Path(os.environ.get("BENCH_OUT", "benchmarks/results"))
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = {**machine_info(sys.executable), "source": source_info()}
    work = Path(tempfile.mkdtemp(prefix="raftcache-memshards-"))
    t0 = time.monotonic()
    try:
        with ProcessGroup(grace_s=30) as group:
            result = measure(group, sys.executable, work, keys)
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: every started process was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - t0, 1)
    md = "\n".join(
        ["# raftcache memory over data groups", "", *header(machine, date), *markdown(result)]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"date": date, "machine": machine, "memory_shards": result}
    (out_dir / "memory-shards.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out_dir / "memory-shards.md").write_text(md)
    print(md)
    print(f"written: {out_dir}/memory-shards.json, memory-shards.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
