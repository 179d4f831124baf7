"""Linearizability checking (Wing & Gong, with Lowe's memoisation, as in Porcupine).

Rule: a history is linearizable iff every operation can be given a single instant between its
invocation and its completion such that applying the operations in that order to the sequential
model reproduces every ``ok`` output. ``fail`` operations never happened and are dropped;
``indeterminate`` ones may be placed at any instant after their invocation, or left out.

Method. The history is split into independent partitions (one per key: linearizability is
compositional, Herlihy & Wing's locality, so each key is checked alone — exponentially cheaper).
Each partition becomes a list of call and return events in time order; ties put calls first, so
operations that touch at an instant count as concurrent (the permissive reading). A depth-first
search walks the list: at a call it tries to linearize that operation now (lifting its call and
return out of the list, dancing-links style); at a return whose operation is still unplaced it is
stuck and backtracks. Lowe's memo of (set of linearized operations, model state) pairs prunes every
configuration already explored, so the search is polynomial for histories of bounded concurrency.
Indeterminate operations have no return event, so nothing forces them in: the search succeeds
once every definite operation is placed.

A search that exceeds its time or step budget answers ``unknown`` rather than hanging.

The models (``raftcache.testing.models``) and the counter and set checkers
(``raftcache.testing.checkers``) are re-exported here, so one import serves a harness.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.testing.checkers import CounterCheck, SetCheck, check_counter, check_set
from raftcache.testing.history import Operation, OpStatus
from raftcache.testing.models import CounterModel, Model, RegisterModel

__all__ = [
    "CheckResult",
    "CounterCheck",
    "CounterModel",
    "Model",
    "Outcome",
    "PartitionResult",
    "RegisterModel",
    "SetCheck",
    "check_counter",
    "check_linearizable",
    "check_set",
    "partition_by_key",
]

# The clock is read once per this many search steps: often enough to honour a budget to within a
# few milliseconds, rarely enough to cost nothing.
_CLOCK_EVERY = 1024


class Outcome(enum.StrEnum):
    """The verdict on a history or one of its partitions."""

    OK = "ok"
    ILLEGAL = "illegal"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class PartitionResult:
    """The verdict on one partition (one key).

    Attributes:
        key: The partition's key (``None`` for an unpartitioned check).
        outcome: ok, illegal, or unknown (budget exhausted).
        operations: How many operations were searched (after dropping failed ones).
        linearization: On ok, one valid order of the placed operations.
        longest_prefix: Otherwise, the longest sequence the search managed to linearize.
        state: The model state after ``longest_prefix``.
        blocked: The operation whose completion the search could not get past.
        unplaced: Operations invoked before ``blocked`` completed that were never placed after
            ``longest_prefix`` (``blocked`` first): the suspects.
    """

    key: Hashable
    outcome: Outcome
    operations: int
    linearization: list[Operation] = field(default_factory=list)
    longest_prefix: list[Operation] = field(default_factory=list)
    state: Any = None
    blocked: Operation | None = None
    unplaced: list[Operation] = field(default_factory=list)

    def explain(self, context: int = 5) -> str:
        """A short human-readable account of a failure (the tail of the longest prefix)."""
        if self.outcome is Outcome.OK:
            return f"key {self.key!r}: linearizable ({self.operations} operations)"
        lines = [f"key {self.key!r}: {self.outcome.value} ({self.operations} operations)"]
        done = len(self.longest_prefix)
        lines.append(f"  linearized {done} operations; the last {min(context, done)}:")
        lines += [f"    {op.describe()}" for op in self.longest_prefix[-context:]]
        lines.append(f"  model state then: {self.state!r}")
        if self.blocked is not None:
            lines.append(f"  could not place: {self.blocked.describe()}")
            lines += [f"    concurrent, unplaced: {op.describe()}" for op in self.unplaced[1:]]
        return "\n".join(lines)


@dataclass(slots=True)
class CheckResult:
    """The verdict on a whole history: illegal if any partition is, else unknown if any is."""

    outcome: Outcome
    partitions: list[PartitionResult]

    @property
    def ok(self) -> bool:
        """True only when the history is certainly linearizable (not when unknown)."""
        return self.outcome is Outcome.OK

    @property
    def failures(self) -> list[PartitionResult]:
        """The partitions that are not ok."""
        return [p for p in self.partitions if p.outcome is not Outcome.OK]

    def explain(self) -> str:
        """Explanations of every partition that is not ok."""
        if self.ok:
            return f"linearizable ({len(self.partitions)} partitions)"
        return "\n".join(p.explain() for p in self.failures)


def partition_by_key(history: Iterable[Operation]) -> list[list[Operation]]:
    """Split a history into one sub-history per ``op.key`` (first-seen order)."""
    parts: dict[Hashable, list[Operation]] = {}
    for op in history:
        parts.setdefault(op.key, []).append(op)
    return list(parts.values())


def check_linearizable(
    history: Iterable[Operation],
    model: Model[Any] | None = None,
    *,
    partition: Callable[[Iterable[Operation]], list[list[Operation]]] | None = partition_by_key,
    timeout_s: float | None = None,
    max_steps: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Check a history against a sequential model.

    Args:
        history: The operations, in any order.
        model: The sequential specification; ``RegisterModel()`` by default.
        partition: Splits the history into independently checkable parts; ``None`` checks it
            whole (needed when operations span several keys).
        timeout_s: Wall-clock budget for the whole check, read from ``clock``.
        max_steps: Deterministic budget: search steps for the whole check.
        clock: Seconds, monotonic; injectable so tests need not depend on real time.

    Returns:
        A ``CheckResult``: ok, illegal (with an explanation per failing key) or unknown.
    """
    model = RegisterModel() if model is None else model
    ops = list(history)
    parts = partition(ops) if partition is not None else [ops]
    deadline = None if timeout_s is None else clock() + timeout_s
    budget = _Budget(deadline, max_steps, clock)
    results = [_check_partition(part, model, budget) for part in parts]
    outcomes = {r.outcome for r in results}
    if Outcome.ILLEGAL in outcomes:
        outcome = Outcome.ILLEGAL
    elif Outcome.UNKNOWN in outcomes:
        outcome = Outcome.UNKNOWN
    else:
        outcome = Outcome.OK
    return CheckResult(outcome, results)


