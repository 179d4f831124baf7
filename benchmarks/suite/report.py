"""Turning measured points into the side-by-side rows, the targets check and the Markdown.

Rule: every row pairs a raftcache figure with its peer's from the same run and states the
ratio raftcache / peer (for latency rows too, so below 1 is better there). Targets are issue 5's;
the report states each as met or by how much it falls short — nothing asserts them.
"""

from __future__ import annotations

from typing import Any

from benchmarks.suite import scaling

Point = dict[str, Any]


def _find(points: list[Point], system: str, workload: str, conns: int) -> Point | None:
    for p in points:
        if (p["system"], p["workload"], p["connections"]) == (system, workload, conns):
            return p
    return None


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def comparison_rows(points: list[Point]) -> list[dict[str, Any]]:
    """raftcache-N vs etcd-N per workload and connections; stale reads vs the HTTP floor."""
    rows = []
    for p in points:
        system = p["system"]
        if not system.startswith("raftcache-"):
            continue
        _, nodes, *series = system.split("-")  # raftcache-3, or raftcache-3-stream
        peer_name = f"etcd-{nodes}"
        peers = [(peer_name, _find(points, peer_name, p["workload"], p["connections"]))]
        if p["workload"] == "read-stale":
            peers.append(
                ("aiohttp-floor", _find(points, "aiohttp-floor", "fixed-200", p["connections"]))
            )
        for name, peer in peers:
            if peer is None:
                continue
            rows.append(
                {
                    "workload": p["workload"],
                    "connections": p["connections"],
                    "nodes": int(nodes),
                    "series": "-".join(series),
                    "raftcache": p,
                    "peer_name": name,
                    "peer": peer,
                    "ratio_ops": _ratio(p["ops_s"], peer["ops_s"]),
                    "ratio_ops_per_cpu": _ratio(p["ops_per_cpu_s"], peer["ops_per_cpu_s"]),
                    "ratio_p50": _ratio(p["p50_ms"], peer["p50_ms"]),
                    "ratio_p99": _ratio(p["p99_ms"], peer["p99_ms"]),
                }
            )
    return rows


def _target(
    name: str, value: float | None, goal: float, higher_is_better: bool, unit: str
) -> dict[str, Any]:
    if value is None:
        return {"target": name, "value": None, "goal": goal, "met": None, "note": "not measured"}
    met = value >= goal if higher_is_better else value <= goal
    if met:
        note = "met"
    elif higher_is_better:
        note = f"short by {100 * (1 - value / goal):.0f}%" if goal else "short"
    else:
        note = f"over by {100 * (value / goal - 1):.0f}%"
    return {"target": name, "value": value, "goal": goal, "unit": unit, "met": met, "note": note}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 5's targets, each with the measured value and a verdict."""
    pts: list[Point] = results.get("points", [])
    out = []

    def ratio(sys_a: str, sys_b: str, wl_a: str, wl_b: str, conns: int, key: str) -> float | None:
        a, b = _find(pts, sys_a, wl_a, conns), _find(pts, sys_b, wl_b, conns)
        return _ratio(a[key], b[key]) if a and b else None

    out.append(
        _target(
            "durable writes, 64 conns: ops/s vs etcd",
            ratio("raftcache-3", "etcd-3", "write", "write", 64, "ops_s"),
            2.0,
            True,
            "×",
        )
    )
    out.append(
        _target(
            "durable writes, 64 conns: p99 vs etcd",
            ratio("raftcache-3", "etcd-3", "write", "write", 64, "p99_ms"),
            1.0,
            False,
            "×",
        )
    )
    out.append(
        _target(
            "durable writes, 1 conn: p50 vs etcd",
            ratio("raftcache-3", "etcd-3", "write", "write", 1, "p50_ms"),
            1.0,
            False,
            "×",
        )
    )
    out.append(
        _target(
            "linearizable reads, 64 conns: ops/s vs etcd",
            ratio("raftcache-3", "etcd-3", "read-linearizable", "read-linearizable", 64, "ops_s"),
            4.0,
            True,
            "×",
        )
    )
    out.append(
        _target(
            "stale reads, 64 conns: ops/s vs HTTP floor",
            ratio("raftcache-3", "aiohttp-floor", "read-stale", "fixed-200", 64, "ops_s"),
            0.5,
            True,
            "×",
        )
    )
    inproc = {o["label"]: o for o in results.get("inproc") or []}
    rc, pso = inproc.get("raftcache-fsync"), inproc.get("pysyncobj")
    value = _ratio(rc["max_rate"], pso["max_rate"]) if rc and pso else None
    out.append(
        _target(
            "in-process replicated writes vs PySyncObj (max rate, ≥99% in 1 s)",
            value,
            3.0,
            True,
            "×",
        )
    )
    rcs = inproc.get("raftcache-fsync-stream")
    if rcs and pso:
        out.append(
            _target(
                "in-process replicated writes vs PySyncObj, StreamNetwork (opt-in)",
                _ratio(rcs["max_rate"], pso["max_rate"]),
                3.0,
                True,
                "×",
            )
        )
    restart = results.get("restart")
    if restart:
        rss = max(restart["rss_loaded_mb"].values())
        out.append(
            _target(
                f"RSS with {restart['keys']:,} keys × {restart['value_size']} B",
                rss,
                400.0,
                False,
                "MiB",
            )
        )
        if "rss_compacted_mb" in restart:
            out.append(
                _target(
                    "RSS with the same keys, log compacted (after a snapshot)",
                    max(restart["rss_compacted_mb"].values()),
                    400.0,
                    False,
                    "MiB",
                )
            )
        worst = max(
            restart["restart_from_log"]["serving_s"], restart["restart_from_snapshot"]["serving_s"]
        )
        out.append(_target("back in service after a restart", worst, 5.0, False, "s"))
    scale = None
    for conns in (64, 16):
        scale = ratio("raftcache-5", "raftcache-3", "write", "write", conns, "ops_s")
        if scale is not None:
            break
    out.append(_target("5 nodes vs 3: durable write ops/s", scale, 0.8, True, "×"))
    return out


