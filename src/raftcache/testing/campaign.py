"""One fault-injection run, from starting the processes to the verdict.

Rule: a run is a fixed sequence, so every run checks the same claims —

1. start N nodes behind the proxy mesh and wait for a leader;
2. run the workloads' workers and the nemesis schedule together for ``duration_s`` — or
   until ``enough_faults`` faults were healed and recovered from, when that comes first;
3. stop the faults (heal everything) and measure how long the cluster takes to serve again;
   then wait for the membership to settle (every node a voter, every node agreeing);
4. stop the workers (an increment being retried may take up to its horizon to resolve);
5. kill -9 every node at once, restart them all, and measure recovery again;
6. final reads (registers, counters, the set); every replica's whole keyspace, read locally
   once all of them applied the same index, must be identical; then stop the cluster — also
   on any error;
7. judge every history, and add the harness's own findings: nodes that exited by themselves,
   recoveries slower than the limit, a membership that did not settle, replicas that differ,
   answers that broke the API contract.

All randomness flows from ``RunConfig.seed`` (one generator per workload and one for the
schedule, drawn in a fixed order), and time from one injected clock, so a failing run's seed
names its schedule. The run directory keeps the node logs and data, every history as JSON
(``history-<workload>.json``, loadable with ``load_history``) and ``report.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raftcache.testing.clocks import ClockControl, find_libfaketime
from raftcache.testing.counter_workload import CounterWorkload
from raftcache.testing.harness import ProcessCluster
from raftcache.testing.history import save_history
from raftcache.testing.httpops import NodeApi
from raftcache.testing.membership import (
    ReplicaCheck,
    ReplicasUnsettled,
    compare_replicas,
    settle_membership,
)
from raftcache.testing.nemesis import (
    ALL_NEMESES,
    CLOCK_NEMESES,
    DRIFT_NEMESES,
    FaultEvent,
    NemesisSchedule,
)
from raftcache.testing.register_workload import RegisterWorkload
from raftcache.testing.set_workload import SetWorkload
from raftcache.testing.workloads import Finding, Workload, WorkloadEnv, WorkloadVerdict

__all__ = ["RunConfig", "RunReport", "run_campaign"]


@dataclass(slots=True)
class RunConfig:
    """What a run does (durations in seconds).

    Attributes:
        nodes: Cluster size (3 or 5 in practice).
        duration_s: Length of the faulty phase (2); its bound when ``enough_faults`` is set.
        seed: Names the schedule and every workload choice.
        nemeses: The faults to draw from (see ``raftcache.testing.nemesis``); any clock or
            drift nemesis puts the nodes under libfaketime; clock *jumps* exempt lease reads
            from the strict linearizability check, drift inside the bound does not.
        register_workers, counter_workers, set_workers: Concurrent clients per workload.
        fault_s, quiet_s, mix_ratio: The schedule's windows and mixing (``NemesisSchedule``).
        recovery_limit_s: A recovery slower than this is a liveness failure.
        check_budget_s: Time for each linearizability search (then ``unknown``).
        final_crash: Kill every node at once before the final reads (5).
        think_s: Upper bound of a worker's random pause between operations.
        ops_per_key: Operations per register key before it is rotated.
        op_timeout_s: One request's timeout (then indeterminate).
        check_mesh: At the end, check that every node still talks to its peers only through
            the mesh (``ProcessCluster.mesh_leaks``); a leak is reported as a note.
        check_replicas: At the end, compare every replica's keyspace (``compare_replicas``).
        replica_check_s: How long that comparison may take. Not a liveness bound: reading every
            keyspace takes time in proportion to it (150,000 keys after a 35-minute soak), and a
            reading the applied index moved under (an expiry, a digest check) is repeated.
        lease_ratio: Fraction of the general register workers' reads sent as ``lease``.
        lease_readers: Register workers per node that only send that node lease reads.
        pinned_writers: Register workers per node that only write through that node.
        python: The nodes' interpreter (default: this one) — e.g. a wrapper that runs
            another source tree, to judge a commit with this harness.
        enough_faults: End the faulty phase as soon as this many faults, every nemesis of
            ``nemeses`` among them, were healed and the cluster served again after them (0:
            run for ``duration_s``). For a test whose claim is "N faults of these kinds
            happened and nothing broke": once it holds, the rest of the phase adds time, not
            coverage.
        enough_fact: Count only the faults whose ``facts`` hold this key with a true value
            (e.g. ``"transferred"``: the transfer really went through).
    """

    nodes: int = 3
    duration_s: float = 60.0
    seed: int = 0
    nemeses: tuple[str, ...] = ALL_NEMESES
    # Enough clients that some keep working while others wait on a paused or cut-off node.
    register_workers: int = 6
    counter_workers: int = 4
    set_workers: int = 3
    fault_s: tuple[float, float] = (3.0, 7.0)
    quiet_s: tuple[float, float] = (2.0, 4.0)
    mix_ratio: float = 0.3
    recovery_limit_s: float = 30.0
    replica_check_s: float = 180.0
    check_budget_s: float = 60.0
    final_crash: bool = True
    think_s: float = 0.02
    ops_per_key: int = 150
    op_timeout_s: float = 5.0
    check_mesh: bool = True
    check_replicas: bool = True
    lease_ratio: float = 0.2
    lease_readers: int = 1
    pinned_writers: int = 1
    python: str = ""
    enough_faults: int = 0
    enough_fact: str = ""

    def enough(self, faults: Sequence[FaultEvent]) -> bool:
        """Whether ``faults`` hold the ``enough_faults`` completed faults asked for, with
        every nemesis of the mix among them."""
        if self.enough_faults <= 0:
            return False
        done = [
            e
            for e in faults
            if e.recovery_s is not None and (not self.enough_fact or e.facts.get(self.enough_fact))
        ]
        return len(done) >= self.enough_faults and {e.name for e in done} >= set(self.nemeses)


@dataclass(slots=True)
class RunReport:
    """Everything a run found (see ``raftcache.testing.report`` for the table)."""

    config: RunConfig
    run_dir: Path
    elapsed_s: float
    verdicts: list[WorkloadVerdict]
    faults: list[FaultEvent]
    findings: list[Finding] = field(default_factory=list)
    recovery_after_faults_s: float | None = None
    recovery_after_crash_s: float | None = None
    #: Nodes that reached a peer around the mesh at the end (partitions were leaky for them).
    mesh_leaks: list[str] = field(default_factory=list)
    #: What still kept the membership from settling after the faults (empty: settled).
    membership_problems: list[str] = field(default_factory=list)
    #: Every replica's data at the end; what the comparison saw when the nodes did not reach
    #: one stable applied index; None when not compared.
    replicas: ReplicaCheck | ReplicasUnsettled | None = None
    #: Seconds each step of the run took (where the wall time went).
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def all_findings(self) -> list[Finding]:
        return self.findings + [f for v in self.verdicts for f in v.findings]

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.all_findings if f.severity == "violation"]

    @property
    def unknowns(self) -> list[Finding]:
        return [f for f in self.all_findings if f.severity == "unknown"]

    @property
    def ok(self) -> bool:
        """No violation (unknown checks are reported, not counted as a pass or a failure)."""
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "run_dir": str(self.run_dir),
            "elapsed_s": self.elapsed_s,
            "operations": {v.name: dict(v.counts) for v in self.verdicts},
            "notes": {v.name: v.notes for v in self.verdicts},
            "faults": [asdict(f) for f in self.faults],
            "findings": [asdict(f) for f in self.all_findings],
            "recovery_after_faults_s": self.recovery_after_faults_s,
            "recovery_after_crash_s": self.recovery_after_crash_s,
            "phases": self.phases,
            "mesh_leaks": self.mesh_leaks,
            "membership_problems": self.membership_problems,
            "replicas": None if self.replicas is None else asdict(self.replicas),
        }


def _workloads(
    config: RunConfig,
    api: NodeApi,
    cluster: ProcessCluster,
    rng: random.Random,
    clock: Callable[[], float],
) -> list[tuple[Workload, int]]:
    def env() -> WorkloadEnv:
        seeded = random.Random(rng.getrandbits(64))
        run_id = f"t{config.seed}"
        return WorkloadEnv(api, cluster.urls, clock, seeded, run_id, config.think_s)

    registers = RegisterWorkload(
        env(),
        ops_per_key=config.ops_per_key,
        lease_ratio=config.lease_ratio,
        lease_strict=not set(config.nemeses) & set(CLOCK_NEMESES),
        workers=config.register_workers,
        lease_readers=config.lease_readers,
        pinned_writers=config.pinned_writers,
    )
    return [
        (registers, config.register_workers + registers.pinned_workers),
        (CounterWorkload(env()), config.counter_workers),
        (SetWorkload(env()), config.set_workers),
    ]


async def run_campaign(
    config: RunConfig, run_dir: Path, *, clock: Callable[[], float] | None = None
) -> RunReport:
    """Run the whole sequence of the module docstring; never leaves a process behind."""
    clock = clock or asyncio.get_running_loop().time
    started = clock()
    rng = random.Random(config.seed)
    _make_dir(run_dir)
    drift = bool(set(config.nemeses) & set(DRIFT_NEMESES))
    cluster = ProcessCluster(
        [f"n{i}" for i in range(1, config.nodes + 1)],
        run_dir,
        rng=random.Random(rng.getrandbits(64)),
        clock=_clock_control(config, run_dir),
        python=config.python,
        probe_heartbeat_s=PROBE_HEARTBEAT_S if drift else None,
    )
    api = NodeApi(timeout_s=config.op_timeout_s)
    workloads = _workloads(config, api, cluster, rng, clock)
    schedule = NemesisSchedule(
        config.nemeses,
        rng=random.Random(rng.getrandbits(64)),
        fault_s=config.fault_s,
        quiet_s=config.quiet_s,
        mix_ratio=config.mix_ratio,
        recovery_limit_s=config.recovery_limit_s,
    )
    report = RunReport(config, run_dir, 0.0, [], schedule.events)
    phase = _Phases(report, clock)
    try:
        with phase("start"):
            await cluster.start()
        await _exercise(config, cluster, workloads, schedule, report, clock)
    finally:
        with phase("stop"):
            await cluster.stop()
        await api.close()
    report.findings += _harness_findings(config, cluster, api, report)
    # The cluster is down: the searches may hold the event loop as long as they need.
    for workload, _ in workloads:
        with phase(f"check {workload.name}"):
            report.verdicts.append(workload.check(config.check_budget_s))
    report.elapsed_s = clock() - started
    _save(report, [w for w, _ in workloads])
    return report


class _Phases:
    """Times the steps of a run into ``report.phases``."""

    def __init__(self, report: RunReport, clock: Callable[[], float]) -> None:
        self._report = report
        self._clock = clock

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = self._clock()
        try:
            yield
        finally:
            self._report.phases[name] = self._clock() - start


#: ``--watch-heartbeat`` of a run with drift: the clock probe's tick (``clockprobe``).
PROBE_HEARTBEAT_S = 0.25


def _clock_control(config: RunConfig, run_dir: Path) -> ClockControl | None:
    """Clock control when the run draws clock or drift faults (which need libfaketime);
    without the cache when it drifts (a rate change must land at once, see ``clocks``)."""
    drift = set(config.nemeses) & set(DRIFT_NEMESES)
    if not set(config.nemeses) & set(CLOCK_NEMESES) and not drift:
        return None
    library = find_libfaketime()
    if library is None:
        raise ValueError("clock nemeses need libfaketime (apt-get install libfaketime)")
    return ClockControl(library, run_dir / "clocks", cache=not drift)


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _save(report: RunReport, workloads: Sequence[Workload]) -> None:
    """Histories and the report as JSON in the run directory, for offline re-checking."""
    for workload in workloads:
        path = report.run_dir / f"history-{workload.name}.json"
        save_history(path, workload.recorder.history())
    text = json.dumps(report.to_json(), indent=1, default=str)
    (report.run_dir / "report.json").write_text(text + "\n", encoding="utf-8")


async def _exercise(
    config: RunConfig,
    cluster: ProcessCluster,
    workloads: Sequence[tuple[Workload, int]],
    schedule: NemesisSchedule,
    report: RunReport,
    clock: Callable[[], float],
) -> None:
    """Steps 2–6: load and faults, heal, crash everything, final reads."""
    stop_work, stop_faults = asyncio.Event(), asyncio.Event()
    workers = [
        asyncio.ensure_future(workload.worker(i, stop_work))
        for workload, count in workloads
        for i in range(count)
    ]
    nemesis = asyncio.ensure_future(schedule.run(cluster, stop_faults, clock))
    phase = _Phases(report, clock)
    try:
        with phase("faults and load"):
            await _sleep_watching(nemesis, config.duration_s, lambda: config.enough(report.faults))
            stop_faults.set()
            await nemesis
        with phase("recovery after faults"):
            cluster.heal_all()
            report.recovery_after_faults_s = await cluster.wait_serving(config.recovery_limit_s)
        with phase("membership settles"):
            report.membership_problems = await settle_membership(cluster, config.recovery_limit_s)
        with phase("workers stopping"):
            stop_work.set()
            await asyncio.gather(*workers)
        if config.final_crash:
            with phase("kill every node, restart, recover"):
                await cluster.kill_all()
                cluster.heal_all()
                report.recovery_after_crash_s = await cluster.wait_serving(config.recovery_limit_s)
        with phase("final reads"):
            for workload, _ in workloads:
                await workload.finish(config.recovery_limit_s)
        if config.check_replicas:
            with phase("replicas compared"):
                report.replicas = await compare_replicas(cluster, config.replica_check_s)
        if config.check_mesh:
            with phase("mesh check"):
                report.mesh_leaks = await cluster.mesh_leaks()
    finally:
        for task in [*workers, nemesis]:
            task.cancel()
        await asyncio.gather(*workers, nemesis, return_exceptions=True)


async def _sleep_watching(
    task: asyncio.Future[None], seconds: float, enough: Callable[[], bool]
) -> None:
    """Sleep until ``seconds`` passed or ``enough()`` holds (polled), but surface at once an
    exception of the nemesis (a harness bug)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not enough():
        left = deadline - loop.time()
        if left <= 0:
            return
        done, _ = await asyncio.wait([task], timeout=min(left, _ENOUGH_POLL_S))
        if done:
            task.result()
            return


