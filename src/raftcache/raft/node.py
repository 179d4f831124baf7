"""RaftNode: the asyncio driver joining the pure ``RaftCore`` to a network, a storage and a clock.

Rule: one task (the ready loop) turns the core's ``Ready`` into effects, always in this order:
persist (and sync) → ``core.advance`` → send messages → apply committed entries → resolve reads.
An RPC handler steps the core, then waits until whatever that step changed is on stable storage
before its response leaves (persist before you answer). Because every handler that arrives while
the loop is busy joins the next ``Ready``, one fsync covers many requests (group commit).

Time enters only here: a ticker task calls ``core.tick()`` every ``tick_interval`` seconds of the
injected monotonic clock, and the leader lease is measured on that clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from raftcache.network.errors import NetworkError
from raftcache.network.interface import NetworkInterface
from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.durable import AnswerGate
from raftcache.raft.errors import (
    IndeterminateError,
    MembershipChangeError,
    NodeStoppedError,
    NotLeaderError,
    ProposalDroppedError,
)
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    EntryKind,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.node_stats import NodeStats
from raftcache.raft.ready import Outbound, Ready
from raftcache.raft.snapshot_transfer import Incoming, SnapshotTransfer
from raftcache.storage.base import DiskFullError, SnapshotData, SnapshotMeta, Storage

log = logging.getLogger("raftcache.raft")


class StateMachine(Protocol):
    """What Raft replicates into. Only proposed commands reach it, in log order, once each."""

    def apply(self, command: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class _Proposal:
    __slots__ = ("future", "term")

    def __init__(self, term: int, future: asyncio.Future[Any]) -> None:
        self.term = term
        self.future = future


class RaftNode:
    """A Raft member: call ``start()``, then ``propose``/``read_index`` on the leader."""

    def __init__(
        self,
        node_id: str,
        peers: Iterable[str],
        network: NetworkInterface,
        storage: Storage,
        state_machine: StateMachine,
        config: RaftConfig | None = None,
        *,
        cluster_id: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        peer_addresses: dict[str, str] | None = None,
        address_overrides: dict[str, str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.network = network
        self.storage = storage
        self.state_machine = state_machine
        self.config = config or RaftConfig()
        self.config.validate()
        peer_list = list(peers)
        addresses = peer_addresses or {}
        # The bootstrap configuration names voters only: addresses given at start are this
        # node's own view (its --peers, maybe through proxies) and must not travel to others in
        # snapshots; addresses added by add_member are replicated in CONFIG entries instead.
        self._bootstrap = Configuration.of(peer_list)
        self._peer_addresses = dict(addresses)
        # Node-local routes that win over the replicated addresses (NAT, multi-homed hosts,
        # a proxy per pair of nodes): the configuration holds one URL per member for everyone.
        self._address_overrides = dict(address_overrides or {})
        self._cluster_id = cluster_id
        self._rng = rng or random.Random()
        # Default: the event loop's monotonic clock (virtual under looptime in simulations).
        self._clock: Callable[[], float] = clock or time.monotonic
        self._clock_given = clock is not None
        self._apply_entry = getattr(state_machine, "apply_entry", None)
        self._core: RaftCore | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rpc_tasks: set[asyncio.Task[None]] = set()
        self._flush_waiters: list[asyncio.Future[None]] = []
        self._proposals: dict[int, _Proposal] = {}
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._reads_waiting_apply: list[tuple[int, asyncio.Future[int]]] = []
        self._next_read_id = 0
        self._round_times: dict[int, float] = {}
        self._lease_until = 0.0
        self._log_grew = asyncio.Event()
        self._changed = asyncio.Event()
        self._snapshotting = False
        self._persisting = False
        #: AppendEntries answers waiting for what they vouch for to be durable.
        self._gate = AnswerGate()
        self._storage_lock = asyncio.Lock()
        self._running = False
        self._failed: BaseException | None = None
        self._failed_event = asyncio.Event()
        self._disk_full = False
        #: Index of the last entry the state machine has really applied.
        self._applied = 0
        self._last_config: Configuration | None = None
        self.stats = NodeStats()
        # Streamed snapshots: chunks are written to disk as they arrive (one transfer at a
        # time, under the receive lock); a finished one waits in _pending_install for the
        # ready loop, which installs it between two Readies.
        self._snapshots = SnapshotTransfer(storage, state_machine, self._storage_lock, self.config)
        self._receive_lock = asyncio.Lock()
        self._pending_install: tuple[Incoming, asyncio.Future[bool]] | None = None

    # ------------------------------------------------------------------ properties (SPEC §3)
    @property
    def core(self) -> RaftCore:
        if self._core is None:
            raise NodeStoppedError("node not started")
        return self._core

    @property
    def role(self) -> Role:
        return self._core.role if self._core else Role.FOLLOWER

    @property
    def current_term(self) -> int:
        return self._core.term if self._core else 0

    @property
    def leader_id(self) -> str | None:
        return self._core.leader_id if self._core else None

    @property
    def commit_index(self) -> int:
        return self._core.commit_index if self._core else 0

    @property
    def last_applied(self) -> int:
        return self._applied

    @property
    def configuration(self) -> Configuration:
        return self._core.configuration if self._core else self._bootstrap

    @property
    def members(self) -> list[str]:
        return sorted(self.configuration.voters)

    @property
    def learners(self) -> list[str]:
        return sorted(self.configuration.learners)

    @property
    def failure(self) -> BaseException | None:
        """Why the node stopped itself (fail-stop), or None."""
        return self._failed

    async def wait_failed(self) -> BaseException:
        """Return once the node has stopped itself after a fatal error (e.g. a failed fsync);
        a server awaits this to exit instead of answering 503 forever."""
        await self._failed_event.wait()
        assert self._failed is not None
        return self._failed

    def leader_address(self) -> str | None:
        leader = self.leader_id
        if leader is None:
            return None
        return (
            self._address_overrides.get(leader)
            or self.configuration.address_of(leader)
            or self._peer_addresses.get(leader)
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._running:
            return
        if not self._clock_given:
            self._clock = asyncio.get_running_loop().time
        self.storage.bind(self.node_id, self._cluster_id)
        recovered = self.storage.load()
        data, self._applied = self._restore_stored_snapshot()
        self._core = RaftCore(
            self.node_id, self.config, recovered, self._bootstrap, self._rng, data
        )
        self._sync_addresses()
        self.network.register_handlers(self)
        await self.network.start()
        self._running = True
        self._failed = None
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name=f"raft-ready-{self.node_id}"),
            asyncio.create_task(self._ticker(), name=f"raft-tick-{self.node_id}"),
        ]
        self._wake.set()

    async def stop(self) -> None:
        if not self._running and not self._tasks:
            return
        self._running = False
        for task in [*self._tasks, *self._rpc_tasks]:
            task.cancel()
        for task in [*self._tasks, *self._rpc_tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._rpc_tasks.clear()
        self._fail_all(NodeStoppedError("node stopped"))
        await self.network.stop()
        self._close_snapshots()
        self.storage.close()

    def _fail_all(self, exc: BaseException) -> None:
        for prop in self._proposals.values():
            if not prop.future.done():
                prop.future.set_exception(exc)
        self._proposals.clear()
        for fut in [*self._reads.values(), *(f for _, f in self._reads_waiting_apply)]:
            if not fut.done():
                fut.set_exception(exc)
        self._reads.clear()
        self._reads_waiting_apply.clear()
        for waiter in self._flush_waiters:
            if not waiter.done():
                waiter.set_exception(exc)
        self._flush_waiters.clear()
        self._gate.fail_all(exc)

    def _check_running(self) -> RaftCore:
        if not self._running or self._core is None:
            raise NodeStoppedError(f"node {self.node_id} is not running")
        return self._core

    # ------------------------------------------------------------------ loops
    async def _ticker(self) -> None:
        interval = self.config.tick_interval
        next_at = self._clock() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - self._clock()))
            # No catch-up after a stall: a late tick only makes timers slower (the safe side).
            next_at = max(next_at + interval, self._clock())
            self.core.tick()
            self._wake.set()

    async def _ready_loop(self) -> None:
        core = self.core
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._pending_install is not None:
                    await self._install_received(core, *self._pending_install)
                while core.has_ready():
                    # Waiters registered so far are covered by this Ready; keep them reachable
                    # in self._flush_waiters until the sync succeeded (fail-stop fails them).
                    waiters = list(self._flush_waiters)
                    rd = core.ready()
                    hs_version = core.hard_state_version
                    # A leader's AppendEntries may leave while its own disk write is under way
                    # (dissertation §10.2.1): they are requests, not answers, and the leader
                    # counts itself towards a commit only once the write is done (advance).
                    # Anything sent with a new term or vote must wait for the write.
                    early = rd.hard_state is None and rd.snapshot is None
                    if early:
                        self._send_all(rd)
                    if rd.needs_persist():
                        self._persisting = True
                        self._gate.snapshot_busy = rd.snapshot is not None
                        try:
                            async with self._storage_lock:
                                if self._persist_in_thread(rd):
                                    await asyncio.to_thread(self._persist, rd)
                                else:
                                    self._persist(rd)
                            self._disk_full = False
                        except DiskFullError as exc:
                            self._on_disk_full(rd, waiters, exc)
                            break
                        finally:
                            self._persisting = False
                            self._gate.snapshot_busy = False
                    if rd.snapshot is not None:
                        self.state_machine.restore(rd.snapshot[1])
                        self._applied = rd.snapshot[0].last_index
                        self._resolve_overtaken(rd.snapshot[0].last_index)
                    core.advance(rd)
                    # Everything this Ready handed out is durable now (or was already).
                    self._gate.durable_version = max(self._gate.durable_version, hs_version)
                    self._gate.release(core)
                    del self._flush_waiters[: len(waiters)]
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)
                    if not early:
                        self._send_all(rd)
                    self._after_persist(rd)
                if self._flush_waiters and not self._disk_full and not core.has_unpersisted():
                    for w in self._flush_waiters:
                        if not w.done():
                            w.set_result(None)
                    self._flush_waiters = []
                self._changed.set()
                self._changed = asyncio.Event()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # fail-stop: a storage failure or a broken invariant
            log.critical("raft node %s failed: %r; stopping", self.node_id, exc)
            self._failed = exc
            self._failed_event.set()
            self._running = False
            self._fail_all(NodeStoppedError(f"node failed: {exc!r}"))
            raise

    def _on_disk_full(
        self, rd: Ready, waiters: list[asyncio.Future[None]], exc: DiskFullError
    ) -> None:
        """Nothing of ``rd`` may be vouched for: fail the RPCs waiting on it (their senders
        retry later), keep the writes pending in the core, refuse new proposals until a write
        succeeds. Reads and elections go on as long as the small hard-state file can be written.
        """
        if not self._disk_full:
            log.error(
                "disk full on %s: refusing writes until space is freed (%s)", self.node_id, exc
            )
        self._disk_full = True
        core = self.core
        if rd.hard_state is not None:
            core.mark_hard_state_unpersisted()
        if rd.entries:
            core.log.mark_unstable(rd.entries[0].index)
        del self._flush_waiters[: len(waiters)]
        for w in waiters:
            if not w.done():
                w.set_exception(exc)
        self._gate.fail_all(exc)
        if not (rd.hard_state is None and rd.snapshot is None):
            return  # requests needing the write (votes, new term) are not sent
        # The rest of this Ready (applies, reads) does not depend on the failed write.
        self._after_persist(rd)
        # Retry the write after a pause, not in a busy loop.
        asyncio.get_running_loop().call_later(self.config.heartbeat_interval, self._wake.set)

    def _persist_in_thread(self, rd: Ready) -> bool:
        cfg = self.config
        return cfg.persist_in_thread and (
            rd.snapshot is not None or len(rd.entries) > cfg.persist_inline_max_entries
        )

    def _persist(self, rd: Ready) -> None:
        """Write and sync one Ready (maybe in a worker thread: touches only the storage)."""
        if rd.snapshot is not None:
            self.storage.save_snapshot(*rd.snapshot)
        if rd.hard_state is not None:
            self.storage.set_hard_state(*rd.hard_state)
        if rd.entries:
            self.storage.append(rd.entries)
        self.storage.sync()

    def _send_all(self, rd: Ready) -> None:
        for out in rd.messages:
            self._send(out)

    def _after_persist(self, rd: Ready) -> None:
        now = self._clock()
        if self.role is Role.LEADER:
            self._round_times.setdefault(rd.round, now)
            t = self._round_times.get(rd.confirmed_round)
            if t is not None:
                lease = self.config.election_timeout_min * (1 - self.config.lease_clock_drift)
                self._lease_until = max(self._lease_until, t + lease)
                for r in [r for r in self._round_times if r < rd.confirmed_round]:
                    del self._round_times[r]
        else:
            self._lease_until = 0.0
            self._round_times.clear()
        if rd.committed:
            self._apply(rd.committed)
        for read_id, index in rd.reads:
            fut = self._reads.pop(read_id, None)
            if fut is not None and not fut.done():
                self._reads_waiting_apply.append((index, fut))
        for read_id in rd.dropped_reads:
            fut = self._reads.pop(read_id, None)
            if fut is not None and not fut.done():
                fut.set_exception(NotLeaderError(self.leader_id))
        self._resolve_reads()
        self._sync_addresses()
        self._maybe_auto_snapshot()

    def _sync_addresses(self) -> None:
        conf = self.configuration
        if conf is self._last_config:
            return
        self._last_config = conf
        for node_id in conf.all_ids():
            addr = conf.address_of(node_id)
            if (
                addr is not None
                and node_id != self.node_id
                and node_id not in self._address_overrides
            ):
                self.network.set_peer_address(node_id, addr)

    # ------------------------------------------------------------------ sending
    def _send(self, out: Outbound) -> None:
        task = asyncio.create_task(self._rpc(out))
        self._rpc_tasks.add(task)
        task.add_done_callback(self._rpc_tasks.discard)

    async def _rpc(self, out: Outbound) -> None:
        msg, target = out.message, out.target
        started = self._clock()
        kind = type(msg).__name__.removesuffix("Request")
        self.stats.rpc_sent(kind)
        try:
            async with asyncio.timeout(self.config.rpc_timeout):
                resp: Any
                if isinstance(msg, AppendEntriesRequest):
                    resp = await self.network.send_append_entries(target, msg)
                elif isinstance(msg, RequestVoteRequest):
                    resp = await self.network.send_request_vote(target, msg)
                else:
                    resp = await self.network.send_install_snapshot(target, msg)
        except (NetworkError, TimeoutError, OSError) as exc:
            self.stats.rpc_failed(kind)
            log.debug("%s -> %s %s failed: %s", self.node_id, target, kind, exc)
            if self._core is not None:
                self._core.step_failure(out)
                self._wake.set()
            return
        if isinstance(msg, AppendEntriesRequest):
            self.stats.replication_rtt(target, (self._clock() - started) * 1000.0)
        if self._core is not None and self._running:
            self._core.step_response(out, resp)
            self._wake.set()

    # ------------------------------------------------------------------ RPC handlers
    async def _flush(self) -> None:
        """Wait until every state change made so far is on stable storage."""
        core = self._check_running()
        if not core.has_unpersisted() and not self._persisting:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(fut)
        self._wake.set()
        await fut

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        core = self._check_running()
        self.stats.rpc_received("RequestVote")
        resp = core.handle_request_vote(req)
        self._wake.set()
        await self._flush()
        return resp

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        core = self._check_running()
        self.stats.rpc_received("AppendEntries")
        if req.entries and req.prev_log_index > core.log.last_index() and req.term >= core.term:
            # Pipelined requests may overtake each other on separate connections: give the
            # earlier ones a moment to land instead of rejecting and forcing a re-probe.
            await self._wait_log_reaches(req.prev_log_index, self.config.heartbeat_interval / 2)
        resp = core.handle_append_entries(req)
        if req.entries:
            self._log_grew.set()
            self._log_grew = asyncio.Event()
        self._wake.set()
        return await self._when_durable(core, resp)

    async def _when_durable(
        self, core: RaftCore, resp: AppendEntriesResponse
    ) -> AppendEntriesResponse:
        """``resp`` once what it vouches for is durable — not behind unrelated writes: a
        heartbeat or an already-written entry is acknowledged at once (see ``AnswerGate``)."""
        index = resp.match_index if resp.success else 0
        got = self._gate.check_or_wait(core, index, resp.term)
        if got if isinstance(got, bool) else await got:
            return resp
        # The term moved on first: the entries may be truncated by then. Claim nothing.
        await self._flush()
        last = core.log.last_index()
        return AppendEntriesResponse(core.term, False, conflict_index=last + 1, last_log_index=last)

    async def _wait_log_reaches(self, index: int, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.core.log.last_index() < index:
                    await self._log_grew.wait()

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        core = self._check_running()
        self.stats.rpc_received("InstallSnapshot")
        if self._snapshots.streaming:
            async with self._receive_lock:  # one chunk at a time: offsets stay contiguous
                resp = await self._receive_chunk(core, req)
        else:  # a storage without streaming: the core assembles the chunks in memory
            resp = core.handle_install_snapshot(req)
        self._wake.set()
        await self._flush()
        return resp

    # ------------------------------------------------------------------ applying
    def _apply(self, entries: list[LogEntry]) -> None:
        apply_entry, sm = self._apply_entry, self.state_machine
        for e in entries:
            result: Any = None
            if e.kind == EntryKind.COMMAND:
                result = apply_entry(e.index, e.command) if apply_entry else sm.apply(e.command)
            self._applied = e.index
            prop = self._proposals.pop(e.index, None)
            if prop is not None and not prop.future.done():
                if prop.term == e.term:
                    prop.future.set_result(result)
                else:
                    prop.future.set_exception(
                        ProposalDroppedError("the entry was overwritten by a new leader")
                    )

    def _resolve_overtaken(self, index: int) -> None:
        """A snapshot replaced entries we proposed: their outcome is unknown to us."""
        for i in [i for i in self._proposals if i <= index]:
            prop = self._proposals.pop(i)
            if not prop.future.done():
                prop.future.set_exception(IndeterminateError("outcome unknown (snapshot)"))

    def _resolve_reads(self) -> None:
        if not self._reads_waiting_apply:
            return
        applied = self.last_applied
        keep = []
        for index, fut in self._reads_waiting_apply:
            if fut.done():
                continue
            if index <= applied:
                fut.set_result(index)
            else:
                keep.append((index, fut))
        self._reads_waiting_apply = keep

    # ------------------------------------------------------------------ client API
    async def propose(self, command: bytes, timeout: float | None = None) -> Any:
        """Replicate ``command``; returns the state machine's result once committed and applied."""
        core = self._check_running()
        if self._disk_full:
            raise ProposalDroppedError("disk full: writes are refused until space is freed")
        if len(self._proposals) >= self.config.max_pending_proposals:
            # Admission control: refused before it is appended, so certainly not applied.
            raise ProposalDroppedError(
                f"overloaded: {len(self._proposals)} proposals awaiting commit "
                "(max_pending_proposals); retry later"
            )
        index = core.propose(command)
        return await self._await_index(core, index, timeout)

    async def _await_index(self, core: RaftCore, index: int, timeout: float | None) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals[index] = _Proposal(core.term, fut)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout or self.config.propose_timeout):
                return await asyncio.shield(fut)
        except TimeoutError:
            self._proposals.pop(index, None)
            if self.role is not Role.LEADER:
                raise IndeterminateError("leadership lost before the entry committed") from None
            raise

    async def read_index(self, timeout: float | None = None) -> int:
        """Linearizable read barrier (ReadIndex, §6.4): returns once local reads are safe."""
        core = self._check_running()
        self._next_read_id += 1
        read_id = self._next_read_id
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[read_id] = fut
        try:
            core.request_read(read_id)
        except NotLeaderError:
            del self._reads[read_id]
            raise
        self._wake.set()
        try:
            async with asyncio.timeout(timeout or self.config.election_timeout_max * 2):
                return await fut
        finally:
            self._reads.pop(read_id, None)

    async def lease_read(self, timeout: float | None = None) -> int:
        """Read barrier from the leader lease: no quorum round while the lease holds.

        Safe as long as clocks advance at rates within ``lease_clock_drift`` of each other.
        """
        core = self._check_running()
        if core.role is not Role.LEADER:
            raise NotLeaderError(core.leader_id)
        if self._clock() < self._lease_until and core.log.term_at(core.commit_index) == core.term:
            index = core.commit_index
            if index <= self._applied:
                return index
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._reads_waiting_apply.append((index, fut))
            self._wake.set()
            async with asyncio.timeout(timeout or self.config.election_timeout_max * 2):
                return await fut
        return await self.read_index(timeout)

    # ------------------------------------------------------------------ membership, transfer
    async def _propose_config(self, new: Configuration, timeout: float | None) -> None:
        core = self._check_running()
        index = core.propose_config(new)
        await self._await_index(core, index, timeout)

    async def add_member(self, node_id: str, address: str | None = None) -> None:
        """Add ``node_id`` as a learner, wait until it caught up, then promote it to voter."""
        core = self._check_running()
        if node_id in core.configuration.voters:
            return
        if address is not None and node_id not in self._address_overrides:
            self.network.set_peer_address(node_id, address)
        if node_id not in core.configuration.learners:
            await self._propose_config(core.configuration.with_learner(node_id, address), None)
        await self._wait_caught_up(node_id)
        await self._propose_config(core.configuration.with_voter(node_id, address), None)

    async def _wait_caught_up(self, node_id: str) -> None:
        deadline = self._clock() + max(30.0, self.config.election_timeout_max * 20)
        while True:
            core = self._check_running()
            if core.role is not Role.LEADER:
                raise NotLeaderError(core.leader_id)
            pr = core.progress.get(node_id)
            if pr is not None and pr.match_index >= core.commit_index:
                return
            if self._clock() > deadline:
                raise MembershipChangeError(f"{node_id} did not catch up in time")
            await self._wait_changed(self.config.heartbeat_interval)

    async def remove_member(self, node_id: str) -> None:
        core = self._check_running()
        if node_id not in core.configuration.all_ids():
            return
        await self._propose_config(core.configuration.without(node_id), None)

    async def transfer_leadership(self, to: str | None = None) -> str:
        """Hand leadership to ``to`` (or the most up-to-date voter); returns the new leader."""
        core = self._check_running()
        target = core.transfer_leadership(to)
        self._wake.set()
        deadline = self._clock() + self.config.election_timeout_max * 3
        while self._clock() < deadline:
            if self._core is not None and self._core.leader_id == target:
                return target
            await self._wait_changed(self.config.heartbeat_interval)
        raise TimeoutError(f"leadership transfer to {target} did not complete")

    async def _wait_changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    # ------------------------------------------------------------------ snapshots
    def _maybe_auto_snapshot(self) -> None:
        threshold = self.config.snapshot_threshold
        core = self._core
        if (
            threshold > 0
            and core is not None
            and not self._snapshotting
            and not self._disk_full
            and self._applied - core.log.snapshot_index >= threshold
        ):
            self._snapshotting = True
            task = asyncio.create_task(self._snapshot_task())
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

    async def _snapshot_task(self) -> None:
        try:
            await self.take_snapshot()
        except Exception as exc:
            log.warning("automatic snapshot failed on %s: %r", self.node_id, exc)

    async def take_snapshot(self) -> int:
        """Snapshot the applied state and compact the log; returns the snapshot's index."""
        core = self._check_running()
        self._snapshotting = True
        try:
            # The state machine's own applied index, not the core's: the core hands entries
            # out before the driver applies them (after the disk write), and a snapshot must
            # be labelled with exactly the entries its data contains.
            index = self._applied
            if index <= core.log.snapshot_index:
                return core.log.snapshot_index
            term = core.log.term_at(index)
            assert term is not None
            meta = SnapshotMeta(index, term, core.config_for_snapshot(index))
            if self._snapshots.streaming:
                return await self._take_streamed_snapshot(core, meta)
            prepare = getattr(self.state_machine, "prepare_snapshot", None)
            if prepare is not None:
                data = await asyncio.to_thread(prepare())
            else:
                data = self.state_machine.snapshot()
            if not self._running or meta.last_index <= core.log.snapshot_index:
                return core.log.snapshot_index
            await self._snapshots.storage_io(self.storage.save_snapshot, meta, data)
            if meta.last_index <= core.log.snapshot_index:
                return core.log.snapshot_index
            core.snapshot_taken(meta, data)
            self._wake.set()
            return index
        finally:
            self._snapshotting = False

    async def _take_streamed_snapshot(self, core: RaftCore, meta: SnapshotMeta) -> int:
        """Encode the state machine straight into the storage's snapshot file; the core then
        sends from that file, so no copy of the snapshot stays in memory."""

        def wanted() -> bool:
            return self._running and meta.last_index > core.log.snapshot_index

        view = await self._snapshots.save_local(meta, wanted)
        if view is not None:
            core.snapshot_taken(meta, view)  # ignored if a newer snapshot came meanwhile
            self._snapshots.keep_only(core.snapshot_data)
            self._wake.set()
        return core.log.snapshot_index

    def _restore_stored_snapshot(self) -> tuple[SnapshotData | None, int]:
        """Restore the state machine from the stored snapshot (at start); return what the core
        sends from — a view reading the file chunk by chunk when the storage streams — and
        the snapshot's index."""
        if not self._snapshots.streaming:
            snapshot = self.storage.load_snapshot()
            if snapshot is None:
                return None, 0
            self.state_machine.restore(snapshot[1])
            return snapshot[1], snapshot[0].last_index
        view = self._snapshots.open_stored()
        if view is None:
            return None, 0
        try:
            self._snapshots.restore(view)
        except BaseException:
            self._snapshots.close()
            raise
        return view, view.meta.last_index

    async def _receive_chunk(
        self, core: RaftCore, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        """Write one chunk to disk; after the last one, have the ready loop install it."""
        if not self._running or not core.accept_snapshot_sender(req):
            return InstallSnapshotResponse(core.term, False, 0)
        if req.last_included_index <= core.commit_index:
            # We hold everything it covers: acknowledge without storing anything (the leader
            # moves on once it sees the last chunk acknowledged).
            receiving = self._snapshots.receiving
            if receiving is not None and receiving.last_index <= core.commit_index:
                self._snapshots.abort_incoming()
            return InstallSnapshotResponse(core.term, True, req.offset + len(req.data))
        got = await self._snapshots.receive(req, core.configuration)
        if got.complete is not None and not await self._install_in_loop(got.complete):
            # Covered meanwhile by entries from a newer leader: acknowledged all the same.
            log.info("%s: snapshot %d no longer needed", self.node_id, req.last_included_index)
        return InstallSnapshotResponse(core.term, got.success, got.next_offset)

    async def _install_in_loop(self, incoming: Incoming) -> bool:
        """Hand a fully received snapshot to the ready loop and wait until it is installed
        (True) or found covered by the log already (False)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending_install = (incoming, fut)
        self._wake.set()
        failed: asyncio.Future[Any] = asyncio.ensure_future(self._failed_event.wait())
        try:
            await asyncio.wait([fut, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if not fut.done():
            if self._pending_install is not None and self._pending_install[1] is fut:
                self._pending_install = None
            incoming.writer.abort()
            raise NodeStoppedError(f"node {self.node_id} stopped before the snapshot installed")
        return fut.result()

    async def _install_received(
        self, core: RaftCore, incoming: Incoming, fut: asyncio.Future[bool]
    ) -> None:
        """Between two Readies (nothing handed out is pending): install the snapshot on disk,
        then — only then — let the core and the state machine adopt it. A full disk leaves the
        old snapshot, the log and the core untouched; any other failure stops the node."""
        self._pending_install = None
        meta = incoming.meta
        try:
            if meta.last_index <= core.commit_index:
                incoming.writer.abort()
                installed = False
            else:
                view = await self._snapshots.commit(incoming)
                # Durable from here. The core keeps entries that arrived during the commit.
                core.snapshot_installed(meta, view)
                self._snapshots.keep_only(core.snapshot_data)
                self._snapshots.restore(view)
                self._applied = meta.last_index
                self._resolve_overtaken(meta.last_index)
                installed = True
        except DiskFullError as exc:
            log.error("disk full on %s: snapshot %d not installed", self.node_id, meta.last_index)
            if not fut.done():
                fut.set_exception(exc)
            return
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
            raise
        if not fut.done():
            fut.set_result(installed)

    def _close_snapshots(self) -> None:
        """Stopping: abort a transfer under way and close the files the core sent from."""
        pending, self._pending_install = self._pending_install, None
        if pending is not None:
            pending[0].writer.abort()
            if not pending[1].done():
                pending[1].set_exception(NodeStoppedError(f"node {self.node_id} stopped"))
        self._snapshots.close()

    # ------------------------------------------------------------------ introspection
    def status(self) -> dict[str, Any]:
        return {
            "id": self.node_id,
            "role": self.role.value,
            "term": self.current_term,
            "leader": self.leader_id,
            "commit_index": self.commit_index,
            "last_applied": self.last_applied,
            "members": self.members,
            "learners": self.learners,
        }

    def raft_stats(self) -> dict[str, Any]:
        core = self._core
        lag: dict[str, int] = {}
        if core is not None and core.role is Role.LEADER:
            last = core.log.last_index()
            lag = {p: last - pr.match_index for p, pr in sorted(core.progress.items())}
        return self.stats.as_dict(
            elections=core.elections if core else 0,
            state_transitions=core.state_transitions if core else 0,
            follower_lag=lag,
        )
