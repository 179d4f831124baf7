"""A seeded sweep that attacks every read path of a simulated cluster (``test_read_sweep.py``).

Rule: the linearizability checker is the oracle. Clients write unique values to a few keys
through whoever leads, and read them three ways — ``read_index`` (linearizable), ``lease_read``
(lease; strict: the drift stays inside ``lease_clock_drift``, so it must be linearizable too)
and a direct look at any node's state machine (stale: a committed prefix, maybe behind).
Every invocation and completion is recorded on the loop's (virtual) clock in a
``HistoryRecorder``; a nemesis mixes leadership transfers (plain, with the old leader or the
target cut off at the worst moment, with a TimeoutNow held past the abort), isolation of a
leader in the middle of a read, a slow fsync on the leader, clock drift inside the bound,
crashes with unsynced data lost and restarts, partitions, and message loss and delay — all
drawn from one seed.

Checks at the end of a run (``SweepResult.problems``): the state machines applied one
sequence (each a prefix of the longest); every ``ok`` write is in it at the version it
returned; no certainly failed write (``NotLeaderError``, ``ProposalDroppedError``) is; every
stale read returned a committed (key, version, value) and no node incarnation's stale reads
went backwards; the history of writes and linearizable + lease reads is linearizable per key
(and, when it is not, whether the linearizable reads alone are).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from raftcache.raft.errors import NotLeaderError, ProposalDroppedError
from raftcache.raft.messages import AppendEntriesRequest
from raftcache.raft.node import RaftNode
from raftcache.testing.history import HistoryRecorder, Operation, OpStatus
from raftcache.testing.linearizability import CheckResult, Outcome, RegisterModel
from raftcache.testing.workloads import check_keys
from tests.raft.lease_sim import LeaseCluster, RateClock, Request, TapNetwork
from tests.raft.sim import FAST

__all__ = [
    "READ_SWEEP",
    "ReadCluster",
    "ReadsModel",
    "RegisterMachine",
    "StaleRead",
    "SweepResult",
    "check_reads",
    "check_stale_reads",
    "run_read_sweep",
]

#: Production-like timing (as the lease tests' ``SWEEP``): 1 s election timeout in 20 ms ticks
#: (E = 50), 100 ms heartbeats; with FAST's 10 ms ticks and 0.15 s timeouts a lease is too
#: short for a stale lease read to show. Every persist inline, except a Ready written while a
#: slow fsync is armed (that node's ``persist_inline_max_entries`` drops to 0).
READ_SWEEP = dataclasses.replace(
    FAST,
    election_timeout_min=1.0,
    election_timeout_max=1.1,
    heartbeat_interval=0.1,
    tick_interval=0.02,
    rpc_timeout=0.2,
    persist_in_thread=True,
    persist_inline_max_entries=10**9,
)
INLINE = 10**9
KEYS = ("a", "b", "c")
READ_KINDS = ("read", "read_index", "lease_read")
#: The nemesis' actions and their weights: the lease attacks (a transfer with the old leader cut
#: off, a held TimeoutNow, a slow fsync on a leader that is then cut off) weigh most.
NEMESES = (
    ("transfer", 1),
    ("transfer-cut-old", 3),
    ("transfer-cut-target", 1),
    ("transfer-held", 2),
    ("isolate-mid-read", 2),
    ("slow-fsync", 1),
    ("slow-fsync-cut", 3),
    ("drift", 1),
    ("crash", 1),
    ("crash-leader", 1),
    ("partition", 1),
    ("loss-delay", 1),
)
ACTIONS = [a for a, _ in NEMESES]


class RegisterMachine:
    """``set k v`` commands on a key → (value, version) map; applying returns the new version.
    ``log`` keeps every applied set (index, key, value, version) for the end-of-run checks."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, int]] = {}
        self.log: list[tuple[int, str, str, int]] = []

    def apply_entry(self, index: int, command: bytes) -> int:
        verb, key, value = command.decode().split(" ", 2)
        assert verb == "set", command
        version = self.values.get(key, ("", 0))[1] + 1
        self.values[key] = (value, version)
        self.log.append((index, key, value, version))
        return version

    def apply(self, command: bytes) -> Any:  # pragma: no cover - apply_entry wins
        raise AssertionError("apply_entry should be used")

    def get(self, key: str) -> tuple[str | None, int]:
        value, version = self.values.get(key, (None, 0))
        return value, version

    def snapshot(self) -> bytes:
        return orjson.dumps(self.log)

    def restore(self, data: bytes) -> None:
        self.values, self.log = {}, []
        for index, key, value, version in orjson.loads(data):
            self.values[key] = (value, version)
            self.log.append((index, key, value, version))


