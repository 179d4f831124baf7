"""Sequential specifications for the linearizability checker.

Rule: a model is a pure function of (state, operation) — no clock, no randomness, no I/O — and
its states are hashable values, since the checker memoises (placed set, state) pairs. A model
judges ``ok`` operations by their recorded output and must accept an indeterminate operation
whatever its (missing) output: the checker decides whether it took effect by placing it or not.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, TypeVar

from raftcache.testing.history import Operation, OpStatus

__all__ = ["CounterModel", "Model", "RegisterModel"]

S = TypeVar("S", bound=Hashable)


class Model(Protocol[S]):
    """A sequential specification.

    ``init`` returns the initial state; ``step`` says whether ``op`` may be applied in ``state``
    with the output it recorded, and the state after it. States must be hashable and compare by
    value (they key the memo). ``step`` sees ``op.status``: for an indeterminate operation it
    must accept whatever output was (not) recorded. A model may also define
    ``read_only(op) -> bool``; indeterminate read-only operations carry no information and are
    dropped before the search.
    """

    def init(self) -> S: ...

    def step(self, state: S, op: Operation) -> tuple[bool, S]: ...


class RegisterModel:
    """A register per key: ``read`` / ``write`` / ``cas`` / ``delete``; ``None`` means absent.

    - ``read``: ``output`` is the value read (``None`` when missing).
    - ``write``: ``input`` is the value written.
    - ``cas``: ``input`` is ``(expected, new)``; ``output`` is ``True`` when it swapped,
      ``False`` when the current value was not ``expected`` (succeeds iff current == expected).
    - ``delete``: ``output`` is optionally a bool, whether something was deleted.
    """

    def __init__(self, initial: Hashable = None) -> None:
        self._initial = initial

    def init(self) -> Hashable:
        return self._initial

    def read_only(self, op: Operation) -> bool:
        return op.kind == "read"

    def step(self, state: Hashable, op: Operation) -> tuple[bool, Hashable]:
        definite = op.status is OpStatus.OK
        if op.kind == "read":
            return (not definite or op.output == state), state
        if op.kind == "write":
            return True, op.input
        if op.kind == "cas":
            expected, new = op.input
            if definite and op.output is False:
                return state != expected, state
            # A swap that succeeded, or an indeterminate one that took effect (if it did not,
            # the search leaves it out instead).
            return state == expected, new
        if op.kind == "delete":
            if definite and isinstance(op.output, bool):
                return (state is not None) == op.output, None
            return True, None
        raise ValueError(f"register model has no operation {op.kind!r}")


class CounterModel:
    """An integer counter: ``incr`` (``input`` = amount, ``output`` = new value) and ``read``."""

    def __init__(self, initial: int = 0) -> None:
        self._initial = initial

    def init(self) -> int:
        return self._initial

    def read_only(self, op: Operation) -> bool:
        return op.kind == "read"

    def step(self, state: int, op: Operation) -> tuple[bool, int]:
        definite = op.status is OpStatus.OK
        if op.kind == "read":
            return (not definite or op.output == state), state
        if op.kind == "incr":
            new = state + (1 if op.input is None else int(op.input))
            return (not definite or op.output is None or op.output == new), new
        raise ValueError(f"counter model has no operation {op.kind!r}")
