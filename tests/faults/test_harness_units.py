"""Unit tests of the harness's own logic, without processes: the schedule, the set-read
check, the verdict of an HTTP answer, the summary table."""

from __future__ import annotations

import io
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from raftcache.testing.campaign import RunConfig, RunReport
from raftcache.testing.clocks import ClockControl, find_libfaketime
from raftcache.testing.history import Operation, OpStatus
from raftcache.testing.httpops import Session, classify
from raftcache.testing.nemesis import (
    ALL_NEMESES,
    CLOCK_NEMESES,
    FAMILIES,
    FaultEvent,
    NemesisSchedule,
)
from raftcache.testing.report import render_report
from raftcache.testing.set_workload import check_set_reads
from raftcache.testing.workloads import Finding, WorkloadVerdict

FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}


def test_a_seed_names_the_schedule() -> None:
    first = NemesisSchedule(rng=random.Random(9))
    second = NemesisSchedule(rng=random.Random(9))
    assert [first.draw() for _ in range(50)] == [second.draw() for _ in range(50)]
    other = NemesisSchedule(rng=random.Random(10))
    assert [first.draw() for _ in range(50)] != [other.draw() for _ in range(50)]


def test_mixed_windows_take_one_fault_per_family_and_kill_all_alone() -> None:
    schedule = NemesisSchedule(rng=random.Random(1), mix_ratio=0.7)
    windows = [schedule.draw() for _ in range(2000)]
    assert {name for window in windows for name in window} == set(ALL_NEMESES)
    assert any(len(w) == 2 for w in windows)
    for window in windows:
        families = [FAMILY_OF[name] for name in window]
        assert len(set(families)) == len(families)
        assert "total" not in families or window == ["kill-all"]


def test_unknown_nemesis_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown nemeses"):
        NemesisSchedule(["kill", "meteor"], rng=random.Random(0))


def test_enough_counts_only_faults_recovered_from_with_the_fact_asked_for() -> None:
    def fault(
        recovery_s: float | None, name: str = "transfer-partition", **facts: object
    ) -> FaultEvent:
        return FaultEvent(name, "", 0.0, recovery_s=recovery_s, facts=facts)

    mix = ("transfer-partition",)
    config = RunConfig(nemeses=mix, enough_faults=2, enough_fact="transferred")
    recovered_transfer = fault(0.1, transferred=True)
    assert not config.enough([recovered_transfer])
    # Still in its window (no recovery yet), or the transfer did not go through: not counted.
    assert not config.enough([recovered_transfer, fault(None, transferred=True)])
    assert not config.enough([recovered_transfer, fault(0.1, transferred=False)])
    assert config.enough([recovered_transfer, fault(0.2, transferred=True)])
    # Without a fact every recovered fault counts; without a number the phase runs its time.
    assert RunConfig(nemeses=mix, enough_faults=1).enough([fault(0.1)])
    assert not RunConfig(nemeses=mix).enough([recovered_transfer] * 5)


def test_enough_waits_for_every_nemesis_of_the_mix() -> None:
    config = RunConfig(nemeses=("clock-drift", "clock-drift-leader"), enough_faults=2)
    leader = FaultEvent("clock-drift-leader", "", 0.0, recovery_s=0.1)
    follower = FaultEvent("clock-drift", "", 0.0, recovery_s=0.1)
    assert not config.enough([leader, leader, leader])
    assert config.enough([leader, leader, follower])
    assert config.enough([follower, leader])


def op(
    process: int, kind: str, value: object, start: float, end: float, status: str = "ok"
) -> Operation:
    done = math.inf if status == "indeterminate" else end
    output = value if kind == "read" else None
    element = None if kind == "read" else value
    return Operation(process, kind, "s", element, output, start, done, OpStatus(status))


def test_set_reads_see_every_add_acknowledged_before_them() -> None:
    history = [
        op(1, "add", 1, 0.0, 1.0),
        op(2, "add", 2, 0.5, 3.0),  # concurrent with the read: may or may not be seen
        op(3, "read", frozenset({1}), 2.0, 2.5),
        op(4, "read", frozenset({1, 2}), 2.6, 3.5),
    ]
    assert check_set_reads("set", history) == []


def test_a_stale_set_read_is_a_violation() -> None:
    history = [
        op(1, "add", 1, 0.0, 1.0),
        op(2, "add", 2, 1.0, 2.0),
        op(3, "read", frozenset({1}), 2.5, 3.0),  # misses 2, acknowledged at 2.0
    ]
    found = check_set_reads("set", history)
    assert [(f.check, f.severity) for f in found] == [("set-read", "violation")]
    assert "acknowledged adds missing in 1 reads: [2]" in found[0].detail


def test_a_set_read_from_the_future_is_a_violation() -> None:
    history = [
        op(1, "read", frozenset({7}), 0.0, 1.0),
        op(2, "add", 7, 2.0, 3.0),  # began after the read ended
        op(3, "add", 8, 0.0, 0.5, status="fail"),
        op(4, "read", frozenset({7, 8}), 4.0, 5.0),  # 8 certainly never added
    ]
    found = check_set_reads("set", history)
    assert len(found) == 1
    assert "elements never added in time in 2 reads: [7, 8]" in found[0].detail


