"""Raft RPCs: sending our requests, and answering the peers' (persist before you answer).

Rule: a handler steps the core, then its answer waits until whatever that step changed and the
answer vouches for is on stable storage (``_flush`` for votes and snapshots, the ``AnswerGate``
for AppendEntries). A failed or timed-out request is reported to the core as a failure, never
retried here: the core decides what to send next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from raftcache.network.errors import NetworkError
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.core import RaftCore
from raftcache.raft.node_base import NodeBase
from raftcache.raft.ready import Outbound

log = logging.getLogger("raftcache.raft")


class RpcMixin(NodeBase):
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
            if core is not None and self._core is core:
                core.step_failure(out)
                self._wake.set()
            return
        if isinstance(msg, AppendEntriesRequest):
            self.stats.replication_rtt(target, (self._clock() - started) * 1000.0)
        if core is not None and self._core is core and self._running:
            core.step_response(out, resp)
            self._wake.set()

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
