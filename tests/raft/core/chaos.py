"""The adversary's moves over a ``LockstepNetwork``, shared by the Hypothesis state machine
and the seeded random schedules (``schedule.py``).

Rule: every operation is legal at any moment (it does nothing when it does not apply), so a
schedule is just a sequence of operations with small integer arguments, and the safety checker
runs after every one of them. The adversary may reorder, drop and replay messages (a request
delivered twice, or long after it was sent, as a retrying transport can do), cut links, crash
nodes between a step and its persistence, freeze a process (a GC pause) so it wakes up with
stale beliefs, talk to a deposed leader that does not know it yet, and ask for snapshots,
reads, transfers and membership changes at any time. ``settle()`` ends a schedule with a
liveness check: once the network heals, a leader emerges and every member applies a fresh
command.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from raftcache.raft.core import Role
from raftcache.raft.errors import MembershipChangeError, NotLeaderError, ProposalDroppedError
from tests.raft.core.invariants import ReadCheck, SafetyChecker
from tests.raft.core.lockstep import ELECTION_TICKS_MAX, Envelope, LockstepNetwork, make_config

#: Small messages, pipelines and chunks, so that short schedules exercise every code path.
CHAOS_CONFIG = make_config(
    election_timeout_min=0.6,  # 6..12 ticks: elections are frequent enough in short schedules
    election_timeout_max=1.2,
    max_entries_per_message=3,
    max_inflight=4,
    snapshot_chunk_size=48,
)

RefusedError = (NotLeaderError, ProposalDroppedError, MembershipChangeError)


class Chaos:
    """A network under attack, with the safety checker watching every step."""

    def __init__(
        self, size: int, seed: int, *, auto_ready: bool = False, max_entries: int = 3
    ) -> None:
        cfg = dataclasses.replace(CHAOS_CONFIG, max_entries_per_message=max_entries)
        self.net = LockstepNetwork(size, seed=seed, cfg=cfg, auto_ready=auto_ready)
        self.ids = list(self.net.nodes)
        self.checker = SafetyChecker()
        self.reads = ReadCheck()
        self.proposed = 0
        self.next_read = 0
        self.log: list[str] = []
        #: Paused processes → tick rounds left.
        self.paused: dict[str, int] = {}
        #: Set once an invariant failed: ``settle`` is pointless after that.
        self.failed = False

    # ------------------------------------------------------------------ helpers
    def _node(self, i: int) -> str:
        return self.ids[i % len(self.ids)]

    def check(self) -> None:
        try:
            self.checker.check(self.net)
            self.reads.check(self.net)
        except AssertionError:
            self.failed = True
            raise

    def _record(self, what: str) -> None:
        self.log.append(what)

    # ------------------------------------------------------------------ operations
    # ``flush`` says whether the node's ready loop runs right after the step (it usually does
    # in the driver); when it does not, a crash before the next flush loses the step's effects.
    def _after(self, node: str, flush: bool) -> None:
        if flush and not self.paused.get(node):
            self.net.flush(node)

    def _running(self, node: str) -> bool:
        """Not paused; counts one tick of a pause down."""
        left = self.paused.get(node, 0)
        if left:
            self.paused[node] = left - 1
        return not left

    def pause(self, i: int, ticks: int) -> None:
        """Freeze a process (a GC pause, SIGSTOP) for ``ticks`` ticks of the others: it
        neither ticks nor runs its ready loop, and messages to it wait in the network."""
        node = self._node(i)
        self._record(f"pause {node} for {ticks}")
        self.paused[node] = ticks

    def tick(self, i: int, flush: bool = True) -> None:
        node = self._node(i)
        if self.paused.get(node):
            return
        self._record(f"tick {node}")
        self.net.tick(node)
        self._after(node, flush)

    def tick_all(self, flush: bool = True) -> None:
        self._record("tick all")
        for node in self.ids:
            if self._running(node):
                self.net.tick(node)
                self._after(node, flush)

    def timeout(self, i: int, flush: bool = True) -> None:
        """The node's election timer fires now (a fast clock, or a long pause elsewhere)."""
        node = self._node(i)
        core = self.net[node]
        if core.role is Role.LEADER or self.paused.get(node):
            return
        self._record(f"timeout {node}")
        for _ in range(ELECTION_TICKS_MAX):
            before = core.elections, core.state_transitions
            core.tick()
            if (core.elections, core.state_transitions) != before:
                break  # it campaigned
        self._after(node, flush)

    def calm(self, ticks: int) -> None:
        """A calm stretch: every node ticks and flushes, and everything in flight is delivered
        (in order) after each tick; the invariants are checked after every delivery."""
        self._record(f"calm {ticks}")
        for _ in range(ticks):
            for node in self.ids:
                if self._running(node):
                    self.net.tick(node)
                    self.net.flush(node)
            for _ in range(60):
                ready = self._deliverable()
                if not ready:
                    break
                env = ready[0]
                self.net.deliver(env)
                self._after(env.sender, True)
                self.check()

    def _deliverable(self) -> list[Envelope]:
        return [e for e in self.net.queue if not self.paused.get(e.dst)]

    def flush(self, i: int) -> None:
        node = self._node(i)
        if self.paused.get(node):
            return
        self._record(f"flush {node}")
        self.net.flush(node)

    def deliver(self, k: int, flush: bool = True) -> None:
        ready = self._deliverable()
        if ready:
            env = ready[k % len(ready)]
            response = not env.is_request
            self._record(f"deliver {env!r}")
            self.net.deliver(env)  # a request is always flushed before its answer leaves
            self._after(env.sender, flush and response)

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

    def rejoin(self, i: int) -> None:
        node = self._node(i)
        self._record(f"rejoin {node}")
        self.net.rejoin(node)

    def depose(self, mode: int) -> None:
        """Cut off (mode 0), crash (1) or freeze for a while (2) the newest leader: leadership
        changes are where Raft is subtle, and a frozen leader that wakes up still believing it
        leads is what ReadIndex must survive."""
        leader = self.net.leader()
        if leader is None:
            return
        mode %= 3
        self._record(f"depose {leader} ({['isolate', 'crash', 'pause'][mode]})")
        if mode == 0:
            self.net.isolate(leader)
        elif mode == 1:
            self.net.crash_restart(leader)
        else:
            self.paused[leader] = 3 * ELECTION_TICKS_MAX // 2

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

    def _leader_does(
        self, what: str, flush: bool, which: int, action: Callable[[str], object]
    ) -> None:
        """Run ``action`` on a leader: ``which`` picks among all nodes that believe they lead,
        newest term first — a deposed leader that does not know it yet is the interesting one
        (its proposals diverge, its reads must never be confirmed)."""
        leaders = sorted(self.net.leaders(), key=lambda n: -self.net[n].term)
        if not leaders:
            return
        leader = leaders[which % len(leaders)]
        self._record(f"{what} on {leader}")
        try:
            action(leader)
        except RefusedError:
            return
        self._after(leader, flush)

    def propose(self, count: int = 1, flush: bool = True, which: int = 0) -> None:
        """``count`` proposals in a row on the leader (a burst fills messages and pipelines)."""
        first = self.proposed + 1
        self.proposed += count
        cmds = [f"cmd-{i}".encode() for i in range(first, self.proposed + 1)]

        def burst(leader: str) -> None:
            for cmd in cmds:
                self.net[leader].propose(cmd)

        self._leader_does(f"propose {first}..{self.proposed}", flush, which, burst)

    def read(self, flush: bool = True, which: int = 0) -> None:
        self.next_read += 1
        read_id = self.next_read
        floor = max(self.checker.committed, default=0)

        def request(leader: str) -> None:
            node = self.net.nodes[leader]
            self.reads.requested(leader, node.incarnation, read_id, floor)
            node.core.request_read(read_id)

        self._leader_does(f"read #{read_id}", flush, which, request)

    def transfer(self, i: int, flush: bool = True, which: int = 0) -> None:
        target = self._node(i)
        self._leader_does(
            f"transfer to {target}",
            flush,
            which,
            lambda n: self.net[n].transfer_leadership(target),
        )

    def toggle_member(self, i: int, flush: bool = True, which: int = 0) -> None:
        """Move a node one step along voter → learner → removed → learner → voter (keeping at
        least two voters); ``i`` picks the node and, for a learner, the direction."""
        node = self._node(i)

        def change(leader: str) -> None:
            core = self.net[leader]
            conf = core.configuration
            if node in conf.voters and len(conf.voters) > 2:
                core.propose_config(conf.with_learner(node, conf.voters[node]))
            elif node in conf.learners:
                promote = (i >> 8) % 2 == 0
                core.propose_config(conf.with_voter(node, None) if promote else conf.without(node))
            elif node not in conf.voters:
                core.propose_config(conf.with_learner(node, None))

        self._leader_does(f"toggle {node}", flush, which, change)

    # ------------------------------------------------------------------ the end
    def settle(self) -> None:
        """Heal everything and require progress: one leader, and a fresh command applied
        everywhere within a bounded number of ticks."""
        self._record("settle")
        net = self.net
        net.heal()
        self.paused.clear()
        net.auto_ready = True
        net.flush_all()
        marker = b"settle-marker"
        proposed_to: tuple[str, int] | None = None
        for _ in range(20 * ELECTION_TICKS_MAX):
            net.tick_all()
            net.stabilize()
            self.check()
            leader = net.leader()
            # Propose again to a new leader that lacks the marker: one proposed to a leader
            # deposed before it replicated (healing starts elections) is lost, as it may be.
            if (
                leader is not None
                and proposed_to != (leader, net[leader].term)
                and not any(e.command == marker for e in net[leader].log.entries)
            ):
                try:
                    net.propose(leader, marker)
                    proposed_to = (leader, net[leader].term)
                except RefusedError:
                    pass
            if proposed_to is not None and leader is not None:
                members = net[leader].configuration.all_ids()
                if all(marker in net.nodes[m].commands() for m in members):
                    return
        state = {
            n: (node.core.role.value, node.core.term, node.core.commit_index, node.core.applied)
            for n, node in net.nodes.items()
        }
        raise AssertionError(f"no progress after healing: {state}")
