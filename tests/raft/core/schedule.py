"""Random schedules: weighted sequences of ``Chaos`` operations, each a function of its seed.

Rule: ``run_schedule(seed, steps)`` draws a ``Profile`` (cluster size, how often ready loops
run, how stormy, how big AppendEntries batches are) and then ``steps`` operations from one
``random.Random(seed)``, checking the invariants after each; the same seed always replays the
same schedule. A failure reports the profile and the last operations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.raft.core.chaos import Chaos

#: (operation, weight) for random schedules.
WEIGHTS: dict[str, int] = {
    "tick_all": 10,
    "tick": 4,
    "timeout": 2,
    "flush": 8,
    "deliver": 60,
    "drop": 3,
    "replay": 2,
    "cut": 2,
    "isolate": 2,
    "heal": 2,
    "rejoin": 3,
    "depose": 2,
    "pause": 2,
    "crash": 2,
    "snapshot": 3,
    "propose": 10,
    "read": 3,
    "transfer": 1,
    "toggle_member": 5,
}
#: Operations that inject faults: a calm profile makes them rarer, so that the cluster spends
#: more time making progress (leaders, commits, snapshots, membership changes).
FAULTS = {"drop", "replay", "cut", "isolate", "crash", "timeout", "transfer", "depose", "pause"}
_NODE_ARG = {
    "tick",
    "timeout",
    "flush",
    "isolate",
    "rejoin",
    "pause",
    "crash",
    "snapshot",
    "transfer",
    "toggle_member",
}
_LEADER_OPS = {"propose", "read", "transfer", "toggle_member"}
_NO_FLUSH_ARG = {
    "flush",
    "replay",
    "cut",
    "isolate",
    "rejoin",
    "heal",
    "crash",
    "depose",
    "pause",
}


@dataclass(frozen=True)
class Profile:
    """The shape of one random schedule."""

    size: int
    flush_prob: float
    fault_scale: float
    #: One entry per AppendEntries makes "an old entry replicated, the new one not" common
    #: (the Figure 8 situation); larger batches exercise partial overlaps.
    max_entries: int

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        return cls(
            size=rng.choice([3, 3, 4, 5]),
            flush_prob=rng.choice([0.6, 0.85, 1.0]),
            fault_scale=rng.choice([0.2, 0.5, 1.0, 2.0]),
            max_entries=rng.choice([1, 1, 3]),
        )

    def weights(self) -> tuple[list[str], list[float]]:
        names = list(WEIGHTS)
        scaled = [w * (self.fault_scale if n in FAULTS else 1.0) for n, w in WEIGHTS.items()]
        return names, scaled


def random_step(
    chaos: Chaos, rng: random.Random, profile: Profile, weights: tuple[list[str], list[float]]
) -> None:
    """One weighted random operation with random arguments."""
    op = rng.choices(*weights)[0]
    args: list[object] = []
    if op in _NODE_ARG or op in ("deliver", "drop", "replay"):
        args.append(rng.randrange(1 << 16))
    if op == "cut":
        args += [rng.randrange(1 << 16), rng.randrange(1 << 16)]
    if op == "pause":
        args.append(rng.choice([2, 5, 15, 30]))
    if op == "depose":
        args.append(rng.randrange(3))
    if op == "propose":
        args.append(rng.choice([1, 1, 1, 2, 5]))
    if op not in _NO_FLUSH_ARG:
        args.append(rng.random() < profile.flush_prob)
    if op in _LEADER_OPS:
        args.append(rng.randrange(4))
    getattr(chaos, op)(*args)


def run_schedule(seed: int, steps: int) -> Chaos:
    """A whole random schedule: ``steps`` operations, checked after each, then ``settle``."""
    rng = random.Random(seed)
    profile = Profile.draw(rng)
    weights = profile.weights()
    chaos = Chaos(profile.size, seed, max_entries=profile.max_entries)
    chaos.log.append(repr(profile))
    try:
        for _ in range(steps):
            random_step(chaos, rng, profile, weights)
            chaos.check()
        chaos.settle()
    except AssertionError as exc:
        tail = "\n  ".join(chaos.log[-40:])
        raise AssertionError(f"{exc}\n{profile}, last operations:\n  {tail}") from exc
    return chaos
