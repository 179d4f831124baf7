"""Clock drift inside the bound: a node's clocks run a few percent slow or fast.

Rule: leases are designed to survive clocks whose *rates* differ by up to the cluster's
``lease_clock_drift`` (``RaftConfig``, default 0.1: a leader's lease is 0.9 of the shortest
election timeout, as measured on its own clock). So a drift inside that bound is a fault under
which ``consistency=lease`` reads must stay linearizable — checked strictly, unlike clock
*jumps* (``clocks``). The nemeses:

- ``clock-drift``: a random node's clocks (wall and monotonic) run at ``x0.92``–``x0.95`` or
  ``x1.05``–``x1.08`` of real speed for the fault window; the rate returns to ``x1`` at heal,
  without a jump (the node keeps the few hundred milliseconds it drifted, as a real clock
  would until NTP steps it).
- ``clock-drift-leader``: the same for the leader, slowed only (a slow leader clock is the
  direction that stretches its lease in real time; a fast one only shortens it). Mixed with
  ``partition`` or ``isolate-leader`` (another family), it attacks the lease from both sides.

Each window measures the rate the node's monotonic clock really ran at (``clockprobe``: its
watch keep-alives timed from outside) and records it in ``facts`` (``rate``, ``measured_rate``).
Needs a cluster under ``ClockControl`` without its cache, started with
``probe_heartbeat_s`` (``campaign`` does both when a drift nemesis is drawn).
"""

from __future__ import annotations

import asyncio
import random

from raftcache.testing.clockprobe import KeepAliveProbe
from raftcache.testing.harness import ClusterError, ProcessCluster
from raftcache.testing.membership import Injected

__all__ = ["DRIFT_NEMESES", "FAST_RATES", "SLOW_RATES", "inject_drift"]

DRIFT_NEMESES: tuple[str, ...] = ("clock-drift", "clock-drift-leader")
#: Inside the default ``lease_clock_drift`` of 0.1, with a margin.
SLOW_RATES = (0.92, 0.95)
FAST_RATES = (1.05, 1.08)


def inject_drift(name: str, cluster: ProcessCluster, node: str, rng: random.Random) -> Injected:
    """Make ``node``'s clocks drift for the window (see the module docstring)."""
    if cluster.clock is None:
        raise ClusterError("clock drift needs a cluster under clock control")
    bounds = SLOW_RATES if name == "clock-drift-leader" else rng.choice([SLOW_RATES, FAST_RATES])
    rate = round(rng.uniform(*bounds), 3)
    probe: KeepAliveProbe | None = None
    if cluster.probe_heartbeat_s and cluster.nodes[node].alive():
        loop = asyncio.get_running_loop()
        probe = KeepAliveProbe(cluster.url(node), cluster.probe_heartbeat_s, loop.time)
    cluster.set_clock_rate(node, rate)
    if probe is not None:
        probe.start()

    async def heal() -> None:
        measured = await probe.stop() if probe is not None else None
        cluster.set_clock_rate(node, 1.0)
        injected.facts["measured_rate"] = None if measured is None else round(measured, 4)
        if measured is not None:
            injected.detail += f", measured x{measured:.3f}"

    injected = Injected(name, f"{node} clocks at x{rate}", heal)
    injected.facts.update(node=node, rate=rate)
    return injected