#: How often the faulty phase looks whether ``RunConfig.enough`` holds yet.
_ENOUGH_POLL_S = 0.1


def _harness_findings(
    config: RunConfig, cluster: ProcessCluster, api: NodeApi, report: RunReport
) -> list[Finding]:
    found: list[Finding] = []
    for event in report.faults:
        broken = event.facts.get("violation")
        if broken:
            found.append(Finding("cluster", event.name, "violation", str(broken)))
    cluster.check_crashes()
    for crash in cluster.crashes:
        detail = f"{crash.node_id} exited with {crash.exit_code}:\n{crash.log_tail}"
        found.append(Finding("cluster", "crash", "violation", detail))
    limit = config.recovery_limit_s
    for event in report.faults:
        if event.end is not None and event.recovery_s is None:
            detail = f"no service within {limit} s after healing {event.name} ({event.detail})"
            found.append(Finding("cluster", "liveness", "violation", detail))
    phases = [("faults stopped", report.recovery_after_faults_s)]
    if config.final_crash:
        phases.append(("every node killed and restarted", report.recovery_after_crash_s))
    for phase, recovery in phases:
        if recovery is None:
            detail = f"no service within {limit} s after {phase}"
            found.append(Finding("cluster", "liveness", "violation", detail))
    if report.membership_problems:
        detail = f"membership not settled within {limit} s: {report.membership_problems}"
        found.append(Finding("cluster", "membership", "violation", detail))
    found += _replica_findings(config, report)
    for line in sorted(set(api.unexpected + cluster.api.unexpected))[:20]:
        found.append(Finding("cluster", "api", "violation", f"unexpected answer: {line}"))
    return found


def _replica_findings(config: RunConfig, report: RunReport) -> list[Finding]:
    if not config.check_replicas:
        return []
    check = report.replicas
    if check is None:
        detail = "the replicas were not compared: the run ended before"
        return [Finding("cluster", "replicas", "violation", detail)]
    if isinstance(check, ReplicasUnsettled):
        return [Finding("cluster", "replicas", "violation", check.describe())]
    if check.identical:
        return []
    detail = (
        f"replicas differ at applied index {check.applied}: keys {check.keys}, "
        f"digests {check.digests}; first differences: {check.differences}"
    )
    return [Finding("cluster", "replicas", "violation", detail)]
