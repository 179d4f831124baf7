"""The client error family: one typed exception per way a request can end badly.

Rule: every error a client raises subclasses ``RaftcacheError`` and carries the HTTP ``status``
(None when no response arrived) and the decoded JSON error ``body``. The mapping from a response
to an exception lives here, in ``error_from_response``, and nowhere else.

Three errors mean "the cluster could not answer" (the CLI exits 3 for them):
``ConnectionFailedError`` (no endpoint reachable), ``UnavailableError`` (503: no leader, or a write
certainly not applied) and ``IndeterminateError`` (a write whose outcome is unknown). The others
mean the cluster refused the request and retrying it unchanged cannot help.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class RaftcacheError(Exception):
    """Base of every error raised by ``raftcache.Client`` and ``raftcache.AsyncClient``.

    Attributes:
        status: The HTTP status of the response, or None when no response arrived.
        body: The decoded JSON error body (``{"error": ...}``), empty when there was none.
    """

    def __init__(
        self, message: str, *, status: int | None = None, body: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Mapping[str, Any] = body if body is not None else {}


class ConnectionFailedError(RaftcacheError):
    """No endpoint could be reached (connection refused, reset or timed out) before the deadline.

    Attributes:
        failures: The endpoints that could not be connected to during the request, each with a
            short reason (``"connection refused"``, ``"connect timed out"``...); empty when the
            failure came after a connection was made (a reset, a read that timed out).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Mapping[str, Any] | None = None,
        failures: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.failures: dict[str, str] = dict(failures or {})


class UnavailableError(RaftcacheError):
    """503: the cluster has no leader, or refused a write before appending it.

    Attributes:
        retry_after: Seconds the server asked us to wait (``Retry-After``), when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 503,
        body: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class IndeterminateError(RaftcacheError):
    """A write may or may not have been applied (504, or the connection broke mid-request).

    Retrying the same write through the same client is safe while its session lasts: the client
    resends the same sequence number and the server answers from its session table.
    """


class BadRequestError(RaftcacheError, ValueError):
    """400: the request was malformed (empty or oversized key, bad TTL, bad version...)."""


class AuthError(RaftcacheError):
    """401/403: the client token is missing or wrong."""


class NotFoundError(RaftcacheError):
    """404 on a route where absence is an error (unknown member, unknown route)."""


class PreconditionFailedError(RaftcacheError):
    """412: a compare-and-set or create-only precondition did not hold.

    Attributes:
        current_version: The key's version at the time of the check (None when absent).
    """

    @property
    def current_version(self) -> int | None:
        version = self.body.get("version")
        return version if isinstance(version, int) else None


class NotACounterError(RaftcacheError):
    """409: INCR on a value that is not an ASCII decimal integer, or a result outside int64."""


class CommandVersionNotEnabledError(RaftcacheError):
    """409: the request needs a command version not every node runs yet (a rolling upgrade is
    unfinished); ``body["nodes"]`` maps node ids to the formats they reported."""


class ValueTooLargeError(RaftcacheError):
    """413: the value exceeds the server's size limit."""


class ServerError(RaftcacheError):
    """Any other unexpected status (500, 502, an undocumented 4xx)."""


class ProtocolError(RaftcacheError):
    """The server answered something this client cannot decode."""


_BY_STATUS: dict[int, type[RaftcacheError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    409: NotACounterError,
    412: PreconditionFailedError,
    413: ValueTooLargeError,
    503: UnavailableError,
    504: IndeterminateError,
}

#: Errors that mean the cluster could not serve the request, as opposed to refusing it.
UNAVAILABLE_ERRORS: tuple[type[RaftcacheError], ...] = (
    ConnectionFailedError,
    UnavailableError,
    IndeterminateError,
)


def parse_retry_after(value: str | None) -> float | None:
    """Parse a ``Retry-After`` header given in seconds; None for absent or malformed values.

    HTTP also allows a date; the server never sends one, so a date counts as malformed.
    """
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return None
    return seconds


def error_from_response(
    status: int, body: Mapping[str, Any], *, retry_after: float | None = None, where: str = ""
) -> RaftcacheError:
    """Build the typed exception for an error response.

    Args:
        status: The HTTP status (4xx or 5xx).
        body: The decoded JSON body; ``body["error"]`` is the server's message.
        retry_after: Parsed ``Retry-After`` seconds, kept on ``UnavailableError``.
        where: A short description of the request, prefixed to the message.
    """
    detail = body.get("error")
    message = str(detail) if detail is not None else f"HTTP {status}"
    if where:
        message = f"{where}: {message}"
    cls = _BY_STATUS.get(status, ServerError)
    if status == 409 and "command_format_needed" in body:
        cls = CommandVersionNotEnabledError
    if cls is UnavailableError:
        return UnavailableError(message, status=status, body=body, retry_after=retry_after)
    return cls(message, status=status, body=body)


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
ConnectionFailed = ConnectionFailedError
Unavailable = UnavailableError
Indeterminate = IndeterminateError
FormatNotEnabledError = CommandVersionNotEnabledError
