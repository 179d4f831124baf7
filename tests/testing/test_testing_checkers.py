"""The counter and set checkers (final-state checks)."""

from __future__ import annotations

import math

from raftcache.testing import Operation, OpStatus, check_counter, check_set

OK, FAIL, INDET = OpStatus.OK, OpStatus.FAIL, OpStatus.INDETERMINATE


def incr(by: int, status: OpStatus = OK, out: int | None = None, t: float = 0.0) -> Operation:
    end = math.inf if status is INDET else t + 1
    return Operation(0, "incr", "c", by, out if status is OK else None, t, end, status)


def add(element: int, status: OpStatus = OK) -> Operation:
    end = math.inf if status is INDET else 1.0
    return Operation(0, "add", "s", element, None, 0.0, end, status)


def test_counter_range_from_acked_and_indeterminate() -> None:
    history = [incr(1), incr(2), incr(5, INDET), incr(100, FAIL)]
    assert check_counter(history, 3).ok
    assert check_counter(history, 8).ok
    check = check_counter(history, 9)
    assert not check.ok
    assert (check.lower, check.upper, check.acked, check.indeterminate) == (3, 8, 3, 5)
    lost = check_counter(history, 2)
    assert not lost.ok
    assert check_counter(history, 103, initial=100).ok


def test_counter_with_negative_indeterminate_widens_downwards() -> None:
    history = [incr(10), incr(-4, INDET), incr(3, INDET)]
    check = check_counter(history, 6)
    assert check.ok
    assert (check.lower, check.upper) == (6, 13)
    assert not check_counter(history, 5).ok


def test_counter_exactly_once_all_resolved_means_exactly_acked() -> None:
    history = [incr(1, out=1, t=0), incr(1, out=2, t=2), incr(1, out=3, t=4)]
    assert check_counter(history, 3, exactly_once=True).ok
    assert not check_counter(history, 4, exactly_once=True).ok


def test_counter_exactly_once_detects_a_duplicated_answer() -> None:
    # Two different increments both answered "now 2": one was answered from another's effect.
    history = [incr(1, out=1), incr(1, out=2), incr(1, out=2)]
    check = check_counter(history, 3, exactly_once=True)
    assert not check.ok
    assert check.duplicate_outputs == (2,)
    assert check_counter(history, 3).ok  # without sessions the outputs prove nothing


def test_set_checker_lost_unexpected_and_recovered() -> None:
    history = [add(1), add(2), add(3, INDET), add(4, INDET), add(5, FAIL)]
    good = check_set(history, [1, 2, 3])
    assert good.ok
    assert good.recovered == frozenset({3})
    bad = check_set(history, [1, 3, 5, 9])
    assert not bad.ok
    assert bad.lost == frozenset({2})
    assert bad.unexpected == frozenset({5, 9})


def test_set_checker_ignores_other_operations() -> None:
    read = Operation(0, "read", "s", None, [1], 0.0, 1.0, OK)
    assert check_set([add(1), read], [1]).ok