@dataclass(slots=True)
class _Budget:
    """Search steps and time left for the whole check, charged in batches of steps."""

    deadline: float | None
    steps_left: int | None
    clock: Callable[[], float]

    def charge(self, steps: int) -> bool:
        """Spend ``steps``; True when the budget is exhausted."""
        if self.steps_left is not None:
            self.steps_left -= steps
            if self.steps_left < 0:
                return True
        return self.deadline is not None and self.clock() >= self.deadline


class _Events:
    """A time-ordered list of call and return events, as index arrays (dancing links).

    Index 0 is the head sentinel and ``n + 1`` the tail sentinel. ``op[e]`` is the index of the
    event's operation in the partition; ``match[e]`` is the return event of call ``e`` (-1 for
    an indeterminate call, which has none, and for a return event itself).
    """

    def __init__(self, ops: Sequence[Operation], members: Iterable[int]) -> None:
        raw: list[tuple[float, int, int]] = []  # (time, 0 = call / 1 = return, op index)
        for i in members:
            raw.append((ops[i].invoke_time, 0, i))
            if ops[i].status is not OpStatus.INDETERMINATE:
                raw.append((ops[i].complete_time, 1, i))
        # Ties put calls first: operations touching at an instant count as concurrent.
        raw.sort()
        n = len(raw)
        self.op = [-1] + [i for _, _, i in raw] + [-1]
        self.is_call = [False] + [kind == 0 for _, kind, _ in raw] + [False]
        self.match = [-1] * (n + 2)
        call_of: dict[int, int] = {}
        for e in range(1, n + 1):
            if self.is_call[e]:
                call_of[self.op[e]] = e
            else:
                self.match[call_of[self.op[e]]] = e
        self.next = [*range(1, n + 2), n + 1]
        self.prev = [0, *range(0, n + 1)]
        self.tail = n + 1

    def lift(self, e: int) -> None:
        """Remove call ``e`` and its return: the operation is placed."""
        nxt, prv = self.next, self.prev
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]
        r = self.match[e]
        if r >= 0:
            nxt[prv[r]] = nxt[r]
            prv[nxt[r]] = prv[r]

    def unlift(self, e: int) -> None:
        """Exactly undo ``lift(e)``: the removed cells still hold their old neighbours."""
        nxt, prv = self.next, self.prev
        r = self.match[e]
        if r >= 0:
            nxt[prv[r]] = r
            prv[nxt[r]] = r
        nxt[prv[e]] = e
        prv[nxt[e]] = e


def _prepare(ops_in: list[Operation], model: Model[Any]) -> list[Operation]:
    """Drop what cannot constrain the search: failed ops and indeterminate read-only ops."""
    read_only = getattr(model, "read_only", None)
    return [
        op
        for op in ops_in
        if op.status is not OpStatus.FAIL
        and not (op.status is OpStatus.INDETERMINATE and read_only is not None and read_only(op))
    ]


# A search frame: (cursor, state, definite set, indeterminate set, path). ``cursor`` is the
# placed call's event, negated when it was placed in the second phase (see ``_Search``).
_Frame = tuple[int, Hashable, int, int, "tuple[int, Any] | None"]


