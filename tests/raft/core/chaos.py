"""Adversarial schedules over a ``LockstepNetwork``, shared by the Hypothesis state machine and
the seeded sweep.

Rule: every operation is legal at any moment (it does nothing when it does not apply), so a
schedule is just a sequence of operations with small integer arguments; and the safety checker
runs after every one of them. The adversary may reorder, drop and replay messages (a request
delivered twice, or long after it was sent, as a retrying transport can do), cut links, crash
nodes between a step and its persistence, and ask for snapshots, reads, transfers and
membership changes at any time. ``settle()`` ends a schedule with a liveness check: once the
network heals, a leader emerges and every node applies a fresh command.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from raftcache.raft.errors import MembershipChangeError, NotLeaderError, ProposalDroppedError
from tests.raft.core.invariants import SafetyChecker
from tests.raft.core.lockstep import ELECTION_TICKS_MAX, LockstepNetwork, make_config

#: Small messages, pipelines and chunks, so that short schedules exercise every code path.
CHAOS_CONFIG = make_config(
    max_entries_per_message=3,
    max_inflight=4,
    snapshot_chunk_size=48,
)

RefusedError = (NotLeaderError, ProposalDroppedError, MembershipChangeError)


@dataclass
class ReadCheck:
    """Linearizability of ReadIndex: a confirmed read index covers everything committed
    anywhere before the read was requested."""

    floors: dict[tuple[str, int, int], int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    confirmed = 0

    def requested(self, node: str, incarnation: int, read_id: int, floor: int) -> None:
        self.floors[(node, incarnation, read_id)] = floor

    def check(self, net: LockstepNetwork) -> None:
        for node_id, node in net.nodes.items():
            start = self.seen.get(f"{node_id}/{node.incarnation}", 0)
            for read_id, index in node.reads[start:]:
                floor = self.floors.get((node_id, node.incarnation, read_id), 0)
                assert index >= floor, (
                    f"{node_id}: read {read_id} confirmed at {index}, but {floor} was "
                    "already committed when it was requested (stale read)"
                )
                self.confirmed += 1
            self.seen[f"{node_id}/{node.incarnation}"] = len(node.reads)


class Chaos:
    """A network under attack, with the safety checker watching every step."""

    def __init__(self, size: int, seed: int, *, auto_ready: bool = False) -> None:
        self.net = LockstepNetwork(size, seed=seed, cfg=CHAOS_CONFIG, auto_ready=auto_ready)
        self.ids = list(self.net.nodes)
        self.checker = SafetyChecker()
        self.reads = ReadCheck()
        self.proposed = 0
        self.next_read = 0
        self.log: list[str] = []

    # ------------------------------------------------------------------ helpers
    def _node(self, i: int) -> str:
        return self.ids[i % len(self.ids)]

    def check(self) -> None:
        self.checker.check(self.net)
        self.reads.check(self.net)

    def _record(self, what: str) -> None:
        self.log.append(what)

    # ------------------------------------------------------------------ operations
    # ``flush`` says whether the node's ready loop runs right after the step (it usually does
    # in the driver); when it does not, a crash before the next flush loses the step's effects.
    def _after(self, node: str, flush: bool) -> None:
        if flush:
            self.net.flush(node)

    def tick(self, i: int, flush: bool = True) -> None:
        node = self._node(i)
        self._record(f"tick {node}")
        self.net.tick(node)
        self._after(node, flush)

    def tick_all(self, flush: bool = True) -> None:
        self._record("tick all")
        for node in self.ids:
            self.net.tick(node)
            self._after(node, flush)

    def flush(self, i: int) -> None:
        node = self._node(i)
        self._record(f"flush {node}")
        self.net.flush(node)

    def deliver(self, k: int, flush: bool = True) -> None:
        if self.net.queue:
            env = self.net.queue[k % len(self.net.queue)]
            self._record(f"deliver {env!r}")
            self.net.deliver(env)  # a request is always flushed before its answer leaves
            self._after(env.sender, flush and env.is_request is False)

    def drop(self, k: int, flush: bool = True) -> None:
        if self.net.queue:
            env = self.net.queue[k % len(self.net.queue)]
            self._record(f"drop {env!r}")
            self.net.drop_envelope(env)
            self._after(env.sender, flush)

    def replay(self, k: int) -> None:
        """Deliver again a request handled before (a duplicate, possibly very late); nobody
        waits for its response any more."""
        handled = self.net.handled
        if handled:
            h = handled[len(handled) - 1 - k % min(len(handled), 64)]
            self._record(f"replay {h.src}->{h.dst} {type(h.request).__name__}")
            self.net.replay(h.src, h.dst, h.request)

    def cut(self, i: int, j: int) -> None:
        a, b = self._node(i), self._node(j)
        if a != b:
            self._record(f"cut {a} {b}")
            self.net.cut(a, b)

    def isolate(self, i: int) -> None:
        node = self._node(i)
        self._record(f"isolate {node}")
        self.net.isolate(node)

    def heal(self) -> None:
        self._record("heal")
        self.net.heal()

    def crash(self, i: int) -> None:
        node = self._node(i)
        self._record(f"crash {node}")
        self.net.crash_restart(node)

    def snapshot(self, i: int, flush: bool = True) -> None:
        node = self._node(i)
        self._record(f"snapshot {node}")
        self.net.nodes[node].take_snapshot()
        self._after(node, flush)

    def _leader_does(self, what: str, flush: bool, action: Callable[[str], object]) -> None:
        leader = self.net.leader()
        if leader is None:
            return
        self._record(f"{what} on {leader}")
        try:
            action(leader)
        except RefusedError:
            return
        self._after(leader, flush)

    def propose(self, flush: bool = True) -> None:
        self.proposed += 1
        cmd = f"cmd-{self.proposed}".encode()
        self._leader_does(f"propose {cmd!r}", flush, lambda n: self.net[n].propose(cmd))

    def read(self, flush: bool = True) -> None:
        self.next_read += 1
        read_id = self.next_read
        floor = max(self.checker.committed, default=0)

        def request(leader: str) -> None:
            node = self.net.nodes[leader]
            self.reads.requested(leader, node.incarnation, read_id, floor)
            node.core.request_read(read_id)

        self._leader_does(f"read #{read_id}", flush, request)

    def transfer(self, i: int, flush: bool = True) -> None:
        target = self._node(i)
        self._leader_does(
            f"transfer to {target}", flush, lambda n: self.net[n].transfer_leadership(target)
        )

    def toggle_member(self, i: int, flush: bool = True) -> None:
        """Demote a voter to learner or promote a learner, keeping at least three voters."""
        node = self._node(i)

        def change(leader: str) -> None:
            core = self.net[leader]
            conf = core.configuration
            if node in conf.voters and len(conf.voters) > 3:
                core.propose_config(conf.with_learner(node, conf.voters[node]))
            elif node in conf.learners:
                core.propose_config(conf.with_voter(node, None))

        self._leader_does(f"toggle {node}", flush, change)

    # ------------------------------------------------------------------ the end
    def settle(self) -> None:
        """Heal everything and require progress: one leader, and a fresh command applied
        everywhere within a bounded number of ticks."""
        self._record("settle")
        net = self.net
        net.heal()
        net.auto_ready = True
        net.flush_all()
        marker = b"settle-marker"
        proposed = False
        for _ in range(20 * ELECTION_TICKS_MAX):
            net.tick_all()
            net.stabilize()
            self.check()
            leader = net.leader()
            if leader is not None and not proposed:
                try:
                    net.propose(leader, marker)
                    proposed = True
                except RefusedError:
                    pass
            if proposed and all(marker in n.commands() for n in net.nodes.values()):
                return
        state = {
            n: (node.core.role.value, node.core.term, node.core.commit_index, node.core.applied)
            for n, node in net.nodes.items()
        }
        raise AssertionError(f"no progress after healing: {state}")


#: (operation, weight) for random schedules.
WEIGHTS: dict[str, int] = {
    "tick_all": 12,
    "tick": 4,
    "flush": 8,
    "deliver": 45,
    "drop": 3,
    "replay": 2,
    "cut": 1,
    "isolate": 1,
    "heal": 2,
    "crash": 1,
    "snapshot": 2,
    "propose": 10,
    "read": 3,
    "transfer": 1,
    "toggle_member": 1,
}
_NAMES = list(WEIGHTS)
_WEIGHTS = list(WEIGHTS.values())
_NODE_ARG = {"tick", "flush", "isolate", "crash", "snapshot", "transfer", "toggle_member"}
_NO_FLUSH_ARG = {"flush", "replay", "cut", "isolate", "heal", "crash"}


def random_step(chaos: Chaos, rng: random.Random, flush_prob: float = 0.85) -> None:
    """One weighted random operation with random arguments."""
    op = rng.choices(_NAMES, _WEIGHTS)[0]
    args: list[object] = []
    if op in _NODE_ARG or op in ("deliver", "drop", "replay"):
        args.append(rng.randrange(1 << 16))
    if op == "cut":
        args += [rng.randrange(1 << 16), rng.randrange(1 << 16)]
    if op not in _NO_FLUSH_ARG:
        args.append(rng.random() < flush_prob)
    getattr(chaos, op)(*args)


def run_schedule(seed: int, steps: int) -> Chaos:
    """A whole random schedule: ``steps`` operations, checked after each, then ``settle``."""
    rng = random.Random(seed)
    size = rng.choice([3, 3, 4, 5])
    chaos = Chaos(size, seed)
    for _ in range(steps):
        random_step(chaos, rng)
        chaos.check()
    chaos.settle()
    return chaos