class ReadCluster(LeaseCluster):
    """A ``LeaseCluster`` (per-node RateClock, TapNetwork, SlowSyncStorage, config) whose
    nodes replicate into a ``RegisterMachine``."""

    def __init__(self, n: int = 3, **kwargs: Any) -> None:
        super().__init__(n, **kwargs)
        self.registers: dict[str, RegisterMachine] = {}
        #: Every register any incarnation of any node ever had (restarts make new ones).
        self.all_registers: list[RegisterMachine] = []

    def _make(self, node_id: str, peers: list[str]) -> RaftNode:
        net = TapNetwork(node_id, hub=self.hub, seed=self.rng.randrange(2**32), **self.net_opts)
        old = self.taps.get(node_id)
        if old is not None:  # a restarted node keeps the test's hooks (and its delays)
            net.hooks, net.send_hooks = old.hooks, old.send_hooks
        clock = self.clocks.setdefault(node_id, RateClock())
        storage = self.slow[node_id]
        config = self.configs.setdefault(node_id, dataclasses.replace(self.config))
        machine = RegisterMachine()
        node = RaftNode(
            node_id,
            peers,
            net,
            storage,
            machine,
            config,
            rng=random.Random(self.rng.randrange(2**32)),
            clock=clock,
        )
        self.taps[node_id] = net
        self.networks[node_id], self.nodes[node_id] = net, node
        self.registers[node_id] = machine
        self.all_registers.append(machine)
        return node

    def top_leader(self) -> RaftNode | None:
        leaders = self.leaders()
        return max(leaders, key=lambda n: n.current_term) if leaders else None


@dataclass(frozen=True, slots=True)
class StaleRead:
    """One stale read: what node ``node_id``'s machine ``machine`` held for ``key`` at ``at``."""

    node_id: str
    machine: int  # index into ReadCluster.all_registers (one node incarnation)
    key: str
    value: str | None
    version: int
    at: float


def committed_sequence(
    logs: Sequence[list[tuple[int, str, str, int]]],
) -> tuple[dict[str, list[str]], list[str]]:
    """The per-key committed values (version v at position v - 1) from the longest log, and
    the problems found: a log that is not a prefix of the longest, or bad version numbers."""
    problems: list[str] = []
    longest = max(logs, key=len) if logs else []
    for i, log in enumerate(logs):
        if log != longest[: len(log)]:
            n = next(j for j, (a, b) in enumerate(zip(log, longest, strict=False)) if a != b)
            problems.append(
                f"state machine {i} diverged at its entry {n}: {log[n]} vs {longest[n]}"
            )
    seq: dict[str, list[str]] = {}
    for index, key, value, version in longest:
        values = seq.setdefault(key, [])
        values.append(value)
        if version != len(values):
            problems.append(f"entry {index}: {key} version {version}, expected {len(values)}")
    return seq, problems


