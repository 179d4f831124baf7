"""Operation histories: validation, the recorder (threads and asyncio), JSON round trips."""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
from pathlib import Path

import pytest

from raftcache.testing import (
    HistoryRecorder,
    Operation,
    OpStatus,
    history_from_json,
    history_to_json,
    load_history,
    save_history,
)


class FakeClock:
    """A clock that advances one second per reading, so every timestamp is predictable."""

    def __init__(self) -> None:
        self._ticks = itertools.count()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return float(next(self._ticks))


def test_operation_rejects_impossible_times() -> None:
    with pytest.raises(ValueError, match="before it is invoked"):
        Operation(0, "read", "k", None, 1, 5.0, 4.0, OpStatus.OK)
    with pytest.raises(ValueError, match=r"\+inf"):
        Operation(0, "write", "k", 1, None, 5.0, 6.0, OpStatus.INDETERMINATE)


def test_recorder_records_invoke_and_complete_times() -> None:
    rec = HistoryRecorder(FakeClock())
    a = rec.invoke(1, "write", "k", b"v")  # t=0
    b = rec.invoke(2, "read", "k", None)  # t=1
    rec.ok(b, b"v")  # t=2
    rec.indeterminate(a, "timeout")  # t=3, recorded as +inf
    c = rec.invoke(3, "write", "k", b"w")  # t=4
    rec.fail(c, "503")  # t=5
    ops = rec.history()
    assert [(o.process, o.invoke_time, o.complete_time, o.status) for o in ops] == [
        (1, 0.0, math.inf, OpStatus.INDETERMINATE),
        (2, 1.0, 2.0, OpStatus.OK),
        (3, 4.0, 5.0, OpStatus.FAIL),
    ]
    assert ops[1].output == b"v"
    assert ops[0].error == "timeout"


def test_pending_operations_are_reported_indeterminate() -> None:
    rec = HistoryRecorder(FakeClock())
    rec.invoke(1, "write", "k", 1)
    (op,) = rec.history()
    assert op.status is OpStatus.INDETERMINATE
    assert op.complete_time == math.inf
    assert len(rec) == 1


def test_completing_twice_is_an_error() -> None:
    rec = HistoryRecorder(FakeClock())
    p = rec.invoke(1, "read", "k", None)
    rec.ok(p, 1)
    with pytest.raises(ValueError, match="completed twice"):
        rec.ok(p, 1)


def test_record_context_manager_ok_fail_and_exceptions() -> None:
    def classify(exc: BaseException) -> OpStatus:
        # Refused means the request never left: certainly not applied.
        if isinstance(exc, ConnectionRefusedError):
            return OpStatus.FAIL
        return OpStatus.INDETERMINATE

    rec = HistoryRecorder(FakeClock(), classify=classify)
    with rec.record(1, "read", "k") as op:
        op.output = b"x"
    with rec.record(2, "write", "k", b"y") as op:
        op.fail("precondition")
    with pytest.raises(TimeoutError), rec.record(3, "write", "k", b"z"):
        raise TimeoutError
    with pytest.raises(ConnectionRefusedError), rec.record(4, "write", "k", b"w"):
        raise ConnectionRefusedError

    def explicit_verdict_then_raise() -> None:
        with rec.record(5, "write", "k", b"q") as op:
            op.fail("the server said 503 before the client timed out")
            raise TimeoutError

    with pytest.raises(TimeoutError):
        explicit_verdict_then_raise()
    statuses = {o.process: (o.status, o.output) for o in rec.history()}
    assert statuses == {
        1: (OpStatus.OK, b"x"),
        2: (OpStatus.FAIL, None),
        3: (OpStatus.INDETERMINATE, None),
        4: (OpStatus.FAIL, None),
        5: (OpStatus.FAIL, None),
    }


def test_recorder_is_thread_safe() -> None:
    rec = HistoryRecorder(FakeClock())

    def worker(p: int) -> None:
        for i in range(200):
            with rec.record(p, "write", "k", i) as op:
                op.output = None

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = rec.history()
    assert len(ops) == 1600
    # Every clock reading is used exactly once: no update was lost to a race.
    stamps = sorted([o.invoke_time for o in ops] + [o.complete_time for o in ops])
    assert stamps == [float(i) for i in range(3200)]


async def test_recorder_in_asyncio_tasks() -> None:
    loop = asyncio.get_running_loop()
    rec = HistoryRecorder(loop.time)

    async def client(p: int) -> None:
        for i in range(5):
            with rec.record(p, "write", "k", i):
                await asyncio.sleep(0)

    await asyncio.gather(*(client(p) for p in range(4)))
    ops = rec.history()
    assert len(ops) == 20
    assert all(o.status is OpStatus.OK and o.complete_time >= o.invoke_time for o in ops)


def _sample_history() -> list[Operation]:
    return [
        Operation(1, "write", "k", b"\x00\xffbytes", None, 0.5, 1.25, OpStatus.OK),
        Operation("p2", "cas", "k", (b"a", b"b"), True, 1.0, 2.0, OpStatus.OK),
        Operation(
            3,
            "write",
            "k",
            {"nested": [1, (2, None)]},
            None,
            1.5,
            math.inf,
            OpStatus.INDETERMINATE,
            "timeout",
        ),
        Operation(4, "read", ("tuple", "key"), None, frozenset({1, 2}), 2.0, 3.0, OpStatus.OK),
        Operation(5, "incr", "c", 3, 7.5, 2.0, 2.0, OpStatus.FAIL, "503"),
    ]


def test_json_round_trip_preserves_types() -> None:
    ops = _sample_history()
    text = history_to_json(ops)
    back = history_from_json(text)
    assert back == ops
    assert isinstance(back[1].input, tuple)
    assert isinstance(back[0].input, bytes)
    assert back[2].complete_time == math.inf
    assert back[2].error == "timeout"
    assert "Infinity" not in text  # strict JSON


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    save_history(path, _sample_history())
    assert load_history(path) == _sample_history()


def test_json_rejects_unknown_format_and_unserialisable_values() -> None:
    with pytest.raises(ValueError, match="format"):
        history_from_json('{"format": 99, "operations": []}')
    with pytest.raises(TypeError, match="cannot serialise"):
        history_to_json([Operation(1, "write", "k", object(), None, 0, 1, OpStatus.OK)])
    with pytest.raises(ValueError, match="unknown value tag"):
        history_from_json(
            '{"format": 1, "operations": [{"process": 1, "kind": "read", "key": "k",'
            ' "input": {"$nope": 1}, "output": null, "invoke_time": 0, "complete_time": 1,'
            ' "status": "ok"}]}'
        )


def test_describe_is_readable() -> None:
    ops = _sample_history()
    assert ops[1].describe() == "[1, 2] pp2 cas('k', (b'a', b'b')) -> True ok"
    assert ops[2].describe().startswith("[1.5, inf] p3 write(")
