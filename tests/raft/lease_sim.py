"""Fault injection for the lease and restart attacks (issue 12), on top of ``SimCluster``.

Rule: every knob is per node and reached through public seams only — the clock a ``RaftNode``
is given, the storage object it writes to, and the handlers its network calls — so the tests
keep their meaning however the driver computes its lease internally.

- ``RateClock``: a node's monotonic clock running at ``rate`` × the event loop's (virtual) time,
  changeable while the node runs (continuously: no jump).
- ``TapNetwork``: an ``InMemoryNetwork`` whose received requests pass hooks first (a hook may
  cut the network, or hold the request: its delivery task sleeps, the sender's call times out
  as on a real network, and the request is handled late).
- ``SlowSyncStorage``: a ``MemoryStorage`` whose next ``sync`` (in the persist thread) waits
  until ``delay`` seconds of *virtual* time after ``arm`` — a slow fsync on that node only —
  and which records the thread of every ``set_hard_state`` and ``sync``.
- ``LeaseCluster``: a ``SimCluster`` whose nodes get those three, and their own copy of the
  config (a test may change one node's knobs).
- ``StaleProbe``: hammers a node with ``lease_read`` and reports every read that returned
  without a write acknowledged elsewhere before it was asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from raftcache.network.interface import RpcHandlers
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.node import RaftNode
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import ListMachine, SimCluster

__all__ = [
    "LeaseCluster",
    "RateClock",
    "SlowSyncStorage",
    "StaleProbe",
    "StepStorage",
    "TapNetwork",
]

REAL_WAIT = 30.0  # real seconds a held thread waits before giving up (a broken test)

Request = AppendEntriesRequest | RequestVoteRequest | InstallSnapshotRequest
#: Called with each request a node receives, before its handler; may return an awaitable.
Hook = Callable[[Request], Awaitable[None] | None]
#: Called with the target and each vote or append request a node sends, before it leaves.
SendHook = Callable[[str, Request], Awaitable[None] | None]


class RateClock:
    """``rate`` × the running loop's time, continuous across ``set_rate``."""

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = rate
        self._origin: float | None = None  # loop time of the last rebase
        self._value = 0.0  # this clock's reading at the last rebase

    def __call__(self) -> float:
        now = asyncio.get_running_loop().time()
        if self._origin is None:
            self._origin, self._value = now, now
        return self._value + self.rate * (now - self._origin)

    def set_rate(self, rate: float) -> None:
        value = self()
        self._origin, self._value = asyncio.get_running_loop().time(), value
        self.rate = rate


class _Tapped:
    """The handlers of a node, behind its network's hooks."""

    def __init__(self, net: TapNetwork, inner: RpcHandlers) -> None:
        self._net = net
        self._inner = inner

    async def _hooks(self, req: Request) -> None:
        for hook in list(self._net.hooks):
            got = hook(req)
            if got is not None:
                await got

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        await self._hooks(req)
        return await self._inner.handle_request_vote(req)

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        await self._hooks(req)
        return await self._inner.handle_append_entries(req)

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        await self._hooks(req)
        return await self._inner.handle_install_snapshot(req)


class TapNetwork(InMemoryNetwork):
    """An ``InMemoryNetwork`` whose received requests go through ``hooks`` first, and whose
    sent vote and append requests go through ``send_hooks`` (with the target) first."""

    def __init__(self, node_id: str, **kwargs: Any) -> None:
        super().__init__(node_id, **kwargs)
        self.hooks: list[Hook] = []
        self.send_hooks: list[SendHook] = []

    def register_handlers(self, handlers: RpcHandlers) -> None:
        super().register_handlers(_Tapped(self, handlers))

    async def _before_send(self, target: str, req: Request) -> None:
        for hook in list(self.send_hooks):
            got = hook(target, req)
            if got is not None:
                await got

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        await self._before_send(target, req)
        return await super().send_request_vote(target, req)

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        await self._before_send(target, req)
        return await super().send_append_entries(target, req)


class SlowSyncStorage(MemoryStorage):
    """A ``MemoryStorage`` with one armed slow ``sync`` and a record of writing threads."""

    def __init__(self) -> None:
        super().__init__()
        self._armed: threading.Event | None = None
        self.slow_syncs = 0
        #: (operation, thread id) of every set_hard_state and sync.
        self.threads: list[tuple[str, int]] = []

    def arm(self, delay: float) -> None:
        """The next ``sync`` returns no earlier than ``delay`` s of loop time from now. Call
        from the event loop; the sync must run in the persist thread (it blocks its caller)."""
        gate = threading.Event()
        asyncio.get_running_loop().call_later(delay, gate.set)
        self._armed = gate

    def set_hard_state(self, term: int, voted_for: str | None) -> None:
        self.threads.append(("set_hard_state", threading.get_ident()))
        super().set_hard_state(term, voted_for)

    def sync(self) -> None:
        self.threads.append(("sync", threading.get_ident()))
        gate, self._armed = self._armed, None
        if gate is not None:
            assert gate.wait(REAL_WAIT), "the armed slow sync was never released"
            self.slow_syncs += 1
        super().sync()


