"""A Hypothesis stateful model of 3–5 pure cores under an adversarial network.

Rule: every rule is one operation of ``chaos.Chaos`` (tick, deliver, drop, replay, partition,
heal, crash-restart, snapshot, propose, read, transfer, membership change), and the safety
invariants of ``invariants.SafetyChecker`` are checked after every step: one leader per term,
log matching, committed entries never change, one applied sequence, leader completeness, and
ReadIndex linearizability. At teardown the network heals and the cluster must make progress.
Hypothesis shrinks a failure to a short list of rules that replays deterministically.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.raft.core.chaos import Chaos

NODE = st.integers(0, 4)
PICK = st.integers(0, 1 << 16)
FLUSH = st.booleans()
#: Which of the nodes that believe they lead (newest term first) a client talks to.
LEADER = st.integers(0, 2)


class CoreMachine(RuleBasedStateMachine):
    """The network of cores is the system under test; rules are the adversary's moves."""

    chaos: Chaos | None = None

    @initialize(size=st.integers(3, 5), seed=st.integers(0, 1 << 16), batch=st.sampled_from([1, 3]))
    def start(self, size: int, seed: int, batch: int) -> None:
        self.chaos = Chaos(size, seed, max_entries=batch)

    @property
    def c(self) -> Chaos:
        assert self.chaos is not None
        return self.chaos

    # Time.
    @rule(n=st.integers(1, 6), flush=FLUSH)
    def tick_all(self, n: int, flush: bool) -> None:
        for _ in range(n):
            self.c.tick_all(flush)

    @rule(ticks=st.integers(1, 12))
    def calm(self, ticks: int) -> None:
        self.c.calm(ticks)

    @rule(node=NODE, flush=FLUSH)
    def tick(self, node: int, flush: bool) -> None:
        self.c.tick(node, flush)

    @rule(node=NODE, flush=FLUSH)
    def timeout(self, node: int, flush: bool) -> None:
        self.c.timeout(node, flush)

    @rule(node=NODE)
    def flush(self, node: int) -> None:
        self.c.flush(node)

    # The network.
    @rule(picks=st.lists(PICK, min_size=1, max_size=16), flush=FLUSH)
    def deliver(self, picks: list[int], flush: bool) -> None:
        for k in picks:
            self.c.deliver(k, flush)

    @rule(k=PICK, flush=FLUSH)
    def drop(self, k: int, flush: bool) -> None:
        self.c.drop(k, flush)

    @rule(k=PICK)
    def replay(self, k: int) -> None:
        self.c.replay(k)

    @rule(a=NODE, b=NODE)
    def cut(self, a: int, b: int) -> None:
        self.c.cut(a, b)

    @rule(node=NODE)
    def isolate(self, node: int) -> None:
        self.c.isolate(node)

    @rule(node=NODE)
    def rejoin(self, node: int) -> None:
        self.c.rejoin(node)

    @rule()
    def heal(self) -> None:
        self.c.heal()

    @rule(mode=st.integers(0, 2))
    def depose(self, mode: int) -> None:
        self.c.depose(mode)

    @rule(node=NODE, ticks=st.sampled_from([2, 5, 15, 30]))
    def pause(self, node: int, ticks: int) -> None:
        self.c.pause(node, ticks)

    # Nodes.
    @rule(node=NODE)
    def crash_restart(self, node: int) -> None:
        self.c.crash(node)

    @rule(node=NODE, flush=FLUSH)
    def snapshot(self, node: int, flush: bool) -> None:
        self.c.snapshot(node, flush)

    # Clients and operators.
    @precondition(lambda self: self.chaos is not None and self.chaos.net.leader() is not None)
    @rule(count=st.integers(1, 4), flush=FLUSH, which=LEADER)
    def propose(self, count: int, flush: bool, which: int) -> None:
        self.c.propose(count, flush, which)

    @precondition(lambda self: self.chaos is not None and self.chaos.net.leader() is not None)
    @rule(flush=FLUSH, which=LEADER)
    def read(self, flush: bool, which: int) -> None:
        self.c.read(flush, which)

    @rule(node=NODE, flush=FLUSH, which=LEADER)
    def transfer(self, node: int, flush: bool, which: int) -> None:
        self.c.transfer(node, flush, which)

    @rule(node=NODE, flush=FLUSH, which=LEADER)
    def toggle_member(self, node: int, flush: bool, which: int) -> None:
        self.c.toggle_member(node, flush, which)

    @invariant()
    def safe(self) -> None:
        if self.chaos is not None:
            self.chaos.check()

    def teardown(self) -> None:
        # Hypothesis tears down after a failed step too: settling then would only bury the
        # real failure under a second one.
        if self.chaos is not None and not self.chaos.failed:
            self.chaos.settle()


class CoreMachineLong(CoreMachine):
    """The same model, searched longer (``make sweep``)."""


# make test (the ci profile: derandomized, the same 250 examples every run): about 10 s. Other
# runs (the dev profile) search 500 from a fresh seed each time. make sweep:
# RAFTCACHE_STATEFUL_EXAMPLES examples, longer schedules.
_EXAMPLES = 250 if settings.get_current_profile_name() == "ci" else 500
CoreMachine.TestCase.settings = settings(max_examples=_EXAMPLES, stateful_step_count=200)
CoreMachineLong.TestCase.settings = settings(
    max_examples=int(os.environ.get("RAFTCACHE_STATEFUL_EXAMPLES", "3000")),
    stateful_step_count=400,
)
TestCoreStateful = CoreMachine.TestCase
TestCoreStatefulLong = pytest.mark.slow(CoreMachineLong.TestCase)