def check_stale_reads(
    reads: Sequence[StaleRead], committed: dict[str, list[str]], history: Sequence[Operation]
) -> list[str]:
    """Stale reads promise a committed prefix that may be behind: every read names a committed
    (key, version, value) whose write was invoked before the read, and one node incarnation's
    reads of a key never go backwards."""
    invoked: dict[tuple[str, str], float] = {}
    failed: set[tuple[str, str]] = set()
    for op in history:
        if op.kind == "write":
            invoked[(str(op.key), str(op.input))] = op.invoke_time
            if op.status is OpStatus.FAIL:
                failed.add((str(op.key), str(op.input)))
    problems: list[str] = []
    last: dict[tuple[int, str], StaleRead] = {}
    for r in reads:
        where = f"stale read on {r.node_id} at {r.at:.4f}: {r.key}={r.value!r} (v{r.version})"
        values = committed.get(r.key, [])
        if r.value is None:
            if r.version != 0:
                problems.append(f"{where}: no value but a version")
        elif not 1 <= r.version <= len(values) or values[r.version - 1] != r.value:
            problems.append(f"{where}: never committed at that version")
        if r.value is not None and (r.key, r.value) in failed:
            problems.append(f"{where}: its write certainly failed")
        if r.value is not None and not invoked.get((r.key, r.value), float("inf")) <= r.at:
            problems.append(f"{where}: no write of it was invoked before")
        prev = last.get((r.machine, r.key))
        if prev is not None and r.version < prev.version:
            problems.append(f"{where}: went backwards from v{prev.version} at {prev.at:.4f}")
        last[(r.machine, r.key)] = r
    return problems


@dataclass(slots=True)
class SweepResult:
    seed: int
    history: list[Operation]
    stale: list[StaleRead]
    problems: list[str] = field(default_factory=list)
    check: CheckResult | None = None
    #: On a violation: the verdict with the lease reads left out (attribution).
    without_lease: CheckResult | None = None
    faults: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def linearizable(self) -> bool:
        return self.check is not None and self.check.outcome is Outcome.OK

    def report(self) -> str:
        lines = [f"read sweep seed {self.seed}: {self.counts}"]
        lines += [f"  {p}" for p in self.problems[:10]]
        if self.check is not None and not self.check.ok:
            lines.append(self.check.explain()[:3000])
            if self.without_lease is not None:
                lines.append("  without the lease reads: " + self.without_lease.outcome.value)
        lines.append("  faults: " + "; ".join(self.faults[-12:]))
        return "\n".join(lines)


