"""The summary of a fault-injection run as rich tables: operations, faults, verdict.

Rule: the tables show only what the run measured — counts from the histories, faults from the
schedule, recoveries as timed by the harness — and the verdict line says "0 violations" only
when every check ran and passed; a check that ran out of budget is shown as unknown.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from raftcache.testing.campaign import RunReport
from raftcache.testing.membership import MEMBERSHIP_NEMESES, ReplicasUnsettled

__all__ = ["print_report", "render_report"]


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def operations_table(report: RunReport) -> Table:
    table = Table(title="Operations (as the clients saw them)")
    for column in ("workload", "ok", "failed", "indeterminate", "notes"):
        table.add_column(column, justify="left" if column in ("workload", "notes") else "right")
    for verdict in report.verdicts:
        counts = verdict.counts
        table.add_row(
            verdict.name,
            str(counts.get("ok", 0)),
            str(counts.get("fail", 0)),
            str(counts.get("indeterminate", 0)),
            Text("\n".join(verdict.notes)),
        )
    return table


def faults_table(report: RunReport) -> Table:
    table = Table(title="Faults injected and recovery after each heal (s)")
    for column in ("nemesis", "injected", "recovery min", "median", "max", "heal max"):
        table.add_column(column, justify="left" if column == "nemesis" else "right")
    by_name: dict[str, list[float | None]] = defaultdict(list)
    heals: dict[str, list[float]] = defaultdict(list)
    for event in report.faults:
        by_name[event.name].append(event.recovery_s)
        if event.heal_s is not None:
            heals[event.name].append(event.heal_s)
    for name in sorted(by_name):
        times = [t for t in by_name[name] if t is not None]
        table.add_row(
            name,
            str(len(by_name[name])),
            _seconds(min(times) if times else None),
            _seconds(statistics.median(times) if times else None),
            _seconds(max(times) if times else None),
            _seconds(max(heals[name]) if heals[name] else None),
        )
    return table


def verdict_table(report: RunReport) -> Table:
    config = report.config
    table = Table(title="Verdict", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    total_ops = sum(sum(v.counts.values()) for v in report.verdicts)
    table.add_row("nodes / seed", f"{config.nodes} / {config.seed}")
    phases = f"{config.duration_s:.0f} / {report.elapsed_s:.0f}"
    table.add_row("faulty phase / whole run (s)", phases)
    table.add_row("operations", str(total_ops))
    table.add_row("faults injected", str(len(report.faults)))
    table.add_row("recovery after faults stopped (s)", _seconds(report.recovery_after_faults_s))
    table.add_row("recovery after killing every node (s)", _seconds(report.recovery_after_crash_s))
    if any(e.name in MEMBERSHIP_NEMESES for e in report.faults):
        settled = (
            "no: " + "; ".join(report.membership_problems) if report.membership_problems else "yes"
        )
        table.add_row("membership settled after the faults", settled)
    if config.check_replicas:
        table.add_row("replicas identical at the end", _replicas(report))
    table.add_row("violations", str(len(report.violations)))
    table.add_row("unknown (check out of budget)", str(len(report.unknowns)))
    notes = [f for f in report.all_findings if f.severity == "note"]
    if notes:
        table.add_row("notes (anomalies the faults allow)", str(len(notes)))
    return table


def _replicas(report: RunReport) -> str:
    check = report.replicas
    if check is None:
        return "not compared"
    if isinstance(check, ReplicasUnsettled):
        slowest = f", slowest {check.slowest_read_s:.1f} s" if check.readings else ""
        return f"no stable applied index ({check.readings} readings{slowest})"
    keys = sorted(set(check.keys.values()))
    verdict = "yes" if check.identical else "NO"
    return f"{verdict} ({'/'.join(map(str, keys))} keys, applied index {check.applied})"


def render_report(report: RunReport) -> Group:
    """The three tables, then one paragraph per finding."""
    # Plain Text, not markup: findings hold brackets ("['n1'] | ['n2']") that rich would eat.
    parts: list[Table | Text] = [
        operations_table(report),
        faults_table(report),
        verdict_table(report),
    ]
    for finding in report.all_findings:
        line = f"[{finding.severity}] {finding.workload}/{finding.check}: {finding.detail}"
        parts.append(Text(line))
    if report.mesh_leaks:
        leaks = ", ".join(report.mesh_leaks)
        parts.append(
            Text(
                f"note: {leaks} reached peers around the proxy mesh at the end of the run "
                "(an address learnt from a replicated configuration or snapshot): partitions "
                "involving them were partly leaky, so those faults were weaker than intended"
            )
        )
    spent = ", ".join(f"{name} {seconds:.1f}" for name, seconds in report.phases.items())
    parts.append(Text(f"time per step (s): {spent}"))
    parts.append(Text(f"run directory: {report.run_dir}"))
    return Group(*parts)


def print_report(report: RunReport, console: Console | None = None) -> None:
    """Print the summary (to stdout by default)."""
    (console or Console()).print(render_report(report))
