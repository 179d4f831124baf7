"""The ``scaling`` section: durable writes over G = 1, 2, 4, 16 data groups on 3 stores, pinned.

Rule: each G is its own cluster of 3 ``raftcache serve`` processes (durable, fsync'd) with
replication 3, so every store hosts every group; G = 1 is today's one-group node (no
``--groups``), so its figures are comparable with the side-by-side table. A cluster is
measured once its leaders have settled, balanced within one per store, its 10,000
keys written once, and each store pinned to a core (``stores.core_plan``). Every cluster is up
for the whole section, the ones not being measured frozen (SIGSTOP), so that the points of
one client path run back to back over the G values (``scaling_section``). One load generator
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
import os
import signal
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

from benchmarks.suite import httpc
from benchmarks.suite.machine import cpu_seconds
from benchmarks.suite.points import run_once, summarize
from benchmarks.suite.procs import ProcessGroup, wait_port
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


#: The ``direct`` client path with ``conns_per_group`` connections per group.
PER_GROUP: Final = "direct, per group"


def _runs(settings: Settings) -> list[tuple[str, bool]]:
    """The (client path, pinned) points of each cluster, in the order they are measured."""
    runs = [("direct", True), ("any", True), ("direct", False)]
    if settings.scaling_conns_per_group > 0:
        runs.append((PER_GROUP, True))
    return runs


def point_count(settings: Settings) -> int:
    """wrk points of the section (for the progress bar)."""
    return len(_runs(settings)) * len(settings.scaling_groups) * settings.scaling_reps


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
    and the AppendEntries messages they sent (``raftcache_network_rpcs_total``, outbound: a
    batch of many groups' AppendEntries to one store counts as one)."""
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
                and ('rpc="AppendEntries"' in line or 'rpc="AppendEntriesBatch"' in line)
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


@dataclasses.dataclass
class _Setup:
    """One cluster of the section, ready to load: its leaders, pinning and wrk jobs."""

    groups: int
    cluster: RaftcacheCluster
    out: dict[str, Any]
    pids: dict[str, int] = dataclasses.field(default_factory=dict)
    pin: dict[str, int] = dataclasses.field(default_factory=dict)
    jobs: dict[tuple[str, bool], WrkJob] = dataclasses.field(default_factory=dict)
    reps: dict[tuple[str, bool], list[dict[str, Any]]] = dataclasses.field(default_factory=dict)


def _cluster(group: ProcessGroup, python: str, workdir: Path, groups: int) -> RaftcacheCluster:
    if groups == 1:
        return RaftcacheCluster(group, python, workdir, STORES, tag="sc1")
    return StoreCluster(group, python, workdir, STORES, groups, REPLICAS, tag=f"sc{groups}")


def _prepare(setup: _Setup, settings: Settings, workdir: Path) -> None:
    """Settle the leaders, write every key once, plan the pinning and the wrk jobs."""
    shape = Shape(settings.keys, settings.value_size, settings.read_ratio)
    cluster, groups, out = setup.cluster, setup.groups, setup.out
    t0 = time.monotonic()
    out["settle"] = (
        cluster.wait_settled()
        if isinstance(cluster, StoreCluster)
        else {"settled": True, "leaders": {"g0": cluster.wait_leader(30.0)}}
    )
    load_grouped(cluster, shape.keys, shape.value_size, batch=500)
    out["ready_s"] = round(time.monotonic() - t0, 2)
    leaders = group_leaders(cluster)
    leads = {nid: sum(1 for s in leaders.values() if s == nid) for nid in cluster.ids}
    setup.pids = {nid: cluster.procs[nid].pid for nid in cluster.ids}
    out["leaders"], out["leads"] = leaders, leads
    setup.pin, wrk_cores = core_plan(cluster.ids, leads, usable_cores())
    out["cores"], out["wrk_cores"] = setup.pin, wrk_cores
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
    setup.jobs = {
        ("direct", True): direct,
        ("any", True): anyst,
        ("direct", False): dataclasses.replace(direct, cores=()),
    }
    per_group = settings.scaling_conns_per_group
    if per_group > 0:
        setup.jobs[(PER_GROUP, True)] = (
            dataclasses.replace(cluster.job("write", per_group, shape), cores=wrk_cores or ())
            if groups == 1
            else _plan_job(
                cluster,
                [(leaders[g], keys[g]) for g in sorted(keys, key=lambda g: int(g[1:]))],
                per_group,
                shape.value_size,
                plan_dir,
                "per-group",
                wrk_cores,
            )
        )
    setup.reps = {run: [] for run in setup.jobs}


def _signal(setup: _Setup, sig: signal.Signals) -> None:
    for proc in setup.cluster.procs.values():
        if proc.poll() is None:
            os.kill(proc.pid, sig)


