"""The network error family.

Rule: every failure a transport reports is a ``NetworkError`` whose ``permanent`` flag tells a
retry layer whether trying again can help. Permanent: misconfiguration, unknown or failed nodes,
a node without handlers, an exception raised by the remote handler. Transient: timeouts, drops,
connection errors to a known peer, partitions, an open circuit breaker. A ``NetworkError`` the
remote handler raises itself (``GroupNotHostedError``: transient) reaches the sender with its
message, kind and permanence (``relayed``), on every transport.

Each error also carries a short ``kind`` (``"timeout"``, ``"partition"``, ``"circuit_open"``...)
so that metrics can count errors by cause without parsing messages; an error built without one
is simply ``"transient"`` or ``"permanent"``.
"""

from __future__ import annotations

import re
from typing import Final


class NetworkError(Exception):
    """Base of every transport error. ``permanent`` errors are never retried.

    Attributes:
        permanent: retrying cannot help.
        kind: a short label of the cause, for metrics (never parsed from the message).
    """

    def __init__(self, message: str, *, permanent: bool = False, kind: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.kind = kind or ("permanent" if permanent else "transient")


class NetworkTimeoutError(NetworkError):
    """An RPC did not complete within its timeout (transient)."""

    def __init__(self, message: str = "RPC timed out") -> None:
        super().__init__(message, permanent=False, kind="timeout")


class NetworkRetryExhaustedError(NetworkError):
    """Every attempt failed; ``last_error`` is the final attempt's error (transient)."""

    def __init__(self, message: str, last_error: BaseException | None) -> None:
        super().__init__(message, permanent=False, kind="retry_exhausted")
        self.last_error = last_error


class CircuitOpenError(NetworkError):
    """A circuit breaker refused the call without trying: the target failed too often lately.

    Transient (the breaker will probe again), but a retry layer should not retry it at once:
    ``retry_after`` is how many seconds remain before the breaker lets a probe through.
    """

    def __init__(self, target: str, retry_after: float) -> None:
        super().__init__(f"Circuit open for {target}", permanent=False, kind="circuit_open")
        self.target = target
        self.retry_after = retry_after


def no_address(node_id: str) -> NetworkError:
    return NetworkError(
        f"No address configured for node {node_id}", permanent=True, kind="no_address"
    )


def not_available(node_id: str) -> NetworkError:
    return NetworkError(
        f"Target node {node_id} not available", permanent=True, kind="not_available"
    )


def partitioned(a: str, b: str) -> NetworkError:
    return NetworkError(f"Network partition between {a} and {b}", permanent=False, kind="partition")


def node_failed(node_id: str) -> NetworkError:
    return NetworkError(f"Node {node_id} is failed", permanent=True, kind="node_failed")


def no_handlers(node_id: str) -> NetworkError:
    return NetworkError(
        f"Node {node_id} has no handlers registered", permanent=True, kind="no_handlers"
    )


def remote_handler_error(node_id: str, detail: str) -> NetworkError:
    return NetworkError(
        f"Handler on node {node_id} raised: {detail}", permanent=True, kind="handler_error"
    )


#: What a kind relayed from a peer must look like (it labels metrics): a short snake_case word.
_KIND: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")


def relayed(detail: str, kind: object, permanent: bool) -> NetworkError:
    """A ``NetworkError`` a peer's handler raised, as the peer's wire reported it: the same
    message, permanence and kind (a kind that is not a short snake_case word is dropped)."""
    label = kind if isinstance(kind, str) and _KIND.fullmatch(kind) else None
    return NetworkError(detail, permanent=permanent, kind=label)
