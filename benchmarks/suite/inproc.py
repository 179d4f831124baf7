"""The in-process comparison: 3 node processes per library, driven through the leader's API.

Rule: the same open-loop probe runs against each library: R proposals per second for a fixed
time, each committed "in time" if it succeeds within 1 s. The maximum rate is the highest R
with at least 99% committed in time: doubling from a low rate until a probe fails, then
bisecting. Low-load latency is one proposal in flight at a time. CPU of the three processes is
sampled across each probe. A probe after which the driver no longer leads (an overloaded leader
can lose its followers) is recorded as such and the search goes on with a fresh cluster.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.suite.machine import cpu_seconds
from benchmarks.suite.procs import ProcessGroup, free_port

SUCCESS_MIN = 0.99
COMMIT_TIMEOUT_S = 1.0


@dataclass(slots=True)
class InprocOutcome:
    """What one library achieved."""

    label: str
    max_rate: float = 0.0
    at_max: dict[str, Any] = field(default_factory=dict)
    low_load: dict[str, Any] = field(default_factory=dict)
    probes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class InprocCluster:
    """Three node processes of one library; node 1 is the driver (stdin/stdout pipes)."""

    def __init__(self, group: ProcessGroup, label: str, argv_for: ArgvFor, workdir: Path) -> None:
        self.group = group
        self.label = label
        self.argv_for = argv_for
        self.workdir = workdir
        self.generation = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self._spawn()

    def _spawn(self) -> None:
        """Start three fresh nodes (new ports, new data directories)."""
        self.generation += 1
        ports = [free_port() for _ in range(3)]
        self.procs = []
        for i in range(3):
            if i == 1:
                # The driver's election timer starts a second earlier, so it campaigns first.
                time.sleep(1.0)
            name = f"{self.label}-g{self.generation}-{i + 1}"
            argv = self.argv_for(i, ports, self.workdir / name)
            driver = i == 0
            proc = self.group.start(
                argv,
                log_path=self.workdir / f"{name}.log",
                stdin_pipe=driver,
                stdout_pipe=driver,
            )
            self.procs.append(proc)

    def wait_leader(self) -> bool:
        """Whether the driver became leader within 30 s."""
        return bool(self.command({"op": "wait_leader", "timeout": 30}, 40)["leader"])

    def restart(self, attempts: int = 4) -> bool:
        """A fresh cluster whose driver leads (after a lost leadership — overload can cost a
        leader its followers' trust — or a first election the driver did not win)."""
        for _ in range(attempts):
            self.stop()
            self._spawn()
            if self.wait_leader():
                return True
        return False

    def command(self, cmd: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one command to the driver and wait for its one-line answer."""
        driver = self.procs[0]
        assert driver.stdin is not None
        assert driver.stdout is not None
        driver.stdin.write((json.dumps(cmd) + "\n").encode())
        driver.stdin.flush()
        ready, _, _ = select.select([driver.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError(f"{self.label}: no answer to {cmd} in {timeout_s} s")
        line = driver.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: driver exited ({driver.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def timed(self, cmd: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """``command`` plus the CPU (% of one core) of each of the three processes."""
        before = [cpu_seconds(p.pid) for p in self.procs]
        t0 = time.monotonic()
        answer = self.command(cmd, timeout_s)
        elapsed = time.monotonic() - t0
        answer["cpu"] = {
            f"node{i + 1}": 100 * (cpu_seconds(p.pid) - before[i]) / elapsed
            for i, p in enumerate(self.procs)
        }
        return answer

    def stop(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, RuntimeError, ValueError):
            self.command({"op": "quit"}, 1.0)
        for proc in self.procs:
            self.group.stop(proc)


ArgvFor = Callable[[int, list[int], Path], list[str]]


def raftcache_argv(python: str, fsync: bool, transport: str = "http") -> ArgvFor:
    def argv(i: int, ports: list[int], data: Path) -> list[str]:
        peers = ",".join(f"n{j + 1}=http://127.0.0.1:{p}" for j, p in enumerate(ports))
        out = [python, "-m", "benchmarks.raftcache_inproc", "--id", f"n{i + 1}"]
        out += ["--peers", peers, "--data-dir", str(data), "--transport", transport]
        out += ["--driver"] if i == 0 else []
        return out + ([] if fsync else ["--no-fsync"])

    return argv


def pysyncobj_argv(python: str) -> ArgvFor:
    def argv(i: int, ports: list[int], data: Path) -> list[str]:
        addrs = [f"127.0.0.1:{p}" for p in ports]
        partners = ",".join(a for j, a in enumerate(addrs) if j != i)
        out = [python, "-m", "benchmarks.peers.pysyncobj_bench", "--self", addrs[i]]
        out += ["--partners", partners, "--dir", str(data)]
        return out + (["--driver"] if i == 0 else [])

    return argv


def _probe(cluster: InprocCluster, rate: float, probe_s: float) -> dict[str, Any]:
    cmd = {"op": "rate", "rate": rate, "duration": probe_s, "timeout": COMMIT_TIMEOUT_S}
    result = cluster.timed(cmd, probe_s + COMMIT_TIMEOUT_S + 30)
    result["leadership_lost"] = result.get("role") != "leader"
    if result["leadership_lost"] and not cluster.restart():
        raise RuntimeError("after a restart the driver did not become leader within 30 s")
    time.sleep(0.5)  # let replication and apply catch up before the next probe
    return result


def max_rate_search(
    cluster: InprocCluster,
    probe_s: float,
    bisect_steps: int,
    on_probe: Callable[[dict[str, Any]], None],
    start_rate: float = 250.0,
    cap: float = 64_000.0,
) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
    """Double the rate until a probe falls below 99% in time, then bisect; returns the best."""
    probes: list[dict[str, Any]] = []
    good, good_result, bad = 0.0, {}, 0.0
    rate = start_rate
    while rate <= cap:
        result = _probe(cluster, rate, probe_s)
        probes.append(result)
        on_probe(result)
        if result["success"] < SUCCESS_MIN:
            bad = rate
            break
        good, good_result = rate, result
        rate *= 2
    for _ in range(bisect_steps if bad else 0):
        rate = round((good + bad) / 2)
        result = _probe(cluster, rate, probe_s)
        probes.append(result)
        on_probe(result)
        if result["success"] >= SUCCESS_MIN:
            good, good_result = rate, result
        else:
            bad = rate
    return good, good_result, probes


def run_library(
    group: ProcessGroup,
    label: str,
    argv_for: ArgvFor,
    workdir: Path,
    probe_s: float,
    bisect_steps: int,
    on_probe: Callable[[dict[str, Any]], None],
) -> InprocOutcome:
    """Start the library's three nodes, measure low-load latency and the maximum rate."""
    outcome = InprocOutcome(label)
    cluster = InprocCluster(group, label, argv_for, workdir)
    try:
        if not cluster.wait_leader() and not cluster.restart():
            outcome.error = "the driver node did not become leader in 5 fresh clusters"
            return outcome
        cluster.command({"op": "latency", "duration": 1.0}, 30)  # warm-up
        outcome.low_load = cluster.timed({"op": "latency", "duration": probe_s}, probe_s + 30)
        on_probe(outcome.low_load)
        found = max_rate_search(cluster, probe_s, bisect_steps, on_probe)
        outcome.max_rate, outcome.at_max, outcome.probes = found
    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        cluster.stop()
    return outcome
