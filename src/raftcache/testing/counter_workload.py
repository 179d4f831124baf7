"""The counter workload: increments with exactly-once client sessions, and reads.

Rule: every increment carries a session ticket ``(client id, seq)`` and is retried — to any
node, with the *same* ticket — until it is acknowledged or a retry horizon passes, so the
server's session table must answer a retry of an applied increment instead of applying it
again. A lane (client id) carries one increment at a time; after one is given up undecided the
worker moves to a fresh lane, since that increment may still be applied later and a new seq on
its lane could be mistaken for it. The horizon (tens of seconds) is far below the server's
session expiry (600 s), so a session is never forgotten while its retries go on.

Checks, per counter: the final value lies in [acknowledged, acknowledged + indeterminate]; the
values returned by acknowledged increments are pairwise distinct (a duplicate would mean one
increment was applied twice and answered twice); when no increment stayed undecided the range
collapses to final == acknowledged. The history (increments with their returned values, reads)
is also checked for linearizability against a counter model.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable

from raftcache.testing.checkers import check_counter
from raftcache.testing.history import HistoryRecorder, OpStatus
from raftcache.testing.httpops import Reply, Session
from raftcache.testing.models import CounterModel
from raftcache.testing.workloads import (
    Finding,
    WorkloadEnv,
    WorkloadVerdict,
    check_keys,
    findings_from_linearizability,
    retry_until_ok,
)

__all__ = ["CounterWorkload"]


class CounterWorkload:
    """Counters incremented exactly once per acknowledged ``incr``; see the module docstring.

    Args:
        env: Shared workload environment.
        counters: How many counter keys.
        read_ratio: Fraction of reads among operations.
        max_by: Increments are uniform in ``1..max_by``.
        retry_horizon_s: How long one increment is retried before it is left undecided.
    """

    name = "counter"

    def __init__(
        self,
        env: WorkloadEnv,
        *,
        counters: int = 2,
        read_ratio: float = 0.25,
        max_by: int = 3,
        retry_horizon_s: float = 45.0,
    ) -> None:
        self.env = env
        self.recorder = HistoryRecorder(env.clock)
        self.keys = [f"{env.run_id}-c{i}" for i in range(counters)]
        self._read_ratio = read_ratio
        self._max_by = max_by
        self._horizon_s = retry_horizon_s
        self._processes = itertools.count()
        self._lanes = itertools.count()
        self.finals: dict[str, int | None] = {}
        self.retries = 0
        self.resolved_by_retry = 0

    def _new_lane(self) -> str:
        return f"{self.env.run_id}-lane{next(self._lanes)}"

    async def worker(self, index: int, stop: asyncio.Event) -> None:
        rng = self.env.rng
        process, lane, seq = next(self._processes), self._new_lane(), 0
        while not stop.is_set():
            key = rng.choice(self.keys)
            if rng.random() < self._read_ratio:
                await self._read(process, key)
            else:
                seq += 1
                by = rng.randint(1, self._max_by)
                status = await self._incr(process, key, by, Session(lane, seq))
                if status is OpStatus.INDETERMINATE:
                    process, lane, seq = next(self._processes), self._new_lane(), 0
            await self.env.think()

    async def _read(self, process: int, key: str) -> None:
        op = self.recorder.invoke(process, "read", key, None)
        reply = await self.env.api.get(self.env.pick_url(), key)
        if reply.ok:
            self.recorder.ok(op, _as_count(reply.value[0]))
        else:
            self.recorder.fail(op, reply.error)

    async def _incr(self, process: int, key: str, by: int, session: Session) -> OpStatus:
        op = self.recorder.invoke(process, "incr", key, by)
        clock, started, maybe_applied = self.env.clock, self.env.clock(), False
        attempts = 0
        while True:
            attempts += 1
            reply = await self.env.api.incr(self.env.pick_url(), key, by, session=session)
            if reply.ok:
                self.resolved_by_retry += attempts > 1
                self.recorder.ok(op, reply.value)
                return OpStatus.OK
            maybe_applied = maybe_applied or reply.status is OpStatus.INDETERMINATE
            if reply.unexpected and reply.status is OpStatus.FAIL:
                break  # a 4xx: refused as malformed, retrying cannot help
            if clock() - started >= self._horizon_s:
                break
            self.retries += 1
            await asyncio.sleep(self.env.rng.uniform(0.1, 0.4))
        # Every attempt certainly not appended: a failure; otherwise nobody knows.
        status = OpStatus.INDETERMINATE if maybe_applied else OpStatus.FAIL
        self.recorder.complete(op, status, error=f"after {attempts} attempts: {reply.error}")
        return status

    async def finish(self, deadline_s: float) -> None:
        """Read every counter's final value (linearizable)."""
        env = self.env
        for key in self.keys:
            op = self.recorder.invoke("final", "read", key, None)

            def attempt(key: str = key) -> Awaitable[Reply]:
                return env.api.get(env.pick_url(), key)

            reply = await retry_until_ok(attempt, env.clock, deadline_s)
            if reply.ok:
                self.finals[key] = _as_count(reply.value[0])
                self.recorder.ok(op, self.finals[key])
            else:
                self.finals[key] = None
                self.recorder.fail(op, reply.error)

    def check(self, budget_s: float) -> WorkloadVerdict:
        history = self.recorder.history()
        verdict = WorkloadVerdict.of(self.name, history)
        for key in self.keys:
            final = self.finals.get(key)
            ops = [op for op in history if op.key == key]
            if final is None:
                verdict.findings.append(
                    Finding(self.name, "counter", "unknown", f"{key}: no final read")
                )
                continue
            result = check_counter(ops, final, exactly_once=True)
            exact = "exact" if result.lower == result.upper else "range"
            verdict.notes.append(
                f"{key}: final {final} in [{result.lower}, {result.upper}] ({exact}), "
                f"{result.indeterminate} undecided"
            )
            if not result.ok:
                verdict.findings.append(Finding(self.name, "counter", "violation", repr(result)))
        lin = check_keys(history, CounterModel(), budget_s, self.env.clock)
        verdict.findings += findings_from_linearizability(self.name, lin)
        verdict.notes.append(
            f"{self.retries} retries, {self.resolved_by_retry} increments acknowledged after a "
            f"retry; linearizability {lin.outcome.value}"
        )
        return verdict


def _as_count(text: str | None) -> int:
    """A counter's stored value (ASCII decimal); a missing key counts as 0."""
    return 0 if text is None else int(text)