class _Search:
    """The depth-first search over one partition.

    Candidate order. At each configuration the search tries, in time order, the calls before
    the first pending return, skipping *old* indeterminate calls — those invoked before the
    earliest unplaced definite call; only when all else fails does it try those (second phase).
    An indeterminate op that took effect usually did so soon after its invocation, so young ones
    are best tried in time order; an old one is an option that stays open for ever, and trying
    it first at every configuration would multiply the work of every failing search.

    Memo. A configuration is (definite ops placed, indeterminate ops placed, state). Lowe's memo
    maps (definite set, state) to the indeterminate sets visited with it; a configuration placing
    a superset of a visited one's indeterminate ops is dominated — any completion of it completes
    the visited one too, whose extra indeterminate ops may simply stay unplaced — so it is
    pruned. Without that, every open indeterminate op would double the search space.
    """

    def __init__(self, ops: list[Operation], model: Model[Any], budget: _Budget) -> None:
        self.ops = ops
        self.model = model
        self.budget = budget
        self.definite = [op.status is not OpStatus.INDETERMINATE for op in ops]
        self.ev = _Events(ops, range(len(ops)))
        counters = [0, 0]
        self.bit = []  # each op's bit in the placed set of its own kind
        for d in self.definite:
            self.bit.append(1 << counters[d])
            counters[d] += 1
        # Keys visited with no indeterminate op placed dominate every configuration with that
        # key; a plain set of them is all most histories need.
        self.seen_bare: set[tuple[int, Hashable]] = set()
        self.seen: dict[tuple[int, Hashable], list[int]] = {}

    def visit(self, definite: int, indeterminate: int, state: Hashable) -> bool:
        """Record a configuration; False when a visited one dominates it."""
        key = (definite, state)
        if key in self.seen_bare:
            return False
        if indeterminate == 0:
            self.seen_bare.add(key)
            self.seen.pop(key, None)
            return True
        visited = self.seen.setdefault(key, [])
        if any(old & ~indeterminate == 0 for old in visited):
            return False
        visited.append(indeterminate)
        return True

    def run(self, key: Hashable) -> PartitionResult:
        ops, step, ev, bit, definite = self.ops, self.model.step, self.ev, self.bit, self.definite
        nxt, is_call, ev_op = ev.next, ev.is_call, ev.op
        remaining = sum(definite)
        state: Hashable = self.model.init()
        pd = pi = 0
        path: tuple[int, Any] | None = None  # placed op indices, a cons list: O(1) to keep
        stack: list[_Frame] = []
        best: _Best = (-1, None, state, -1)
        # ``young``: a definite call has been passed, so indeterminate calls are tried in turn.
        e, second, young, ticks = nxt[0], False, False, 0
        while remaining:
            ticks += 1
            if ticks == _CLOCK_EVERY:
                ticks = 0
                if self.budget.charge(_CLOCK_EVERY):
                    return _report(key, Outcome.UNKNOWN, ops, best)
            i = ev_op[e]
            if not is_call[e] or (second and definite[i]):
                if not second:  # the first pending return: its op must be placed by now
                    if len(stack) > best[0]:
                        best = (len(stack), path, state, i)
                    e, second, young = nxt[0], True, False
                    continue
                if not stack:  # every candidate failed: a dead end, backtrack
                    return _report(key, Outcome.ILLEGAL, ops, best)
                cursor, state, pd, pi, path = stack.pop()
                ev.unlift(abs(cursor))
                remaining += definite[ev_op[abs(cursor)]]
                e, second, young = nxt[abs(cursor)], cursor < 0, cursor > 0
                continue
            d = definite[i]
            young = young or d
            if young != second:  # phase 1 tries young calls, phase 2 the old indeterminate
                legal, new_state = step(state, ops[i])
                nd, ni = (pd | bit[i], pi) if d else (pd, pi | bit[i])
                if legal and self.visit(nd, ni, new_state):
                    stack.append((-e if second else e, state, pd, pi, path))
                    state, pd, pi, path = new_state, nd, ni, (i, path)
                    ev.lift(e)
                    remaining -= d
                    e, second, young = nxt[0], False, False
                    continue
            e = nxt[e]
        self.budget.charge(ticks)
        result = PartitionResult(key, Outcome.OK, len(ops))
        result.linearization = [ops[i] for i in _unwind(path)]
        return result


def _check_partition(
    ops_in: list[Operation], model: Model[Any], budget: _Budget
) -> PartitionResult:
    key = ops_in[0].key if ops_in else None
    return _Search(_prepare(ops_in, model), model, budget).run(key)


def _unwind(path: tuple[int, Any] | None) -> list[int]:
    out: list[int] = []
    while path is not None:
        out.append(path[0])
        path = path[1]
    out.reverse()
    return out


# The deepest dead end: (depth, path, state there, index of the op it could not place).
_Best = tuple[int, "tuple[int, Any] | None", Hashable, int]


def _report(key: Hashable, outcome: Outcome, ops: list[Operation], best: _Best) -> PartitionResult:
    _, path, state, blocked_index = best
    placed = _unwind(path)
    result = PartitionResult(key, outcome, len(ops), state=state)
    result.longest_prefix = [ops[i] for i in placed]
    if blocked_index >= 0:
        blocked = ops[blocked_index]
        done = set(placed)
        result.blocked = blocked
        result.unplaced = [blocked] + [
            op
            for i, op in enumerate(ops)
            if i not in done and i != blocked_index and op.invoke_time <= blocked.complete_time
        ]
    return result
