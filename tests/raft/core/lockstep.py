"""A lockstep network of pure ``RaftCore``s: no event loop, no clock, no sockets.

Rule: the harness plays the driver exactly as ``RaftNode`` does, and loses only what the driver
could lose. A node's ``Ready`` is persisted to its simulated durable store, then ``advance``d,
then its messages are queued and its committed entries applied (persist → advance → send →
apply). A request is answered when it is delivered: ``handle_*`` computes the response and the
receiver flushes its Ready *before* the response is queued (persist before you answer); the
response is stepped into the requester later with ``step_response``. A request or response that
is dropped, or that meets a cut link, becomes ``step_failure`` for the requester. A crash keeps
only the durable store; responses addressed to an earlier incarnation are discarded, as the
driver's RPC tasks die with it.

Nothing moves unless a test says so: ``tick`` is the only clock and ``deliver_*`` the only wire
(the model is etcd-io/raft's ``network`` in raft_test.go).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.messages import (
    AppendEntriesRequest,
    InstallSnapshotRequest,
    LogEntry,
    RaftResponse,
    RequestVoteRequest,
)
from raftcache.raft.ready import Outbound
from tests.raft.core.member import Node

#: 10 ticks minimum election timeout (randomized in [10, 20)), a heartbeat every 2 ticks.
DEFAULT_CONFIG = RaftConfig(
    election_timeout_min=1.0,
    election_timeout_max=2.0,
    heartbeat_interval=0.2,
    tick_interval=0.1,
    snapshot_threshold=0,
)
ELECTION_TICKS = 10
ELECTION_TICKS_MAX = 20
HEARTBEAT_TICKS = 2


def make_config(**overrides: object) -> RaftConfig:
    """``DEFAULT_CONFIG`` with some fields replaced."""
    return dataclasses.replace(DEFAULT_CONFIG, **overrides)  # type: ignore[arg-type]


@dataclass(eq=False)
class Envelope:
    """A request on its way to ``out.target`` or, once answered, its response on the way back."""

    out: Outbound
    sender: str
    incarnation: int
    response: RaftResponse | None = None

    @property
    def is_request(self) -> bool:
        return self.response is None

    @property
    def src(self) -> str:
        return self.sender if self.response is None else self.out.target

    @property
    def dst(self) -> str:
        return self.out.target if self.response is None else self.sender

    @property
    def message(self) -> AppendEntriesRequest | RequestVoteRequest | InstallSnapshotRequest:
        return self.out.message

    def __repr__(self) -> str:
        what = type(self.message).__name__ if self.is_request else repr(self.response)
        return f"<{self.src}->{self.dst} {what}>"


@dataclass(frozen=True)
class Handled:
    """A request that reached its target, and the response it produced."""

    src: str
    dst: str
    request: AppendEntriesRequest | RequestVoteRequest | InstallSnapshotRequest
    response: RaftResponse


Predicate = Callable[[Envelope], bool]


class LockstepNetwork:
    """N cores, their stores and the messages between them; see the module docstring."""

    def __init__(
        self,
        ids: Sequence[str] | int,
        *,
        seed: int = 0,
        cfg: RaftConfig | None = None,
        voters: Sequence[str] | None = None,
        auto_ready: bool = True,
    ) -> None:
        names = [f"n{i + 1}" for i in range(ids)] if isinstance(ids, int) else list(ids)
        self.cfg = cfg or DEFAULT_CONFIG
        self.seed = seed
        #: With ``auto_ready`` every step is followed by the node's ready loop; without it the
        #: test runs ``flush`` itself (so a crash can lose what was never persisted).
        self.auto_ready = auto_ready
        self.nodes: dict[str, Node] = {}
        self.queue: list[Envelope] = []
        self.handled: list[Handled] = []
        self._cuts: set[frozenset[str]] = set()
        self._isolated: set[str] = set()
        bootstrap = Configuration.of(voters if voters is not None else names)
        for name in names:
            self.add_node(name, bootstrap)

    # ------------------------------------------------------------------ membership of the harness
    def add_node(self, node_id: str, bootstrap: Configuration | None = None) -> Node:
        """Start a node; by default it knows no configuration (a joiner waiting to be added)."""
        node = Node(node_id, self.cfg, bootstrap or Configuration(), self.seed)
        self.nodes[node_id] = node
        return node

    def __getitem__(self, node_id: str) -> RaftCore:
        return self.nodes[node_id].core

    # ------------------------------------------------------------------ links
    def cut(self, a: str, b: str) -> None:
        self._cuts.add(frozenset((a, b)))

    def isolate(self, a: str) -> None:
        self._isolated.add(a)

    def rejoin(self, a: str) -> None:
        """Undo ``isolate(a)`` and every cut involving ``a``."""
        self._isolated.discard(a)
        self._cuts = {c for c in self._cuts if a not in c}

    def heal(self) -> None:
        self._cuts.clear()
        self._isolated.clear()

    def link_up(self, a: str, b: str) -> bool:
        return (
            b in self.nodes
            and a not in self._isolated
            and b not in self._isolated
            and frozenset((a, b)) not in self._cuts
        )

    # ------------------------------------------------------------------ ready
    def flush(self, node_id: str) -> None:
        """Run one node's ready loop: persist, advance, queue its messages, apply."""
        node = self.nodes[node_id]
        for out in node.flush():
            self.queue.append(Envelope(out, node_id, node.incarnation))

    def flush_all(self) -> None:
        for node_id in list(self.nodes):
            self.flush(node_id)

    def _stepped(self, node_id: str) -> None:
        if self.auto_ready:
            self.flush(node_id)

    # ------------------------------------------------------------------ local inputs
    def tick(self, node_id: str, n: int = 1) -> None:
        for _ in range(n):
            self[node_id].tick()
            self._stepped(node_id)

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for node_id in list(self.nodes):
                self.tick(node_id)

    def campaign(self, node_id: str) -> None:
        """Make ``node_id`` campaign now (its election timer fired), then let the votes flow."""
        self[node_id].campaign()
        self._stepped(node_id)
        self.stabilize()

    def propose(self, node_id: str, command: bytes) -> int:
        index = self[node_id].propose(command)
        self._stepped(node_id)
        return index

    def crash_restart(self, node_id: str) -> None:
        self.nodes[node_id].restart()

    def take_snapshot(self, node_id: str) -> int:
        index = self.nodes[node_id].take_snapshot()
        self._stepped(node_id)
        return index

    # ------------------------------------------------------------------ the wire
    def deliver(self, env: Envelope) -> None:
        """Deliver one queued envelope (or fail it, if its link is down)."""
        self.queue.remove(env)
        if not self.link_up(env.src, env.dst):
            self._fail(env)
            return
        node = self.nodes[env.dst]
        if env.response is None:
            resp = self._handle(node.core, env.message)
            # Persist before you answer: the response leaves only after the flush.
            self.flush(env.dst)
            self.handled.append(Handled(env.src, env.dst, env.message, resp))
            env.response = resp
            self.queue.append(env)
            return
        if node.incarnation != env.incarnation:
            return  # the requester crashed since: its RPC task died with it
        node.core.step_response(env.out, env.response)
        self._stepped(env.dst)

    def replay(
        self,
        src: str,
        dst: str,
        request: AppendEntriesRequest | RequestVoteRequest | InstallSnapshotRequest,
    ) -> None:
        """Deliver a copy of an old request again (a retrying transport's duplicate, or one
        that was delayed for long); nobody is waiting for its response any more."""
        if self.link_up(src, dst):
            self._handle(self.nodes[dst].core, request)
            self.flush(dst)

    @staticmethod
    def _handle(
        core: RaftCore, msg: AppendEntriesRequest | RequestVoteRequest | InstallSnapshotRequest
    ) -> RaftResponse:
        if isinstance(msg, AppendEntriesRequest):
            return core.handle_append_entries(msg)
        if isinstance(msg, RequestVoteRequest):
            return core.handle_request_vote(msg)
        return core.handle_install_snapshot(msg)

    def _fail(self, env: Envelope) -> None:
        requester = self.nodes.get(env.sender)
        if requester is None or requester.incarnation != env.incarnation:
            return
        requester.core.step_failure(env.out)
        self._stepped(env.sender)

    def drop_envelope(self, env: Envelope) -> None:
        self.queue.remove(env)
        self._fail(env)

    def drop(self, pred: Predicate) -> int:
        """Drop every queued envelope matching ``pred``; returns how many."""
        doomed = [env for env in self.queue if pred(env)]
        for env in doomed:
            self.drop_envelope(env)
        return len(doomed)

    def deliver_one(self, rng: random.Random) -> Envelope | None:
        """Deliver a random queued envelope (reordering is allowed, as on a real network)."""
        if not self.queue:
            return None
        env = self.queue[rng.randrange(len(self.queue))]
        self.deliver(env)
        return env

    def deliver_all(self) -> int:
        """Deliver, in FIFO order, every envelope queued now (not those this produces)."""
        batch = list(self.queue)
        for env in batch:
            self.deliver(env)
        return len(batch)

    def deliver_where(self, pred: Predicate, max_envelopes: int = 100_000) -> int:
        """Deliver, FIFO, envelopes matching ``pred`` (including those this produces) until none
        is left; everything else stays in flight. Returns how many were delivered."""
        total = 0
        while True:
            env = next((e for e in self.queue if pred(e)), None)
            if env is None:
                return total
            self.deliver(env)
            total += 1
            assert total <= max_envelopes, "the selected traffic never goes quiet"

    def stabilize(self, max_envelopes: int = 200_000) -> int:
        """Deliver until no message is in flight; returns how many were delivered."""
        total = 0
        while self.queue:
            self.deliver(self.queue[0])
            total += 1
            assert total <= max_envelopes, "the network never goes quiet"
        return total

    # ------------------------------------------------------------------ observation
    def role(self, node_id: str) -> Role:
        """``node_id``'s role (a call, so type checkers do not narrow it across steps)."""
        return self[node_id].role

    def leaders(self) -> list[str]:
        return [n for n, node in self.nodes.items() if node.core.role is Role.LEADER]

    def leader(self) -> str | None:
        """The leader of the highest term, if any node believes it leads."""
        leaders = self.leaders()
        return max(leaders, key=lambda n: self[n].term) if leaders else None

    def elect(self, node_id: str) -> None:
        """Make ``node_id`` leader by campaigning from it (asserts it won).

        With check-quorum on, followers that heard from a leader within an election timeout
        refuse to vote (that is the point of the lease): tests that force elections while a
        leader is alive run with ``check_quorum=False``.
        """
        self.campaign(node_id)
        assert self[node_id].role is Role.LEADER, f"{node_id} did not win: {self[node_id].role}"

    def run(
        self,
        ticks: int,
        check: Callable[[LockstepNetwork], None] | None = None,
        *,
        until: Callable[[LockstepNetwork], bool] | None = None,
        nodes: Sequence[str] | None = None,
    ) -> None:
        """Let time pass, ``ticks`` at most: each tick every node (or each of ``nodes``, in that
        order) ticks, every message is delivered and ``check`` (the safety checker) runs. With
        ``until``, it stops at the first tick after which ``until`` holds.

        It asserts nothing about the outcome: what must come out of it is the test's claim, and
        stays written in the test.
        """
        for _ in range(ticks):
            for node_id in list(self.nodes) if nodes is None else nodes:
                self.tick(node_id)
            self.stabilize()
            if check is not None:
                check(self)
            if until is not None and until(self):
                return

    def tick_until_leader(self, ticks: int, check: Callable[[LockstepNetwork], None]) -> None:
        """``run`` until some node leads, ``ticks`` at most."""
        self.run(ticks, check, until=lambda net: bool(net.leaders()))


