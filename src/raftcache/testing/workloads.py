"""What every fault-harness workload shares: its environment, its verdict, its findings.

Rule: a workload is a set of concurrent client *workers*, each issuing one operation at a
time, and one history (``HistoryRecorder``) that records what they observed. After the faults
stop, ``finish`` makes the final reads the checks need (after the cluster was crashed and
restarted as a whole, so a lost acknowledged write shows), and ``check`` judges the history:
a *violation* is a history a single correct copy could not have produced; an *unknown* is a
check that ran out of budget (reported, never counted as a pass or a violation).

Workers use unique values and fresh keys (rotating registers, new set elements), and switch to a
fresh process id after an indeterminate operation, as docs/testing-faults.md asks.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from raftcache.testing.history import HistoryRecorder, Operation, OpStatus
from raftcache.testing.httpops import NodeApi, Reply
from raftcache.testing.linearizability import (
    CheckResult,
    Outcome,
    PartitionResult,
    check_linearizable,
    partition_by_key,
)
from raftcache.testing.models import Model

__all__ = [
    "Finding",
    "Workload",
    "WorkloadEnv",
    "WorkloadVerdict",
    "check_keys",
    "findings_from_linearizability",
    "retry_until_ok",
]


@dataclass(slots=True)
class WorkloadEnv:
    """What workers need: where the nodes are, how to reach them, time and randomness.

    Attributes:
        api: The single-attempt HTTP client.
        urls: The nodes' client URLs (any node serves any request).
        clock: Seconds on one monotonic clock shared by every history.
        rng: The workload's own seeded generator (choices of keys, nodes, operations).
        run_id: A short unique prefix for every key this run writes.
        think_s: Upper bound of the random pause between a worker's operations.
    """

    api: NodeApi
    urls: Sequence[str]
    clock: Callable[[], float]
    rng: random.Random
    run_id: str
    think_s: float = 0.02

    def pick_url(self) -> str:
        return self.rng.choice(list(self.urls))

    async def think(self) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, self.think_s))


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found.

    Attributes:
        workload: Which workload's history.
        check: Which check (``linearizable``, ``counter``, ``set``, ...).
        severity: ``violation`` (the history is impossible), ``unknown`` (out of budget) or
            ``note`` (an anomaly the run's faults allow, such as a stale lease read after a
            clock jump: shown, not counted).
        detail: A human-readable account (the operations involved).
    """

    workload: str
    check: str
    severity: str
    detail: str


@dataclass(slots=True)
class WorkloadVerdict:
    """A workload's counts and findings, for the run report."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "violation"]

    @property
    def unknowns(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "unknown"]

    @classmethod
    def of(cls, name: str, history: Sequence[Operation]) -> WorkloadVerdict:
        """Counts of ok / fail / indeterminate operations (what the client saw)."""
        return cls(name, Counter(op.status.value for op in history))


class Workload(Protocol):
    """The harness's view of a workload."""

    name: str
    recorder: HistoryRecorder

    async def worker(self, index: int, stop: asyncio.Event) -> None:
        """Issue operations until ``stop`` is set (finishing the one in flight)."""
        ...

    async def finish(self, deadline_s: float) -> None:
        """Final reads, once the cluster is healthy again."""
        ...

    def check(self, budget_s: float) -> WorkloadVerdict:
        """Judge the history (``budget_s``: time for the linearizability search)."""
        ...


def findings_from_linearizability(
    workload: str, result: CheckResult, max_chars: int = 4000
) -> list[Finding]:
    """One finding per key that is illegal (violation, with the operations involved) or
    undecided (unknown, in one line: the search ran out of budget, nothing was found)."""
    found: list[Finding] = []
    for part in result.failures:
        if part.outcome is Outcome.ILLEGAL:
            found.append(Finding(workload, "linearizable", "violation", part.explain()[:max_chars]))
        else:
            detail = (
                f"key {part.key!r}: undecided ({part.operations} operations, "
                f"{len(part.longest_prefix)} linearized before the budget ran out)"
            )
            found.append(Finding(workload, "linearizable", "unknown", detail))
    return found


def check_keys(
    history: Sequence[Operation],
    model: Model[Any],
    budget_s: float,
    clock: Callable[[], float],
    *,
    first_pass_s: float = 1.0,
) -> CheckResult:
    """Check each key alone, so that one hard key cannot starve the others of budget.

    Every key first gets ``first_pass_s`` (most are decided in milliseconds); what the
    keys still undecided after that pass share is the rest of ``budget_s``, split evenly
    among them in turn.
    """
    start = clock()
    results: list[PartitionResult] = []
    hard: list[tuple[list[Operation], CheckResult]] = []
    for part in partition_by_key(history):
        result = check_linearizable(part, model, timeout_s=first_pass_s, clock=clock)
        if result.outcome is Outcome.UNKNOWN:
            hard.append((part, result))
        else:
            results.extend(result.partitions)
    for i, (part, first) in enumerate(hard):
        share = max(0.0, budget_s - (clock() - start)) / (len(hard) - i)
        if share > first_pass_s:
            first = check_linearizable(part, model, timeout_s=share, clock=clock)
        results.extend(first.partitions)
    outcomes = {r.outcome for r in results}
    overall = next((o for o in (Outcome.ILLEGAL, Outcome.UNKNOWN) if o in outcomes), Outcome.OK)
    return CheckResult(overall, results)


async def retry_until_ok(
    attempt: Callable[[], Awaitable[Reply]], clock: Callable[[], float], deadline_s: float
) -> Reply:
    """Repeat a (read) attempt until it is ok or ``deadline_s`` seconds have passed."""
    start = clock()
    while True:
        reply = await attempt()
        if reply.status is OpStatus.OK or clock() - start >= deadline_s:
            return reply
        await asyncio.sleep(0.2)
