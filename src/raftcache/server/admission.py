"""Admission control: a bounded amount of client work per node, refused rather than queued.

Rule: every client API request takes a slot before any of its work starts (its body not read
yet), a write also takes one of the pending-write slots (a write holds a Raft proposal until it
commits), and every body byte a handler reads is charged to a node-wide byte budget. Past any of
the three bounds the request is refused at once with 503 and ``Retry-After`` (nothing happened,
retry later) — so an overloaded node sheds load with a cheap answer instead of growing queues
until it runs out of memory, and the requests it did admit keep their latency.

Exempt: the Raft endpoints (they have their own flow control, and refusing a heartbeat because
clients are noisy would start needless elections) and the cheap operational reads that an
operator needs most when the node is overloaded (health, status, metrics, the OpenAPI document).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from raftcache.server.errors import ApiError, unavailable

EXEMPT_PATHS: Final = frozenset({"/v1/health", "/v1/status", "/metrics", "/openapi.json"})
RAFT_PREFIX: Final = "/raft/"


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The bounds of one node (all > 0).

    Attributes:
        max_inflight_requests: client requests being served at once (forwarded ones included).
        max_pending_writes: write requests being served at once (each may hold a proposal).
        max_inflight_bytes: request body bytes held in memory at once, all requests together.
    """

    max_inflight_requests: int = 1024
    max_pending_writes: int = 512
    max_inflight_bytes: int = 256 * 1024 * 1024


class Ticket:
    """One admitted request's share of the node's capacity; ``release`` gives it all back."""

    __slots__ = ("_admission", "_released", "bytes", "write")

    def __init__(self, admission: Admission, write: bool) -> None:
        self._admission = admission
        self._released = False
        self.write = write
        self.bytes = 0

    def charge(self, size: int) -> None:
        """Account ``size`` more body bytes; 503 when the node-wide budget would overflow."""
        self._admission.charge(self, size)

    def release(self) -> None:
        """Return the slot(s) and the bytes (idempotent)."""
        if not self._released:
            self._released = True
            self._admission.release(self)


class Admission:
    """The counters of one node, shared by all its requests (single event loop: no locks).

    Args:
        limits: the bounds.
    """

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self.inflight = 0
        self.pending_writes = 0
        self.inflight_bytes = 0
        #: Requests refused so far, by reason (exported as a metric).
        self.rejected: dict[str, int] = {"requests": 0, "writes": 0, "bytes": 0}

    def admit(self, write: bool) -> Ticket:
        """Take a slot (and a write slot for a write), or raise a 503 ``ApiError``."""
        if self.inflight >= self.limits.max_inflight_requests:
            raise self._refuse("requests", "too many requests in flight on this node")
        if write and self.pending_writes >= self.limits.max_pending_writes:
            raise self._refuse("writes", "too many writes pending on this node")
        self.inflight += 1
        if write:
            self.pending_writes += 1
        return Ticket(self, write)

    def charge(self, ticket: Ticket, size: int) -> None:
        """Add ``size`` bytes to ``ticket`` unless the budget would overflow (then 503)."""
        if self.inflight_bytes + size > self.limits.max_inflight_bytes:
            raise self._refuse("bytes", "too many request bytes in flight on this node")
        self.inflight_bytes += size
        ticket.bytes += size

    def release(self, ticket: Ticket) -> None:
        """Give back what ``ticket`` holds (called once, by ``Ticket.release``)."""
        self.inflight -= 1
        if ticket.write:
            self.pending_writes -= 1
        self.inflight_bytes -= ticket.bytes
        ticket.bytes = 0

    def _refuse(self, reason: str, message: str) -> ApiError:
        self.rejected[reason] += 1
        error = unavailable(f"overloaded: {message}")
        error.extra["overloaded"] = True
        return error

    def snapshot(self) -> dict[str, int | dict[str, int]]:
        """Current occupancy, limits and refusals by reason, for metrics."""
        limits = self.limits
        return {
            "rejected": dict(self.rejected),
            "inflight_requests": self.inflight,
            "pending_writes": self.pending_writes,
            "inflight_bytes": self.inflight_bytes,
            "max_inflight_requests": limits.max_inflight_requests,
            "max_pending_writes": limits.max_pending_writes,
            "max_inflight_bytes": limits.max_inflight_bytes,
        }


def is_exempt(path: str) -> bool:
    """Whether a path bypasses admission (see the module docstring)."""
    return path in EXEMPT_PATHS or path.startswith(RAFT_PREFIX)


TICKET: Final = web.RequestKey("raftcache.server.ticket", Ticket)
"""Where the admission middleware leaves the request's ticket for ``read_body``."""