class _Sweep:
    """One seeded run: clients + nemesis on a ``ReadCluster``."""

    def __init__(
        self, seed: int, *, n: int, steps: int, clients: int, keys: Sequence[str], budget_s: float
    ) -> None:
        self.keys = tuple(keys)
        self.budget_s = budget_s
        self.seed = seed
        self.rng = random.Random(seed)
        self.c = ReadCluster(n, seed=seed, config=READ_SWEEP, base_delay=0.003, jitter=0.2)
        self.steps = steps
        self.n_clients = clients
        self.loop = asyncio.get_running_loop()
        self.rec = HistoryRecorder(self.loop.time)
        self.stale: list[StaleRead] = []
        self.faults: list[str] = []
        self.stop = asyncio.Event()
        self.cut_on_read: str | None = None  # "isolate the leader mid-read" is armed
        self.quiet = False  # the faults have stopped
        self.tasks: list[asyncio.Task[Any]] = []
        self.counts: dict[str, int] = {}

    def note(self, what: str) -> None:
        self.faults.append(f"{self.loop.time():.3f} {what}")

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.create_task(coro))

    # -- clients ------------------------------------------------------------------------------

    async def client(self, cid: int) -> None:
        rng = random.Random(self.rng.randrange(2**32))
        gen, n = 0, 0
        while not self.stop.is_set():
            process = cid * 10_000 + gen
            key = rng.choice(self.keys)
            r = rng.random()
            if r < 0.35:
                n += 1
                ok = await self.write(process, key, f"{cid}-{n}", rng)
            elif r < 0.6:
                ok = await self.read(process, key, "read_index", rng)
            elif r < 0.9:
                ok = await self.read(process, key, "lease_read", rng)
            else:
                self.stale_read(key, rng)
                ok = True
            if not ok:
                gen += 1  # after an indeterminate operation, a fresh process
            await asyncio.sleep(rng.uniform(0.004, 0.03))

    async def write(self, process: int, key: str, value: str, rng: random.Random) -> bool:
        leader = self.c.top_leader()
        if leader is None:
            await asyncio.sleep(0.02)
            return True
        op = self.rec.invoke(process, "write", key, value)
        try:
            version = await leader.propose(f"set {key} {value}".encode(), timeout=1.0)
        except (NotLeaderError, ProposalDroppedError) as exc:
            self.rec.fail(op, repr(exc))
            self.count("write fail")
            await asyncio.sleep(0.01)
            return True
        except Exception as exc:  # IndeterminateError, TimeoutError, NodeStoppedError...
            self.rec.indeterminate(op, repr(exc))
            self.count("write info")
            return False
        self.rec.ok(op, version)
        self.count("write ok")
        return True

    async def read(self, process: int, key: str, how: str, rng: random.Random) -> bool:
        leaders = self.c.leaders()
        if not leaders:
            await asyncio.sleep(0.02)
            return True
        node = rng.choice(leaders)  # an isolated old leader too: that is the attack
        op = self.rec.invoke(process, how, key, None)
        if self.cut_on_read is not None and node.node_id == self.cut_on_read:
            self.cut_on_read = None
            self.spawn(self.isolate_later(node.node_id, rng.uniform(0.0, 0.004)))
        try:
            await (node.read_index(0.3) if how == "read_index" else node.lease_read(0.3))
            machine = node.state_machine
            assert isinstance(machine, RegisterMachine)
            value, _ = machine.get(key)
        except NotLeaderError as exc:
            self.rec.fail(op, repr(exc))
            self.count(f"{how} fail")
            return True
        except Exception as exc:
            self.rec.indeterminate(op, repr(exc))
            self.count(f"{how} info")
            return False
        self.rec.ok(op, value)
        self.count(f"{how} ok")
        return True

    def stale_read(self, key: str, rng: random.Random) -> None:
        running = self.c.running()
        if not running:
            return
        node = rng.choice(running)
        machine = node.state_machine
        assert isinstance(machine, RegisterMachine)
        value, version = machine.get(key)
        index = next(i for i, m in enumerate(self.c.all_registers) if m is machine)
        self.stale.append(StaleRead(node.node_id, index, key, value, version, self.loop.time()))
        self.count("stale ok")

    async def isolate_later(self, node_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.isolate(node_id, "mid-read")

    # -- nemesis ------------------------------------------------------------------------------

    def on_timeout_now(self, node_id: str, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` in the delivery of the next TimeoutNow ``node_id`` receives, before
        the node handles it (once: the hook is gone before the action starts). An action that
        sleeps holds the message in flight."""
        hooks = self.c.taps[node_id].hooks

        async def hook(req: Request) -> None:
            if self.is_timeout_now(req) and hook in hooks:
                hooks.remove(hook)
                await action()

        hooks.append(hook)

    def isolate(self, node_id: str, why: str) -> None:
        """Cut ``node_id`` off, unless the faults have stopped (a held message may land late)."""
        if not self.quiet:
            self.c.hub.isolate(node_id)
            self.note(f"isolated {node_id} {why}")

    def is_timeout_now(self, req: Request) -> bool:
        return isinstance(req, AppendEntriesRequest) and bool(req.timeout_now)

    async def transfer(self, leader: RaftNode, to: str | None) -> None:
        with contextlib.suppress(Exception):
            await leader.transfer_leadership(to)

    async def step(self) -> None:
        c, rng = self.c, self.rng
        leader = c.top_leader()
        others = [i for i in c.ids if leader is None or i != leader.node_id]
        action = rng.choices(ACTIONS, weights=[w for _, w in NEMESES])[0]
        if leader is None and action not in ("drift", "loss-delay", "partition", "crash"):
            action = "crash"
        if action in ("transfer", "transfer-cut-old", "transfer-cut-target", "transfer-held"):
            assert leader is not None
            old = leader.node_id
            target = rng.choice(others)
            if action == "transfer-cut-old":

                async def cut_old() -> None:  # it misses the answer and the vote request
                    self.isolate(old, f"as TimeoutNow reached {target}")

                self.on_timeout_now(target, cut_old)
            elif action == "transfer-held":
                hold = rng.uniform(1.0, 1.6) * c.config.election_timeout_min

                async def held() -> None:
                    await asyncio.sleep(hold)  # past the abort: the leader resumed
                    self.isolate(old, f"as the held TimeoutNow landed on {target}")

                self.on_timeout_now(target, held)
            self.note(f"{action} {old} -> {target}")
            self.spawn(self.transfer(leader, target))
            if action == "transfer-cut-target":
                await asyncio.sleep(rng.uniform(0.0, 0.05))
                self.isolate(target, "(the transfer target)")
        elif action == "isolate-mid-read":
            assert leader is not None
            self.cut_on_read = leader.node_id
            self.note(f"armed: isolate {leader.node_id} in its next read")
        elif action in ("slow-fsync", "slow-fsync-cut"):
            assert leader is not None
            nid = leader.node_id
            delay = rng.uniform(0.2, 0.6)
            c.configs[nid].persist_inline_max_entries = 0  # the next write: the thread
            c.slow[nid].arm(delay)
            self.note(f"{action} on {nid}: {delay:.2f} s")
            self.spawn(self.restore_inline(nid, delay + 0.5))
            if action == "slow-fsync-cut":
                await asyncio.sleep(rng.uniform(0.05, delay))
                self.isolate(nid, "during its slow fsync")
        elif action == "drift":
            self.drift(leader)
        elif action in ("crash", "crash-leader"):
            up = [n.node_id for n in c.running()]
            if len(up) < len(c.ids):
                return  # at most one node down at a time
            nid = leader.node_id if action == "crash-leader" and leader else rng.choice(up)
            await c.crash(nid)
            self.note(f"crashed {nid}")
            self.spawn(self.restart_later(nid, rng.uniform(0.05, 1.5)))
        elif action == "partition":
            a, b = rng.sample(c.ids, 2)
            c.hub.partition(a, b)
            self.note(f"partition {a} | {b}")
        else:
            nid = rng.choice(c.ids)
            drop, delay = rng.choice([0.0, 0.05, 0.2]), rng.choice([0.003, 0.01, 0.04])
            c.networks[nid].set_drop_rate(drop)
            c.networks[nid].set_delay(delay)
            self.note(f"{nid} sends with loss {drop} delay {delay}")

    def drift(self, leader: RaftNode | None) -> None:
        """Rates inside the bound: every pair within a factor 1/1.08 (ρ = 0.1); the leader
        slowest when it is slowed at all."""
        base = self.rng.choice([0.92, 0.96, 1.0])
        rates = {}
        for nid in self.c.ids:
            spread = 1.0 if leader and nid == leader.node_id else self.rng.choice([1.04, 1.08])
            rates[nid] = base * spread
            self.c.clocks[nid].set_rate(rates[nid])
        self.note("drift " + " ".join(f"{k}x{v:.3f}" for k, v in sorted(rates.items())))

    async def restore_inline(self, nid: str, after: float) -> None:
        await asyncio.sleep(after)
        self.c.configs[nid].persist_inline_max_entries = INLINE

    async def restart_later(self, nid: str, after: float) -> None:
        await asyncio.sleep(after)
        if not self.c.nodes[nid]._running:
            await self.c.restart(nid)
            self.note(f"restarted {nid}")

    def heal(self) -> None:
        self.c.hub.heal_all()
        for nid in self.c.ids:
            self.c.networks[nid].set_drop_rate(0.0)
            self.c.networks[nid].set_delay(0.003)
        self.note("healed")

    async def quiesce(self) -> None:
        """The faults stop: no fault still armed or in flight (a held TimeoutNow, a cut
        waiting for the next read), every link healed, every node running."""
        self.quiet = True
        self.cut_on_read = None
        for tap in self.c.taps.values():
            tap.hooks.clear()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        for nid in self.c.ids:
            self.c.configs[nid].persist_inline_max_entries = INLINE
        self.heal()
        for nid in self.c.ids:
            if not self.c.nodes[nid]._running:
                await self.c.restart(nid)
                self.note(f"restarted {nid}")

    def states(self) -> str:
        return (
            "; ".join(
                f"{n.node_id} {n.role.value} t{n.current_term} commit {n.commit_index} "
                f"applied {n.last_applied}{'' if n._running else ' stopped'}"
                for n in self.c.nodes.values()
            )
            + f"; isolated {self.c.hub.isolated_nodes()} cut {self.c.hub.partitions()}"
        )

    async def run(self) -> SweepResult:
        c = self.c
        await c.start()
        try:
            await c.elect(timeout=20)
            if self.rng.random() < 0.6:
                self.drift(c.top_leader())
            clients = [asyncio.create_task(self.client(k)) for k in range(self.n_clients)]
            for _ in range(self.steps):
                await self.step()
                await asyncio.sleep(self.rng.uniform(0.8, 2.0))
                if self.rng.random() < 0.6:
                    self.heal()
                    await asyncio.sleep(self.rng.uniform(0.1, 0.8))
            await self.quiesce()
            await asyncio.sleep(2.0)  # every old lease ran out; a leader is elected
            self.stop.set()
            await asyncio.gather(*clients, return_exceptions=True)
            try:
                leader = await c.elect(timeout=30)
                await c.wait_applied(leader.commit_index, timeout=30)
            except TimeoutError:
                raise AssertionError(
                    f"seed {self.seed}: no recovery after the faults stopped: {self.states()}\n"
                    + "\n".join(self.faults)
                ) from None
        finally:
            self.stop.set()
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await c.stop()
        return self.verdict()

    def verdict(self) -> SweepResult:
        history = self.rec.history()
        result = SweepResult(self.seed, history, self.stale, faults=self.faults, counts=self.counts)
        committed, result.problems = committed_sequence([m.log for m in self.c.all_registers])
        for op in history:
            if op.kind != "write":
                continue
            values = committed.get(str(op.key), [])
            if op.status is OpStatus.OK:
                v = op.output
                if not (isinstance(v, int) and 1 <= v <= len(values) and values[v - 1] == op.input):
                    result.problems.append(
                        f"ok write not committed at its version: {op.describe()}"
                    )
            elif op.status is OpStatus.FAIL and op.input in values:
                result.problems.append(f"a certainly failed write was applied: {op.describe()}")
        result.problems += check_stale_reads(self.stale, committed, history)
        result.check = check_reads(history, self.budget_s)
        if not result.check.ok:
            no_lease = [op for op in history if op.kind != "lease_read"]
            result.without_lease = check_reads(no_lease, self.budget_s)
        return result


class ReadsModel(RegisterModel):
    """The register model, with ``read_index`` and ``lease_read`` both reads (the kind stays
    in the history, so a failure report says which path served the read)."""

    def read_only(self, op: Operation) -> bool:
        return op.kind in READ_KINDS

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        if op.kind in READ_KINDS:
            return (op.status is not OpStatus.OK or op.output == state), state
        return super().step(state, op)


def check_reads(history: Sequence[Operation], budget_s: float = 30.0) -> CheckResult:
    """Writes and linearizable + lease reads, per key; ``budget_s`` of wall clock in all."""
    return check_keys(history, ReadsModel(), budget_s, time.monotonic)


async def run_read_sweep(
    seed: int,
    *,
    n: int = 3,
    steps: int = 8,
    clients: int = 4,
    keys: Sequence[str] = KEYS,
    budget_s: float = 30.0,
) -> SweepResult:
    """One seeded run; ``budget_s`` of wall clock for the checker (long runs with many
    indeterminate writes need more keys or more budget, else the verdict is "unknown")."""
    sweep = _Sweep(seed, n=n, steps=steps, clients=clients, keys=keys, budget_s=budget_s)
    return await sweep.run()
