"""The ``scaling`` section: durable writes over G = 1, 2, 4 data groups on 3 stores, pinned.

Rule: each G is a fresh cluster of 3 ``raftcache serve`` processes (durable, fsync'd) with
replication 3, so every store hosts every group; G = 1 is today's one-group node (no
``--groups``), so its figures are comparable with the side-by-side table. A cluster is
measured once its leaders have settled on their preferred stores (spread evenly), its 10,000
keys written once, and each store pinned to a core (``stores.core_plan``). One load generator
as everywhere else — wrk with a Lua script, 100-byte PUTs over 10,000 keys — in two client
paths:

- ``direct``: each group's keys go to its leader's store (one wrk thread per group, its
  connections an equal share), as a client that routes by slot does. At G = 1 this is exactly
  the side-by-side ``write`` point (``raftcache.lua``, 2 threads, → the leader);
- ``any``: every key to every store (one wrk thread per store): a store that does not lead the
  key's group forwards it to the leader's, as a plain client sees it.

The figure that matters on a machine with few cores is **ops per CPU-second** (writes/s divided
by the CPU the 3 stores used over the measured window, utime + stime from ``/proc``): it stays
flat as G grows if a group costs nothing beyond its share of the work. Writes/s grows with G
only where the leaders' stores have cores of their own. The ``direct`` point is also taken
unpinned (every store and wrk floating over all cores, as the side-by-side table runs): at
G = 1 it is the side-by-side point itself, and it tells what the pinning costs on few cores.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.suite import httpc
from benchmarks.suite.machine import cpu_seconds
from benchmarks.suite.points import run_once, summarize
from benchmarks.suite.procs import ProcessGroup
from benchmarks.suite.raftcache_cluster import RaftcacheCluster
from benchmarks.suite.settings import Settings
from benchmarks.suite.stores import (
    StoreCluster,
    core_plan,
    group_keys,
    group_leaders,
    load_grouped,
    set_affinity,
    usable_cores,
)
from benchmarks.suite.workloads import Shape
from benchmarks.suite.wrk import WrkJob

Tick = Callable[[str], None]
STORES = 3
REPLICAS = 3
IDLE_SAMPLE_S = 3.0


def point_count(settings: Settings) -> int:
    """wrk points of the section (for the progress bar)."""
    return 3 * len(settings.scaling_groups) * settings.scaling_reps


def _plan_job(
    cluster: RaftcacheCluster,
    lines: list[tuple[str, list[int]]],
    per_thread: int,
    value_size: int,
    plan_dir: Path,
    name: str,
    cores: list[int] | None,
) -> WrkJob:
    """A ``scaling.lua`` run: one wrk thread per (store, keys) line, ``per_thread`` conns each."""
    path = plan_dir / f"plan-{name}.txt"
    path.write_text(
        "".join(f"127.0.0.1 {cluster.ports[nid]} {' '.join(map(str, idx))}\n" for nid, idx in lines)
    )
    return WrkJob(
        cluster.url(lines[0][0]),
        "scaling.lua",
        (str(value_size),),
        per_thread * len(lines),
        threads_max=len(lines),
        env={"BENCH_PLAN": str(path)},
        cores=cores or (),
    )


def _counters(cluster: RaftcacheCluster) -> dict[str, float]:
    """Requests the stores forwarded so far (``raftcache_http_forwarded_total``, every group)
    and the AppendEntries they sent (``raftcache_network_rpcs_total``, outbound)."""
    total = {"forwarded": 0.0, "append_entries": 0.0}
    for nid in cluster.procs:
        status, body = httpc.request("GET", f"{cluster.url(nid)}/metrics")
        if status != 200:
            continue
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("raftcache_http_forwarded_total"):
                total["forwarded"] += float(line.rsplit(" ", 1)[1])
            elif (
                line.startswith("raftcache_network_rpcs_total{")
                and 'direction="outbound"' in line
                and 'rpc="AppendEntries"' in line
            ):
                total["append_entries"] += float(line.rsplit(" ", 1)[1])
    return total


def _read_into(out: list[dict[str, float]], cluster: RaftcacheCluster) -> None:
    out.append(_counters(cluster))


def _idle_cpu(pids: dict[str, int]) -> dict[str, float]:
    """% of one core each store uses with no client load (tickers, heartbeats, persist)."""
    before = {n: cpu_seconds(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(IDLE_SAMPLE_S)
    elapsed = time.monotonic() - t0
    return {n: 100 * (cpu_seconds(p) - before[n]) / elapsed for n, p in pids.items()}


def _measure_groups(
    group: ProcessGroup,
    python: str,
    workdir: Path,
    settings: Settings,
    tick: Tick,
    groups: int,
) -> dict[str, Any]:
    """One cluster of ``groups`` groups: settle, prefill, pin, then each client path."""
    shape = Shape(settings.keys, settings.value_size, settings.read_ratio)
    if groups == 1:
        cluster: RaftcacheCluster = RaftcacheCluster(group, python, workdir, STORES, tag="sc1")
    else:
        cluster = StoreCluster(group, python, workdir, STORES, groups, REPLICAS, tag=f"sc{groups}")
    point_settings = dataclasses.replace(
        settings,
        duration_s=settings.scaling_duration_s,
        warmup_s=settings.scaling_warmup_s,
        idle_wait_max_s=min(settings.idle_wait_max_s, 3.0),
    )
    out: dict[str, Any] = {"groups": groups, "stores": STORES, "replicas": REPLICAS}
    try:
        t0 = time.monotonic()
        cluster.start()
        out["settle"] = (
            cluster.wait_settled()
            if isinstance(cluster, StoreCluster)
            else {"settled": True, "leaders": {"g0": cluster.leader}}
        )
        load_grouped(cluster, shape.keys, shape.value_size, batch=500)
        out["ready_s"] = round(time.monotonic() - t0, 2)
        leaders = group_leaders(cluster)
        leads = {nid: sum(1 for s in leaders.values() if s == nid) for nid in cluster.ids}
        pids = {nid: cluster.procs[nid].pid for nid in cluster.ids}
        out["leaders"], out["leads"] = leaders, leads
        out["idle_cpu"] = _idle_cpu(pids)
        cores = usable_cores()
        pin, wrk_cores = core_plan(cluster.ids, leads, cores)
        out["cores"], out["wrk_cores"] = pin, wrk_cores
        keys = group_keys(shape.keys, groups)
        plan_dir = Path(tempfile.mkdtemp(prefix=f"plans-g{groups}-", dir=workdir))
        conns = settings.scaling_connections
        direct = (
            dataclasses.replace(cluster.job("write", conns, shape), cores=wrk_cores or ())
            if groups == 1
            else _plan_job(
                cluster,
                [(leaders[g], keys[g]) for g in sorted(keys, key=lambda g: int(g[1:]))],
                conns // groups,
                shape.value_size,
                plan_dir,
                "direct",
                wrk_cores,
            )
        )
        every = list(range(shape.keys))
        anyst = _plan_job(
            cluster,
            [(nid, every) for nid in cluster.ids],
            conns // STORES,
            shape.value_size,
            plan_dir,
            "any",
            wrk_cores,
        )
        runs: list[tuple[str, WrkJob, bool]] = [
            ("direct", direct, True),
            ("any", anyst, True),
            ("direct", dataclasses.replace(direct, cores=()), False),
        ]
        points = []
        for path, job, pinned in runs:
            for nid, pid in pids.items():
                set_affinity(pid, [pin[nid]] if pinned else cores)
            reps = []
            for _ in range(settings.scaling_reps):
                tick(f"scaling G={groups} {path}{'' if pinned else ' unpinned'}")
                start: list[dict[str, float]] = []
                rep = run_once(job, pids, point_settings, partial(_read_into, start, cluster))
                end = _counters(cluster)
                rep.update({name: end[name] - start[0][name] for name in end})
                reps.append(rep)
            label = f"raftcache-{STORES}x{groups}g"
            point = summarize(label, f"write-{path}", job.connections, reps)
            requests = sum(r["requests"] for r in reps)
            point.update(
                groups=groups,
                path=path,
                pinned=pinned,
                forwarded_share=sum(r["forwarded"] for r in reps) / requests if requests else 0.0,
                append_entries_per_write=(
                    sum(r["append_entries"] for r in reps) / requests if requests else 0.0
                ),
                store_cpu_cores=sum(v for k, v in point["cpu"].items() if k != "wrk") / 100,
            )
            points.append(point)
        out["points"] = points
        out["leaders_after"] = group_leaders(cluster)
        out["leaders_moved"] = out["leaders_after"] != leaders
        return out
    finally:
        for proc in cluster.procs.values():
            group.stop(proc)


def scaling_section(
    group: ProcessGroup, python: str, workdir: Path, settings: Settings, tick: Tick
) -> dict[str, Any]:
    """Each G of ``settings.scaling_groups`` in turn; ratios are taken against G = 1."""
    started = time.monotonic()
    clusters = [
        _measure_groups(group, python, workdir, settings, tick, g) for g in settings.scaling_groups
    ]
    return {
        "cores": usable_cores(),
        "duration_s": settings.scaling_duration_s,
        "warmup_s": settings.scaling_warmup_s,
        "reps": settings.scaling_reps,
        "connections": settings.scaling_connections,
        "keys": settings.keys,
        "value_size": settings.value_size,
        "clusters": clusters,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


# --- report --------------------------------------------------------------------------------


def _points(scaling: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for c in scaling["clusters"] for p in c["points"]]


def _base(scaling: dict[str, Any], path: str, pinned: bool) -> dict[str, Any] | None:
    for p in _points(scaling):
        if p["groups"] == 1 and p["path"] == path and p["pinned"] == pinned:
            return p
    return None


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.2f} ×" if b else "–"


def reference_point(points: list[dict[str, Any]], connections: int) -> dict[str, Any] | None:
    """The side-by-side table's raftcache-3 ``write`` point at ``connections``, if any."""
    for p in points:
        key = (p["system"], p["workload"], p["connections"])
        if key == ("raftcache-3", "write", connections):
            return p
    return None


