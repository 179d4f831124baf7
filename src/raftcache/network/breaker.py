"""A circuit breaker per target: stop calling a peer that keeps failing, probe it now and then.

Rule (one ``CircuitBreaker`` per target, a pure state machine fed with times):

- *closed*: calls go through; ``failure_threshold`` consecutive transient failures (a
  ``NetworkError`` with ``permanent`` False, or a bare ``TimeoutError``) open the breaker. Any
  success resets the count.
- *open*: calls fail at once with ``CircuitOpenError`` ("Circuit open for X", transient, with
  ``retry_after``) without touching the transport, until ``reset_timeout`` seconds have passed
  since the breaker opened.
- *half-open*: the first call after the cool-down is let through as the single probe; others
  still fail fast while it is in flight. A success closes the breaker, a transient failure
  reopens it for another ``reset_timeout``.

Permanent errors and cancellations say nothing about the link (the peer answered, or the caller
gave up): they neither count as failures nor close the breaker; a probe ending that way frees
the probe slot for the next call. A late success of a call admitted before the breaker opened
closes it: the peer did answer.

Why this cannot keep a recovering Raft follower dark: the leader contacts every follower at
least once per heartbeat interval, so the first heartbeat after the cool-down is the probe; the
follower is reached again at most ``reset_timeout + heartbeat_interval`` after it came back.
Put the breaker *outside* a ``ReliableNetwork`` (it then counts exhausted calls) or inside it
(``ReliableNetwork`` never retries a ``CircuitOpenError``: retrying within the cool-down is
pointless). A transport timeout must be shorter than the caller's own deadline, else the call is
cancelled before it can count as a failure.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from raftcache.network.errors import CircuitOpenError, NetworkError
from raftcache.network.interface import NetworkInterface
from raftcache.network.metrics import NetworkMetrics
from raftcache.network.wrapper import Clock, NetworkWrapper, Send, loop_clock, metrics_of

__all__ = ["BreakerState", "CircuitBreaker", "CircuitBreakerNetwork", "CircuitOpenError"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """The breaker of one target (see the module rule). Times are in seconds of any clock.

    Example:
        >>> b = CircuitBreaker(failure_threshold=2, reset_timeout=5.0)
        >>> b.on_failure(0.0); b.on_failure(1.0); b.state.value
        'open'
        >>> b.admit(2.0), b.admit(6.0), b.state.value
        (4.0, None, 'half_open')
    """

    __slots__ = ("failure_threshold", "failures", "opened_at", "probing", "reset_timeout", "state")

    def __init__(self, failure_threshold: int, reset_timeout: float) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive transient failures while closed
        self.opened_at = 0.0
        self.probing = False  # a half-open probe is in flight

    def admit(self, now: float) -> float | None:
        """``None`` if a call may go now, else the seconds until a probe will be allowed."""
        if self.state is BreakerState.OPEN:
            remaining = self.opened_at + self.reset_timeout - now
            if remaining > 0:
                return remaining
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            if self.probing:
                return 0.0  # the probe decides; nothing to wait for but its answer
            self.probing = True
        return None

    def on_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.probing = False

    def on_failure(self, now: float) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
        elif self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self._open(now)
        # OPEN: a call admitted before the breaker opened failed late; the cool-down stands.

    def on_neutral(self) -> None:
        """A call ended without telling whether the link works (permanent error, cancel)."""
        self.probing = False

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.failures = 0
        self.probing = False


class CircuitBreakerNetwork(NetworkWrapper):
    """Wraps a transport with one ``CircuitBreaker`` per target.

    Args:
        underlying: the transport that does the sending.
        failure_threshold: consecutive transient failures that open a target's breaker.
        reset_timeout: seconds an open breaker fails fast before it lets a probe through.
        clock: monotonic seconds (default: the running loop's time, virtual under looptime).
        metrics: where fast failures and state changes are recorded (default: the underlying
            network's ``metrics``, if any).

    Example:
        >>> from raftcache.network import InMemoryHub, InMemoryNetwork
        >>> net = CircuitBreakerNetwork(InMemoryNetwork("n1", hub=InMemoryHub()), reset_timeout=2.0)
        >>> net.state("n2").value
        'closed'
    """

    def __init__(
        self,
        underlying: NetworkInterface,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 1.0,
        clock: Clock | None = None,
        metrics: NetworkMetrics | None = None,
    ) -> None:
        if failure_threshold < 1 or reset_timeout <= 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout > 0")
        super().__init__(underlying)
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._clock = clock or loop_clock
        self._metrics = metrics if metrics is not None else metrics_of(underlying)
        self._breakers: dict[str, CircuitBreaker] = {}

    @property
    def metrics(self) -> NetworkMetrics | None:
        return self._metrics

    def breaker(self, target: str) -> CircuitBreaker:
        """The breaker of ``target`` (created closed on first use)."""
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = self._breakers[target] = CircuitBreaker(
                self.failure_threshold, self.reset_timeout
            )
            if self._metrics is not None:
                self._metrics.breaker_changed(target, breaker.state.value, transition=False)
        return breaker

    def state(self, target: str) -> BreakerState:
        """The state of ``target``'s breaker as last updated (by a call)."""
        return self.breaker(target).state

    def states(self) -> dict[str, str]:
        """Every target's breaker state, by target id."""
        return {t: b.state.value for t, b in sorted(self._breakers.items())}

    async def _call(self, rpc: str, send: Send, target: str, req: Any) -> Any:
        breaker = self.breaker(target)
        before = breaker.state
        wait = breaker.admit(self._clock())
        self._report(target, before, breaker)
        if wait is not None:
            error = CircuitOpenError(target, wait)
            if self._metrics is not None:
                self._metrics.record_rejected("outbound", rpc, target, error)
            raise error
        before = breaker.state
        try:
            response = await send(target, req)
        except (NetworkError, TimeoutError) as exc:
            if isinstance(exc, NetworkError) and exc.permanent:
                breaker.on_neutral()
            else:
                breaker.on_failure(self._clock())
            self._report(target, before, breaker)
            raise
        except BaseException:
            breaker.on_neutral()  # cancelled, or a bug below: the link is not to blame
            raise
        breaker.on_success()
        self._report(target, before, breaker)
        return response

    def _report(self, target: str, before: BreakerState, breaker: CircuitBreaker) -> None:
        if self._metrics is not None and breaker.state is not before:
            self._metrics.breaker_changed(target, breaker.state.value)
