"""A cluster of real ``raftcache serve`` processes wired through a mesh of fault proxies.

Rule: every node reaches every other node only through the ``ProxyMesh`` (its ``--peers``
lists each peer at the proxy for that ordered pair), so a partition cut in the mesh is a real
network partition for Raft traffic *and* for requests a follower forwards to the leader. Clients
— the workloads and the harness itself — talk to the nodes' real ports directly, as Jepsen's
clients do. Each node also gets its proxies as ``--peer-address-override``, so a member that a
membership change adds back (its configuration entry naming its real URL) is still reached
through the mesh (docs/testing-faults.md).

The cluster owns its processes: ``stop`` (also reached from ``async with`` on any error) takes
every node down, and each node dies with the harness anyway (see ``procs``). Nodes listen on
127.0.0.1 only. The harness knows which nodes it killed or paused, so a node that exits by
itself is reported as a crash, never mistaken for an injected fault.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftcache.testing.clocks import CLEARED_VARIABLES, ClockControl
from raftcache.testing.httpops import NodeApi
from raftcache.testing.mesh import ProxyMesh
from raftcache.testing.procs import NodeProcess, NodeSpec, free_port, log_tail

__all__ = ["ClusterError", "NodeCrash", "ProcessCluster"]

HOST = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster could not be brought to the state the harness asked for."""


@dataclass(frozen=True, slots=True)
class NodeCrash:
    """A node that exited although the harness did not kill it."""

    node_id: str
    exit_code: int
    log_tail: str


