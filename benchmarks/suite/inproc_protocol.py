"""The control protocol between the orchestrator and an in-process benchmark node.

Rule: the driver node (the one that proposes) reads one JSON command per line on stdin and
answers one JSON object per line on stdout; nothing else may be printed on its stdout.
Commands: ``{"op": "wait_leader", "timeout": S}`` → ``{"leader": bool}``;
``{"op": "latency", "duration": S}`` (one proposal in flight at a time) and
``{"op": "rate", "rate": R, "duration": S, "timeout": S}`` (open loop: R proposals per second,
each counted as committed only if it succeeds within ``timeout``) → a ``ProbeResult`` dict;
``{"op": "quit"}``. Both libraries' drivers share the bookkeeping below, so the numbers are
computed the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile_ms(sorted_s: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ascending seconds, in milliseconds (0 when empty)."""
    if not sorted_s:
        return 0.0
    rank = max(math.ceil(fraction * len(sorted_s)), 1)
    return sorted_s[rank - 1] * 1000


@dataclass(slots=True)
class Tally:
    """Outcomes of the proposals of one probe."""

    sent: int = 0
    failed: int = 0
    late: int = 0
    latencies_s: list[float] = field(default_factory=list)
    #: Failures by kind (exception class or the library's failure code), to tell a refused
    #: proposal from a lost leadership.
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, latency_s: float, ok: bool, timeout_s: float, error: str = "") -> None:
        if not ok:
            self.failed += 1
            self.errors[error] = self.errors.get(error, 0) + 1
        elif latency_s > timeout_s:
            self.late += 1
        else:
            self.latencies_s.append(latency_s)

    def result(self, rate: float, elapsed_s: float) -> dict[str, Any]:
        lat = sorted(self.latencies_s)
        committed = len(lat)
        return asdict(
            ProbeResult(
                rate=rate,
                sent=self.sent,
                committed=committed,
                failed=self.failed,
                late=self.late,
                lost=self.sent - committed - self.failed - self.late,
                success=committed / self.sent if self.sent else 0.0,
                committed_per_s=committed / elapsed_s if elapsed_s > 0 else 0.0,
                p50_ms=percentile_ms(lat, 0.50),
                p99_ms=percentile_ms(lat, 0.99),
                elapsed_s=elapsed_s,
                errors=dict(self.errors),
            )
        )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome: ``success`` is committed-in-time / sent."""

    rate: float
    sent: int
    committed: int
    failed: int
    late: int
    lost: int
    success: float
    committed_per_s: float
    p50_ms: float
    p99_ms: float
    elapsed_s: float
    errors: dict[str, int]