@pytest.mark.parametrize(
    ("status", "write", "verdict"),
    [
        (503, True, OpStatus.FAIL),
        (503, False, OpStatus.FAIL),
        (504, True, OpStatus.INDETERMINATE),
        (500, True, OpStatus.INDETERMINATE),
        (504, False, OpStatus.FAIL),
        (400, True, OpStatus.FAIL),
    ],
)
def test_http_status_verdicts(status: int, write: bool, verdict: OpStatus) -> None:
    assert classify(status, write=write) is verdict


def test_session_headers() -> None:
    assert Session("c-1", 7).headers() == {"X-Raftcache-Client-Id": "c-1", "X-Raftcache-Seq": "7"}


def test_the_summary_shows_counts_faults_and_findings(tmp_path: Path) -> None:
    verdict = WorkloadVerdict("register", Counter({"ok": 1234, "fail": 5, "indeterminate": 6}))
    verdict.findings.append(Finding("register", "linearizable", "violation", "key 'x': illegal"))
    faults = [
        FaultEvent("kill", "kill -9 n1", 1.0, 4.0, 0.5),
        FaultEvent("kill", "kill -9 n2", 6.0, 9.0, 1.5),
        FaultEvent("partition", "['n1'] | ['n2', 'n3']", 10.0, 14.0, None),
    ]
    report = RunReport(RunConfig(seed=77), tmp_path, 70.0, [verdict], faults)
    report.recovery_after_faults_s = 0.25
    out = io.StringIO()
    Console(file=out, width=140).print(render_report(report))
    text = out.getvalue()
    assert "1234" in text
    assert "kill" in text
    assert "partition" in text
    assert "0.50" in text
    assert "1.50" in text
    assert "[violation] register/linearizable: key 'x': illegal" in text
    assert not report.ok
    assert len(report.violations) == 1


def test_clock_faults_are_opt_in() -> None:
    assert not set(CLOCK_NEMESES) & set(ALL_NEMESES)
    schedule = NemesisSchedule([*ALL_NEMESES, *CLOCK_NEMESES], rng=random.Random(3))
    drawn = {name for _ in range(500) for name in schedule.draw()}
    assert set(CLOCK_NEMESES) <= drawn


def test_clock_control_writes_one_offset_file_per_node(tmp_path: Path) -> None:
    control = ClockControl("/lib/libfaketimeMT.so.1", tmp_path / "clocks")
    env = control.env("n1")
    assert env["LD_PRELOAD"] == "/lib/libfaketimeMT.so.1"
    offset_file = Path(env["FAKETIME_TIMESTAMP_FILE"])
    # The rate is always explicit: libfaketime keeps the previous one when a setting omits it.
    assert offset_file.read_text() == "+0.000000 x1.000000\n"
    control.set_offset("n1", -7.25)
    assert offset_file.read_text() == "-7.250000 x1.000000\n"
    assert control.offsets == {"n1": -7.25}
    assert env["FAKETIME_CACHE_DURATION"] == "1"
    assert "FAKETIME_NO_CACHE" not in env
    # The monotonic clock is faked too, whatever the harness's environment says.
    assert env["FAKETIME_DONT_FAKE_MONOTONIC"] == "0"


def test_clock_control_changes_a_rate_without_a_jump(tmp_path: Path) -> None:
    """libfaketime: fake(t) = S + X + (t - S) * rate; a rate change at w keeps fake(w)."""
    now = [100.0]
    control = ClockControl("/lib/x.so", tmp_path, cache=False, wall=lambda: now[0])
    offset_file = Path(control.env("n1")["FAKETIME_TIMESTAMP_FILE"])
    control.started("n1")  # libfaketime's S = 100
    now[0] = 110.0
    control.set_rate("n1", 0.92)
    assert offset_file.read_text() == "+0.800000 x0.920000\n"  # 100 + 0.8 + 10 * 0.92 = 110
    assert control.skew("n1") == pytest.approx(0.0)
    now[0] = 120.0
    assert control.skew("n1") == pytest.approx(-0.8)  # 10 s at 92 %
    control.set_rate("n1", 1.0)
    assert control.skew("n1") == pytest.approx(-0.8)  # no jump back: the drift is kept
    control.set_offset("n1", 5.0)  # a jump moves it on top of the drift
    assert control.skew("n1") == pytest.approx(4.2)
    control.started("n1")  # a restart: S = 120, the setting's base carries over
    assert control.skew("n1") == pytest.approx(4.2)


def test_clock_control_without_cache_makes_jumps_land_at_once(tmp_path: Path) -> None:
    env = ClockControl("/lib/libfaketimeMT.so.1", tmp_path / "clocks", cache=False).env("n1")
    assert env["FAKETIME_NO_CACHE"] == "1"
    assert "FAKETIME_CACHE_DURATION" not in env


def test_an_explicit_libfaketime_must_exist(tmp_path: Path) -> None:
    assert find_libfaketime({"RAFTCACHE_LIBFAKETIME": str(tmp_path / "missing.so")}) is None
    present = tmp_path / "libfaketimeMT.so.1"
    present.write_bytes(b"")
    assert find_libfaketime({"RAFTCACHE_LIBFAKETIME": str(present)}) == str(present)
