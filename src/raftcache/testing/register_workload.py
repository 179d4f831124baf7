"""The register workload: read / write / compare-and-set on a rotating set of keys.

Rule: every key is an independent register; writes and compare-and-sets write unique values
(``"<process>-<n>"``), so a read names the one write it saw. A compare-and-set goes through
``If-Match`` with a *version*; since every successful write of a key gets its own version (the
log index) and its own value, "current version == v" means "current value == the value written
at v". The workload remembers the newest (version, value) pair it has seen acknowledged per key
and turns the HTTP cas into the model's value-based ``cas(expected, new)``. A version the
harness never saw acknowledged is never used, so this mapping stays exact.

Keys rotate: each key takes ``ops_per_key`` operations (fewer once a handful of them ended
indeterminate), then a fresh key replaces it, keeping every per-key history short enough for
the exhaustive search even when faults leave many operations indeterminate (Jepsen's
"independent" workloads do the same). Reads use the default
linearizable consistency; a fraction use ``lease`` (without clock *jumps* a lease read must be
linearizable too — clock drift inside the bound is no excuse). Besides, ``lease_readers``
workers per node are *pinned* to that node and only send it ``consistency=lease`` reads: every
node, a cut-off or frozen old leader included, gets a steady stream of them, so a stale lease
read is observed when it happens (a pinned reader's worker index is ``workers + k``; see
``pinned_workers``). Likewise ``pinned_writers`` per node only write and compare-and-set through
that node: while general workers wait out their timeouts on a cut-off node, the nodes that
still have a quorum keep committing new values — the values a stale read would miss. The final
read of every key, after the whole cluster was killed and restarted, makes an acknowledged
write that was lost an illegal history.

Writes carry exactly-once session headers by default, as the project's clients send them: a
request resent by some layer below (see ``httpops`` on aiohttp's resends) is then answered from
the session table instead of being applied again or failing its precondition the second time.
With ``sessions=False`` the workload shows what a client without sessions would see.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from typing import Any

from raftcache.testing.history import HistoryRecorder, OpStatus
from raftcache.testing.httpops import Reply, Session
from raftcache.testing.models import RegisterModel
from raftcache.testing.workloads import (
    Finding,
    WorkloadEnv,
    WorkloadVerdict,
    check_keys,
    findings_from_linearizability,
    retry_until_ok,
)

__all__ = ["RegisterWorkload"]


class RegisterWorkload:
    """Registers per key; see the module docstring.

    Args:
        env: Shared workload environment.
        active_keys: How many keys are in use at any time.
        ops_per_key: Operations a key takes before it is retired.
        read_ratio: Fraction of reads; the rest is split between writes and cas.
        cas_ratio: Fraction of cas among the non-reads.
        lease_ratio: Fraction of reads sent with ``consistency=lease``.
        sessions: Send writes with exactly-once session headers (single attempt each, so
            they change nothing in the history unless something resends a request).
        lease_strict: Lease reads must be linearizable. Under clock faults they may not be
            (they trust the clock by design): then the strict check leaves them out, and a
            second check reports their anomalies as notes.
        max_undecided_per_key: A key is retired once this many of its operations ended
            indeterminate, however few it took (keeps each search small).
        workers: How many general workers the harness starts (indices ``0..workers-1``).
        lease_readers: Pinned lease readers per node (indices from ``workers`` on).
        pinned_writers: Pinned writers per node (indices after the lease readers).
    """

    name = "register"

    def __init__(
        self,
        env: WorkloadEnv,
        *,
        active_keys: int = 3,
        ops_per_key: int = 150,
        read_ratio: float = 0.5,
        cas_ratio: float = 0.4,
        lease_ratio: float = 0.2,
        sessions: bool = True,
        lease_strict: bool = True,
        max_undecided_per_key: int = 6,
        workers: int = 6,
        lease_readers: int = 0,
        pinned_writers: int = 0,
    ) -> None:
        self.env = env
        self._workers = workers
        self._lease_readers = lease_readers
        self._pinned_writers = pinned_writers
        self.recorder = HistoryRecorder(env.clock)
        self._ops_per_key = ops_per_key
        self._read_ratio = read_ratio
        self._cas_ratio = cas_ratio
        self._lease_ratio = lease_ratio
        self._sessions = sessions
        self._lease_strict = lease_strict
        self._key_ids = itertools.count()
        self._values = itertools.count()
        self._processes = itertools.count()
        self.keys: list[str] = []
        self._active: dict[str, int] = {}
        self._undecided: dict[str, int] = {}
        self._max_undecided = max_undecided_per_key
        for _ in range(active_keys):
            self._add_key()
        #: Newest acknowledged (version, value) per key: what a cas may name.
        self._known: dict[str, tuple[int, str]] = {}

    def _add_key(self) -> None:
        key = f"{self.env.run_id}-r{next(self._key_ids)}"
        self.keys.append(key)
        self._active[key] = 0

    def _pick_key(self) -> str:
        key = self.env.rng.choice(sorted(self._active))
        self._active[key] += 1
        if self._active[key] >= self._ops_per_key:
            self._retire(key)
        return key

    def _retire(self, key: str) -> None:
        if self._active.pop(key, None) is not None:
            self._add_key()

    def _count_indeterminate(self, key: str) -> None:
        # Each undecided write may be placed anywhere after its invocation or nowhere, which
        # multiplies the search; a key that collected a few is retired early.
        self._undecided[key] = self._undecided.get(key, 0) + 1
        if self._undecided[key] >= self._max_undecided:
            self._retire(key)

    def _learn(self, key: str, version: int | None, value: str | None) -> None:
        if version is None or value is None:
            return
        if key not in self._known or self._known[key][0] < version:
            self._known[key] = (version, value)

    def _ticket(self, lane: list[Any]) -> Session | None:
        """The next session ticket on ``lane`` ([client id, last seq]), or None without
        sessions."""
        if not self._sessions:
            return None
        lane[1] += 1
        return Session(lane[0], lane[1])

    @property
    def pinned_workers(self) -> int:
        """How many pinned workers (lease readers, then writers) the harness must start after
        the general ones."""
        return (self._lease_readers + self._pinned_writers) * len(self.env.urls)

    async def worker(self, index: int, stop: asyncio.Event) -> None:
        url: str | None = None
        if index >= self._workers:
            urls = list(self.env.urls)
            slot, node = divmod(index - self._workers, len(urls))
            url = urls[node]
            if slot < self._lease_readers:
                await self._lease_reader(url, stop)
                return
        process = next(self._processes)
        lane: list[Any] = [f"{self.env.run_id}-reg{process}", 0]
        rng = self.env.rng
        while not stop.is_set():
            key = self._pick_key()
            roll = rng.random()
            if url is None and roll < self._read_ratio:
                status = await self._read(process, key)
            elif rng.random() < self._cas_ratio:
                status = await self._cas(process, key, self._ticket(lane), url)
            else:
                status = await self._write(process, key, self._ticket(lane), url)
            if status is OpStatus.INDETERMINATE:
                self._count_indeterminate(key)
                # The old operation may still take effect at any time: a process runs one
                # operation at a time, so later ones belong to a new process — and a new
                # session lane, where a new seq cannot be mistaken for the old write.
                process = next(self._processes)
                lane = [f"{self.env.run_id}-reg{process}", 0]
            await self.env.think()

    async def _lease_reader(self, url: str, stop: asyncio.Event) -> None:
        """Lease reads of the active keys from one node, one at a time, until stopped (a read
        that fails or times out records nothing the checker uses)."""
        process = next(self._processes)
        while not stop.is_set():
            await self._read(process, self._pick_key(), url=url, lease=True)
            await self.env.think()

    async def _read(
        self, process: int, key: str, *, url: str | None = None, lease: bool | None = None
    ) -> OpStatus:
        if lease is None:
            lease = self.env.rng.random() < self._lease_ratio
        consistency = "lease" if lease else None
        op = self.recorder.invoke(process, "read", key, consistency)
        reply = await self.env.api.get(url or self.env.pick_url(), key, consistency=consistency)
        if reply.ok:
            value, version = reply.value
            self._learn(key, version, value)
            self.recorder.ok(op, value)
        else:
            self.recorder.fail(op, reply.error)
        return OpStatus.OK if reply.ok else OpStatus.FAIL

    async def _write(
        self, process: int, key: str, session: Session | None, url: str | None = None
    ) -> OpStatus:
        value = f"{process}-{next(self._values)}"
        op = self.recorder.invoke(process, "write", key, value)
        reply = await self.env.api.put(url or self.env.pick_url(), key, value, session=session)
        if reply.ok:
            self._learn(key, reply.value, value)
        self.recorder.complete(op, reply.status, reply.value, reply.error)
        return reply.status

    async def _cas(
        self, process: int, key: str, session: Session | None, url: str | None = None
    ) -> OpStatus:
        new = f"{process}-{next(self._values)}"
        version, expected = self._known.get(key, (0, None))
        op = self.recorder.invoke(process, "cas", key, (expected, new))
        url = url or self.env.pick_url()
        reply = await self.env.api.put(url, key, new, if_match=version, session=session)
        swapped = reply.ok and reply.value is not False
        if swapped:
            self._learn(key, reply.value, new)
        self.recorder.complete(op, reply.status, swapped if reply.ok else None, reply.error)
        return reply.status

    async def finish(self, deadline_s: float) -> None:
        """Read every key the run ever used once more (linearizable), recorded like any read."""
        env = self.env
        for key in self.keys:
            op = self.recorder.invoke("final", "read", key, None)

            def attempt(key: str = key) -> Awaitable[Reply]:
                return env.api.get(env.pick_url(), key)

            reply = await retry_until_ok(attempt, env.clock, deadline_s)
            if reply.ok:
                self.recorder.ok(op, reply.value[0])
            else:
                self.recorder.fail(op, reply.error)

    def check(self, budget_s: float) -> WorkloadVerdict:
        history = self.recorder.history()
        verdict = WorkloadVerdict.of(self.name, history)
        strict = history
        if not self._lease_strict:
            strict = [op for op in history if not (op.kind == "read" and op.input == "lease")]
            with_lease = check_keys(history, RegisterModel(), budget_s, self.env.clock)
            for finding in findings_from_linearizability(self.name, with_lease):
                # An anomaly only when the lease reads are counted: allowed, but worth seeing.
                detail = f"lease reads under clock faults: {finding.detail}"
                verdict.findings.append(Finding(self.name, "lease", "note", detail))
        result = check_keys(strict, RegisterModel(), budget_s, self.env.clock)
        verdict.findings += findings_from_linearizability(self.name, result)
        final_reads = [op for op in history if op.process == "final"]
        missing = [op.key for op in final_reads if op.status is not OpStatus.OK]
        verdict.notes.append(f"{len(self.keys)} keys, linearizability {result.outcome.value}")
        if missing:
            verdict.notes.append(f"final read failed for {len(missing)} keys: {missing[:5]}")
        return verdict
