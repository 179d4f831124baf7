"""HTTP errors of the client API and the mapping from domain errors to them.

Rule: every error response the server sends is a JSON object ``{"error": "<message>", ...}``.
Handlers and validators raise ``ApiError``; domain errors (Raft, cache) pass through the
handlers untouched and are translated here, in one place, by ``api_error_for``. A 503 always
carries ``Retry-After``; a 504 always carries ``"indeterminate": true``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from raftcache.cache.alarms import ReplicaDivergedError
from raftcache.cache.errors import (
    CounterOverflowError,
    HashValueError,
    InvalidCommandError,
    NotACounterError,
    PreconditionFailedError,
    StaleSequenceError,
    ValueTooLargeError,
    WrongTypeError,
)
from raftcache.cache.formats import CommandVersionNotEnabledError
from raftcache.raft.errors import (
    IndeterminateError,
    MembershipChangeError,
    NodeStoppedError,
    ProposalDroppedError,
    StoppedAfterAppendError,
)

RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error with its HTTP status, message and extra JSON fields.

    Args:
        status: the HTTP status code.
        message: the human-readable ``error`` field.
        extra: further JSON fields of the body (e.g. ``{"version": 7}``).
        headers: response headers (e.g. ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def to_response(self) -> web.Response:
        """Render as a JSON response."""
        return json_error(self.status, self.message, extra=self.extra, headers=self.headers)


def bad_request(message: str) -> ApiError:
    """A 400 for input the client must change before retrying."""
    return ApiError(400, message)


def too_large(message: str) -> ApiError:
    """A 413 for a value or body over its configured limit."""
    return ApiError(413, message)


def unavailable(message: str) -> ApiError:
    """A 503: nothing happened, retrying later may succeed."""
    return ApiError(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})


def indeterminate(message: str) -> ApiError:
    """A 504: the write may or may not have taken effect."""
    return ApiError(504, message, extra={"indeterminate": True})


def json_error(
    status: int,
    message: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Build the JSON error body every 4xx/5xx uses; a 503 always gets ``Retry-After``."""
    body: dict[str, Any] = {"error": message}
    body.update(extra or {})
    all_headers = dict(headers or {})
    if status == 503:
        all_headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return web.Response(
        status=status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=all_headers,
    )


def is_write_request(request: web.Request) -> bool:
    """Whether a request may change state: anything but GET/HEAD and the ``mget`` read."""
    return request.method not in ("GET", "HEAD", "OPTIONS") and request.path != "/v1/mget"


def api_error_for(exc: BaseException, *, is_write: bool) -> ApiError | None:
    """Translate a domain error into its HTTP error; None when ``exc`` is not a known one.

    ``NotLeaderError`` is not handled here: forwarding decides what it becomes.

    Args:
        exc: the exception a handler raised.
        is_write: whether the request may have changed state (a timeout on a read means nothing
            happened, so it is a 503; on a write the outcome is unknown, so it is a 504).
    """
    if isinstance(exc, ProposalDroppedError):
        return unavailable(f"proposal dropped: {exc}" if str(exc) else "proposal dropped")
    if isinstance(exc, StoppedAfterAppendError) and is_write:
        # Appended before the node stopped: the others may commit it. A 503 would say "nothing
        # happened" and invite a retry that applies it twice.
        return indeterminate(f"node is stopping: {exc}")
    if isinstance(exc, NodeStoppedError):
        return unavailable("node is stopping")
    if isinstance(exc, IndeterminateError):
        return indeterminate(str(exc) or "leadership lost before the write committed")
    if isinstance(exc, TimeoutError):
        if is_write:
            return indeterminate("timed out waiting for the write to commit")
        return unavailable("timed out waiting for the cluster")
    if isinstance(exc, ReplicaDivergedError):  # this replica is quarantined: read another node
        extra = {"diverged": True, "node": exc.node_id, "reason": exc.reason}
        return ApiError(503, str(exc), extra=extra, headers={"Retry-After": str(RETRY_AFTER_S)})
    if isinstance(exc, MembershipChangeError):
        return ApiError(409, str(exc) or "membership change refused")
    if isinstance(
        exc, CommandVersionNotEnabledError
    ):  # a rolling upgrade not finished: nothing happened
        extra = {"command_format_needed": exc.needed, "nodes": exc.nodes}
        return ApiError(409, str(exc), extra=extra)
    if isinstance(exc, PreconditionFailedError):
        return ApiError(412, "precondition failed", extra={"version": exc.current_version})
    if isinstance(exc, ValueTooLargeError):
        return too_large(str(exc) or "value too large for this cache")
    if isinstance(exc, WrongTypeError):  # a hash where a string is needed, or back (409)
        return ApiError(409, str(exc) or "wrong kind of value", extra={"code": "wrong_type"})
    if isinstance(exc, HashValueError):
        return ApiError(409, str(exc) or "hash value error", extra={"code": "hash_value"})
    if isinstance(exc, NotACounterError | CounterOverflowError | StaleSequenceError):
        # The fallback text is the class's name before the ``…Error`` suffix, as it always was.
        return ApiError(409, str(exc) or type(exc).__name__.removesuffix("Error"))
    if isinstance(exc, InvalidCommandError):
        return bad_request(str(exc) or "invalid command")
    return None
