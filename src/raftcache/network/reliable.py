"""Timeouts and retries around any transport (docs/network.md#reliablenetwork).

Rule: ``ReliableNetwork`` enforces each attempt's deadline itself and retries only what may
succeed next time. Attempt ``k`` (0-based) gets ``min(initial_timeout * backoff_multiplier**k,
max_timeout)`` seconds; an attempt that overruns is cancelled (``asyncio.timeout``) and counts as
a timeout. There are at most ``1 + max_retries`` attempts.

- A permanent ``NetworkError`` is raised at once, unwrapped.
- A timeout is retried unless ``retry_on_timeout=False``; then the ``NetworkTimeoutError`` is
  raised as is. A transient error is retried unless ``retry_on_error=False``; then it is raised
  as is. Each switch stops retries of its own kind only.
- When every attempt failed: ``NetworkRetryExhaustedError`` with ``last_error`` set.
- Anything that is not a ``NetworkError`` (a bug, ``CancelledError``) propagates untouched.

By default retries follow each other at once: a lost in-memory message fails immediately and
Raft re-sends on the next heartbeat anyway. ``retry_delay`` adds a pause before retry ``k``
(``retry_delay * backoff_multiplier**(k-1)``, capped at ``max_timeout``) for transports where an
immediate retry is pointless. A ``CircuitOpenError`` (from a ``CircuitBreakerNetwork`` below) is
raised at once like a permanent error: retrying within the breaker's cool-down cannot help.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from raftcache.network.errors import (
    CircuitOpenError,
    NetworkError,
    NetworkRetryExhaustedError,
    NetworkTimeoutError,
)
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = ["ReliableNetwork"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class ReliableNetwork(NetworkInterface):
    """A ``NetworkInterface`` that adds per-attempt timeouts and retries to ``underlying``.

    Args:
        underlying: the transport that does the sending.
        max_retries: retries after the first attempt (``0``: a single attempt).
        initial_timeout: timeout of the first attempt, in seconds.
        max_timeout: cap of any attempt's timeout (and of ``retry_delay`` pauses), in seconds.
        backoff_multiplier: growth factor of the timeout from one attempt to the next.
        retry_on_timeout: retry attempts that timed out.
        retry_on_error: retry attempts that failed with a transient ``NetworkError``.
        retry_delay: pause before the first retry, in seconds (``0``: retry at once).

    Example:
        >>> from raftcache.network import InMemoryHub, InMemoryNetwork
        >>> net = ReliableNetwork(InMemoryNetwork("n1", hub=InMemoryHub()), max_retries=2)
        >>> net.timeout_for(5)
        8.0
    """

    def __init__(
        self,
        underlying: NetworkInterface,
        *,
        max_retries: int = 3,
        initial_timeout: float = 1.0,
        max_timeout: float = 10.0,
        backoff_multiplier: float = 2.0,
        retry_on_timeout: bool = True,
        retry_on_error: bool = True,
        retry_delay: float = 0.0,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if initial_timeout <= 0 or max_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        if backoff_multiplier < 1 or retry_delay < 0:
            raise ValueError("backoff_multiplier must be >= 1 and retry_delay >= 0")
        self.underlying = underlying
        self.node_id = underlying.node_id
        self.max_retries = max_retries
        self.initial_timeout = initial_timeout
        self.max_timeout = max_timeout
        self.backoff_multiplier = backoff_multiplier
        self.retry_on_timeout = retry_on_timeout
        self.retry_on_error = retry_on_error
        self.retry_delay = retry_delay

    def timeout_for(self, attempt: int) -> float:
        """The timeout of attempt ``attempt`` (0-based), in seconds."""
        return min(self.initial_timeout * self.backoff_multiplier**attempt, self.max_timeout)

    def _pause_before(self, attempt: int) -> float:
        if self.retry_delay == 0 or attempt == 0:
            return 0.0
        return min(self.retry_delay * self.backoff_multiplier ** (attempt - 1), self.max_timeout)

    # -- delegation -----------------------------------------------------------------------------

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self.underlying.register_handlers(handlers)

    async def start(self) -> None:
        await self.underlying.start()

    async def stop(self) -> None:
        await self.underlying.stop()

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        self.underlying.set_peer_address(node_id, address)

    # -- RPCs -----------------------------------------------------------------------------------

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        return await self._call("RequestVote", self.underlying.send_request_vote, target, req)

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        return await self._call("AppendEntries", self.underlying.send_append_entries, target, req)

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        return await self._call(
            "InstallSnapshot", self.underlying.send_install_snapshot, target, req
        )

    async def _call(
        self,
        rpc: str,
        send: Callable[[str, Req], Awaitable[Resp]],
        target: str,
        req: Req,
    ) -> Resp:
        attempts = 1 + self.max_retries
        last_error: NetworkError | None = None
        for attempt in range(attempts):
            pause = self._pause_before(attempt)
            if pause > 0:
                await asyncio.sleep(pause)
            timeout = self.timeout_for(attempt)
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await send(target, req)
            except NetworkError as exc:
                if exc.permanent or isinstance(exc, CircuitOpenError):
                    raise  # a breaker refusal: retrying within its cool-down cannot help
                error: NetworkError = exc
                # An attempt that converted our cancellation into a NetworkError still timed out.
                timed_out = deadline.expired() or isinstance(exc, NetworkTimeoutError)
            except TimeoutError:
                if not deadline.expired():
                    raise  # not ours: a bug below, let it show
                error = NetworkTimeoutError(
                    f"{rpc} to {target} timed out after {timeout:g}s (attempt {attempt + 1})"
                )
                timed_out = True
            last_error = error
            if not (self.retry_on_timeout if timed_out else self.retry_on_error):
                raise error
        assert last_error is not None  # the loop ran at least once and every pass failed
        raise NetworkRetryExhaustedError(
            f"{rpc} to {target} failed after {attempts} attempts: {last_error}",
            last_error=last_error,
        ) from last_error