def to(node_id: str) -> Predicate:
    return lambda env: env.dst == node_id


def from_(node_id: str) -> Predicate:
    return lambda env: env.src == node_id


def between(a: str, b: str) -> Predicate:
    """Envelopes on the link a–b, either way."""
    return lambda env: {env.src, env.dst} == {a, b}


def of_type(*kinds: type) -> Predicate:
    return lambda env: isinstance(env.message, kinds)


def requests(pred: Predicate) -> Predicate:
    return lambda env: env.is_request and pred(env)


def seed_log(net: LockstepNetwork, node_id: str, terms: Sequence[int], term: int = 0) -> None:
    """Give ``node_id`` a durable log with entries of ``terms`` (index 1, 2, ...) and restart it.

    The commands are ``b"<index>@<term>"``, so equal (index, term) means an equal entry.
    """
    store = net.nodes[node_id].store
    store.entries = [LogEntry(t, i, f"{i}@{t}".encode()) for i, t in enumerate(terms, start=1)]
    store.term = max(term, *terms) if terms else term
    net.crash_restart(node_id)
    # A set-up, not a crash: the node has been up longer than its post-restart quiet period
    # (during which it refuses votes to keep a lease it may have acknowledged before).
    net[node_id].quiet_ticks = 0


def log_terms(core: RaftCore) -> list[int]:
    """Terms of the entries held in memory, from the first after the snapshot."""
    return [e.term for e in core.log.entries]
