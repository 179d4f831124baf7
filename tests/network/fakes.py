"""Test doubles for the network tests: recording handlers and a scripted transport.

Rule: fakes record what happened (calls, loop times, cancellations) and decide nothing by
chance, so that tests assert on observed behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from raftcache.network import InMemoryHub, InMemoryNetwork, NetworkError
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RequestVoteRequest,
    RequestVoteResponse,
)

VOTE = RequestVoteRequest(5, "a", 10, 4)


def pair(
    hub: InMemoryHub, **opts: Any
) -> tuple[InMemoryNetwork, InMemoryNetwork, RecordingHandlers]:
    """In-memory network ``a`` (with ``opts``) and ``b``, both with handlers; b's returned."""
    a = InMemoryNetwork("a", hub=hub, **opts)
    b = InMemoryNetwork("b", hub=hub)
    handlers = RecordingHandlers("b")
    b.register_handlers(handlers)
    a.register_handlers(RecordingHandlers("a"))
    return a, b, handlers


async def expect_error(call: Awaitable[Any], message: str, *, permanent: bool) -> NetworkError:
    """Await ``call``, which must raise a NetworkError with exactly ``message``."""
    with pytest.raises(NetworkError) as info:
        await call
    assert str(info.value) == message
    assert info.value.permanent is permanent
    return info.value


def sample_append(n: int = 2, term: int = 3) -> AppendEntriesRequest:
    """An AppendEntries with ``n`` entries whose commands are not valid UTF-8."""
    entries = [LogEntry(term, i + 1, bytes([0xFF, 0x00, i % 256]) * 3) for i in range(n)]
    return AppendEntriesRequest(term, "leader", 0, 0, entries, 1)


class RecordingHandlers:
    """Answers every RPC deterministically and records each request it got.

    Args:
        node_id: name used in answers and records.
        delay: seconds each handler sleeps before answering (loop time).
        error: raised by every handler instead of answering, when set.
        on_call: called with (method, request) before answering (a test hook).
    """

    def __init__(
        self,
        node_id: str = "x",
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        on_call: Callable[[str, Any], None] | None = None,
    ) -> None:
        self.node_id = node_id
        self.delay = delay
        self.error = error
        self.on_call = on_call
        self.calls: list[tuple[str, Any]] = []
        self.completed: list[tuple[str, Any]] = []

    async def _handle(self, method: str, req: Any) -> None:
        self.calls.append((method, req))
        if self.on_call is not None:
            self.on_call(method, req)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.completed.append((method, req))

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        await self._handle("request_vote", req)
        return RequestVoteResponse(req.term, req.candidate_id != "refused")

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        await self._handle("append_entries", req)
        last = req.prev_log_index + len(req.entries)
        return AppendEntriesResponse(req.term, True, match_index=last, last_log_index=last)

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        await self._handle("install_snapshot", req)
        return InstallSnapshotResponse(req.term, True, next_offset=req.offset + len(req.data))


@dataclass
class Attempt:
    """One call the scripted transport received."""

    target: str
    request: Any
    started: float
    ended: float | None = None
    cancelled: bool = False


@dataclass
class ScriptedNetwork(NetworkInterface):
    """A transport that plays a script: each call pops the next step.

    A step is a response object (returned), an exception (raised) or ``HANG`` (sleeps until
    cancelled). When the script runs out, the last step repeats.
    """

    script: list[Any]
    node_id: str = "me"
    attempts: list[Attempt] = field(default_factory=list)
    handlers: RpcHandlers | None = None
    started: int = 0
    stopped: int = 0
    peers: dict[str, str | None] = field(default_factory=dict)

    async def _play(self, target: str, req: Any) -> Any:
        loop = asyncio.get_running_loop()
        attempt = Attempt(target, req, loop.time())
        self.attempts.append(attempt)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        try:
            if step is HANG:
                await asyncio.sleep(3600)
                raise AssertionError("a hanging attempt was not cancelled")
            if isinstance(step, BaseException):
                raise step
            return step
        except asyncio.CancelledError:
            attempt.cancelled = True
            raise
        finally:
            attempt.ended = loop.time()

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        result: RequestVoteResponse = await self._play(target, req)
        return result

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        result: AppendEntriesResponse = await self._play(target, req)
        return result

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        result: InstallSnapshotResponse = await self._play(target, req)
        return result

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self.handlers = handlers

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        self.peers[node_id] = address


HANG: Any = object()
"""Script step: the attempt never finishes by itself."""