def markdown(
    scaling: dict[str, Any], reference: dict[str, Any] | None = None, ref_date: str = ""
) -> list[str]:
    """The section's table (the suite's ``latest.md`` and ``results/scaling.md``)."""
    clusters = scaling["clusters"]
    lines = [
        f"## Scaling over groups (3 stores, replication 3, durable writes, "
        f"{scaling['connections']} connections)",
        "",
        f"{scaling['duration_s']:g} s per point after {scaling['warmup_s']:g} s of warm-up, "
        f"{scaling['reps']} repetition(s) (medians); 100-byte PUTs over "
        f"{scaling['keys']:,} keys. `direct`: each group's keys to its leader's store (one wrk "
        "thread per group); `any`: every key to every store (one wrk thread per store; a "
        "store forwards what it does not lead). Stores pinned to cores "
        f"{scaling['cores']} (the store leading most groups first: `core` column); wrk "
        "pinned to the cores left, or floating when none is left. CPU-s: utime + stime of the "
        "3 stores over the measured window. forwarded: share of the writes a store passed to "
        "another; AppendEntries per write: the RPCs every store sent over the run (heartbeats "
        "included) per write. Ratios against G = 1, same client path and "
        "pinning. The `direct, unpinned` rows let every store and wrk float over all cores, as "
        "the side-by-side table runs.",
        "",
        "| G | leaders per store | core per store | client path | conns | writes/s | p50 / p99 ms "
        "| CPU % per store | forwarded | AppendEntries per write | ops/CPU-s | writes/s vs G=1 "
        "| ops/CPU-s vs G=1 |",
        "|--:|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in clusters:
        leads = "/".join(str(c["leads"][n]) for n in sorted(c["leads"]))
        cores = "/".join(str(c["cores"][n]) for n in sorted(c["cores"]))
        for p in c["points"]:
            base = _base(scaling, p["path"], p["pinned"])
            cpu = "/".join(f"{p['cpu'][n]:.0f}" for n in sorted(c["leads"]))
            noisy = " ⚠" if p["noisy"] else ""
            path = p["path"] + ("" if p["pinned"] else ", unpinned")
            lines.append(
                f"| {c['groups']}{noisy} | {leads} | {cores if p['pinned'] else 'any'} | {path} "
                f"| {p['connections']} | {p['ops_s']:,.0f} | {p['p50_ms']:.2f} / "
                f"{p['p99_ms']:.2f} | {cpu} | {100 * p['forwarded_share']:.0f}% "
                f"| {p['append_entries_per_write']:.2f} | {p['ops_per_cpu_s']:,.0f} "
                f"| {_ratio(p['ops_s'], base['ops_s'] if base else None)} "
                f"| {_ratio(p['ops_per_cpu_s'], base['ops_per_cpu_s'] if base else None)} |"
            )
    lines += ["", "⚠ = noisy (the machine was busy before the run, or repetitions disagreed)."]
    idle = ", ".join(
        f"G={c['groups']} " + "/".join(f"{c['idle_cpu'][n]:.1f}" for n in sorted(c["idle_cpu"]))
        for c in clusters
    )
    lines.append(f"Idle CPU per store (% of a core, no client load, {IDLE_SAMPLE_S:g} s): {idle}.")
    for c in clusters:
        settle = c.get("settle") or {}
        if not settle.get("settled", True):
            lines.append(
                f"**G={c['groups']}: leaders had not settled on their preferred stores** after "
                f"{settle.get('waited_s')} s (seen {settle.get('leaders')}, preferred "
                f"{settle.get('preferred')}); measured as they were."
            )
        if c.get("leaders_moved"):
            lines.append(
                f"**G={c['groups']}: leadership moved during the measurement** "
                f"({c['leaders']} → {c['leaders_after']})."
            )
    unpinned = _base(scaling, "direct", False)
    if unpinned is not None and reference is not None:
        lines.append(
            f"G = 1 unpinned, today's configuration: {unpinned['ops_s']:,.0f} writes/s, "
            f"{unpinned['ops_per_cpu_s']:,.0f} ops/CPU-s; the side-by-side `write` point at "
            f"{reference['connections']} connections{ref_date}: {reference['ops_s']:,.0f} "
            f"writes/s, {reference['ops_per_cpu_s']:,.0f} ops/CPU-s "
            f"({_ratio(unpinned['ops_s'], reference['ops_s'])} and "
            f"{_ratio(unpinned['ops_per_cpu_s'], reference['ops_per_cpu_s'])})."
        )
    lines.append(f"Section time: {scaling['elapsed_s']:.0f} s.")
    return [*lines, ""]
