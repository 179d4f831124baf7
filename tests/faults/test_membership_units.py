"""Unit tests of the membership nemeses' logic, without processes: heal order, the schedule,
the end-of-run agreement and replica checks, and how the summary shows them."""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from raftcache.testing.campaign import RunConfig, RunReport, _harness_findings
from raftcache.testing.membership import (
    MEMBERSHIP_NEMESES,
    Injected,
    ReplicaCheck,
    _differences,
    _digest,
    _disagreements,
)
from raftcache.testing.nemesis import (
    ALL_NEMESES,
    FAMILIES,
    FaultEvent,
    NemesisSchedule,
    _heal_order,
)
from raftcache.testing.report import render_report
from raftcache.testing.workloads import WorkloadVerdict


async def _noop() -> None:
    return None


def _pair(name: str) -> tuple[Injected, FaultEvent]:
    return Injected(name, name, _noop), FaultEvent(name, name, 0.0)


def test_membership_is_healed_after_every_other_fault_of_its_window() -> None:
    # Adding a member back needs a quorum: the kill (injected later) is healed first anyway.
    window = [_pair("remove-leader"), _pair("kill"), _pair("partition")]
    assert [i.name for i, _ in _heal_order(window)] == ["partition", "kill", "remove-leader"]
    # Otherwise the last fault injected is the first healed.
    assert [i.name for i, _ in _heal_order([_pair("kill"), _pair("delay")])] == ["delay", "kill"]


def test_membership_nemeses_are_a_family_of_the_default_mix() -> None:
    assert set(FAMILIES["membership"]) == set(MEMBERSHIP_NEMESES)
    assert set(MEMBERSHIP_NEMESES) <= set(ALL_NEMESES)
    schedule = NemesisSchedule(rng=random.Random(4), mix_ratio=0.7)
    windows = [schedule.draw() for _ in range(2000)]
    mixed = [w for w in windows if len(w) == 2 and set(w) & set(MEMBERSHIP_NEMESES)]
    # Drawn alone and together with a fault of another family (never two changes at once).
    assert any(len(w) == 1 and w[0] in MEMBERSHIP_NEMESES for w in windows)
    assert mixed
    assert all(len(set(w) & set(MEMBERSHIP_NEMESES)) == 1 for w in mixed)


def status(
    leader: str | None, members: list[str], learners: list[str] | None = None
) -> dict[str, object]:
    return {"leader": leader, "members": members, "learners": learners or []}


def test_the_membership_is_settled_only_when_every_node_agrees() -> None:
    everyone = {"n1", "n2", "n3"}
    settled = {n: status("n1", ["n1", "n2", "n3"]) for n in everyone}
    assert _disagreements(settled, everyone) == []
    learner = {**settled, "n3": status("n1", ["n1", "n2"], ["n3"])}
    assert _disagreements(learner, everyone) == ["n3 sees voters ['n1', 'n2'], learners ['n3']"]
    split = {**settled, "n2": status("n2", ["n1", "n2", "n3"])}
    assert _disagreements(split, everyone) == ["leaders reported: ['n1', 'n2']"]
    silent = {**settled, "n2": None}
    assert _disagreements(silent, everyone) == ["n2 does not answer"]


def test_replicas_are_compared_key_by_key() -> None:
    same = {"a": b"1", "b": b"2"}
    assert _digest(same) == _digest(dict(reversed(same.items())))
    assert _digest(same) != _digest({"a": b"1", "b": b"3"})
    # The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert _digest({"ab": b"c"}) != _digest({"a": b"bc"})
    data = {"n1": same, "n2": {"a": b"1", "b": b"X"}, "n3": {"a": b"1"}}
    assert _differences(data) == ["b: {'n1': b'2', 'n2': b'X', 'n3': None}"]


def _report(tmp_path: Path, replicas: ReplicaCheck | None, problems: list[str]) -> RunReport:
    verdict = WorkloadVerdict("register", Counter({"ok": 10}))
    faults = [FaultEvent("replace", "remove n2, wipe, add it back", 1.0, 4.0, 0.1, 2.5)]
    report = RunReport(RunConfig(seed=1, final_crash=False), tmp_path, 9.0, [verdict], faults)
    report.recovery_after_faults_s = 0.1
    report.replicas = replicas
    report.membership_problems = problems
    return report


def _findings(report: RunReport) -> list[tuple[str, str]]:
    """The harness's own findings for a cluster that neither crashed nor broke the API."""
    quiet_api = SimpleNamespace(unexpected=[])
    cluster = SimpleNamespace(crashes=[], check_crashes=list, api=quiet_api)
    found = _harness_findings(report.config, cluster, quiet_api, report)  # type: ignore[arg-type]
    return [(f.check, f.severity) for f in found]


def test_differing_replicas_and_an_unsettled_membership_are_violations(tmp_path: Path) -> None:
    same = ReplicaCheck(40, {"n1": 3, "n2": 3}, {"n1": "d", "n2": "d"}, [])
    assert same.identical
    assert _findings(_report(tmp_path, same, [])) == []
    differ = ReplicaCheck(40, {"n1": 3, "n2": 2}, {"n1": "d", "n2": "e"}, ["k: ..."])
    assert not differ.identical
    assert _findings(_report(tmp_path, differ, [])) == [("replicas", "violation")]
    assert _findings(_report(tmp_path, None, [])) == [("replicas", "violation")]
    unsettled = _report(tmp_path, same, ["n3 sees voters ['n1', 'n2'], learners []"])
    assert _findings(unsettled) == [("membership", "violation")]


def test_the_summary_shows_heal_times_settling_and_replicas(tmp_path: Path) -> None:
    report = _report(tmp_path, ReplicaCheck(40, {"n1": 3}, {"n1": "d"}, []), [])
    out = io.StringIO()
    Console(file=out, width=140).print(render_report(report))
    text = out.getvalue()
    assert "replace" in text
    assert "2.50" in text  # the heal: the wiped node's catch-up and promotion
    assert "membership settled after the faults" in text
    assert "yes (3 keys, applied index 40)" in text
