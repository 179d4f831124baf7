"""Nemeses: faults injected into a ``ProcessCluster``, alone or mixed, on a seeded schedule.

Rule: a nemesis *injects* one fault and returns how to *heal* it; the schedule alternates
fault windows and quiet windows, and after every heal measures how long the cluster takes to
serve again (a write and a linearizable read) — a recovery longer than the limit is a liveness
failure. Every choice (which fault, which node, how long) comes from the schedule's own
``random.Random``, so a seed names a schedule; the timing of real processes still varies.

Faults, by family (a mixed window takes at most one fault per family, since two network
faults would overwrite each other's mesh state, and ``kill-all`` always runs alone):

- process: ``kill`` / ``kill-leader`` (``kill -9``, restarted at heal), ``pause`` /
  ``pause-leader`` (SIGSTOP for longer than an election timeout, SIGCONT at heal);
- network, through the proxy mesh: ``partition`` (random majority / minority halves),
  ``isolate-leader``, ``bridge`` (two sides that only a middle node joins), ``asymmetric``
  (the leader's own requests are black-holed, its followers still reach it), ``delay``
  (every link delayed, with jitter), ``flaky`` (links drop at random, re-drawn every 250 ms:
  message loss, with the connection resets that loss means for TCP);
- admin: ``transfer`` (leadership transfers to random voters, about every second);
- adversarial transfers (see ``transfers``): ``transfer-partition`` (network family: the old
  leader is cut off just as it hands over, so it never hears of its successor) and
  ``transfer-pause`` (process family: the old leader is frozen for less than a lease right
  after it sent TimeoutNow);
- membership (see ``membership``): ``remove`` (a random follower) / ``remove-leader``, added
  back at heal; ``replace`` (a random node removed, its data wiped, restarted empty and added
  back as a brand-new member). Healed after the other faults of its window, since adding a
  member back needs a working quorum;
- total: ``kill-all`` (every node ``kill -9`` at once, all restarted at heal);
- clock (only for a cluster started with clock control, see ``clocks``): ``clock-jump`` /
  ``clock-jump-leader`` (a node's clocks, the monotonic one included, jump 2–10 s forwards
  or backwards; back to real time at heal — a second jump). Not in ``ALL_NEMESES``: under
  them lease reads may legitimately be stale, so a run with them checks lease reads apart;
- drift (clock control too, see ``drift``): ``clock-drift`` / ``clock-drift-leader`` (a
  node's clocks run 5–8 % slow or fast, inside ``lease_clock_drift``). Lease reads stay
  strictly checked: that bound is what leases promise to survive;
- config (see ``peers``): ``peers`` / ``peers-leader`` (killed and started again with a wrong
  ``--peers``: only itself, a misspelt id, a member missing, one too many; it must refuse, or
  start on the membership its disk recorded). In ``ALL_NEMESES``: a node takes its
  membership from its data directory, never from its flags, so no run may lose
  linearizability to a mistyped ``--peers``.

A nemesis may report what it observed of its own fault (``Injected.facts``, kept in the
``FaultEvent``): a contract it saw broken there (``facts["violation"]``) becomes a finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.testing.drift import DRIFT_NEMESES, inject_drift
from raftcache.testing.fault_proxy import ProxyMode
from raftcache.testing.harness import ProcessCluster
from raftcache.testing.membership import MEMBERSHIP_NEMESES, Injected, inject_membership
from raftcache.testing.peers import PEERS_NEMESES, inject_peers
from raftcache.testing.transfers import inject_transfer

__all__ = [
    "ALL_NEMESES",
    "CLOCK_NEMESES",
    "DRIFT_NEMESES",
    "FAMILIES",
    "LEASE_NEMESES",
    "PEERS_NEMESES",
    "FaultEvent",
    "Injected",
    "NemesisSchedule",
    "inject",
]

Heal = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class FaultEvent:
    """One fault of a run, for the report.

    Attributes:
        name: The nemesis.
        detail: What exactly it did (which nodes).
        start: When it was injected (the run's clock).
        end: When it was healed.
        recovery_s: Seconds from the heal until the cluster served again; None if it did not
            within the limit.
        heal_s: Seconds the heal itself took (for a membership change: adding the node back,
            i.e. its catch-up as a learner and its promotion).
        facts: What the nemesis observed of its own fault (``Injected.facts``).
    """

    name: str
    detail: str
    start: float
    end: float | None = None
    recovery_s: float | None = None
    heal_s: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)


async def _kill(cluster: ProcessCluster, node: str, name: str) -> Injected:
    await cluster.kill(node)

    async def heal() -> None:
        cluster.restart(node)

    return Injected(name, f"kill -9 {node}", heal)


async def _pause(cluster: ProcessCluster, node: str, name: str) -> Injected | None:
    if not cluster.pause(node):
        return None

    async def heal() -> None:
        cluster.resume(node)

    return Injected(name, f"SIGSTOP {node}", heal)


def _mesh_heal(cluster: ProcessCluster) -> Heal:
    async def heal() -> None:
        cluster.mesh.heal()

    return heal


def _background(task: asyncio.Task[None], cluster: ProcessCluster | None) -> Heal:
    async def heal() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if cluster is not None:
            cluster.mesh.heal()

    return heal


async def _flap_links(cluster: ProcessCluster, rng: random.Random, loss: float) -> None:
    pairs = sorted(cluster.mesh.links())
    while True:
        for src, dst in pairs:
            mode = ProxyMode.DROP if rng.random() < loss else ProxyMode.PASS
            cluster.mesh.set_link(src, dst, mode)
        await asyncio.sleep(0.25)


async def _transfers(cluster: ProcessCluster, rng: random.Random) -> None:
    while True:
        leader = await cluster.leader()
        status = None if leader is None else await cluster.api.status(cluster.url(leader))
        if leader is not None and status is not None:
            # A removed node is no target (409); ``None`` lets the leader choose.
            others = [n for n in cluster.node_ids if n != leader and n in status["members"]]
            target = rng.choice([*others, None])
            await cluster.api.transfer_leader(cluster.url(leader), target)
        await asyncio.sleep(rng.uniform(0.5, 1.5))


async def inject(name: str, cluster: ProcessCluster, rng: random.Random) -> Injected | None:
    """Inject the nemesis ``name``; None when it does not apply now (e.g. no leader known)."""
    nodes = cluster.node_ids
    if name in MEMBERSHIP_NEMESES:
        return await inject_membership(name, cluster, rng)
    if name in ("kill", "pause"):
        node = rng.choice(nodes)
        return await (_kill if name == "kill" else _pause)(cluster, node, name)
    if name == "kill-all":
        await cluster.kill_all()

        async def restart_all() -> None:
            cluster.heal_all()

        return Injected(name, "kill -9 every node", restart_all)
    if name == "transfer":
        task = asyncio.ensure_future(_transfers(cluster, random.Random(rng.getrandbits(64))))
        return Injected(name, "leadership transfers", _background(task, None))
    if name == "flaky":
        loss = rng.choice([0.1, 0.2, 0.3])
        task = asyncio.ensure_future(_flap_links(cluster, random.Random(rng.getrandbits(64)), loss))
        return Injected(name, f"links drop with p={loss}", _background(task, cluster))
    if name == "delay":
        delay, jitter = rng.choice([(0.05, 0.05), (0.1, 0.1), (0.3, 0.2)])
        for src, dst in cluster.mesh.links():
            cluster.mesh.set_link(src, dst, ProxyMode.DELAY, delay_s=delay, jitter_s=jitter)
        return Injected(name, f"delay {delay}±{jitter} s", _mesh_heal(cluster))
    if name == "clock-jump":
        return _clock_jump(cluster, rng.choice(nodes), name, rng)
    if name == "clock-drift":
        node = rng.choice(nodes)
        return None if node in cluster.paused() else inject_drift(name, cluster, node, rng)
    if name == "peers":
        return await inject_peers(name, cluster, rng.choice(nodes), rng)
    shuffled = rng.sample(nodes, len(nodes))
    if name == "partition":
        majority = shuffled[: len(nodes) // 2 + 1]
        minority = shuffled[len(nodes) // 2 + 1 :]
        cluster.mesh.partition([majority, minority])
        return Injected(name, f"{sorted(majority)} | {sorted(minority)}", _mesh_heal(cluster))
    if name == "bridge":
        half = (len(nodes) - 1) // 2
        left, middle, right = shuffled[:half], shuffled[half], shuffled[half + 1 :]
        cluster.mesh.bridge(left, middle, right)
        detail = f"{sorted(left)} - {middle} - {sorted(right)}"
        return Injected(name, detail, _mesh_heal(cluster))
    leader = await cluster.leader()
    if leader is None:
        return None
    return await _inject_at_leader(name, cluster, leader, rng)


def _clock_jump(cluster: ProcessCluster, node: str, name: str, rng: random.Random) -> Injected:
    offset = rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 10.0)
    cluster.set_clock_offset(node, offset)

    async def heal() -> None:
        cluster.set_clock_offset(node, 0.0)

    return Injected(name, f"{node} clock {offset:+.1f} s", heal)


async def _inject_at_leader(
    name: str, cluster: ProcessCluster, leader: str, rng: random.Random
) -> Injected | None:
    if name == "clock-jump-leader":
        return _clock_jump(cluster, leader, name, rng)
    if name == "clock-drift-leader":
        return None if leader in cluster.paused() else inject_drift(name, cluster, leader, rng)
    if name == "peers-leader":
        return await inject_peers(name, cluster, leader, rng)
    if name in ("transfer-partition", "transfer-pause"):
        return await inject_transfer(name, cluster, leader, rng)
    if name == "kill-leader":
        return await _kill(cluster, leader, name)
    if name == "pause-leader":
        return await _pause(cluster, leader, name)
    if name == "isolate-leader":
        cluster.mesh.isolate(leader)
        return Injected(name, f"isolate {leader}", _mesh_heal(cluster))
    if name == "asymmetric":
        for other in cluster.node_ids:
            if other != leader:
                cluster.mesh.set_link(leader, other, ProxyMode.DROP)
        return Injected(name, f"{leader} cannot reach the others", _mesh_heal(cluster))
    raise ValueError(f"unknown nemesis {name!r}")


FAMILIES: dict[str, tuple[str, ...]] = {
    "process": ("kill", "kill-leader", "pause", "pause-leader", "transfer-pause"),
    "network": (
        "partition",
        "isolate-leader",
        "bridge",
        "asymmetric",
        "delay",
        "flaky",
        "transfer-partition",
    ),
    "admin": ("transfer",),
    "membership": MEMBERSHIP_NEMESES,
    "total": ("kill-all",),
    "clock": ("clock-jump", "clock-jump-leader"),
    "drift": DRIFT_NEMESES,
    "config": PEERS_NEMESES,
}
CLOCK_NEMESES: tuple[str, ...] = FAMILIES["clock"]
#: Families left out of the default mix: clock faults need libfaketime (and jumps exempt lease
#: reads). A wrong ``--peers`` is in it: the data directory's membership wins over the flags,
#: which every run can then check.
_OPT_IN = ("clock", "drift")
ALL_NEMESES: tuple[str, ...] = tuple(
    n for family, names in FAMILIES.items() if family not in _OPT_IN for n in names
)
#: What ``make soak-lease`` draws from: the faults aimed at leases and at who leads, with
#: ``consistency=lease`` reads checked strictly.
LEASE_NEMESES: tuple[str, ...] = (
    "transfer",
    "transfer-partition",
    "transfer-pause",
    "clock-drift",
    "clock-drift-leader",
    "peers",
    "peers-leader",
    "partition",
    "isolate-leader",
    "kill",
    "kill-leader",
    "pause",
    "pause-leader",
)
_FAMILY_OF = {name: family for family, names in FAMILIES.items() for name in names}


class NemesisSchedule:
    """Alternates fault windows and quiet windows until stopped.

    Args:
        nemeses: The names to draw from (``ALL_NEMESES`` by default).
        rng: Draws everything; a seed names a schedule.
        fault_s: Range of a fault window's length (pauses need more than the 2 s election
            timeout to matter, so keep its lower end above that).
        quiet_s: Range of a quiet window's length.
        mix_ratio: Probability that a window combines faults of two families.
        recovery_limit_s: Longest acceptable time to serve again after a heal.
    """

    def __init__(
        self,
        nemeses: Sequence[str] = ALL_NEMESES,
        *,
        rng: random.Random,
        fault_s: tuple[float, float] = (3.0, 7.0),
        quiet_s: tuple[float, float] = (2.0, 4.0),
        mix_ratio: float = 0.3,
        recovery_limit_s: float = 30.0,
    ) -> None:
        unknown = [n for n in nemeses if n not in _FAMILY_OF]
        if unknown or not nemeses:
            raise ValueError(f"unknown nemeses {unknown}; choose from {list(_FAMILY_OF)}")
        self.nemeses = list(nemeses)
        self.rng = rng
        self.fault_s = fault_s
        self.quiet_s = quiet_s
        self.mix_ratio = mix_ratio
        self.recovery_limit_s = recovery_limit_s
        self.events: list[FaultEvent] = []

    def draw(self) -> list[str]:
        """The nemeses of the next window: one, or two of different families."""
        first = self.rng.choice(self.nemeses)
        if _FAMILY_OF[first] == "total" or self.rng.random() >= self.mix_ratio:
            return [first]
        others = [n for n in self.nemeses if _FAMILY_OF[n] not in (_FAMILY_OF[first], "total")]
        return [first, self.rng.choice(others)] if others else [first]

    async def run(
        self, cluster: ProcessCluster, stop: asyncio.Event, clock: Callable[[], float]
    ) -> None:
        """Fault, heal, measure recovery, rest; until ``stop`` is set (a window in progress
        is cut short and healed)."""
        while not stop.is_set():
            window: list[tuple[Injected, FaultEvent]] = []
            try:
                for name in self.draw():
                    injected = await inject(name, cluster, self.rng)
                    if injected is not None:
                        # The same dict: facts the nemesis learns later reach the report.
                        event = FaultEvent(name, injected.detail, clock(), facts=injected.facts)
                        self.events.append(event)
                        window.append((injected, event))
                await _sleep_unless(stop, self.rng.uniform(*self.fault_s))
            finally:
                for injected, event in _heal_order(window):
                    healing = clock()
                    await injected.heal()
                    event.detail = injected.detail
                    event.end = clock()
                    event.heal_s = event.end - healing
            if window:
                recovery = await cluster.wait_serving(self.recovery_limit_s)
                for _, event in window:
                    event.recovery_s = recovery
            await _sleep_unless(stop, self.rng.uniform(*self.quiet_s))


def _heal_order(window: list[tuple[Injected, FaultEvent]]) -> list[tuple[Injected, FaultEvent]]:
    """Last injected, first healed — but membership last of all: adding a member back needs
    a quorum, which a fault of another family may be holding down."""
    backwards = list(reversed(window))
    return sorted(backwards, key=lambda pair: _FAMILY_OF.get(pair[0].name) == "membership")


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