def _resume(setup: _Setup) -> None:
    """Thaw a frozen cluster and check its leaders did not move while it was stopped."""
    _signal(setup, signal.SIGCONT)
    deadline = time.monotonic() + 15.0
    while True:
        try:
            leaders = group_leaders(setup.cluster)
        except (OSError, RuntimeError):
            leaders = {}
        if leaders == setup.out["leaders"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if leaders != setup.out["leaders"]:
        setup.out.setdefault("leaders_moved", []).append(leaders)


def _measure(setup: _Setup, run: tuple[str, bool], point_settings: Settings, tick: Tick) -> None:
    path, pinned = run
    cores = usable_cores()
    for nid, pid in setup.pids.items():
        set_affinity(pid, [setup.pin[nid]] if pinned else cores)
    tick(f"scaling G={setup.groups} {path}{'' if pinned else ' unpinned'}")
    start: list[dict[str, float]] = []
    cluster = setup.cluster
    rep = run_once(setup.jobs[run], setup.pids, point_settings, partial(_read_into, start, cluster))
    end = _counters(cluster)
    rep.update({name: end[name] - start[0][name] for name in end})
    setup.reps[run].append(rep)


def _summary(setup: _Setup, run: tuple[str, bool]) -> dict[str, Any]:
    path, pinned = run
    reps = setup.reps[run]
    label = f"raftcache-{STORES}x{setup.groups}g"
    point = summarize(label, f"write-{path}", setup.jobs[run].connections, reps)
    requests = sum(r["requests"] for r in reps)
    point.update(
        groups=setup.groups,
        path=path,
        pinned=pinned,
        forwarded_share=sum(r["forwarded"] for r in reps) / requests if requests else 0.0,
        append_entries_per_write=(
            sum(r["append_entries"] for r in reps) / requests if requests else 0.0
        ),
        store_cpu_cores=sum(v for k, v in point["cpu"].items() if k != "wrk") / 100,
    )
    return point


def scaling_section(
    group: ProcessGroup, python: str, workdir: Path, settings: Settings, tick: Tick
) -> dict[str, Any]:
    """Every cluster up at once; each point taken on one while the others are frozen.

    The clusters of every G start together, settle and are prefilled; their idle CPU is read
    side by side; then all are stopped (SIGSTOP) and each point thaws one cluster (SIGCONT),
    checks its leaders did not move, pins it, measures and freezes it again. Points of the
    same client path run back to back over the G values, in alternating order, so a burst of
    someone else's load on this shared machine lands on every G alike rather than on
    whichever cluster happened to run then; a frozen cluster takes no CPU from the measured
    one. Ratios are taken against G = 1.
    """
    started = time.monotonic()
    point_settings = dataclasses.replace(
        settings,
        duration_s=settings.scaling_duration_s,
        warmup_s=settings.scaling_warmup_s,
        idle_wait_max_s=min(settings.idle_wait_max_s, 3.0),
    )
    setups = [
        _Setup(g, _cluster(group, python, workdir, g), {"groups": g, "stores": STORES})
        for g in settings.scaling_groups
    ]
    for setup in setups:
        setup.out["replicas"] = REPLICAS
    try:
        for setup in setups:
            for nid in setup.cluster.ids:
                setup.cluster.start_node(nid)
        for setup in setups:
            for nid in setup.cluster.ids:
                wait_port(setup.cluster.ports[nid], 60, setup.cluster.procs[nid])
        for setup in setups:
            _prepare(setup, settings, workdir)
        idle = _idle_cpu({f"{s.groups}/{n}": p for s in setups for n, p in s.pids.items()})
        for setup in setups:
            setup.out["idle_cpu"] = {n: idle[f"{setup.groups}/{n}"] for n in setup.pids}
            _signal(setup, signal.SIGSTOP)
        runs = _runs(settings)
        for rep in range(settings.scaling_reps):
            for i, run in enumerate(runs):
                order = setups if (rep + i) % 2 == 0 else setups[::-1]
                for setup in order:
                    _resume(setup)
                    try:
                        _measure(setup, run, point_settings, tick)
                    finally:
                        _signal(setup, signal.SIGSTOP)
        clusters = []
        for setup in setups:
            _resume(setup)
            setup.out["points"] = [_summary(setup, run) for run in runs]
            setup.out["leaders_after"] = group_leaders(setup.cluster)
            clusters.append(setup.out)
    finally:
        for setup in setups:
            _signal(setup, signal.SIGCONT)
        for setup in setups:
            for proc in setup.cluster.procs.values():
                group.stop(proc)
    return {
        "cores": usable_cores(),
        "duration_s": settings.scaling_duration_s,
        "warmup_s": settings.scaling_warmup_s,
        "reps": settings.scaling_reps,
        "connections": settings.scaling_connections,
        "conns_per_group": settings.scaling_conns_per_group,
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
        "another; AppendEntries per write: the AppendEntries messages every store sent over the "
        "run (heartbeats included; a batch of many groups' to one store counts one) per write. "
        "Every cluster is up for the whole section, those not being "
        "measured frozen (SIGSTOP); the G values of one client path are measured back to back, "
        "in alternating order. Ratios against G = 1, same client path and "
        "pinning. The `direct, unpinned` rows let every store and wrk float over all cores, as "
        "the side-by-side table runs. The `direct, per group` rows hold the load each group sees "
        f"instead: {scaling.get('conns_per_group', 0)} connections per group (G times as many "
        "in all), so a group's own cost shows apart from the batching lost by splitting the "
        "same clients G ways.",
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
                f"**G={c['groups']}: leaders had not settled, balanced within one,** after "
                f"{settle.get('waited_s')} s (seen {settle.get('leaders')}, preferred "
                f"{settle.get('preferred')}); measured as they were."
            )
        moved = c.get("leaders_moved") or []
        if c.get("leaders_after") not in (None, c["leaders"]):
            moved.append(c["leaders_after"])
        if moved:
            lines.append(
                f"**G={c['groups']}: leadership moved during the section** (measured with "
                f"{c['leaders']}, then seen: {moved})."
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
