"""The short fault run of ``make test``: real nodes, mixed nemeses, every checker, seeded.

Each run starts its own cluster, drives the register, counter and set workloads through a
schedule of faults (membership changes and leadership transfers among them), heals, settles
the membership, kills every node at once and restarts them, reads everything back, compares
the replicas and judges the histories (``raftcache.testing.campaign``). A run passes when no
check found a violation and every check reached a verdict. On failure the message carries the
whole summary (findings with the operations involved) and the run directory, which keeps the
node logs and the histories as JSON for ``load_history``.

The soak (``make soak``) is the same run, longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from raftcache.testing.campaign import RunConfig, RunReport, run_campaign
from raftcache.testing.membership import MEMBERSHIP_NEMESES, ReplicaCheck
from raftcache.testing.nemesis import ALL_NEMESES
from raftcache.testing.report import render_report

#: The default mix, ``transfer-partition`` and ``transfer-pause`` included (on 01ded33 the
#: first found stale lease reads in every window: issue 12, hole 1).
BASELINE_NEMESES = ALL_NEMESES

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(300)]


def summary(report: RunReport) -> str:
    console = Console(record=True, width=120, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(render_report(report))
    console.file.close()
    return console.export_text()


def assert_clean(report: RunReport, min_faults: int) -> None:
    text = summary(report)
    assert report.violations == [], text
    assert report.unknowns == [], text
    assert len(report.faults) >= min_faults, text
    assert all(e.recovery_s is not None for e in report.faults), text
    assert report.recovery_after_faults_s is not None, text
    assert report.recovery_after_crash_s is not None, text
    for verdict in report.verdicts:
        # The workload really ran: a harness that issued nothing would pass every check.
        assert verdict.counts["ok"] >= 50, text
    # Every node a voter again, agreeing, and every replica with the same data at the end.
    assert report.membership_problems == [], text
    assert isinstance(report.replicas, ReplicaCheck), text
    assert report.replicas.identical, text


def assert_membership_changed(report: RunReport) -> None:
    """The seed's schedule opens with a membership change (drawn while the cluster is fresh,
    so it applies); if a change to the schedule moves it, pick a seed that has one again."""
    changes = [e for e in report.faults if e.name in MEMBERSHIP_NEMESES]
    assert changes, summary(report)
    assert all(e.heal_s is not None for e in changes), summary(report)


async def test_three_nodes_mixed_nemeses(tmp_path: Path) -> None:
    config = RunConfig(
        nodes=3,
        duration_s=22.0,
        # A seed whose first window mixes a partition with remove-leader, so the run always
        # holds a membership change (assert_membership_changed), whatever the rest draws.
        seed=20261150,
        nemeses=BASELINE_NEMESES,
        fault_s=(3.0, 4.5),
        quiet_s=(1.0, 2.0),
        mix_ratio=0.4,
        check_mesh=False,  # snapshots are rare in a short run; the soak checks the mesh
    )
    report = await run_campaign(config, tmp_path / "run")
    assert_clean(report, min_faults=3)
    assert_membership_changed(report)
    counters = next(v for v in report.verdicts if v.name == "counter")
    # With sessions and retries every increment resolves, so the count is exact.
    assert all("(exact)" in note for note in counters.notes if "final" in note), counters.notes


async def test_five_nodes_partitions_and_leader_faults(tmp_path: Path) -> None:
    config = RunConfig(
        nodes=5,
        duration_s=12.0,
        seed=5,
        nemeses=(
            "partition",
            "bridge",
            "isolate-leader",
            "kill-leader",
            "pause-leader",
            "remove-leader",
            "replace",
        ),
        fault_s=(3.0, 4.0),
        quiet_s=(1.0, 1.5),
        mix_ratio=0.3,
        check_mesh=False,
    )
    report = await run_campaign(config, tmp_path / "run")
    assert_clean(report, min_faults=2)
    assert_membership_changed(report)