class LeaseCluster(SimCluster):
    """A ``SimCluster`` with a ``RateClock``, a ``TapNetwork``, a ``SlowSyncStorage`` and an own
    copy of the config per node (kept across restarts)."""

    def __init__(self, n: int = 3, *, config: RaftConfig | None = None, **kwargs: Any) -> None:
        super().__init__(n, config=config, **kwargs)
        self.clocks: dict[str, RateClock] = {i: RateClock() for i in self.ids}
        self.slow: dict[str, SlowSyncStorage] = {i: SlowSyncStorage() for i in self.ids}
        self.storages = dict(self.slow)
        self.configs = {i: dataclasses.replace(self.config) for i in self.ids}
        self.taps: dict[str, TapNetwork] = {}

    def _make(self, node_id: str, peers: list[str]) -> RaftNode:
        net = TapNetwork(node_id, hub=self.hub, seed=self.rng.randrange(2**32), **self.net_opts)
        old = self.taps.get(node_id)
        if old is not None:  # a restarted node keeps the test's hooks
            net.hooks, net.send_hooks = old.hooks, old.send_hooks
        clock = self.clocks.setdefault(node_id, RateClock())
        storage = self.slow.setdefault(node_id, SlowSyncStorage())
        self.storages[node_id] = storage
        config = self.configs.setdefault(node_id, dataclasses.replace(self.config))
        machine = ListMachine()
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
        self.machines[node_id] = machine
        return node

    async def elect(self, timeout: float = 10.0, among: list[str] | None = None) -> RaftNode:
        """A leader that has committed (and applied) an entry of its term."""
        async with asyncio.timeout(timeout):
            while True:
                leader = await self.wait_leader(timeout, among)
                try:
                    await leader.read_index(timeout=1.0)
                    return leader
                except Exception:
                    await asyncio.sleep(0.01)

    async def write_through(
        self, command: bytes, among: list[str], timeout: float = 10.0
    ) -> tuple[RaftNode, float]:
        """Propose on whoever leads among ``among`` until acknowledged; (leader, loop time of
        the acknowledgement)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                cands = [self.nodes[i] for i in among if self.nodes[i]._running]
                leaders = [n for n in cands if n.role.value == "leader"]
                if leaders:
                    leader = max(leaders, key=lambda n: n.current_term)
                    try:
                        await leader.propose(command, timeout=1.0)
                        return leader, loop.time()
                    except Exception:
                        pass
                await asyncio.sleep(0.001)


class StaleProbe:
    """Lease reads on ``node`` in a loop; a read asked after ``acked_at`` that returns while
    the node's state machine lacks ``marker`` is stale (the node answered from an old view)."""

    def __init__(self, node: RaftNode, marker: bytes, *, pause: float = 0.002) -> None:
        self.node = node
        self.marker = marker
        self.pause = pause
        self.acked_at: float | None = None
        self.stale: list[tuple[float, int]] = []  # (loop time asked, index returned)
        self.served = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time()
            try:
                index = await self.node.lease_read(timeout=0.05)
            except Exception:
                index = None
            if index is not None:
                self.served += 1
                machine = self.node.state_machine
                assert isinstance(machine, ListMachine)
                if (
                    self.acked_at is not None
                    and asked >= self.acked_at
                    and self.marker not in machine.commands()
                ):
                    self.stale.append((asked, index))
            await asyncio.sleep(self.pause)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class StepStorage(MemoryStorage):
    """A ``MemoryStorage`` whose every ``sync`` waits for a permit the test grants (``step``);
    ``entered`` counts the syncs that started."""

    def __init__(self) -> None:
        super().__init__()
        self._permits = threading.Semaphore(0)
        self._cond = threading.Condition()
        self.entered = 0
        self.free = False  # True: syncs pass without a permit

    def sync(self) -> None:
        with self._cond:
            self.entered += 1
            self._cond.notify_all()
        if not self.free:
            assert self._permits.acquire(timeout=REAL_WAIT), "the test never granted the sync"
        super().sync()

    def step(self) -> None:
        """Let one waiting (or the next) sync through."""
        self._permits.release()

    def wait_entered(self, count: int) -> bool:
        """Block (in a thread) until ``count`` syncs have started."""
        with self._cond:
            return self._cond.wait_for(lambda: self.entered >= count, REAL_WAIT)
