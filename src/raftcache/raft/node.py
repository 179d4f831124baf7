"""RaftNode: the asyncio driver joining the pure ``RaftCore`` to a network, a storage and a clock.

Rule: one task (the ready loop) turns the core's ``Ready`` into effects, always in this order:
persist (and sync) → ``core.advance`` → send messages → apply committed entries → resolve reads.
An RPC handler steps the core, then waits until whatever that step changed is on stable storage
before its response leaves (persist before you answer). Because every handler that arrives while
the loop is busy joins the next ``Ready``, one fsync covers many requests (group commit).

Time enters only here, from one clock: a ticker task calls ``core.tick()`` every
``tick_interval`` seconds of the injected monotonic clock (``self._clock``); the leader lease
and the deadlines of waiting proposals and reads are measured on that clock too.

One class, in sections by concern; every field is created in ``__init__`` or, for what belongs
to one run, in ``_new_incarnation``, which ``start`` calls again. Its collaborators own what is
separate: ``PersistPipeline`` (``raft/pipeline.py``: jobs, persist thread, storage lock, answer
gate), ``SnapshotTransfer`` (``raft/snapshot_transfer.py``), ``LeaderLease``
(``raft/lease.py``), ``Deadlines`` (``raft/deadlines.py``). The rules per concern:

- Ready loop: for every Ready, persist (and sync) → ``core.advance`` → send the messages that
  had to wait for the write → apply committed entries → resolve reads. Requests that carry no
  new term, vote or snapshot may leave before the write (dissertation §10.2.1): the leader
  counts itself towards a commit only after ``advance``. An answer leaves only once what it
  vouches for is durable (``AnswerGate``, flush waiters). A storage failure stops the node
  (fail-stop), except a full disk, which refuses writes until space is freed.
- RPCs: a handler steps the core, then its answer waits until whatever that step changed and
  the answer vouches for is on stable storage (``_flush`` for votes and snapshots, the
  ``AnswerGate`` for AppendEntries). A failed or timed-out request is reported to the core as a
  failure, never retried here: the core decides what to send next.
- Client API: a proposal resolves only once its entry committed and was applied (with the
  state machine's result), or fails with an error that says whether it may have been applied
  (``IndeterminateError``; ``StoppedAfterAppendError`` when the node stops with it pending) or
  certainly was not (``ProposalDroppedError``, ``NotLeaderError``, ``NodeStoppedError``).
  A read barrier returns an index the state machine has applied, confirmed by a quorum round
  (ReadIndex) or by the leader lease. Admission control refuses a proposal before it is
  appended.
- Snapshots: a snapshot is labelled with exactly the entries the state machine applied; it is
  on disk before the core compacts its log. A streamed snapshot from a leader is written chunk
  by chunk, and installed only by the ready loop between two Readies, on disk first, then
  adopted by the core and the state machine; a full disk leaves the old snapshot, the log and
  the core untouched.
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
from raftcache.network.groups import GroupNotHostedError, store_of
from raftcache.network.interface import NetworkInterface
from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    EntryKind,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RaftRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.deadlines import Deadlines
from raftcache.raft.errors import (
    IndeterminateError,
    MembershipChangeError,
    NodeStoppedError,
    NotLeaderError,
    PeersMismatchError,
    ProposalDroppedError,
    StoppedAfterAppendError,
)
from raftcache.raft.events import PeerHealth, RaftEvents
from raftcache.raft.lease import LeaderLease, lease_duration
from raftcache.raft.node_stats import NodeStats
from raftcache.raft.persist import PersistThread
from raftcache.raft.pipeline import PersistPipeline
from raftcache.raft.ready import Outbound, Ready
from raftcache.raft.snapshot_transfer import Incoming, SnapshotTransfer
from raftcache.storage.base import (
    DiskFullError,
    RecoveredState,
    SnapshotData,
    SnapshotMeta,
    Storage,
)
from raftcache.sysmem import release_free_memory

__all__ = ["RaftNode", "StateMachine"]

log = logging.getLogger("raftcache.raft")

#: A snapshot that compacted at least this many command bytes returns free memory to the OS.
RELEASE_AFTER_BYTES = 8 * 1024 * 1024


class StateMachine(Protocol):
    """What Raft replicates into. Only proposed commands reach it, in log order, once each."""

    def apply(self, command: bytes) -> Any: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class _Proposal:
    __slots__ = ("future", "index", "term")

    def __init__(self, term: int, future: asyncio.Future[Any], index: int) -> None:
        self.term = term
        self.future = future
        self.index = index


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
        group: str = "",
        peer_health: PeerHealth | None = None,
        persist_thread: PersistThread | None = None,
    ) -> None:
        self.node_id = node_id
        #: The Raft group this node is a replica of ("" on a process hosting one group): a
        #: request of any other group is refused before it reaches the core, so a peer that
        #: hosts many groups can never step this node with another group's term or entries.
        self.group = group
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
        #: The voters the caller named; recorded at the first start, checked at every later
        #: one against the membership the data holds (``RaftNode.start``).
        self._flag_voters = list(dict.fromkeys(peer_list))
        self._peer_addresses = dict(addresses)
        # Node-local routes that win over the replicated addresses (NAT, multi-homed hosts,
        # a proxy per pair of nodes): the configuration holds one URL per member for everyone.
        self._address_overrides = dict(address_overrides or {})
        self._cluster_id = cluster_id
        self._rng = rng or random.Random()
        # Without an injected clock, ``start`` switches to the running loop's ``time`` (virtual
        # under looptime in simulations); ``time.monotonic`` only serves before the first start.
        self._clock: Callable[[], float] = clock or time.monotonic
        self._clock_given = clock is not None
        self._apply_entry = getattr(state_machine, "apply_entry", None)
        self._tasks: list[asyncio.Task[None]] = []
        self._rpc_tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self.stats = NodeStats()
        #: The INFO lines operators read (``raft/events.py``): term, leader and membership
        #: changes of this node; lost and recovered peers, shared by a store's groups.
        self._events = RaftEvents(node_id, group)
        self._peer_health = peer_health or PeerHealth(node_id, self.config.election_timeout_max)
        #: The writer thread this node's Readies go through (``persist_in_thread``): a store's,
        #: shared by its replicas (set before ``start``), or None for one of the node's own.
        self.persist_thread = persist_thread
        #: Set when a run stops itself after a fatal error (``wait_failed``); cleared by start.
        self._failed_event = asyncio.Event()
        #: Index of the last entry the state machine has really applied. It belongs to the
        #: state machine, which outlives a run: ``start`` resets it only with a snapshot.
        self._applied = 0
        self._new_incarnation()

    def _new_incarnation(self) -> None:
        """Create every field that belongs to one run, from ``start`` to ``stop``.

        ``start`` calls it again, so nothing learnt by an earlier run survives into the next:
        an answer gate that remembers an old durable hard-state version would release answers
        of the new core (whose versions restart at 0) before its term is on disk; a lease, a
        round time or a persist job of the old run would vouch for things the new run never
        did. Only the configuration, the injected parts (and what the state machine applied) and
        the statistics outlive a run.
        """
        self._core: RaftCore | None = None
        self._wake = asyncio.Event()
        #: When the ticker first found a wake-up the ready loop had not taken (None: none
        #: pending), and whether this node led then: how long the loop has been stuck, for
        #: ``stalled_for``.
        self._wake_pending_since: float | None = None
        self._stalled_leading = False
        self._proposals: dict[int, _Proposal] = {}
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._reads_waiting_apply: list[tuple[int, asyncio.Future[int]]] = []
        #: Timeouts of waiting proposals and reads, swept by the ticker (no timer per wait).
        self._deadlines = Deadlines()
        self._next_read_id = 0
        #: The leader lease of this run (``raft/lease.py``); sized when the core exists.
        self._lease = LeaderLease(0.0)
        self._log_grew = asyncio.Event()
        self._changed = asyncio.Event()
        self._snapshotting = False
        #: Readies on their way to disk, the persist thread, the storage lock, the answer gate
        #: and the flush waiters of this run (``raft/pipeline.py``).
        self._persist = PersistPipeline(
            self.node_id,
            self.storage,
            self.config,
            send_all=self._send_all,
            after_persist=self._after_persist,
            snapshot_durable=self._snapshot_durable,
            wake=self._wake.set,
            observe_sync=self.stats.fsync.observe,
        )
        self._failed: BaseException | None = None
        self._failed_event.clear()
        #: Command bytes applied since start, and their count at the last snapshot taken:
        #: their difference is the log the next automatic snapshot would free.
        self._applied_bytes = 0
        self._snapshot_mark = 0
        self._last_config: Configuration | None = None
        # Streamed snapshots: chunks are written to disk as they arrive (one transfer at a
        # time, under the receive lock); a finished one waits in _pending_install for the
        # ready loop, which installs it between two Readies.
        self._snapshots = SnapshotTransfer(
            self.storage, self.state_machine, self._persist.storage_lock, self.config
        )
        self._receive_lock = asyncio.Lock()
        self._pending_install: tuple[Incoming, asyncio.Future[bool]] | None = None

    # ==================== public views
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
    def last_log_index(self) -> int:
        """The index of the last entry in this node's log, committed or not (0: stopped)."""
        return self._core.log.last_index() if self._core else 0

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
        return None if leader is None else self.peer_url(leader)

    def peer_url(self, node_id: str) -> str | None:
        """A member's HTTP address: its override, its configuration entry, or the static
        peers map, in that order (None when none names it). A replica of a group on a store
        is reached at its store's address (``raftcache.network.groups.store_of``)."""
        found = (
            self._address_overrides.get(node_id)
            or self.configuration.address_of(node_id)
            or self._peer_addresses.get(node_id)
        )
        if found is None and self.group:
            found = self._peer_addresses.get(store_of(node_id))
        return found

    def _check_request(self, req: RaftRequest) -> RaftCore:
        if req.group != self.group:
            raise GroupNotHostedError(self.node_id, req.group)
        if req.to and req.to != self.node_id:
            # Meant for another incarnation of this store's replica (protocol.messages).
            raise GroupNotHostedError(self.node_id, f"{req.group} replica {req.to}")
        return self._check_running()

    def _check_running(self) -> RaftCore:
        if not self._running or self._core is None:
            raise NodeStoppedError(f"node {self.node_id} is not running")
        return self._core

    # ==================== lifecycle
    async def start(self) -> None:
        if self._running:
            return
        if self._tasks or self._persist.worker is not None:
            # The last run stopped itself (fail-stop) and nobody called stop(): end its tasks
            # and thread first, or its ticker would tick the new core as well.
            await self.stop()
        if not self._clock_given:
            self._clock = asyncio.get_running_loop().time
        # A new run: nothing of an earlier one (answer gate, lease, jobs, waiters) carries over.
        self._new_incarnation()
        self.storage.bind(self.node_id, self._cluster_id)
        recovered = self.storage.load()
        # The data's membership wins over the command line: the first start records its
        # voters, every later one reads them back (``storage/bootstrap.py``).
        recorded = Configuration.of(
            self.storage.record_bootstrap(self._voters_to_record(recovered))
        )
        core = RaftCore(self.node_id, self.config, recovered, recorded, self._rng, None)
        self._check_peers(core, recorded)
        data, snapshot_index = self._restore_stored_snapshot()
        core.snapshot_data = data
        if data is not None:
            self._applied = snapshot_index  # the state machine was reset to the snapshot
        elif self._applied > 0:
            # No snapshot to reset it: the state machine still holds what an earlier run of
            # this object applied (committed entries, so they are in the log as they were).
            core.resume_applied(self._applied)
        self._core = core
        self._events.reset()
        self._events.observe(core.term, core.leader_id, core.configuration)
        self._persist.gate.bind(core)
        self._lease = LeaderLease(lease_duration(self.config, core.election_ticks))
        self._sync_addresses()
        self.network.register_handlers(self)
        await self.network.start()
        self._running = True
        if self.config.persist_in_thread:
            self._persist.start_worker(asyncio.get_running_loop(), self.persist_thread)
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name=f"raft-ready-{self.node_id}"),
            asyncio.create_task(self._ticker(), name=f"raft-tick-{self.node_id}"),
        ]
        self._wake.set()

    def _voters_to_record(self, recovered: RecoveredState) -> list[str]:
        """What to record as the bootstrap if nothing is recorded yet: the flags' voters on a
        first start; for data written by a release that did not record it, the data's own
        membership when it has one (a snapshot or a configuration entry), else the flags."""
        if recovered.snapshot is not None:
            return sorted(recovered.snapshot.configuration.voters)
        configs = [e for e in recovered.entries if e.kind == EntryKind.CONFIG]
        if configs:
            return sorted(Configuration.decode(configs[-1].command).voters)
        return self._flag_voters

    def _check_peers(self, core: RaftCore, recorded: Configuration) -> None:
        """Refuse voters from the flags that would change the membership the data holds;
        accept (with a warning) flags that name a configuration the node had before."""
        given = frozenset(self._flag_voters)
        current = frozenset(core.configuration.voters)
        if not given or given == current:
            return
        known = {frozenset(recorded.voters), *(frozenset(c.voters) for c in core.config_history())}
        diff = _describe_difference(given, current)
        if given in known:
            log.warning(
                "%s: ignoring peers %s: this node's data records members %s (%s); the data "
                "wins (a stale peer list)",
                self.node_id,
                sorted(given),
                sorted(current),
                diff,
            )
            return
        self.storage.close()
        raise PeersMismatchError(
            f"node {self.node_id}: --peers names voters {sorted(given)} but its data directory "
            f"records members {sorted(current)} ({diff}), a membership it never had. Fix "
            "--peers, change membership through POST /v1/members, or start from an empty "
            "data directory to join as a new member"
        )

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
        self._persist.release_storage_lock()  # the ready loop may have died holding it
        self._fail_all(NodeStoppedError("node stopped"))
        await self.network.stop()
        self._close_snapshots()
        worker, self._persist.worker = self._persist.worker, None
        if worker is not None and not await asyncio.to_thread(worker.stop, 30.0):
            log.error(
                "%s: the persist thread did not end; closing the storage anyway", self.node_id
            )
        self.storage.close()

    def _fail_all(self, exc: BaseException) -> None:
        # Every pending proposal was appended: the others may still commit it.
        appended = StoppedAfterAppendError(f"{exc}: the command may or may not take effect")
        for prop in self._proposals.values():
            if not prop.future.done():
                prop.future.set_exception(appended)
        self._proposals.clear()
        for fut in [*self._reads.values(), *(f for _, f in self._reads_waiting_apply)]:
            if not fut.done():
                fut.set_exception(exc)
        self._reads.clear()
        self._reads_waiting_apply.clear()
        self._persist.fail_all(exc)

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
            # Where each voter and learner is reached, as this node would send to it (None:
            # it knows none): what ``raftcache member list`` shows.
            "addresses": {m: self.peer_url(m) for m in self.configuration.all_ids()},
            # Idle on a store: no heartbeats, no election timer (``RaftCore`` quiescence).
            "quiesced": self.quiesced,
        }

    def raft_stats(self) -> dict[str, Any]:
        core = self._core
        lag: dict[str, int] = {}
        reachable = None
        if core is not None and core.role is Role.LEADER:
            last = core.log.last_index()
            lag = {p: last - pr.match_index for p, pr in sorted(core.progress.items())}
            # A quiet leader heard every voter before it went quiet, and its store's liveness
            # wakes it as soon as one stops answering: all of them count until then.
            reachable = len(core.configuration.voters) if core.quiesced else core.voters_heard()
        return self.stats.as_dict(
            elections=core.elections if core else 0,
            state_transitions=core.state_transitions if core else 0,
            follower_lag=lag,
            voters_reachable=reachable,
            disk_full=self._persist.disk_full,
        )

    # ==================== the ready loop and the ticker
    async def _ticker(self) -> None:
        """Tick the core each time the node's clock has advanced by ``tick_interval``.

        Two ticks are never less than ``tick_interval`` apart on the node's clock — not even
        after a stall (no catch-up): a follower's promise not to vote for E ticks must span
        (E - 1) intervals of its clock (``raft/lease.py``). Late ticks only slow the timers.
        The sleep is on the loop's clock, the test on the node's (they differ when a test
        gives the node a drifting clock), so a short sleep may be followed by another. The
        deadlines of waiting proposals and reads are swept on the node's clock too: they
        were registered on it (one clock for every deadline of the driver)."""
        interval = self.config.tick_interval
        core = self.core
        next_at = self._clock() + interval
        while self._core is core:  # one ticker per run: never tick another run's core
            now = self._clock()
            if now < next_at:
                await asyncio.sleep(max(next_at - now, interval / 64))
                continue
            next_at = now + interval
            if self._wake.is_set():
                if self._wake_pending_since is None:
                    self._wake_pending_since = now
                    self._stalled_leading = core.role is Role.LEADER
            else:
                self._wake_pending_since = None
            core.tick()
            self._deadlines.sweep(now)
            if not core.quiesced or core.has_ready():
                # A quiet core's tick changes nothing the ready loop acts on: leaving it
                # asleep is most of what an idle group on a store of many still costs.
                self._wake.set()

    async def _ready_loop(self) -> None:
        core = self.core
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._persist.finish(core):
                    self._end_cycle(core)
                    continue  # a write failed: retry on a later wake-up
                if self._pending_install is not None and not self._persist.busy:
                    await self._install_received(core, *self._pending_install)
                while core.has_ready() and not self._hold_hand_off():
                    if await self._hand_off(core):
                        break  # a write failed: retry on a later wake-up
                self._end_cycle(core)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # fail-stop: a storage failure or a broken invariant
            log.critical("raft node %s failed: %r; stopping", self.node_id, exc)
            self._failed = exc
            self._failed_event.set()
            self._running = False
            self._fail_all(NodeStoppedError(f"node failed: {exc!r}"))
            raise

    def _hold_hand_off(self) -> bool:
        """Make no new Ready now: the persist thread must become idle first (or is full)."""
        persist = self._persist
        if not persist.busy:
            return False
        return persist.full() or self._pending_install is not None or self._snapshots.io_waiting > 0

    async def _hand_off(self, core: RaftCore) -> bool:
        """Take the core's next Ready and start its way to disk; True if a write failed (hand
        out nothing more until the next wake-up)."""
        # Read before the Ready exists: a round it opens starts no later than this (the lease
        # is timed from here, never from the end of the write — ``raft/lease.py``).
        before = self._clock()
        rd = core.ready()
        if core.role is Role.LEADER:
            self._lease.observe(rd, before)
        else:
            self._lease.clear()
        return await self._persist.hand_off(core, rd)

    def _snapshot_durable(self, meta: SnapshotMeta, data: bytes) -> None:
        """A snapshot received in memory is on disk: the state machine adopts it."""
        self.state_machine.restore(data)
        self._applied = meta.last_index
        self._resolve_overtaken(meta.last_index)
        self._log_installed(meta, len(data))

    def _log_installed(self, meta: SnapshotMeta, size: int) -> None:
        log.info(
            "snapshot installed",
            extra=self._events.fields(
                leader=self.leader_id, index=meta.last_index, term=meta.last_term, bytes=size
            ),
        )

    def _end_cycle(self, core: RaftCore) -> None:
        self._events.observe(core.term, core.leader_id, core.configuration)
        self._persist.settle_flush_waiters(core)
        self._changed.set()
        self._changed = asyncio.Event()

    def _send_all(self, rd: Ready) -> None:
        for out in rd.messages:
            self._send(out)

    def _after_persist(self, rd: Ready) -> None:
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

    def _apply(self, entries: list[LogEntry]) -> None:
        apply_entry, sm = self._apply_entry, self.state_machine
        for e in entries:
            result: Any = None
            if e.kind == EntryKind.COMMAND:
                result = apply_entry(e.index, e.command) if apply_entry else sm.apply(e.command)
                self._applied_bytes += len(e.command)
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

    # ==================== Raft RPCs out and in
    def _send(self, out: Outbound) -> None:
        task = asyncio.create_task(self._rpc(out))
        self._rpc_tasks.add(task)
        task.add_done_callback(self._rpc_tasks.discard)

    async def _rpc(self, out: Outbound) -> None:
        msg, target = out.message, out.target
        core = self._core  # the run that sent it: an answer never reaches another run's core
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
            if _peer_answered(exc):
                self._peer_health.answered(self._peer_key(target), self._clock())
            else:  # no answer: counts towards "peer lost" (``raft/events.py``)
                self._peer_health.failed(self._peer_key(target), self._clock(), exc)
            if core is not None and self._core is core:
                core.step_failure(out)
                self._wake.set()
            return
        self._peer_health.answered(self._peer_key(target), self._clock())
        if isinstance(msg, AppendEntriesRequest):
            self.stats.replication_rtt(target, (self._clock() - started) * 1000.0)
        elif isinstance(msg, InstallSnapshotRequest) and msg.done and resp.success:
            log.info(
                "snapshot sent",
                extra=self._events.fields(
                    to=target,
                    index=msg.last_included_index,
                    term=msg.last_included_term,
                    bytes=msg.offset + len(msg.data),
                ),
            )
        if core is not None and self._core is core and self._running:
            core.step_response(out, resp)
            self._wake.set()

    def _peer_key(self, target: str) -> str:
        """Whose health an RPC to ``target`` tells: its store's on a store of many groups
        (their transport is shared), else the peer's own."""
        return store_of(target) if self.group else target

    async def _flush(self) -> None:
        """Wait until every state change made so far is on stable storage."""
        core = self._check_running()
        if not core.has_unpersisted() and not self._persist.busy:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._persist.flush_waiters.append(fut)
        self._wake.set()
        await fut

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        core = self._check_request(req)
        self.stats.rpc_received("RequestVote")
        resp = core.handle_request_vote(req)
        self._wake.set()
        await self._flush()
        return resp

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        core = self._check_request(req)
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
        got = self._persist.gate.check_or_wait(core, index, resp.term)
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
        core = self._check_request(req)
        self.stats.rpc_received("InstallSnapshot")
        if self._snapshots.streaming:
            async with self._receive_lock:  # one chunk at a time: offsets stay contiguous
                resp = await self._receive_chunk(core, req)
        else:  # a storage without streaming: the core assembles the chunks in memory
            resp = core.handle_install_snapshot(req)
        self._wake.set()
        await self._flush()
        return resp

    # ==================== client API: propose, reads, members
    async def propose(self, command: bytes, timeout: float | None = None) -> Any:
        """Replicate ``command``; returns the state machine's result once committed and applied."""
        core = self._check_running()
        if self._persist.disk_full:
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
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        prop = _Proposal(core.term, fut, index)
        self._proposals[index] = prop
        # The ticker's sweep fails the future at its deadline (``Deadlines``): no timer and
        # no timeout context per proposal. No shield either: a cancelled or failed future is
        # simply skipped when its entry applies (``_apply`` checks ``done()``).
        self._deadlines.add(
            self._clock(),
            timeout or self.config.propose_timeout,
            fut,
            self._proposal_expired,
            prop,
        )
        self._wake.set()
        return await fut

    def _proposal_expired(self, prop: _Proposal) -> BaseException:
        """The deadline of ``prop`` passed before its entry applied."""
        if self._proposals.get(prop.index) is prop:
            del self._proposals[prop.index]
        if self.role is not Role.LEADER:
            return IndeterminateError("leadership lost before the entry committed")
        return TimeoutError()

    def _read_deadline(self, fut: asyncio.Future[int], timeout: float | None) -> None:
        """A read barrier fails with ``TimeoutError`` after ``timeout`` (default: two election
        timeouts, time for a new leader to be elected and confirm its round)."""
        self._deadlines.add(
            self._clock(),
            timeout or self.config.election_timeout_max * 2,
            fut,
            _read_expired,
            None,
        )

    async def read_index(self, timeout: float | None = None) -> int:
        """Linearizable read barrier (ReadIndex, §6.4): returns once local reads are safe."""
        core = self._check_running()
        self._next_read_id += 1
        read_id = self._next_read_id
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._reads[read_id] = fut
        try:
            core.request_read(read_id)
        except NotLeaderError:
            del self._reads[read_id]
            raise
        self._wake.set()
        self._read_deadline(fut, timeout)
        try:
            return await fut
        finally:
            self._reads.pop(read_id, None)

    async def lease_read(self, timeout: float | None = None) -> int:
        """Read barrier from the leader lease: no quorum round while the lease holds.

        Safe as long as clocks advance at rates within ``lease_clock_drift`` of each other
        (the argument is in ``raft/lease.py``); otherwise, and whenever the core allows no
        lease (a transfer started this term, check-quorum off, a new configuration or term
        not yet confirmed), it is a ReadIndex read.
        """
        core = self._check_running()
        if core.role is not Role.LEADER:
            raise NotLeaderError(core.leader_id)
        if core.lease_allowed() and self._lease.valid(self._clock(), core.lease_epoch):
            core.note_activity()  # a group serving reads stays awake (core: quiescence)
            index = core.commit_index
            if index <= self._applied:
                return index
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._reads_waiting_apply.append((index, fut))
            self._wake.set()
            self._read_deadline(fut, timeout)
            return await fut
        return await self.read_index(timeout)

    def wake(self, silent_for: float = 0.0) -> None:
        """Take the group out of quiescence (``RaftCore.wake``): its store saw a peer store
        fail, and a quiet follower would otherwise wait for a leader that may be gone. A
        follower's election timer goes on from ``silent_for`` seconds (its leader's store has
        not answered for that long)."""
        core = self._core
        if core is not None and core.quiesced:
            core.wake(int(silent_for / self.config.tick_interval) if silent_for > 0 else 0)
            self._wake.set()

    def stalled_for(self, *, leading: bool = False) -> float:
        """Seconds the ready loop has left a wake-up untaken (0: it is keeping up; with
        ``leading``, 0 too unless this node led when the stall began — its core may have
        stepped down since, unheard). A loop stuck in an await that never ends sends
        nothing, and a quiet group would not notice: its store reports it to the others
        (``raftcache.store.liveness``)."""
        since = self._wake_pending_since
        if since is None or not self._running or (leading and not self._stalled_leading):
            return 0.0
        return max(0.0, self._clock() - since)

    @property
    def quiesced(self) -> bool:
        """Whether the group is quiet on this node (no heartbeats, no election timer)."""
        core = self._core
        return core is not None and core.quiesced

    async def _propose_config(self, new: Configuration, timeout: float | None) -> None:
        core = self._check_running()
        if new.voters != core.configuration.voters and (
            core.quiesced or not core.quorum_active_in(new)
        ):
            # A quiet (or just woken) leader's last answers are as old as its quiet: a round
            # first, so that the strict reconfiguration check judges who answers now. Its
            # failure decides nothing: ``propose_config`` does, and says why.
            with contextlib.suppress(Exception):
                await self.read_index(self.config.election_timeout_min)
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
        """Remove ``node_id`` from the configuration. The core refuses
        (``MembershipChangeError``) a change of voters that leaves no quorum this leader heard
        from in its term within an election timeout (``RaftCore.quorum_active_in``): a voter
        that is up but cut off from this leader alone, say, is never removed in its place."""
        core = self._check_running()
        if node_id not in core.configuration.all_ids():
            return
        await self._propose_config(core.configuration.without(node_id), None)

    async def transfer_leadership(self, to: str | None = None) -> str:
        """Hand leadership to ``to`` (or the most up-to-date voter); returns the new leader."""
        core = self._check_running()
        target = core.transfer_leadership(to)
        term = core.term
        self._wake.set()
        deadline = self._clock() + self.config.election_timeout_max * 3
        while self._clock() < deadline:
            now = self._core
            if now is not None and now.leader_id == target:
                return target
            if (
                now is core
                and core.role is Role.LEADER
                and core.term == term
                and core.lead_transferee is None
            ):
                # Still leading the same term, and the core no longer transfers: it gave
                # the transfer up (the target declined, it is about to stop; or an election
                # timeout passed). Waiting on would only hold the caller (and the writes a
                # caller holds meanwhile) until the deadline, for a change that won't come.
                raise TimeoutError(
                    f"leadership transfer to {target} was given up (declined, or too slow)"
                )
            await self._wait_changed(self.config.heartbeat_interval)
        raise TimeoutError(f"leadership transfer to {target} did not complete")

    def prepare_to_stop(self) -> None:
        """This node is about to stop: from now on it declines to become a transfer target
        (it ignores TimeoutNow and says so, ``RaftCore.leaving``) — a leader stopping at the
        same time would otherwise hand leadership to a node that drops it at once. Everything else
        (votes, appends, its own election timeout) is unchanged until ``stop``."""
        if self._core is not None:
            self._core.leaving = True

    def abort_transfer(self) -> None:
        """Give up a leadership transfer under way at once (``RaftCore``'s own abort waits an
        election timeout): this leader accepts proposals again. A no-op if there is none."""
        core = self._core
        if core is not None and core.lead_transferee is not None:
            core.abort_leadership_transfer()
            self._wake.set()

    async def _wait_changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()

    # ==================== snapshots: take, receive, install
    def _maybe_auto_snapshot(self) -> None:
        threshold = self.config.snapshot_threshold
        threshold_bytes = self.config.snapshot_threshold_bytes
        core = self._core
        if core is None or self._snapshotting or self._persist.disk_full:
            return
        if (threshold > 0 and self._applied - core.log.snapshot_index >= threshold) or (
            threshold_bytes > 0 and self._applied_bytes - self._snapshot_mark >= threshold_bytes
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
            mark = self._applied_bytes  # the command bytes up to ``index``
            if index <= core.log.snapshot_index:
                return core.log.snapshot_index
            term = core.log.term_at(index)
            assert term is not None
            meta = SnapshotMeta(index, term, core.config_for_snapshot(index))
            if self._snapshots.streaming:
                taken = await self._take_streamed_snapshot(core, meta)
                if taken >= index:
                    self._compacted(mark)
                return taken
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
            self._compacted(mark)
            self._wake.set()
            return index
        finally:
            self._snapshotting = False

    async def _release_memory(self) -> None:
        await asyncio.to_thread(release_free_memory)

    def _compacted(self, mark: int) -> None:
        """The log up to the snapshot is gone: when that freed much, give the memory back
        (``raftcache.sysmem``; in a worker thread, off the event loop)."""
        freed, self._snapshot_mark = mark - self._snapshot_mark, mark
        if freed >= RELEASE_AFTER_BYTES:
            task = asyncio.create_task(self._release_memory())
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

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
                self._log_installed(meta, incoming.writer.size)
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


def _describe_difference(given: frozenset[str], current: frozenset[str]) -> str:
    parts = []
    if given - current:
        parts.append("not members: " + ", ".join(sorted(given - current)))
    if current - given:
        parts.append("missing from --peers: " + ", ".join(sorted(current - given)))
    return "; ".join(parts)


def _peer_answered(exc: BaseException) -> bool:
    """Whether a failed RPC still shows its peer's store is up and serving Raft: it hosts no
    replica of the group (any other failure, a refusal included, leaves the peer unusable)."""
    return getattr(exc, "kind", None) == "group_not_hosted"


def _read_expired(_key: object) -> BaseException:
    return TimeoutError()
