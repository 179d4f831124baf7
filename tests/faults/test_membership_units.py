"""Unit tests of the membership nemeses' logic, without processes: heal order, the schedule,
the end-of-run agreement and replica checks, and how the summary shows them."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from raftcache.testing.campaign import RunConfig, RunReport, _harness_findings
from raftcache.testing.history import OpStatus
from raftcache.testing.httpops import Reply
from raftcache.testing.membership import (
    MEMBERSHIP_NEMESES,
    Injected,
    ReadAttempt,
    ReplicaCheck,
    ReplicasUnsettled,
    _differences,
    _digest,
    _disagreements,
    compare_replicas,
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


class _Replicas:
    """Three nodes' keyspaces and applied indexes, behind the two reads ``compare_replicas``
    makes (a listing, then ``mget`` pages) and ``/v1/status``. Like the real leader, n1 turns
    the keys a read found into a TOUCH entry, applied everywhere, unless the read says
    ``touch=false``; ``moving`` adds an entry per reading whatever it says (an expiry, say)."""

    def __init__(self, keys: int, *, moving: bool = False, lagging: str | None = None) -> None:
        self.node_ids = ["n1", "n2", "n3"]
        self.data = {f"k{i:03}": b"v" for i in range(keys)}
        self.applied = dict.fromkeys(self.node_ids, 100)
        self.moving, self.lagging = moving, lagging
        self.touches: list[bool] = []
        self.api = self

    def url(self, node: str) -> str:
        return node

    async def statuses(self, timeout_s: float = 1.0) -> dict[str, dict[str, Any] | None]:
        return {
            n: None if n == self.lagging else {"last_applied": self.applied[n]}
            for n in self.node_ids
        }

    def _commit(self) -> None:
        for node in self.node_ids:
            self.applied[node] += 1

    async def list_keys(
        self, url: str, prefix: str, *, page: int = 1000, consistency: str | None = None
    ) -> Reply:
        assert consistency == "stale"
        await asyncio.sleep(0.5)  # a slow reading (a node under libfaketime)
        if self.moving:
            self._commit()
        return Reply(OpStatus.OK, sorted(self.data), 200)

    async def mget(
        self, url: str, keys: Sequence[str], *, consistency: str | None = None, touch: bool = True
    ) -> Reply:
        assert consistency == "stale"
        self.touches.append(touch)
        if url == "n1" and touch:
            self._commit()
        return Reply(OpStatus.OK, [self.data[k] for k in keys], 200)


@pytest.mark.looptime
async def test_the_comparison_reads_without_touching_so_the_index_holds_still() -> None:
    replicas = _Replicas(25)
    check = await compare_replicas(replicas, 180.0, page=10)  # type: ignore[arg-type]
    assert isinstance(check, ReplicaCheck)
    assert (check.applied, check.attempts, check.identical) == (100, 1, True)
    assert check.keys == dict.fromkeys(replicas.node_ids, 25)
    assert check.read_s == pytest.approx(1.5)
    assert replicas.touches == [False] * 9  # three pages per node, none touching
    assert replicas.applied == dict.fromkeys(replicas.node_ids, 100)


@pytest.mark.looptime
async def test_giving_up_says_what_each_node_applied_and_how_long_reading_took() -> None:
    moving = await compare_replicas(_Replicas(5, moving=True), 4.0)  # type: ignore[arg-type]
    assert isinstance(moving, ReplicasUnsettled)
    assert (moving.attempts, moving.readings, moving.slowest_read_s) == (3, 3, 1.5)
    assert moving.last[-1] == ReadAttempt(
        dict.fromkeys(["n1", "n2", "n3"], 106), dict.fromkeys(["n1", "n2", "n3"], 109), 1.5, []
    )
    assert moving.describe() == (
        "the nodes did not reach one stable applied index within 4 s: 3 attempts, "
        "3 readings of every keyspace (the slowest 1.5 s); the last attempts: "
        "applied {n1: 100, n2: 100, n3: 100} before and {n1: 103, n2: 103, n3: 103} after a "
        "1.5 s reading; applied {n1: 103, n2: 103, n3: 103} before and "
        "{n1: 106, n2: 106, n3: 106} after a 1.5 s reading; applied "
        "{n1: 106, n2: 106, n3: 106} before and {n1: 109, n2: 109, n3: 109} after a 1.5 s reading"
    )
    silent = await compare_replicas(_Replicas(5, lagging="n3"), 1.0)  # type: ignore[arg-type]
    assert isinstance(silent, ReplicasUnsettled)
    assert (silent.attempts, silent.readings) == (5, 0)
    assert len(silent.last) == 3
    assert silent.describe().endswith(
        "applied {n1: 100, n2: 100, n3: None}, not the same on every node: not read"
    )


def _report(
    tmp_path: Path, replicas: ReplicaCheck | ReplicasUnsettled | None, problems: list[str]
) -> RunReport:
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
    unstable = ReplicasUnsettled(180.0, 9, 8, 16.0, [ReadAttempt({"n1": 7, "n2": 8})])
    assert _findings(_report(tmp_path, unstable, [])) == [("replicas", "violation")]
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
    unstable = ReplicasUnsettled(180.0, 9, 8, 16.0, [ReadAttempt({"n1": 7, "n2": 8})])
    out = io.StringIO()
    Console(file=out, width=400).print(render_report(_report(tmp_path, unstable, [])))
    text = out.getvalue()
    assert "no stable applied index (8 readings, slowest 16.0 s)" in text
