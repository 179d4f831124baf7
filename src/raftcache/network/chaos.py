"""Seeded chaos for in-memory clusters: partitions, isolations, crashes, lossy links.

Rule: a ``ChaosSchedule`` is a pure function of its seed, its node ids and the hub state it
finds. Each ``step()`` draws one action from its own ``random.Random(seed)`` among those that
apply (nothing to heal → no heal), applies it to the hub and records it as a ``ChaosEvent``. The
same seed on the same starting state gives the same events, and ``ChaosSchedule.replay`` applies
a recorded log to another hub, so a failing run is a seed (or a printed log) you can replay.

To let a cluster make progress between bad moments, at most ``max_failed`` nodes are failed at
once (default: a minority). ``heal()`` undoes everything: recovers failed nodes, heals
partitions and isolations and restores the drop rates the networks had before the chaos.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from raftcache.network.hub import InMemoryHub

__all__ = ["ACTIONS", "ChaosEvent", "ChaosSchedule"]

ACTIONS: tuple[str, ...] = (
    "partition",
    "heal_partition",
    "isolate",
    "rejoin",
    "fail",
    "recover",
    "drop_rate",
    "heal_all",
)
"""Every action a schedule may take; ``heal`` (all of them at once) is explicit only."""

DEFAULT_WEIGHTS: Mapping[str, float] = {
    "partition": 3,
    "heal_partition": 2,
    "isolate": 1,
    "rejoin": 2,
    "fail": 1,
    "recover": 2,
    "drop_rate": 2,
    "heal_all": 1,
}


@dataclass(frozen=True, slots=True)
class ChaosEvent:
    """One applied action. ``value`` is the new drop rate of a ``drop_rate`` event."""

    step: int
    action: str
    nodes: tuple[str, ...] = ()
    value: float | None = None

    def __str__(self) -> str:
        parts = [f"#{self.step}", self.action, *self.nodes]
        if self.value is not None:
            parts.append(f"{self.value:g}")
        return " ".join(parts)


class ChaosSchedule:
    """A seeded sequence of faults applied to an ``InMemoryHub``.

    Args:
        hub: the hub whose networks suffer.
        node_ids: the nodes chaos may pick (sorted internally: the order given does not matter).
        seed: seed of the schedule's own ``random.Random``.
        max_failed: most nodes failed at once; default ``(len(node_ids) - 1) // 2``.
        max_drop_rate: upper bound of the drop rates it sets, in ``[0, 1]``.
        weights: relative weight per action (missing actions: never chosen); default
            ``DEFAULT_WEIGHTS``.

    Example:
        >>> hub = InMemoryHub()
        >>> chaos = ChaosSchedule(hub, ["n1", "n2", "n3"], seed=7)
        >>> first = chaos.step()
        >>> ChaosSchedule(InMemoryHub(), ["n3", "n2", "n1"], seed=7).step() == first
        True
    """

    def __init__(
        self,
        hub: InMemoryHub,
        node_ids: Iterable[str],
        seed: int,
        *,
        max_failed: int | None = None,
        max_drop_rate: float = 0.2,
        weights: Mapping[str, float] | None = None,
    ) -> None:
        self.hub = hub
        self.node_ids: tuple[str, ...] = tuple(sorted(set(node_ids)))
        if len(self.node_ids) < 2:
            raise ValueError("chaos needs at least two nodes")
        if not 0.0 <= max_drop_rate <= 1.0:
            raise ValueError("max_drop_rate must be within [0, 1]")
        self.max_failed = (len(self.node_ids) - 1) // 2 if max_failed is None else max_failed
        self.max_drop_rate = max_drop_rate
        chosen = DEFAULT_WEIGHTS if weights is None else weights
        unknown = set(chosen) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown chaos actions: {sorted(unknown)}")
        self.weights = {a: float(chosen[a]) for a in ACTIONS if chosen.get(a, 0) > 0}
        self.events: list[ChaosEvent] = []
        self._rng = random.Random(seed)
        self._original_drop_rates: dict[str, float] = {}

    # -- choosing -------------------------------------------------------------------------------

    def _applicable(self) -> list[str]:
        hub = self.hub
        failed = [n for n in self.node_ids if hub.is_failed(n)]
        isolated = [n for n in self.node_ids if n in hub.isolated_nodes()]
        possible = {
            "partition": True,
            "heal_partition": bool(hub.partitions()),
            "isolate": len(isolated) < len(self.node_ids),
            "rejoin": bool(isolated),
            "fail": len(failed) < min(self.max_failed, len(self.node_ids)),
            "recover": bool(failed),
            "drop_rate": True,
            "heal_all": bool(hub.partitions() or isolated),
        }
        return [a for a in self.weights if possible[a]]

    def _choose(self) -> ChaosEvent:
        rng, hub, ids = self._rng, self.hub, self.node_ids
        actions = self._applicable()
        action = rng.choices(actions, weights=[self.weights[a] for a in actions])[0]
        step = len(self.events)
        if action == "partition":
            a, b = rng.sample(ids, 2)
            return ChaosEvent(step, action, tuple(sorted((a, b))))
        if action == "heal_partition":
            return ChaosEvent(step, action, rng.choice(hub.partitions()))
        if action == "isolate":
            isolated = hub.isolated_nodes()
            return ChaosEvent(step, action, (rng.choice([n for n in ids if n not in isolated]),))
        if action == "rejoin":
            return ChaosEvent(step, action, (rng.choice(hub.isolated_nodes()),))
        if action == "fail":
            alive = [n for n in ids if not hub.is_failed(n)]
            return ChaosEvent(step, action, (rng.choice(alive),))
        if action == "recover":
            return ChaosEvent(step, action, (rng.choice(hub.failed_nodes()),))
        if action == "drop_rate":
            rate = round(rng.uniform(0.0, self.max_drop_rate), 3)
            return ChaosEvent(step, action, (rng.choice(ids),), rate)
        return ChaosEvent(step, action)

    # -- applying -------------------------------------------------------------------------------

    def step(self) -> ChaosEvent:
        """Draw, apply and record one action."""
        event = self._choose()
        if event.action == "drop_rate":
            network = self.hub.network(event.nodes[0])
            if network is not None:
                self._original_drop_rates.setdefault(event.nodes[0], network.drop_rate)
        self.apply(self.hub, event)
        self.events.append(event)
        return event

    async def run(self, interval: float, steps: int) -> list[ChaosEvent]:
        """Take ``steps`` steps, one every ``interval`` seconds of loop time.

        Returns:
            The events of this run. Call ``heal()`` afterwards to let the cluster recover.
        """
        taken = []
        for _ in range(steps):
            await asyncio.sleep(interval)
            taken.append(self.step())
        return taken

    def heal(self) -> ChaosEvent:
        """Recover every node, heal every partition, restore the original drop rates.

        The restored drop rates are logged as ``drop_rate`` events before the ``heal`` event, so
        that a replayed log ends in the same state.
        """
        for node_id, rate in sorted(self._original_drop_rates.items()):
            restore = ChaosEvent(len(self.events), "drop_rate", (node_id,), rate)
            self.apply(self.hub, restore)
            self.events.append(restore)
        self._original_drop_rates.clear()
        event = ChaosEvent(len(self.events), "heal")
        self.apply(self.hub, event)
        self.events.append(event)
        return event

    def format_log(self) -> str:
        """The recorded events, one per line (``#3 partition n1 n2``)."""
        return "\n".join(str(e) for e in self.events)

    @staticmethod
    def apply(hub: InMemoryHub, event: ChaosEvent) -> None:
        """Apply one recorded event to ``hub`` (the replay primitive)."""
        action, nodes = event.action, event.nodes
        if action == "partition":
            hub.partition(*nodes)
        elif action == "heal_partition":
            hub.heal_partition(*nodes)
        elif action == "isolate":
            hub.isolate(nodes[0])
        elif action == "rejoin":
            hub.rejoin(nodes[0])
        elif action == "fail":
            hub.fail_node(nodes[0])
        elif action == "recover":
            hub.recover_node(nodes[0])
        elif action == "drop_rate":
            network = hub.network(nodes[0])
            if network is not None and event.value is not None:
                network.set_drop_rate(event.value)
        elif action == "heal_all":
            hub.heal_all()
        elif action == "heal":
            for node_id in hub.failed_nodes():
                hub.recover_node(node_id)
            hub.heal_all()
        else:
            raise ValueError(f"unknown chaos action {action!r}")

    @classmethod
    def replay(cls, hub: InMemoryHub, events: Sequence[ChaosEvent]) -> None:
        """Apply a recorded event log to ``hub``, in order."""
        for event in events:
            cls.apply(hub, event)
