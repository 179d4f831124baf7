"""Final-state checkers for counters and sets (Jepsen's counter and set workloads).

Rule: these judge only what a final read can prove — every acknowledged effect is present, no
effect that certainly did not happen is — and leave ordering to the linearizability checker.
They are cheap (linear time), so a harness can run them on histories too long to search.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from raftcache.testing.history import Operation, OpStatus

__all__ = ["CounterCheck", "SetCheck", "check_counter", "check_set"]


@dataclass(slots=True, frozen=True)
class CounterCheck:
    """The verdict of ``check_counter``: ``ok`` iff ``lower <= final <= upper`` (and, with
    ``exactly_once``, no two acknowledged increments returned the same value)."""

    ok: bool
    final: int
    lower: int
    upper: int
    acked: int
    indeterminate: int
    duplicate_outputs: tuple[int, ...] = ()


def check_counter(
    history: Iterable[Operation], final: int, *, initial: int = 0, exactly_once: bool = False
) -> CounterCheck:
    """Check a counter's final value against its ``incr`` operations (``input`` = amount).

    Every acknowledged increment must be counted once; each indeterminate one at most once, so
    ``final`` lies in ``[initial + acked, initial + acked + indeterminate]`` (for negative amounts
    the bounds widen downwards). With ``exactly_once`` (client sessions dedupe retries) the
    acknowledged outputs — the value after each increment — must also be pairwise distinct for
    non-zero amounts, since a retry answered twice from the same application would repeat one;
    once every operation is resolved the range collapses to ``final == initial + acked``.
    """
    acked = low_extra = high_extra = indeterminate = 0
    outputs: dict[int, int] = {}
    for op in history:
        if op.kind != "incr" or op.status is OpStatus.FAIL:
            continue
        by = 1 if op.input is None else int(op.input)
        if op.status is OpStatus.OK:
            acked += by
            if by != 0 and isinstance(op.output, int):
                outputs[op.output] = outputs.get(op.output, 0) + 1
        else:
            indeterminate += by
            low_extra += min(by, 0)
            high_extra += max(by, 0)
    lower, upper = initial + acked + low_extra, initial + acked + high_extra
    duplicates = tuple(sorted(v for v, n in outputs.items() if n > 1)) if exactly_once else ()
    ok = lower <= final <= upper and not duplicates
    return CounterCheck(ok, final, lower, upper, acked, indeterminate, duplicates)


@dataclass(slots=True, frozen=True)
class SetCheck:
    """The verdict of ``check_set``.

    Attributes:
        ok: No acknowledged add is missing and nothing unexpected is present.
        lost: Acknowledged adds missing from the final read (the serious failure).
        unexpected: Elements present that no ok or indeterminate add could have written
            (including adds that reported ``fail``, i.e. certainly did not happen).
        recovered: Indeterminate adds that turned out to have happened (informational).
    """

    ok: bool
    lost: frozenset[Hashable]
    unexpected: frozenset[Hashable]
    recovered: frozenset[Hashable]


def check_set(history: Iterable[Operation], final: Iterable[Hashable]) -> SetCheck:
    """Check that every acknowledged ``add`` (``input`` = element) is in the final read."""
    acked: set[Hashable] = set()
    maybe: set[Hashable] = set()
    for op in history:
        if op.kind != "add":
            continue
        if op.status is OpStatus.OK:
            acked.add(op.input)
        elif op.status is OpStatus.INDETERMINATE:
            maybe.add(op.input)
    present = set(final)
    lost = frozenset(acked - present)
    unexpected = frozenset(present - acked - maybe)
    recovered = frozenset((present & maybe) - acked)
    return SetCheck(not lost and not unexpected, lost, unexpected, recovered)
