"""The network error family.

Rule: every failure a transport reports is a ``NetworkError`` whose ``permanent`` flag tells a
retry layer whether trying again can help. Permanent: misconfiguration, unknown or failed nodes,
a node without handlers, an exception raised by the remote handler. Transient: timeouts, drops,
connection errors to a known peer, partitions.
"""

from __future__ import annotations


class NetworkError(Exception):
    """Base of every transport error. ``permanent`` errors are never retried."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class NetworkTimeoutError(NetworkError):
    """An RPC did not complete within its timeout (transient)."""

    def __init__(self, message: str = "RPC timed out") -> None:
        super().__init__(message, permanent=False)


class NetworkRetryExhaustedError(NetworkError):
    """Every attempt failed; ``last_error`` is the final attempt's error (transient)."""

    def __init__(self, message: str, last_error: BaseException | None) -> None:
        super().__init__(message, permanent=False)
        self.last_error = last_error


def no_address(node_id: str) -> NetworkError:
    return NetworkError(f"No address configured for node {node_id}", permanent=True)


def not_available(node_id: str) -> NetworkError:
    return NetworkError(f"Target node {node_id} not available", permanent=True)


def partitioned(a: str, b: str) -> NetworkError:
    return NetworkError(f"Network partition between {a} and {b}", permanent=False)


def node_failed(node_id: str) -> NetworkError:
    return NetworkError(f"Node {node_id} is failed", permanent=True)


def no_handlers(node_id: str) -> NetworkError:
    return NetworkError(f"Node {node_id} has no handlers registered", permanent=True)


def remote_handler_error(node_id: str, detail: str) -> NetworkError:
    return NetworkError(f"Handler on node {node_id} raised: {detail}", permanent=True)
