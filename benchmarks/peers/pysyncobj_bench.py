"""One PySyncObj node for the in-process comparison: a replicated dict of 100-byte values.

Rule: PySyncObj is used as its documentation shows — a ``SyncObj`` subclass with a
``@replicated`` ``set`` method, ``autoTick`` on (its own thread), proposals submitted with a
callback — with a journal file so its log survives a restart as raftcache's does. PySyncObj's
journal is an mmap'd file that it never fsyncs (durable against a process crash, not a power
loss): the report says so next to raftcache's fsync'd and unsynced rows. The driver gets
shorter election timeouts so it (almost always) leads, and proposes from its main thread.
Control protocol: ``benchmarks.suite.inproc_protocol``.

Run: ``python -m benchmarks.peers.pysyncobj_bench --self HOST:PORT --partners H:P,H:P --dir D
[--driver]``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated  # type: ignore[import-untyped]

from benchmarks.suite.inproc_protocol import Tally

KEYS = 10_000
_FAIL_NAMES = {v: k for k, v in vars(FAIL_REASON).items() if k.isupper()}


class Store(SyncObj):  # type: ignore[misc]
    """A replicated dict: ``set(key, value)`` through the Raft log."""

    def __init__(self, self_addr: str, partners: list[str], conf: Any) -> None:
        super().__init__(self_addr, partners, conf)
        self._data: dict[str, bytes] = {}

    @replicated  # type: ignore[untyped-decorator]
    def set(self, key: str, value: bytes) -> None:
        self._data[key] = value


class Driver:
    """Submits ``set`` calls from the main thread; callbacks arrive on PySyncObj's thread."""

    def __init__(self, store: Store, value_size: int) -> None:
        self.store = store
        self.value = b"v" * value_size
        self.counter = 0
        self.lock = threading.Lock()

    def submit(self, tally: Tally, timeout_s: float, done: threading.Event | None) -> None:
        self.counter += 1
        t0 = time.perf_counter()

        def callback(result: Any, error: int) -> None:
            latency = time.perf_counter() - t0
            with self.lock:
                ok = error == FAIL_REASON.SUCCESS
                tally.record(
                    latency, ok, timeout_s, "" if ok else _FAIL_NAMES.get(error, str(error))
                )
            if done is not None:
                done.set()

        self.store.set(f"k{self.counter % KEYS:07d}", self.value, callback=callback)

    def wait_leader(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.store._isLeader():
            time.sleep(0.05)
        return {"leader": bool(self.store._isLeader())}

    def latency(self, duration_s: float, timeout_s: float = 5.0) -> dict[str, Any]:
        tally = Tally()
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            done = threading.Event()
            tally.sent += 1
            self.submit(tally, timeout_s, done)
            done.wait(timeout_s)
        return tally.result(0.0, time.perf_counter() - started)

    def rate(self, rate: float, duration_s: float, timeout_s: float) -> dict[str, Any]:
        tally = Tally()
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration_s:
            for _ in range(int(rate * elapsed) - tally.sent):
                tally.sent += 1
                self.submit(tally, timeout_s, None)
            time.sleep(0.002)
        # Wait for the callbacks of everything sent (bounded: a request late by then is lost).
        deadline = time.perf_counter() + timeout_s + 2
        while time.perf_counter() < deadline:
            with self.lock:
                if tally.failed + tally.late + len(tally.latencies_s) >= tally.sent:
                    break
            time.sleep(0.01)
        with self.lock:
            return tally.result(rate, duration_s)


def _commands(driver: Driver) -> None:
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            return
        if op == "wait_leader":
            answer = driver.wait_leader(float(cmd["timeout"]))
        elif op == "latency":
            answer = driver.latency(float(cmd["duration"]))
        elif op == "rate":
            answer = driver.rate(float(cmd["rate"]), float(cmd["duration"]), float(cmd["timeout"]))
        else:
            answer = {"error": f"unknown op {op!r}"}
        answer["role"] = "leader" if driver.store._isLeader() else "not leader"
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--self", dest="self_addr", required=True)
    parser.add_argument("--partners", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--driver", action="store_true")
    parser.add_argument("--value-size", type=int, default=100)
    args = parser.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    # PySyncObj requires raftMinTimeout > 3 × appendEntriesPeriod (0.1 s).
    timeouts = (0.35, 0.5) if args.driver else (1.0, 2.0)
    conf = SyncObjConf(
        journalFile=str(directory / "journal"),
        fullDumpFile=str(directory / "dump"),
        raftMinTimeout=timeouts[0],
        raftMaxTimeout=timeouts[1],
        dynamicMembershipChange=False,
    )
    store = Store(args.self_addr, args.partners.split(","), conf)
    try:
        if args.driver:
            _commands(Driver(store, args.value_size))
        else:
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            while not stop.is_set():
                stop.wait(1.0)
    finally:
        store.destroy()


if __name__ == "__main__":
    main()
