"""The PNG: throughput and p99 latency against connections, one panel per workload.

Rule: one colour per system across all panels; the HTTP floor is drawn on the stale-read panel
as the ceiling it is compared with. Uses the non-interactive Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.suite.workloads import WORKLOADS

COLOURS = {
    "raftcache-3": "tab:blue",
    "etcd-3": "tab:orange",
    "aiohttp-floor": "tab:gray",
    "raftcache-5": "tab:cyan",
    "etcd-5": "tab:red",
}


def _series(points: list[dict[str, Any]], system: str, workload: str) -> list[dict[str, Any]]:
    return sorted(
        (p for p in points if p["system"] == system and p["workload"] == workload),
        key=lambda p: p["connections"],
    )


def plot(results: dict[str, Any], path: Path) -> None:
    """Write the 2 × 4 panel figure to ``path``."""
    points = results.get("points", [])
    fig, axes = plt.subplots(2, len(WORKLOADS), figsize=(4.2 * len(WORKLOADS), 7.5), squeeze=False)
    # raftcache first, then its peers, in a stable order.
    systems = sorted(
        {p["system"] for p in points if p["system"] != "aiohttp-floor"},
        key=lambda s: (not s.startswith("raftcache"), s),
    )
    for col, workload in enumerate(WORKLOADS):
        top, bottom = axes[0][col], axes[1][col]
        lines = [(s, workload) for s in systems]
        if workload == "read-stale":
            lines.append(("aiohttp-floor", "fixed-200"))
        for system, wl in lines:
            series = _series(points, system, wl)
            if not series:
                continue
            xs = [p["connections"] for p in series]
            style = {"color": COLOURS.get(system), "marker": "o", "label": system}
            top.plot(xs, [p["ops_s"] for p in series], **style)
            bottom.plot(xs, [p["p99_ms"] for p in series], **style)
        top.set_title(workload)
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted({p["connections"] for p in points}))
            ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("connections")
            ax.grid(True, alpha=0.3)
        top.set_ylabel("ops/s (median)")
        bottom.set_ylabel("p99 latency, ms")
        bottom.set_yscale("log")
        top.legend(fontsize="small")
    fig.suptitle(
        f"raftcache vs etcd (wrk → leader) — {results['date']}, {results['machine']['cpu']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
