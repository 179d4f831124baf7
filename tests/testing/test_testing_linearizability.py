"""The linearizability checker on known-good and known-bad histories, random histories from a
real sequential execution, a brute-force oracle, and its time budget."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.testing import (
    CounterModel,
    Operation,
    OpStatus,
    Outcome,
    RegisterModel,
    check_linearizable,
)
from raftcache.testing.models import Model

OK, FAIL, INDET = OpStatus.OK, OpStatus.FAIL, OpStatus.INDETERMINATE


def op(
    kind: str,
    start: float,
    end: float | None,
    value: Any = None,
    out: Any = None,
    *,
    key: str = "k",
    status: OpStatus = OK,
    process: int = 0,
) -> Operation:
    """A terse constructor: ``value`` is the input for writes/cas, ``out`` the read result."""
    if kind == "read":
        value, out = None, value
    if status is INDET or end is None:
        end, out = math.inf, None
    return Operation(process, kind, key, value, out, start, end, status)


def verdict(*ops: Operation, model: Model[Any] | None = None) -> Outcome:
    return check_linearizable(list(ops), model).outcome


# --- known histories ---------------------------------------------------------------------------


def test_sequential_history_is_linearizable_and_order_is_reported() -> None:
    h = [op("write", 0, 1, 1), op("read", 2, 3, 1), op("write", 4, 5, 2), op("read", 6, 7, 2)]
    result = check_linearizable(h)
    assert result.ok
    assert result.partitions[0].linearization == h


def test_stale_read_is_illegal() -> None:
    assert (
        verdict(op("write", 0, 1, 1), op("write", 2, 3, 2), op("read", 4, 5, 1)) is Outcome.ILLEGAL
    )


def test_lost_write_is_illegal() -> None:
    assert verdict(op("write", 0, 1, 1), op("read", 2, 3, None)) is Outcome.ILLEGAL


def test_read_of_initial_value_before_any_write_is_fine() -> None:
    assert verdict(op("read", 0, 1, None), op("write", 2, 3, 1)) is Outcome.OK


def test_write_visible_before_its_invocation_is_illegal() -> None:
    assert verdict(op("read", 0, 1, 7), op("write", 2, 3, 7)) is Outcome.ILLEGAL


def test_read_concurrent_with_write_may_see_either_value() -> None:
    for seen in (None, 7):
        assert verdict(op("write", 0, 10, 7), op("read", 2, 3, seen)) is Outcome.OK


def test_operations_touching_at_an_instant_count_as_concurrent() -> None:
    # The read completes at the very instant the write is invoked: the permissive reading.
    assert verdict(op("read", 0, 5, 7), op("write", 5, 6, 7)) is Outcome.OK


@pytest.mark.parametrize(("first", "second"), [(1, 2), (2, 1)])
def test_concurrent_writes_may_take_effect_in_either_order(first: int, second: int) -> None:
    writes = [op("write", 0, 5, 1, process=1), op("write", 1, 6, 2, process=2)]
    reads = [op("read", 7, 8, first), op("read", 9, 10, first)]
    assert verdict(*writes, *reads) is Outcome.OK
    # ...but once one order was observed the other cannot be: no flip-flopping afterwards.
    flip = [op("read", 7, 8, first), op("read", 9, 10, second)]
    assert verdict(*writes, *flip) is Outcome.ILLEGAL


def test_cas_race_only_one_may_win() -> None:
    init = op("write", 0, 1, 0)
    a = op("cas", 2, 5, (0, 1), True, process=1)
    b = op("cas", 2, 5, (0, 2), True, process=2)
    assert verdict(init, a, b) is Outcome.ILLEGAL
    loser = op("cas", 2, 5, (0, 2), False, process=2)
    assert verdict(init, a, loser, op("read", 6, 7, 1)) is Outcome.OK
    assert verdict(init, a, loser, op("read", 6, 7, 2)) is Outcome.ILLEGAL


def test_failed_cas_requires_a_different_current_value() -> None:
    init = op("write", 0, 1, 0)
    assert verdict(init, op("cas", 2, 3, (0, 1), False)) is Outcome.ILLEGAL
    assert verdict(init, op("cas", 2, 3, (5, 1), False)) is Outcome.OK
    # A concurrent write explains the failure.
    assert verdict(init, op("write", 2, 9, 3), op("cas", 4, 5, (0, 1), False)) is Outcome.OK


def test_cas_on_absent_value_models_create_only() -> None:
    assert verdict(op("cas", 0, 1, (None, 1), True), op("read", 2, 3, 1)) is Outcome.OK
    assert verdict(op("write", 0, 1, 5), op("cas", 2, 3, (None, 1), True)) is Outcome.ILLEGAL


def test_delete_and_its_reported_result() -> None:
    deleted = [op("write", 0, 1, 1), op("delete", 2, 3, None, True), op("read", 4, 5, None)]
    assert verdict(*deleted) is Outcome.OK
    assert verdict(op("delete", 0, 1, None, True)) is Outcome.ILLEGAL
    assert verdict(op("delete", 0, 1, None, False), op("read", 2, 3, None)) is Outcome.OK


@pytest.mark.parametrize("observed", [None, 1])
def test_indeterminate_write_may_or_may_not_take_effect(observed: int | None) -> None:
    h = [op("write", 0, None, 1, status=INDET), op("read", 5, 6, observed)]
    assert verdict(*h) is Outcome.OK


def test_indeterminate_write_cannot_take_effect_before_invocation_or_be_undone() -> None:
    before = [op("read", 0, 1, 1), op("write", 2, None, 1, status=INDET)]
    assert verdict(*before) is Outcome.ILLEGAL
    undone = [
        op("write", 0, None, 1, status=INDET),
        op("read", 5, 6, 1),
        op("read", 7, 8, None),
    ]
    assert verdict(*undone) is Outcome.ILLEGAL


def test_indeterminate_write_may_take_effect_long_after_invocation() -> None:
    h = [
        op("write", 0, None, 1, status=INDET),
        op("write", 1, 2, 2),
        op("read", 3, 4, 2),
        op("read", 10, 11, 1),  # the lost-in-flight write lands late
        op("read", 12, 13, 1),
    ]
    assert verdict(*h) is Outcome.OK


def test_indeterminate_cas_only_applies_when_expected_matches() -> None:
    base = [op("write", 0, 1, 0), op("cas", 2, None, (0, 1), status=INDET)]
    assert verdict(*base, op("read", 5, 6, 1)) is Outcome.OK
    assert verdict(*base, op("read", 5, 6, 0)) is Outcome.OK
    other = [op("write", 0, 1, 9), op("cas", 2, None, (0, 1), status=INDET)]
    assert verdict(*other, op("read", 5, 6, 1)) is Outcome.ILLEGAL


def test_failed_operations_are_ignored() -> None:
    h = [op("write", 0, 1, 1), op("write", 2, 3, 2, status=FAIL), op("read", 4, 5, 1)]
    assert verdict(*h) is Outcome.OK
    assert verdict(op("write", 0, 1, 2, status=FAIL), op("read", 2, 3, 2)) is Outcome.ILLEGAL


def test_keys_are_checked_independently_and_failures_name_the_key() -> None:
    good = [op("write", 0, 1, 1, key="a"), op("read", 2, 3, 1, key="a")]
    bad = [op("write", 0, 1, 1, key="b"), op("read", 2, 3, 2, key="b")]
    result = check_linearizable(good + bad)
    assert result.outcome is Outcome.ILLEGAL
    assert [p.key for p in result.failures] == ["b"]
    assert {p.key: p.outcome for p in result.partitions} == {
        "a": Outcome.OK,
        "b": Outcome.ILLEGAL,
    }
    # The same operations checked as one object are a different claim: still illegal here.
    assert check_linearizable(good + bad, partition=None).outcome is Outcome.ILLEGAL


def test_explanation_points_at_the_culprit() -> None:
    h = [
        op("write", 0, 1, 1),
        op("read", 2, 3, 1),
        op("write", 4, 5, 2),
        op("read", 6, 8, 1, process=1),  # stale
        op("read", 7, 9, 2, process=2),
    ]
    result = check_linearizable(h)
    part = result.failures[0]
    # The concurrent fresh read could still be placed; the stale one never can.
    assert part.longest_prefix == [*h[:3], h[4]]
    assert part.state == 2
    assert part.blocked == h[3]
    assert part.unplaced == [h[3]]
    text = result.explain()
    assert "could not place: [6, 8] p1 read('k', None) -> 1" in text


def test_counter_model_through_the_generic_interface() -> None:
    h = [
        op("incr", 0, 3, 1, 1, process=1),
        op("incr", 1, 4, 2, 3, process=2),
        op("read", 5, 6, 3),
    ]
    assert verdict(*h, model=CounterModel()) is Outcome.OK
    dup = [op("incr", 0, 3, 1, 1, process=1), op("incr", 1, 4, 1, 1, process=2)]
    assert verdict(*dup, model=CounterModel()) is Outcome.ILLEGAL
    lost = [op("incr", 0, 1, 1, 1), op("read", 2, 3, 0)]
    assert verdict(*lost, model=CounterModel()) is Outcome.ILLEGAL


def test_unknown_operation_kind_is_an_error_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="no operation"):
        check_linearizable([op("frobnicate", 0, 1, 1)])


# --- random histories from a real sequential execution -----------------------------------------


def generate_history(
    rng: random.Random, n_ops: int, processes: int, *, indeterminate_rate: float = 0.0
) -> list[Operation]:
    """Run a register sequentially at random linearization points, then hide those points
    inside random overlapping [invoke, complete] intervals — linearizable by construction.

    Written values are unique. An indeterminate op took effect or not at random, and its
    process then gives way to a fresh one (it may still be in flight).
    """
    plans = []
    clocks = [0.0] * processes
    incarnation = [0] * processes
    for _ in range(n_ops):
        p = rng.randrange(processes)
        invoke = clocks[p] + rng.uniform(0, 1)
        point = invoke + rng.uniform(0, 3)
        complete = point + rng.uniform(0, 3)
        roll = rng.random()
        kind = "read" if roll < 0.5 else ("cas" if roll < 0.7 else "write")
        indeterminate = kind != "read" and rng.random() < indeterminate_rate
        plans.append((point, f"{p}.{incarnation[p]}", kind, invoke, complete, indeterminate))
        clocks[p] = complete
        incarnation[p] += indeterminate
    plans.sort()
    state: int | None = None
    written = 0
    history = []
    for _point, proc, kind, invoke, complete, indeterminate in plans:
        takes_effect = not indeterminate or rng.random() < 0.5
        value: Any = None
        out: Any = state
        if kind == "write":
            written += 1
            value, out = written, None
            state = written if takes_effect else state
        elif kind == "cas":
            written += 1
            expected = state if rng.random() < 0.5 else rng.randrange(written)
            value, out = (expected, written), state == expected
            state = written if out and takes_effect else state
        status = INDET if indeterminate else OK
        end = math.inf if indeterminate else complete
        history.append(
            Operation(proc, kind, "k", value, None if indeterminate else out, invoke, end, status)
        )
    return history


def corrupt_one_read(rng: random.Random, history: list[Operation]) -> list[Operation]:
    """Make one read (in the middle third) return a value nobody ever wrote."""
    reads = [i for i, o in enumerate(history) if o.kind == "read"]
    i = rng.choice(reads[len(reads) // 3 : 2 * len(reads) // 3])
    out = list(history)
    out[i] = dataclasses.replace(history[i], output=-1)
    return out


@pytest.mark.parametrize(
    ("n_ops", "processes", "indeterminate_rate"),
    [(2000, 5, 0.0), (1000, 10, 0.0), (1000, 5, 0.01)],
)
def test_large_random_histories_ok_and_corrupted_illegal(
    n_ops: int, processes: int, indeterminate_rate: float
) -> None:
    rng = random.Random(n_ops * 31 + processes)
    history = generate_history(rng, n_ops, processes, indeterminate_rate=indeterminate_rate)
    # A generous deterministic step budget: a regression to exponential search fails loudly
    # (unknown) instead of hanging the suite.
    result = check_linearizable(history, max_steps=5_000_000)
    assert result.outcome is Outcome.OK, result.explain()
    assert len(result.partitions[0].linearization) >= sum(o.status is OK for o in history)
    corrupted = corrupt_one_read(rng, history)
    bad = check_linearizable(corrupted, max_steps=5_000_000)
    assert bad.outcome is Outcome.ILLEGAL
    culprit = next(o for o in corrupted if o.output == -1)
    assert culprit in bad.partitions[0].unplaced


def test_many_keys_realistic_harness_shape() -> None:
    rng = random.Random(7)
    history = []
    for k in range(20):
        part = generate_history(rng, 200, 5, indeterminate_rate=0.02)
        history += [dataclasses.replace(o, key=f"key{k}") for o in part]
    result = check_linearizable(history, max_steps=2_000_000)
    assert result.ok
    assert len(result.partitions) == 20


# --- the time budget ---------------------------------------------------------------------------


def _hard_history() -> list[Operation]:
    rng = random.Random(99)
    return corrupt_one_read(rng, generate_history(rng, 1000, 10))


def test_step_budget_returns_unknown_instead_of_hanging() -> None:
    result = check_linearizable(_hard_history(), max_steps=5000)
    assert result.outcome is Outcome.UNKNOWN
    assert not result.ok
    assert result.partitions[0].outcome is Outcome.UNKNOWN


def test_time_budget_uses_the_injected_clock() -> None:
    ticks = itertools.count()
    result = check_linearizable(_hard_history(), timeout_s=3, clock=lambda: float(next(ticks)))
    assert result.outcome is Outcome.UNKNOWN
    # Started at 0; gave up at the first reading at or past the deadline.
    assert next(ticks) == 4


def test_budget_is_not_hit_by_an_easy_history() -> None:
    ticks = itertools.count()
    h = [op("write", i, i + 0.5, i) for i in range(100)]
    result = check_linearizable(h, timeout_s=3, clock=lambda: float(next(ticks)))
    assert result.ok


# --- a brute-force oracle ----------------------------------------------------------------------


def brute_force(history: Sequence[Operation], model: RegisterModel) -> bool:
    """Try every subset of indeterminate ops and every real-time-respecting order."""
    live = [o for o in history if o.status is not FAIL]
    definite = [o for o in live if o.status is OK]
    maybe = [o for o in live if o.status is INDET]
    for r in range(len(maybe) + 1):
        for extra in itertools.combinations(maybe, r):
            for order in itertools.permutations(definite + list(extra)):
                if _respects_real_time(order) and _legal(order, model):
                    return True
    return False


def _respects_real_time(order: Sequence[Operation]) -> bool:
    # a must precede b when a completed strictly before b was invoked.
    return all(
        not (later.complete_time < earlier.invoke_time)
        for i, earlier in enumerate(order)
        for later in order[i + 1 :]
    )


def _legal(order: Sequence[Operation], model: RegisterModel) -> bool:
    state: Hashable = model.init()
    for o in order:
        ok, state = model.step(state, o)
        if not ok:
            return False
    return True


values = st.sampled_from([None, 0, 1])


@st.composite
def small_histories(draw: st.DrawFn) -> list[Operation]:
    ops: list[Operation] = []
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, 8))
        end: float = start + draw(st.integers(0, 4))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        status = draw(st.sampled_from([OK, OK, OK, INDET, FAIL]))
        arg: Any = None
        out: Any = None
        if kind == "read":
            out = draw(values)
        elif kind == "write":
            arg = draw(values)
        else:
            arg, out = (draw(values), draw(values)), draw(st.booleans())
        if status is INDET:
            end, out = math.inf, None
        ops.append(Operation(len(ops), kind, "k", arg, out, start, end, status))
    return ops


@settings(max_examples=300)
@given(small_histories())
def test_agrees_with_brute_force(history: list[Operation]) -> None:
    model = RegisterModel()
    result = check_linearizable(history, model)
    assert result.ok == brute_force(history, model)
    if result.ok:
        order = result.partitions[0].linearization
        assert _respects_real_time(order)
        assert _legal(order, model)
        assert {id(o) for o in history if o.status is OK} <= {id(o) for o in order}
