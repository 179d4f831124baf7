"""RaftNode: the asyncio driver joining the pure ``RaftCore`` to a network, a storage and a clock.

Rule: one task (the ready loop) turns the core's ``Ready`` into effects, always in this order:
persist (and sync) → ``core.advance`` → send messages → apply committed entries → resolve reads.
An RPC handler steps the core, then waits until whatever that step changed is on stable storage
before its response leaves (persist before you answer). Because every handler that arrives while
the loop is busy joins the next ``Ready``, one fsync covers many requests (group commit).

Time enters only here: a ticker task calls ``core.tick()`` every ``tick_interval`` seconds of the
injected monotonic clock, and the leader lease is measured on that clock.

The fields live in ``raft/node_base.py``; each concern is a mixin in its own module:
``node_loop`` (ready loop, persist, apply), ``node_rpc`` (Raft RPCs out and in),
``node_client`` (propose, reads, membership, transfer), ``node_snapshots`` (take, receive,
install). This module composes them and owns the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import EntryKind
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.errors import NodeStoppedError, PeersMismatchError
from raftcache.raft.lease import LeaderLease, lease_duration
from raftcache.raft.node_base import NodeBase, StateMachine
from raftcache.raft.node_client import ClientMixin
from raftcache.raft.node_loop import ReadyLoopMixin
from raftcache.raft.node_rpc import RpcMixin
from raftcache.raft.node_snapshots import SnapshotsMixin
from raftcache.raft.persist import PersistWorker
from raftcache.storage.base import RecoveredState

__all__ = ["RaftNode", "StateMachine"]

log = logging.getLogger("raftcache.raft")


class RaftNode(ReadyLoopMixin, RpcMixin, ClientMixin, SnapshotsMixin, NodeBase):
    """A Raft member: call ``start()``, then ``propose``/``read_index`` on the leader."""

    async def start(self) -> None:
        if self._running:
            return
        if self._tasks or self._worker is not None:
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
        self._gate.bind(core)
        self._lease = LeaderLease(lease_duration(self.config, core.election_ticks))
        self._sync_addresses()
        self.network.register_handlers(self)
        await self.network.start()
        self._running = True
        if self.config.persist_in_thread:
            self._worker = PersistWorker(
                self.storage,
                asyncio.get_running_loop(),
                self._on_persisted,
                name=f"raft-persist-{self.node_id}",
            )
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
        if self._lock_held:  # the ready loop died holding it for the persist thread
            self._lock_held = False
            self._storage_lock.release()
        self._fail_all(NodeStoppedError("node stopped"))
        await self.network.stop()
        self._close_snapshots()
        worker, self._worker = self._worker, None
        if worker is not None and not await asyncio.to_thread(worker.stop, 30.0):
            log.error(
                "%s: the persist thread did not end; closing the storage anyway", self.node_id
            )
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
        for job in self._jobs:
            for waiter in job.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            job.waiters = []
        self._gate.fail_all(exc)

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


def _describe_difference(given: frozenset[str], current: frozenset[str]) -> str:
    parts = []
    if given - current:
        parts.append("not members: " + ", ".join(sorted(given - current)))
    if current - given:
        parts.append("missing from --peers: " + ", ".join(sorted(current - given)))
    return "; ".join(parts)
