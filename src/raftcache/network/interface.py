"""The transport contract between Raft nodes.

Rule: a transport moves one request to one target and returns that target's response, or raises
a ``NetworkError``. It never interprets Raft semantics. The six abstract members below are the
whole contract (docs/network.md); anything more is a concrete method with a default body.

Ownership: the node registers its ``RpcHandlers`` before ``start()``; the transport calls them
for inbound requests and returns their responses to the caller. Handlers may be invoked
concurrently.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from raftcache.protocol.messages import (
    DEFAULT_BATCH_HOLD,
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)


class RpcHandlers(Protocol):
    """What a node serves: one coroutine per RPC, each returning the matching response."""

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse: ...

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse: ...

    async def handle_install_snapshot(
        self, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse: ...


class NetworkInterface(ABC):
    """Every transport implements this. ``node_id`` is the sender's id."""

    node_id: str

    @abstractmethod
    async def send_request_vote(
        self, target: str, req: RequestVoteRequest
    ) -> RequestVoteResponse: ...

    @abstractmethod
    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse: ...

    @abstractmethod
    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse: ...

    @abstractmethod
    def register_handlers(self, handlers: RpcHandlers) -> None: ...

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    def set_peer_address(self, node_id: str, address: str | None) -> None:  # noqa: B027
        """Learn or update a peer's address (membership changes carry them). Default: ignore."""

    async def send_append_batch(
        self, target: str, reqs: Sequence[AppendEntriesRequest], *, hold: float = DEFAULT_BATCH_HOLD
    ) -> list[AppendEntriesResponse | Exception]:
        """Send many groups' AppendEntries to ``target``; each item's response or the error its
        single RPC raised, in order (``raftcache.network.batching``; ``hold`` as
        ``AppendEntriesBatch.hold``). Default: one RPC each, concurrently; a transport with a
        batch message overrides it."""
        results = await asyncio.gather(
            *(self.send_append_entries(target, req) for req in reqs), return_exceptions=True
        )
        outcomes: list[AppendEntriesResponse | Exception] = []
        for result in results:
            if isinstance(result, AppendEntriesResponse | Exception):
                outcomes.append(result)  # an error, even a bug's, is its own item's alone
            else:
                raise result  # a cancellation: the batch's
        return outcomes
