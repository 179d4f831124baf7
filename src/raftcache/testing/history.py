"""Operation histories for linearizability checking.

Rule: a history records what clients *observed*, never what the system says it did. Each
operation has an invocation time and a completion time on one clock, and a status:

- ``ok``: it took effect exactly once, somewhere between invocation and completion, and
  ``output`` is what it returned;
- ``fail``: it certainly did not take effect (a 503 before anything was appended, a 412 is *not*
  a failure but an ``ok`` compare-and-set that returned ``False``);
- ``indeterminate``: the client gave up (timeout, 504, connection reset). It may have taken effect
  at any moment after its invocation, or never; its completion time is ``+inf``.

The recorder takes its clock as an argument (determinism is injected: a replayed run gives the
same history) and guards its state with a lock held only for O(1) work, so threads and asyncio
tasks can share one recorder without blocking an event loop.

Histories round-trip through JSON so that a failing run can be saved and re-checked offline.
Values may be ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``tuple``, ``list`` and
``dict`` with string keys; bytes, tuples and dicts are tagged (``{"$bytes": base64}``,
``{"$tuple": [...]}``, ``{"$dict": {...}}``) so they come back with the same type, which matters
because models compare outputs with ``==`` and store states in hash tables.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "HistoryRecorder",
    "OpStatus",
    "Operation",
    "PendingOp",
    "history_from_json",
    "history_to_json",
    "load_history",
    "save_history",
]

_FORMAT_VERSION = 1


class OpStatus(enum.StrEnum):
    """What a client knows about the effect of one operation."""

    OK = "ok"
    FAIL = "fail"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation as the client observed it.

    Attributes:
        process: The logical client that issued it. A process runs one operation at a time;
            after an indeterminate operation a harness should switch to a fresh process id,
            since the old one may still be "in flight" forever.
        kind: The operation name the model understands (``"read"``, ``"write"``, ``"cas"``...).
        key: The object it touched; the checker partitions a history by key.
        input: The argument (a written value, a ``(expected, new)`` pair for cas...).
        output: What it returned (``None`` when indeterminate or failed).
        invoke_time: When the client sent it.
        complete_time: When the client got the answer; ``math.inf`` when indeterminate.
        status: See ``OpStatus``.
        error: Optional human-readable reason for a fail or indeterminate status.
    """

    process: int | str
    kind: str
    key: Hashable
    input: Any
    output: Any
    invoke_time: float
    complete_time: float
    status: OpStatus
    error: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Assert on the write path: a malformed operation would make the checker's verdict wrong
        # rather than crash it, which is far worse.
        if self.status is OpStatus.INDETERMINATE:
            if not math.isinf(self.complete_time):
                raise ValueError("an indeterminate operation completes at +inf")
        elif not self.complete_time >= self.invoke_time:
            raise ValueError(
                f"operation completes ({self.complete_time}) before it is invoked "
                f"({self.invoke_time})"
            )

    def describe(self) -> str:
        """A one-line human-readable description, for failure reports."""
        end = "inf" if math.isinf(self.complete_time) else f"{self.complete_time:g}"
        result = "" if self.status is not OpStatus.OK else f" -> {self.output!r}"
        return (
            f"[{self.invoke_time:g}, {end}] p{self.process} {self.kind}"
            f"({self.key!r}, {self.input!r}){result} {self.status.value}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (see the module docstring for the value encoding)."""
        return {
            "process": self.process,
            "kind": self.kind,
            "key": _encode_value(self.key),
            "input": _encode_value(self.input),
            "output": _encode_value(self.output),
            "invoke_time": self.invoke_time,
            # JSON has no infinity: ``null`` stands for "never completed".
            "complete_time": None if math.isinf(self.complete_time) else self.complete_time,
            "status": self.status.value,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Operation:
        """Inverse of ``to_dict``."""
        complete = data["complete_time"]
        return cls(
            process=data["process"],
            kind=data["kind"],
            key=_decode_value(data["key"]),
            input=_decode_value(data["input"]),
            output=_decode_value(data["output"]),
            invoke_time=float(data["invoke_time"]),
            complete_time=math.inf if complete is None else float(complete),
            status=OpStatus(data["status"]),
            error=data.get("error"),
        )


@dataclass(slots=True)
class PendingOp:
    """An invoked operation awaiting its completion; returned by ``HistoryRecorder.invoke``.

    Inside ``HistoryRecorder.record`` set ``output`` (and optionally call ``fail`` or
    ``indeterminate``) before the block ends.
    """

    process: int | str
    kind: str
    key: Hashable
    input: Any
    invoke_time: float
    output: Any = None
    outcome: OpStatus | None = None
    error: str | None = None

    def fail(self, error: str | None = None) -> None:
        """Mark the operation as certainly not having taken effect."""
        self.outcome = OpStatus.FAIL
        self.error = error

    def indeterminate(self, error: str | None = None) -> None:
        """Mark the operation's effect as unknown."""
        self.outcome = OpStatus.INDETERMINATE
        self.error = error


class HistoryRecorder:
    """Collects operations from many threads or tasks, in completion order.

    Args:
        clock: Returns the current time in seconds. All processes must share it, since
            real-time order between operations is what linearizability checks.
        classify: Maps an exception escaping ``record`` to a status. The default treats every
            exception as indeterminate, the only safe assumption without knowing the error.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        classify: Callable[[BaseException], OpStatus] | None = None,
    ) -> None:
        self._clock = clock
        self._classify = classify or (lambda _exc: OpStatus.INDETERMINATE)
        self._lock = threading.Lock()
        self._done: list[Operation] = []
        self._pending: dict[int, PendingOp] = {}

    def invoke(self, process: int | str, kind: str, key: Hashable, input: Any) -> PendingOp:
        """Record the invocation of an operation; complete it with ``complete``."""
        pending = PendingOp(process, kind, key, input, self._clock())
        with self._lock:
            self._pending[id(pending)] = pending
        return pending

    def complete(
        self, pending: PendingOp, status: OpStatus, output: Any = None, error: str | None = None
    ) -> Operation:
        """Record the completion of ``pending`` and return the finished operation."""
        # Read the clock before taking the lock: the lock must never be held across a call
        # whose cost we do not control.
        now = self._clock()
        indeterminate = status is OpStatus.INDETERMINATE
        op = Operation(
            process=pending.process,
            kind=pending.kind,
            key=pending.key,
            input=pending.input,
            output=output if status is OpStatus.OK else None,
            invoke_time=pending.invoke_time,
            complete_time=math.inf if indeterminate else now,
            status=status,
            error=error,
        )
        with self._lock:
            if self._pending.pop(id(pending), None) is None:
                raise ValueError("operation completed twice or never invoked here")
            self._done.append(op)
        return op

    def ok(self, pending: PendingOp, output: Any = None) -> Operation:
        """Shorthand for ``complete(pending, OpStatus.OK, output)``."""
        return self.complete(pending, OpStatus.OK, output)

    def fail(self, pending: PendingOp, error: str | None = None) -> Operation:
        """Shorthand for ``complete(pending, OpStatus.FAIL, error=error)``."""
        return self.complete(pending, OpStatus.FAIL, error=error)

    def indeterminate(self, pending: PendingOp, error: str | None = None) -> Operation:
        """Shorthand for ``complete(pending, OpStatus.INDETERMINATE, error=error)``."""
        return self.complete(pending, OpStatus.INDETERMINATE, error=error)

    @contextmanager
    def record(
        self, process: int | str, kind: str, key: Hashable, input: Any = None
    ) -> Iterator[PendingOp]:
        """Record one operation around a block (usable in sync and async code alike).

        The block sets ``op.output``; leaving it normally records ``ok`` unless the block called
        ``op.fail()`` or ``op.indeterminate()``. An exception is classified, recorded and
        re-raised. Example::

            with recorder.record(p, "read", key) as op:
                op.output = await client.get(key)
        """
        pending = self.invoke(process, kind, key, input)
        try:
            yield pending
        except BaseException as exc:
            # An explicit verdict from the block wins over the generic classification.
            status = pending.outcome or self._classify(exc)
            self.complete(pending, status, error=pending.error or repr(exc))
            raise
        self.complete(pending, pending.outcome or OpStatus.OK, pending.output, pending.error)

    def history(self) -> list[Operation]:
        """Every operation so far, still-pending ones included as indeterminate.

        A pending operation at the end of a run is exactly an operation whose outcome the client
        never learned, so reporting it as indeterminate is the honest answer.
        """
        with self._lock:
            done = list(self._done)
            pending = list(self._pending.values())
        unfinished = [
            Operation(
                p.process,
                p.kind,
                p.key,
                p.input,
                None,
                p.invoke_time,
                math.inf,
                OpStatus.INDETERMINATE,
                "still pending when the history was taken",
            )
            for p in pending
        ]
        return sorted(done + unfinished, key=lambda op: op.invoke_time)

    def __len__(self) -> int:
        with self._lock:
            return len(self._done) + len(self._pending)


def history_to_json(ops: Iterable[Operation], *, indent: int | None = None) -> str:
    """Serialise a history (see the module docstring for the value encoding)."""
    doc = {"format": _FORMAT_VERSION, "operations": [op.to_dict() for op in ops]}
    return json.dumps(doc, indent=indent, allow_nan=False)


def history_from_json(text: str) -> list[Operation]:
    """Inverse of ``history_to_json``."""
    doc = json.loads(text)
    if doc.get("format") != _FORMAT_VERSION:
        raise ValueError(f"unsupported history format {doc.get('format')!r}")
    return [Operation.from_dict(item) for item in doc["operations"]]


def save_history(path: str | Path, ops: Iterable[Operation]) -> None:
    """Write a history to ``path`` as indented JSON."""
    Path(path).write_text(history_to_json(ops, indent=1) + "\n", encoding="utf-8")


def load_history(path: str | Path) -> list[Operation]:
    """Read a history written by ``save_history``."""
    return history_from_json(Path(path).read_text(encoding="utf-8"))


def _encode_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"$tuple": [_encode_value(v) for v in value]}
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("only dicts with string keys can be serialised")
        return {"$dict": {k: _encode_value(v) for k, v in value.items()}}
    if isinstance(value, frozenset):
        # Sorted by encoded form so that equal sets serialise identically.
        items = sorted((_encode_value(v) for v in value), key=lambda v: json.dumps(v))
        return {"$frozenset": items}
    raise TypeError(f"cannot serialise a {type(value).__name__} in a history")


def _decode_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError(f"malformed tagged value {value!r}")
    ((tag, inner),) = value.items()
    if tag == "$bytes":
        return base64.b64decode(inner, validate=True)
    if tag == "$tuple":
        return tuple(_decode_value(v) for v in inner)
    if tag == "$dict":
        return {k: _decode_value(v) for k, v in inner.items()}
    if tag == "$frozenset":
        return frozenset(_decode_value(v) for v in inner)
    raise ValueError(f"unknown value tag {tag!r}")
