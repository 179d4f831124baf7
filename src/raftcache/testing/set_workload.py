"""The set workload: add unique elements (one key each, alone or in a batch), read them all.

Rule: the set is every key under one prefix; adding element ``e`` writes key
``<prefix><e>``, singly (``PUT``) or several at once (``POST /v1/batch``, one log entry), each
with a session ticket and a single attempt. Reading the set lists the keys under the prefix.
Elements are never removed, so a listing split into pages still holds every key present before
its first page and only keys present by its last.

Checks: at the end — after the whole cluster was killed and restarted — every acknowledged
add is present and nothing is present that was never (or certainly not) added
(``check_set``); and every read during the run holds every add acknowledged before the read
began, and no element whose add began after the read ended (a stale or prescient read).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections.abc import Awaitable, Sequence

from raftcache.testing.checkers import check_set
from raftcache.testing.history import HistoryRecorder, Operation, OpStatus
from raftcache.testing.httpops import Reply, Session
from raftcache.testing.workloads import Finding, WorkloadEnv, WorkloadVerdict, retry_until_ok

__all__ = ["SetWorkload", "check_set_reads"]


class SetWorkload:
    """A grow-only set under one key prefix; see the module docstring.

    Args:
        env: Shared workload environment.
        batch_ratio: Fraction of adds made as a batch.
        max_batch: Most elements in one batch.
        read_every: Worker 0 reads the whole set every this many of its operations.
    """

    name = "set"

    def __init__(
        self,
        env: WorkloadEnv,
        *,
        batch_ratio: float = 0.3,
        max_batch: int = 4,
        read_every: int = 40,
    ) -> None:
        self.env = env
        self.recorder = HistoryRecorder(env.clock)
        self.prefix = f"{env.run_id}-s-"
        self._batch_ratio = batch_ratio
        self._max_batch = max_batch
        self._read_every = read_every
        self._elements = itertools.count()
        self._processes = itertools.count()
        self._lanes = itertools.count()
        self.final: frozenset[int] | None = None

    def key_of(self, element: int) -> str:
        return f"{self.prefix}{element:09d}"

    def _element_of(self, key: str) -> int | None:
        suffix = key[len(self.prefix) :]
        return int(suffix) if key.startswith(self.prefix) and suffix.isdigit() else None

    async def worker(self, index: int, stop: asyncio.Event) -> None:
        rng = self.env.rng
        process, lane, seq = next(self._processes), f"{self.env.run_id}-set{index}-0", 0
        for done in itertools.count():
            if stop.is_set():
                return
            if index == 0 and done % self._read_every == self._read_every - 1:
                await self._read(process)
            else:
                seq += 1
                size = rng.randint(2, self._max_batch) if rng.random() < self._batch_ratio else 1
                status = await self._add(process, size, Session(lane, seq))
                if status is OpStatus.INDETERMINATE:
                    process, seq = next(self._processes), 0
                    lane = f"{self.env.run_id}-set{index}-{next(self._lanes) + 1}"
            await self.env.think()

    async def _add(self, process: int, size: int, session: Session) -> OpStatus:
        elements = [next(self._elements) for _ in range(size)]
        ops = [self.recorder.invoke(process, "add", self.prefix, e) for e in elements]
        url = self.env.pick_url()
        if size == 1:
            reply = await self.env.api.put(url, self.key_of(elements[0]), "1", session=session)
        else:
            items = [(self.key_of(e), "1") for e in elements]
            reply = await self.env.api.batch_set(url, items, session=session)
        for op in ops:
            self.recorder.complete(op, reply.status, None, reply.error)
        return reply.status

    async def _read(self, process: int) -> Reply:
        op = self.recorder.invoke(process, "read", self.prefix, None)
        reply = await self.env.api.list_keys(self.env.pick_url(), self.prefix)
        if reply.ok:
            self.recorder.ok(op, self._elements_in(reply.value))
        else:
            self.recorder.fail(op, reply.error)
        return reply

    def _elements_in(self, keys: Sequence[str]) -> frozenset[int]:
        found = (self._element_of(k) for k in keys)
        return frozenset(e for e in found if e is not None)

    async def finish(self, deadline_s: float) -> None:
        """List the whole set once more (linearizable)."""
        env = self.env

        def attempt() -> Awaitable[Reply]:
            return env.api.list_keys(env.pick_url(), self.prefix)

        reply = await retry_until_ok(attempt, env.clock, deadline_s)
        self.final = self._elements_in(reply.value) if reply.ok else None

    def check(self, budget_s: float) -> WorkloadVerdict:
        history = self.recorder.history()
        verdict = WorkloadVerdict.of(self.name, history)
        verdict.findings += check_set_reads(self.name, history)
        if self.final is None:
            verdict.findings.append(Finding(self.name, "set", "unknown", "no final read"))
            return verdict
        result = check_set(history, self.final)
        verdict.notes.append(
            f"{len(self.final)} elements at the end, {len(result.recovered)} of them from "
            f"undecided adds"
        )
        if result.lost:
            lost = sorted(e for e in result.lost if isinstance(e, int))
            detail = f"{len(lost)} acknowledged adds lost: {lost[:20]}"
            verdict.findings.append(Finding(self.name, "set", "violation", detail))
        if result.unexpected:
            odd = sorted(e for e in result.unexpected if isinstance(e, int))
            detail = f"{len(odd)} elements present but never (or certainly not) added: {odd[:20]}"
            verdict.findings.append(Finding(self.name, "set", "violation", detail))
        return verdict


def check_set_reads(workload: str, history: Sequence[Operation]) -> list[Finding]:
    """Every ok ``read`` of a grow-only set holds every add acknowledged before it began, and
    nothing whose add began after it ended (each read checked against its own interval).

    One finding per kind of anomaly, naming the elements, how many reads showed them and the
    first such read — a single misreported add would otherwise repeat in every later read.
    """
    adds = [op for op in history if op.kind == "add"]
    acked = sorted((op.complete_time, op.input) for op in adds if op.status is OpStatus.OK)
    acked_times = [t for t, _ in acked]
    began = {op.input: op.invoke_time for op in adds if op.status is not OpStatus.FAIL}
    missing: dict[int, list[Operation]] = {}
    early: dict[int, list[Operation]] = {}
    for read in (op for op in history if op.kind == "read" and op.status is OpStatus.OK):
        seen: frozenset[int] = read.output
        # Acknowledged strictly before the read was invoked (touching intervals are concurrent).
        for _, element in acked[: bisect.bisect_left(acked_times, read.invoke_time)]:
            if element not in seen:
                missing.setdefault(element, []).append(read)
        for element in seen:
            if began.get(element, float("inf")) > read.complete_time:
                early.setdefault(element, []).append(read)
    found: list[Finding] = []
    for anomaly, what in (
        (missing, "acknowledged adds missing"),
        (early, "elements never added in time"),
    ):
        if anomaly:
            reads = {id(r): r for rs in anomaly.values() for r in rs}
            first = min(reads.values(), key=lambda r: r.invoke_time)
            detail = (
                f"{what} in {len(reads)} reads: {sorted(anomaly)[:20]}; first read "
                f"[{first.invoke_time:g}, {first.complete_time:g}] p{first.process}"
            )
            found.append(Finding(workload, "set-read", "violation", detail))
    return found
