"""The client side of a ``RaftNode``: proposals, linearizable reads, membership, transfer.

Rule: a proposal resolves only once its entry committed and was applied (with the state
machine's result), or fails with an error that says whether it may have been applied
(``IndeterminateError``) or certainly was not (``ProposalDroppedError``, ``NotLeaderError``).
A read barrier returns an index the state machine has applied, confirmed by a quorum round
(ReadIndex) or by the leader lease. Admission control refuses a proposal before it is appended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from raftcache.protocol.configuration import Configuration
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.errors import (
    IndeterminateError,
    MembershipChangeError,
    NotLeaderError,
    ProposalDroppedError,
)
from raftcache.raft.node_base import NodeBase, _Proposal


class ClientMixin(NodeBase):
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
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        prop = _Proposal(core.term, fut, index)
        self._proposals[index] = prop
        # The ticker's sweep fails the future at its deadline (``Deadlines``): no timer and
        # no timeout context per proposal. No shield either: a cancelled or failed future is
        # simply skipped when its entry applies (``_apply`` checks ``done()``).
        self._deadlines.add(
            loop.time(), timeout or self.config.propose_timeout, fut, self._proposal_expired, prop
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

    def _read_deadline(
        self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[int], timeout: float | None
    ) -> None:
        """A read barrier fails with ``TimeoutError`` after ``timeout`` (default: two election
        timeouts, time for a new leader to be elected and confirm its round)."""
        self._deadlines.add(
            loop.time(), timeout or self.config.election_timeout_max * 2, fut, _read_expired, None
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
        self._read_deadline(loop, fut, timeout)
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
            index = core.commit_index
            if index <= self._applied:
                return index
            fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._reads_waiting_apply.append((index, fut))
            self._wake.set()
            self._read_deadline(asyncio.get_running_loop(), fut, timeout)
            return await fut
        return await self.read_index(timeout)

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


def _read_expired(_key: object) -> BaseException:
    return TimeoutError()