def _f(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _cpu(p: Point) -> str:
    cpu = p["cpu"]
    servers = [v for k, v in cpu.items() if k != "wrk"]
    lead = cpu.get("leader", cpu.get("server", 0.0))
    rest = [v for k, v in cpu.items() if k.startswith("follower")]
    text = f"{lead:.0f}" + ("/" + "/".join(f"{v:.0f}" for v in rest) if rest else "")
    return text if servers else "–"


def markdown(results: dict[str, Any]) -> str:
    """The whole report as Markdown (what ``latest.md`` holds and the README quotes)."""
    m, s = results["machine"], results["settings"]
    fa, fp = results["fsync"]["append_fsync"], results["fsync"]["prealloc_fdatasync"]
    lines = [
        f"# raftcache benchmark — {results['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}; {m['etcd']}; {m['wrk']}; PySyncObj {m['pysyncobj']}.",
        f"Durable 100-B write on the data directory's filesystem: append + fsync (raftcache's "
        f"FileStorage) p50 {fa['p50_ms']:.2f} ms, p99 {fa['p99_ms']:.2f} ms; overwrite in a "
        f"preallocated file + fdatasync (etcd's WAL) p50 {fp['p50_ms']:.2f} ms, "
        f"p99 {fp['p99_ms']:.2f} ms. Issue 5 assumed 0.06 ms.",
        f"Settings: {s['duration_s']:g} s per point, {s['reps']} repetition(s) (medians), "
        f"warm-up {s['warmup_s']:g} s, {s['keys']:,} keys × {s['value_size']} B, "
        f"{'quick mode' if s['quick'] else 'full mode'}; load 1 min at start "
        f"{m['load1_at_start']:.2f}.",
        *[
            f"Re-run and merged in at {m['date']}: {m['sections']} (same machine)."
            for m in results.get("merged", [])
        ],
        "",
        "## Side by side (HTTP, wrk → leader)",
        "",
        "CPU is % of one core per process: leader/followers. ops/CPU-s = ops/s divided by the "
        "CPU the servers used (wrk excluded): comparable even when other work starves the "
        "servers. Ratio = raftcache / peer.",
        "",
        "| workload | conns | raftcache ops/s | p50 ms | p99 ms | CPU % | ops/CPU-s | peer "
        "| peer ops/s | p50 ms | p99 ms | CPU % | ops/CPU-s | ratio ops/s | ratio p99 "
        "| ratio ops/CPU-s |",
        "|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results["rows"]:
        a, b = r["raftcache"], r["peer"]
        noisy = " ⚠" if a["noisy"] or b["noisy"] else ""
        name = r["workload"] + ("" if r["nodes"] == 3 else f" ({r['nodes']} nodes)")
        name += f" [{r['series']}]" if r.get("series") else ""
        lines.append(
            f"| {name}{noisy} | {r['connections']} | {_f(a['ops_s'], 0)} | {_f(a['p50_ms'])} | "
            f"{_f(a['p99_ms'])} | {_cpu(a)} | {_f(a['ops_per_cpu_s'], 0)} | {r['peer_name']} | "
            f"{_f(b['ops_s'], 0)} | {_f(b['p50_ms'])} | {_f(b['p99_ms'])} | {_cpu(b)} | "
            f"{_f(b['ops_per_cpu_s'], 0)} | {_f(r['ratio_ops'])} | {_f(r['ratio_p99'])} | "
            f"{_f(r['ratio_ops_per_cpu'])} |"
        )
    lines += [
        "",
        "⚠ = noisy point: ops/s spread across repetitions > 10%, or the machine was busy "
        "(> 25% of all cores) before a run.",
        "",
    ]
    lines += _inproc_md(results) + _restart_md(results) + _scaling_md(results)
    lines += _targets_md(results) + _noise_md(results)
    return "\n".join(lines) + "\n"


def _inproc_md(results: dict[str, Any]) -> list[str]:
    inproc = results.get("inproc") or []
    if not inproc:
        return []
    lines = [
        "## In-process replicated writes (3 processes, each library's own Python API)",
        "",
        "| library | max rate (≥ 99% committed in 1 s) | p50 / p99 ms at max "
        "| low-load p50 / p99 ms | CPU % at max (3 nodes) | note |",
        "|---|--:|--:|--:|--:|---|",
    ]
    for o in inproc:
        at, low = o.get("at_max") or {}, o.get("low_load") or {}
        cpu = "/".join(f"{v:.0f}" for v in (at.get("cpu") or {}).values()) or "–"
        at_max = f"{_f(at.get('p50_ms'))} / {_f(at.get('p99_ms'))}"
        low_load = f"{_f(low.get('p50_ms'))} / {_f(low.get('p99_ms'))}"
        note = o.get("error") or o.get("note", "")
        lost = [p["rate"] for p in o.get("probes", []) if p.get("leadership_lost")]
        if lost:
            rates = ", ".join(f"{r:,.0f}/s" for r in lost)
            note += f"; the driver lost leadership in the probe(s) at {rates}"
        lines.append(
            f"| {o['label']} | {_f(o['max_rate'], 0)} | {at_max} | {low_load} | {cpu} | {note} |"
        )
    return [*lines, ""]


def _restart_md(results: dict[str, Any]) -> list[str]:
    r = results.get("restart")
    if not r:
        return []
    rss = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_loaded_mb"].items())
    empty = ", ".join(f"{k} {v:.0f}" for k, v in r["rss_empty_mb"].items())
    log, snap = r["restart_from_log"], r["restart_from_snapshot"]
    return [
        f"## Memory and restart ({r['keys']:,} keys × {r['value_size']} B, 3 nodes)",
        "",
        f"- Loaded in {r['load_s']:.1f} s ({r['load_keys_per_s']:,.0f} keys/s through "
        "`POST /v1/batch`, 1,000 sets per entry).",
        f"- RSS MiB, empty: {empty}; loaded: {rss} (leader {r['leader']}).",
        *(
            [
                "- RSS MiB after `POST /v1/snapshot` on every node (log compacted): "
                + ", ".join(f"{k} {v:.0f}" for k, v in r["rss_compacted_mb"].items())
                + "."
            ]
            if "rss_compacted_mb" in r
            else []
        ),
        f"- Follower {r['restarted']} restarted from its log: listening after "
        f"{log['listening_s']:.2f} s, serving (stale read of the last key, applied ≥ commit "
        f"index) after {log['serving_s']:.2f} s; RSS {log['rss_mb']:.0f} MiB.",
        f"- Same follower after `POST /v1/snapshot`, restarted from the snapshot: listening "
        f"after {snap['listening_s']:.2f} s, serving after {snap['serving_s']:.2f} s; "
        f"RSS {snap['rss_mb']:.0f} MiB.",
        "",
    ]


def _scaling_md(results: dict[str, Any]) -> list[str]:
    sc = results.get("scaling")
    if not sc:
        return []
    reference = scaling.reference_point(results.get("points", []), sc["connections"])
    return scaling.markdown(sc, reference, " in this run")


def _targets_md(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Targets (issue 5)",
        "",
        "| target | measured | goal | verdict |",
        "|---|--:|--:|---|",
    ]
    for t in results["targets"]:
        unit = t.get("unit", "")
        lines.append(
            f"| {t['target']} | {_f(t['value'])} {unit} | {t['goal']:g} {unit} | {t['note']} |"
        )
    return [*lines, ""]


def _noise_md(results: dict[str, Any]) -> list[str]:
    pts = results.get("points", [])
    noisy = [p for p in pts if p["noisy"]]
    busy = max((p["busy_before_max"] for p in pts), default=0.0)
    fsyncs = [
        r["fsync_p50_ms_before"] for p in pts for r in p["reps"] if "fsync_p50_ms_before" in r
    ]
    disk = (
        f" Before each run a 30-write probe measured the append + fsync p50 between "
        f"{min(fsyncs):.2f} and {max(fsyncs):.2f} ms (the disk is shared too)."
        if fsyncs
        else ""
    )
    return [
        "## Noise",
        "",
        f"{len(noisy)} of {len(pts)} points flagged noisy; the busiest pre-run window had "
        f"{100 * busy:.0f}% of all cores busy. The machine is shared with other work (test "
        "suites), wrk runs on the same 2 cores as the servers, and the idle wait is bounded, "
        f"so treat single-digit-percent differences as noise.{disk}",
        "",
    ]
