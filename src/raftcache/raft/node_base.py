"""NodeBase: the fields of a ``RaftNode`` and its public read-only views (docs/design.md).

Rule: every field of the driver is created here — in ``__init__``, or, for what belongs to one
run of the node, in ``_new_incarnation``, which ``start`` calls again; the mixins (ready loop, RPCs,
client API, snapshots) use them and add none. A method one part calls in another is declared
here and implemented by exactly one mixin, so each module type-checks alone.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from raftcache.network.interface import NetworkInterface
from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    InstallSnapshotRequest,
    InstallSnapshotResponse,
)
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.deadlines import Deadlines
from raftcache.raft.durable import AnswerGate
from raftcache.raft.errors import NodeStoppedError
from raftcache.raft.lease import LeaderLease
from raftcache.raft.node_stats import NodeStats
from raftcache.raft.persist import PersistJob, PersistWorker
from raftcache.raft.ready import Outbound, Ready
from raftcache.raft.snapshot_transfer import Incoming, SnapshotTransfer
from raftcache.storage.base import Storage


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


class NodeBase:
    """The state of one Raft member's driver (see ``RaftNode``)."""

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
        self._flush_waiters: list[asyncio.Future[None]] = []
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
        #: Readies handed out by the core and not yet done with, in order (``node_persist``).
        self._jobs: collections.deque[PersistJob] = collections.deque()
        #: Jobs handed to the persist thread and not yet reported back.
        self._inflight_writes = 0
        #: The dedicated persist thread (``persist_in_thread``), from ``start`` to ``stop``.
        self._worker: PersistWorker | None = None
        #: The ready loop holds the storage lock while the persist thread has work.
        self._lock_held = False
        #: A failed write was seen: jobs made before it was handled fail too (no gap).
        self._tainted = False
        #: Why the persist thread itself died (reported with no job), raised by the loop.
        self._persist_error: BaseException | None = None
        #: AppendEntries answers waiting for what they vouch for to be durable; bound to one
        #: core when ``start`` makes it (``AnswerGate.bind``).
        self._gate = AnswerGate()
        self._storage_lock = asyncio.Lock()
        self._failed: BaseException | None = None
        self._failed_event.clear()
        self._disk_full = False
        #: Command bytes applied since start, and their count at the last snapshot taken:
        #: their difference is the log the next automatic snapshot would free.
        self._applied_bytes = 0
        self._snapshot_mark = 0
        self._last_config: Configuration | None = None
        # Streamed snapshots: chunks are written to disk as they arrive (one transfer at a
        # time, under the receive lock); a finished one waits in _pending_install for the
        # ready loop, which installs it between two Readies.
        self._snapshots = SnapshotTransfer(
            self.storage, self.state_machine, self._storage_lock, self.config
        )
        self._receive_lock = asyncio.Lock()
        self._pending_install: tuple[Incoming, asyncio.Future[bool]] | None = None

    @property
    def _persisting(self) -> bool:
        """A Ready handed out by the core is not done with yet (maybe not durable)."""
        return bool(self._jobs)

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

    def _check_running(self) -> RaftCore:
        if not self._running or self._core is None:
            raise NodeStoppedError(f"node {self.node_id} is not running")
        return self._core

    # ------------------------------------------------------------------ implemented by mixins
    def _fail_all(self, exc: BaseException) -> None:  # node
        raise NotImplementedError

    def _send_all(self, rd: Ready) -> None:  # node_loop
        raise NotImplementedError

    def _after_persist(self, rd: Ready) -> None:  # node_loop
        raise NotImplementedError

    def _send(self, out: Outbound) -> None:  # node_rpc
        raise NotImplementedError

    async def _flush(self) -> None:  # node_rpc
        raise NotImplementedError

    def _resolve_overtaken(self, index: int) -> None:  # node_loop
        raise NotImplementedError

    def _maybe_auto_snapshot(self) -> None:  # node_snapshots
        raise NotImplementedError

    async def _install_received(
        self, core: RaftCore, incoming: Incoming, fut: asyncio.Future[bool]
    ) -> None:  # node_snapshots
        raise NotImplementedError

    async def _receive_chunk(
        self, core: RaftCore, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:  # node_snapshots
        raise NotImplementedError

    async def _wait_changed(self, timeout: float) -> None:  # node_client
        raise NotImplementedError