class ProcessCluster:
    """N ``raftcache serve`` processes on loopback, each behind its own proxies.

    Args:
        node_ids: The members, e.g. ``["n1", "n2", "n3"]``.
        base_dir: Data directories (``base_dir/nI``) and logs (``base_dir/nI.log``) go here.
        rng: Seeds the proxies' jitter.
        extra_args: Appended to every ``serve`` command line.
        python: The interpreter for the nodes (default: this one).
        clock: Puts every node's clocks under this control (clock faults; see ``clocks``).
        address_overrides: Start every node with ``--peer-address-override`` (its proxies),
            so that membership changes keep the mesh; False only to show what happens
            without.
        probe_heartbeat_s: Start every node with this ``--watch-heartbeat``, so that a
            ``clockprobe`` can time its monotonic clock (clock-drift faults).
    """

    def __init__(
        self,
        node_ids: Sequence[str],
        base_dir: Path,
        *,
        rng: random.Random,
        extra_args: Sequence[str] = (),
        python: str = "",
        clock: ClockControl | None = None,
        address_overrides: bool = True,
        probe_heartbeat_s: float | None = None,
    ) -> None:
        if len(set(node_ids)) != len(node_ids) or not node_ids:
            raise ValueError("node ids must be distinct and non-empty")
        self.base_dir = base_dir
        self.specs = {
            n: NodeSpec(n, HOST, free_port(HOST), base_dir / n, base_dir / f"{n}.log")
            for n in node_ids
        }
        self.mesh = ProxyMesh({n: s.port for n, s in self.specs.items()}, host=HOST, rng=rng)
        # ``stop`` takes every node down at once: a leader's handover to a peer that is
        # stopping too would only wait out its timeout (seconds per cluster).
        probe = ["--watch-heartbeat", str(probe_heartbeat_s)] if probe_heartbeat_s else []
        self._extra = ["--no-transfer-on-shutdown", *probe, *extra_args]
        self.probe_heartbeat_s = probe_heartbeat_s
        self._python = python
        self.clock = clock
        self._overrides = address_overrides
        self.nodes: dict[str, NodeProcess] = {}
        self.api = NodeApi(timeout_s=2.0)
        self.crashes: list[NodeCrash] = []
        self._killed: set[str] = set()
        #: Every voter set a leader reported (the bootstrap one to start with): what a node
        #: may have recorded on disk, for the ``peers`` nemesis.
        self.voter_sets_seen: set[frozenset[str]] = {frozenset(node_ids)}

    @property
    def node_ids(self) -> list[str]:
        return list(self.specs)

    def url(self, node: str) -> str:
        """The node's real URL (what clients use)."""
        return self.specs[node].url

    @property
    def urls(self) -> list[str]:
        return [self.url(n) for n in self.specs]

    async def __aenter__(self) -> ProcessCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self, leader_timeout_s: float = 60.0) -> str:
        """Start the proxies, then every node; returns the first leader elected."""
        await self.mesh.start()
        for node, spec in self.specs.items():
            peers = self.mesh.addresses(node)
            env = dict(os.environ)
            if self.clock is not None:
                for name in CLEARED_VARIABLES:
                    env.pop(name, None)
                env.update(self.clock.env(node))
            # The same proxies as overrides: a member added back by a membership change is
            # still reached through the mesh, whatever URL its configuration entry names.
            routes = {p: url for p, url in peers.items() if p != node} if self._overrides else {}
            self.nodes[node] = NodeProcess(
                spec, peers, extra_args=self._extra, python=self._python, env=env, overrides=routes
            )
        for node in self.nodes:
            self._spawn(node)
        return await self.wait_for_leader(leader_timeout_s)

    def _spawn(self, node: str, *, stderr_path: Path | None = None) -> None:
        """Start an incarnation of ``node`` and tell the clock control when it began."""
        self.nodes[node].start(stderr_path=stderr_path)
        if self.clock is not None:
            self.clock.started(node)

    async def stop(self) -> None:
        """Stop every node (SIGCONT, SIGTERM, SIGKILL after a grace), then the proxies."""
        self.check_crashes()
        # From here on every exit is the harness's doing, not a crash.
        self._killed.update(self.nodes)
        try:
            await asyncio.gather(*(p.terminate(grace_s=10.0) for p in self.nodes.values()))
        finally:
            # Belt and braces: whatever survived a failed gather is killed for sure.
            for proc in self.nodes.values():
                await proc.kill()
            # Healing first lets black-holed connections end on their own: cancelling a
            # connection handler stuck in the hole makes asyncio log a spurious error.
            self.mesh.heal()
            await asyncio.sleep(0)
            await self.mesh.stop()
            await self.api.close()

    # -- observing ------------------------------------------------------------------------

    async def statuses(self, timeout_s: float = 1.0) -> dict[str, dict[str, Any] | None]:
        """``/v1/status`` of every node (None for a node that does not answer in time)."""
        answers = await asyncio.gather(
            *(self.api.status(self.url(n), timeout_s=timeout_s) for n in self.specs)
        )
        return dict(zip(self.specs, answers, strict=True))

    async def leader(self, timeout_s: float = 1.0) -> str | None:
        """The node that claims leadership with the highest term, if any answers."""
        best: tuple[int, str] | None = None
        for node, status in (await self.statuses(timeout_s)).items():
            if status and status.get("role") == "leader" and isinstance(status.get("term"), int):
                best = max(best or (status["term"], node), (status["term"], node))
        return best[1] if best else None

    async def wait_for_leader(self, timeout_s: float) -> str:
        """Poll until some node leads; ClusterError (with log tails) after ``timeout_s`` or
        as soon as a node exits by itself."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            crashes = self.check_crashes()
            if crashes:
                names = ", ".join(f"{c.node_id} (exit {c.exit_code})" for c in crashes)
                raise ClusterError(f"node exited: {names}\n{self.describe_logs()}")
            leader = await self.leader()
            if leader is not None:
                return leader
            if loop.time() >= deadline:
                raise ClusterError(f"no leader within {timeout_s} s\n{self.describe_logs()}")
            await asyncio.sleep(0.2)

    def check_crashes(self) -> list[NodeCrash]:
        """Record nodes that died without being killed by the harness; returns new ones."""
        found: list[NodeCrash] = []
        for node, proc in self.nodes.items():
            code = proc.exit_code()
            if code is not None and node not in self._killed:
                crash = NodeCrash(node, code, log_tail(self.specs[node].log_path, 40))
                found.append(crash)
                # Counted once: from now on it is simply a dead node, restarted by heal_all.
                self._killed.add(node)
        self.crashes.extend(found)
        return found

    def describe_logs(self, lines: int = 20) -> str:
        """The tail of every node's log, for failure messages."""
        return "\n".join(
            f"--- {n} ({self.specs[n].log_path}):\n{log_tail(self.specs[n].log_path, lines)}"
            for n in self.specs
        )

    async def wait_serving(self, timeout_s: float, *, key: str = "harness-probe") -> float | None:
        """Seconds until the cluster serves a write and a linearizable read, or None.

        Asks each node in turn (followers forward), so one node still restarting does not
        count as the cluster being down; a write proves a leader with a working quorum.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        attempt = 0
        while loop.time() - start < timeout_s:
            url = self.urls[attempt % len(self.specs)]
            attempt += 1
            written = await self.api.put(url, key, f"probe-{attempt}")
            if written.ok and (await self.api.get(url, key)).ok:
                return loop.time() - start
            await asyncio.sleep(0.1)
        return None

    async def mesh_leaks(
        self, timeout_s: float = 3.0, nodes: Sequence[str] | None = None
    ) -> list[str]:
        """Nodes that get a write committed while the mesh cuts them off from everyone —
        i.e. that reach the leader without going through their proxies. Run it at the end:
        each node is isolated in turn (a leader among them is deposed), and the mesh is
        healed before it returns.

        A node learns a peer's address from its ``--peers`` (the mesh) unless something
        overrides it, such as a configuration replicated to it. Such a node makes partitions
        leaky, which weakens a run without making its verdicts wrong. A leak towards a node
        that is not the leader goes unnoticed here: this is a spot check, not a proof.
        ``nodes`` limits the check to those nodes (default: every node).
        """
        api = NodeApi(timeout_s=timeout_s)
        leaks: list[str] = []
        try:
            for node in self.specs if nodes is None else nodes:
                self.mesh.isolate(node)
                if (await api.put(self.url(node), "harness-mesh-check", node)).ok:
                    leaks.append(node)
                self.mesh.heal()
                await self.wait_serving(30.0)
        finally:
            self.mesh.heal()
            await api.close()
        return leaks

    def dead(self) -> list[str]:
        return [n for n, p in self.nodes.items() if not p.alive()]

    def paused(self) -> list[str]:
        return [n for n, p in self.nodes.items() if p.paused]

    # -- faults ---------------------------------------------------------------------------

    async def kill(self, node: str) -> None:
        """``kill -9`` one node."""
        self._killed.add(node)
        await self.nodes[node].kill()

    async def kill_all(self) -> None:
        """``kill -9`` every node at once (signals first, then reap: no node outlives another
        by more than the time to send N signals)."""
        self._killed.update(self.nodes)
        for proc in self.nodes.values():
            proc.signal(signal.SIGKILL)
        await asyncio.gather(*(p.kill() for p in self.nodes.values()))

    def restart(self, node: str) -> None:
        """Start a new incarnation of a dead node (same port, same data directory)."""
        self.check_crashes()
        proc = self.nodes[node]
        if not proc.alive():
            self._spawn(node)
        self._killed.discard(node)

    def start_misconfigured(self, node: str, peers: dict[str, str], stderr_path: Path) -> None:
        """Start a new incarnation of the dead ``node`` with ``--peers`` = ``peers`` instead of
        its own (an operator's typo, a stale config file); its stderr goes to
        ``stderr_path`` too. The harness expects it to exit by itself (a refusal), so it is
        no crash; ``restart`` brings it back with its right flags."""
        proc = self.nodes[node]
        if proc.alive():
            raise ClusterError(f"node {node} is running: kill it first")
        right = proc.peers
        self._killed.add(node)
        proc.peers = dict(peers)
        try:
            self._spawn(node, stderr_path=stderr_path)
        finally:
            proc.peers = right

    def pause(self, node: str) -> bool:
        """SIGSTOP one node; False when it is not running."""
        return self.nodes[node].pause()

    def resume(self, node: str) -> None:
        self.nodes[node].resume()

    def set_clock_offset(self, node: str, seconds: float) -> None:
        """Jump ``node``'s clocks to real time + ``seconds`` (needs ``clock``)."""
        if self.clock is None:
            raise ClusterError("this cluster was started without clock control")
        self.clock.set_offset(node, seconds)

    def set_clock_rate(self, node: str, rate: float) -> None:
        """Make ``node``'s clocks run at ``rate`` times real speed, without a jump (needs
        ``clock``, best without its cache: see ``clocks``)."""
        if self.clock is None:
            raise ClusterError("this cluster was started without clock control")
        self.clock.set_rate(node, rate)

    def heal_all(self) -> None:
        """End every fault: heal the mesh, reset clocks (jumps back to real time; a drift
        stops without a jump, keeping what it accumulated), resume paused nodes, restart
        dead ones."""
        self.mesh.heal()
        if self.clock is not None:
            for node in self.specs:
                if self.clock.rate(node) != 1.0:
                    self.clock.set_rate(node, 1.0)
                if self.clock.offsets.get(node):
                    self.clock.set_offset(node, 0.0)
        for node, proc in self.nodes.items():
            proc.resume()
            if not proc.alive():
                self.restart(node)
