"""Python clients of the raftcache HTTP API: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Rule: this package talks to a cluster only over HTTP (docs/api.md); it imports nothing from the
server, cache or Raft layers, so a user installs one package and needs no node code to run.
"""

from __future__ import annotations

from raftcache.client.async_client import AsyncClient
from raftcache.client.codec import KeyPage
from raftcache.client.endpoints import DEFAULT_ENDPOINTS, RetryPolicy, parse_endpoints, tls_context
from raftcache.client.errors import (
    AuthError,
    BadRequestError,
    CommandVersionNotEnabledError,
    ConnectionFailed,
    ConnectionFailedError,
    FormatNotEnabledError,
    Indeterminate,
    IndeterminateError,
    NotACounterError,
    NotFoundError,
    PreconditionFailedError,
    ProtocolError,
    RaftcacheError,
    ServerError,
    Unavailable,
    UnavailableError,
    ValueTooLargeError,
)
from raftcache.client.lock import AsyncLock, Lock, LockNotAcquiredError
from raftcache.client.sync_client import Client
from raftcache.client.watch import AsyncWatch, Watch, WatchCompactedError, WatchEvent

__all__ = [
    "DEFAULT_ENDPOINTS",
    "AsyncClient",
    "AsyncLock",
    "AsyncWatch",
    "AuthError",
    "BadRequestError",
    "Client",
    "CommandVersionNotEnabledError",
    "ConnectionFailed",
    "ConnectionFailedError",
    "FormatNotEnabledError",
    "Indeterminate",
    "IndeterminateError",
    "KeyPage",
    "Lock",
    "LockNotAcquiredError",
    "NotACounterError",
    "NotFoundError",
    "PreconditionFailedError",
    "ProtocolError",
    "RaftcacheError",
    "RetryPolicy",
    "ServerError",
    "Unavailable",
    "UnavailableError",
    "ValueTooLargeError",
    "Watch",
    "WatchCompactedError",
    "WatchEvent",
    "parse_endpoints",
    "tls_context",
]
