"""Divergence detection: the leader compares the replicas' digests at one log index.

Rule: digests are only compared at the SAME applied index, and that index is made by the log:
the leader proposes a CHECK entry (``raftcache.cache.commands_v3``) and every replica, applying
it, records its state digest there (``CacheStateMachine.digests``). The leader then asks every
other voter and learner for its digest at that index (``DigestProbe``: the server asks
``GET /raft/digest``, with the cluster token) and judges:

- the digests that answered agree: nothing to do;
- one digest is held by a majority of the replicas (voters and learners): every replica with
  another digest is diverged;
- no digest has a majority: every replica that answered is named (nobody can tell who is
  right).

A replica that also reports *local faults* (``raftcache.cache.alarms``: a corrupted snapshot, a
kept digest not matching its entries) is named with that reason. Each verdict becomes an ALARM
entry, so the alarm is replicated: every node's ``/v1/status`` shows it, and the named replica
refuses reads (``CacheService``). A replica that has not applied the CHECK yet is waited for
(``answer_wait_s``); one that cannot tell (it jumped past the index with a snapshot, or did not
answer) gives no verdict — never guess a divergence.

When: every ``interval_s`` on the leader (0: never on a schedule), and at once when kicked —
a follower that installed a snapshot or found a local fault kicks the leader
(``DigestProbe.kick``), so the check after a snapshot install does not wait for the schedule.
Neither command is proposed before the cluster runs command version 3
(``ensure_command_version``: the rolling-upgrade rule of ``raftcache.cache.formats``). A leader
that finds itself alarmed hands leadership to a replica that is not, when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from raftcache.cache.commands import encode_alarm, encode_check
from raftcache.cache.commands_v3 import DIVERGENCE_VERSION
from raftcache.cache.digest import DigestMark, digest_hex
from raftcache.cache.formats import CommandVersionNotEnabledError
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError
from raftcache.raft.errors import RaftError

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class DigestReport:
    """A replica's answer about the CHECK at ``index``.

    Attributes:
        index: the CHECK entry's index asked about.
        digest: its digest there; None when it has not applied the entry yet or cannot tell.
        applied: its last applied index (``applied >= index`` with no digest: cannot tell).
        faults: its local faults (``raftcache.cache.alarms``).
    """

    index: int
    digest: int | None
    applied: int
    faults: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "digest": None if self.digest is None else digest_hex(self.digest),
            "applied": self.applied,
            "faults": list(self.faults),
        }

    @classmethod
    def from_json(cls, body: object) -> DigestReport:
        if not isinstance(body, dict):
            raise ValueError("a digest report is an object")
        index, digest, applied = body.get("index"), body.get("digest"), body.get("applied")
        faults = body.get("faults", [])
        if type(index) is not int or type(applied) is not int:
            raise ValueError("index and applied must be integers")
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            raise ValueError("faults must be a list of strings")
        if digest is not None and not isinstance(digest, str):
            raise ValueError("digest must be 16 hex digits or null")
        return cls(index, None if digest is None else int(digest, 16), applied, tuple(faults))


def report_of(machine: CacheStateMachine, index: int) -> DigestReport:
    """What this replica answers about the CHECK at ``index``."""
    return DigestReport(
        index, machine.digests.at(index), machine.last_index, tuple(machine.local_faults)
    )


class DigestProbe(Protocol):
    """How the leader reaches the other replicas (the server: HTTP with the cluster token)."""

    async def digest(self, node_id: str, index: int) -> DigestReport | None:
        """``node_id``'s report about the CHECK at ``index`` (None: no answer)."""
        ...

    async def kick(self, node_id: str) -> bool:
        """Ask ``node_id`` (the leader) to check now; True if it heard."""
        ...


class MonitorNode(Protocol):
    """What the monitor needs from ``RaftNode``."""

    @property
    def node_id(self) -> str: ...

    @property
    def role(self) -> Any: ...

    @property
    def leader_id(self) -> str | None: ...

    @property
    def members(self) -> list[str]: ...

    @property
    def learners(self) -> list[str]: ...

    async def propose(self, command: bytes, timeout: float | None = None) -> Any: ...


def verdict(index: int, digests: Mapping[str, int], replicas: int) -> dict[str, str]:
    """The diverged replicas (node id → reason) among ``digests`` taken at ``index``, with
    ``replicas`` voters and learners in all (a majority is more than half of them)."""
    groups = Counter(digests.values())
    if len(groups) <= 1:
        return {}
    best, count = groups.most_common(1)[0]
    if count > replicas // 2:
        return {
            node: f"digest {digest_hex(digest)} at index {index} differs from the "
            f"{count} of {replicas} replicas that agree on {digest_hex(best)}"
            for node, digest in sorted(digests.items())
            if digest != best
        }
    shown = ", ".join(f"{n}={digest_hex(d)}" for n, d in sorted(digests.items()))
    return {
        node: f"no majority of the {replicas} replicas agrees on the digest at index {index} "
        f"({shown})"
        for node in sorted(digests)
    }


@dataclass(slots=True)
class CheckOutcome:
    """One comparison, as ``/v1/status`` shows the last one (``divergence.last_check``)."""

    index: int
    at: float
    digests: dict[str, int] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    diverged: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "at": self.at,
            "digests": {n: digest_hex(d) for n, d in sorted(self.digests.items())},
            "unknown": sorted(self.unknown),
            "diverged": dict(sorted(self.diverged.items())),
        }


class DivergenceMonitor:
    """Runs the digest comparison on the leader (see the module docstring).

    Args:
        node: the local Raft node.
        machine: its state machine.
        clock: wall-clock seconds (stamped into the entries).
        probe: reaches the other replicas (None: this node compares only what it can see,
            which is itself — an embedded single node).
        ensure_command_version: returns once the cluster runs a command version
            (``CacheService``'s); raises ``CommandVersionNotEnabledError`` while a node is older.
        interval_s: seconds between scheduled checks on the leader (0: only when kicked or
            asked with ``check_now``).
        answer_wait_s: how long to wait for a replica that has not applied the CHECK yet.
        poll_s: how often a follower looks for a restored snapshot or a new local fault.
    """

    def __init__(
        self,
        node: MonitorNode,
        machine: CacheStateMachine,
        clock: Callable[[], float],
        *,
        probe: DigestProbe | None = None,
        ensure_command_version: Callable[[int], Awaitable[None]] | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        answer_wait_s: float = 2.0,
        poll_s: float = 0.5,
    ) -> None:
        if interval_s < 0:
            raise ValueError("digest check interval must be >= 0 (0: off)")
        self._node = node
        self._machine = machine
        self._clock = clock
        self.probe = probe
        self._ensure_command_version = ensure_command_version
        self.interval_s = interval_s
        self.answer_wait_s = answer_wait_s
        self.poll_s = poll_s
        self.last_check: CheckOutcome | None = None
        self.checks = 0
        self._kicked = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._seen_restores = machine.snapshot_restores
        self._seen_faults = 0

    @property
    def machine(self) -> CacheStateMachine:
        return self._machine

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cache-divergence")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def kick(self) -> None:
        """Check soon (on the leader); a follower's kick asks its leader."""
        self._kicked.set()

    def _is_leader(self) -> bool:
        return str(getattr(self._node.role, "value", self._node.role)) == "leader"

    async def _run(self) -> None:
        # Loop time, not self._clock (the wall clock stamped into entries, which may step):
        # the schedule bounds asyncio.wait_for, which waits on the loop's clock.
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.interval_s
        while True:
            timeout = self.poll_s
            if self.interval_s > 0:
                timeout = max(0.0, min(timeout, next_check - loop.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), timeout)
            kicked = self._kicked.is_set()
            self._kicked.clear()
            due = self.interval_s > 0 and loop.time() >= next_check
            try:
                if self._is_leader():
                    if kicked or due or self._news():
                        next_check = loop.time() + self.interval_s
                        await self.check_now()
                    await self._step_down_if_alarmed()
                elif kicked or self._news():
                    await self._kick_leader()
            except (RaftError, TimeoutError, CommandVersionNotEnabledError) as exc:
                log.debug("divergence check postponed: %r", exc)
            except Exception as exc:  # keep checking whatever one round did
                log.warning("divergence check failed: %r", exc)
            if due:
                next_check = loop.time() + self.interval_s

    def _news(self) -> bool:
        """A snapshot was restored or a local fault appeared since last asked."""
        machine = self._machine
        news = (
            machine.snapshot_restores != self._seen_restores
            or len(machine.local_faults) > self._seen_faults
        )
        self._seen_restores = machine.snapshot_restores
        self._seen_faults = len(machine.local_faults)
        return news

    async def _kick_leader(self) -> None:
        leader = self._node.leader_id
        if self.probe is None or leader is None or leader == self._node.node_id:
            return
        if not await self.probe.kick(leader):
            self._seen_restores = -1  # not heard: try again at the next poll

    # --- the check ----------------------------------------------------------------------------

    async def check_now(self) -> CheckOutcome | None:
        """Propose a CHECK, compare the digests at its index, and raise the alarms it finds.
        None on a node that is not the leader or a cluster below command version 3."""
        async with self._lock:
            if not self._is_leader():
                return None
            if self._machine.command_version < DIVERGENCE_VERSION:
                if self._ensure_command_version is None:
                    return None
                await self._ensure_command_version(DIVERGENCE_VERSION)
            mark = await self._node.propose(encode_check(now=self._clock()))
            if isinstance(mark, CommandError):
                raise mark.to_exception()
            if not isinstance(mark, DigestMark):
                raise TypeError(f"a CHECK entry applied as {mark!r}")
            outcome = await self._compare(mark)
            self.last_check = outcome
            self.checks += 1
            await self._raise_alarms(outcome.diverged)
            return outcome

    def _replicas(self) -> list[str]:
        node = self._node
        return sorted(set(node.members) | set(node.learners) | {node.node_id})

    async def _compare(self, mark: DigestMark) -> CheckOutcome:
        own = self._node.node_id
        replicas = self._replicas()
        outcome = CheckOutcome(mark.index, self._clock(), {own: mark.digest})
        faults: dict[str, str] = {}
        if self._machine.local_faults:
            faults[own] = self._machine.local_faults[-1]
        reports = await asyncio.gather(*(self._report(n, mark.index) for n in replicas if n != own))
        for node_id, report in zip([n for n in replicas if n != own], reports, strict=True):
            if report is None or report.digest is None:
                outcome.unknown.append(node_id)
            else:
                outcome.digests[node_id] = report.digest
            if report is not None and report.faults:
                faults[node_id] = report.faults[-1]
        outcome.diverged = verdict(mark.index, outcome.digests, len(replicas))
        outcome.diverged.update(faults)  # what a replica found in itself says more
        if outcome.diverged:
            log.error("replicas diverged: %s", outcome.diverged)
        return outcome

    async def _report(self, node_id: str, index: int) -> DigestReport | None:
        """``node_id``'s report, waiting up to ``answer_wait_s`` for it to apply ``index``."""
        if self.probe is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.answer_wait_s  # loop time: asyncio.sleep waits on it
        while True:
            try:
                report = await self.probe.digest(node_id, index)
            except Exception as exc:
                log.debug("digest probe of %s failed: %r", node_id, exc)
                report = None
            behind = report is not None and report.digest is None and report.applied < index
            if not behind or loop.time() >= deadline:
                return report
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))

    async def _raise_alarms(self, diverged: Mapping[str, str]) -> None:
        for node_id, reason in sorted(diverged.items()):
            if node_id in self._machine.alarms:
                continue
            result = await self._node.propose(encode_alarm(node_id, reason, now=self._clock()))
            if isinstance(result, CommandError):
                raise result.to_exception()
            log.error("divergence alarm raised for %s: %s", node_id, reason)

    async def clear(self, node_id: str) -> int:
        """Lower ``node_id``'s alarm ("*": all) through the log; returns the alarms left.
        ``NotLeaderError`` on a follower (the server forwards the request)."""
        if self._machine.command_version < DIVERGENCE_VERSION:
            return 0  # no alarm can exist before command version 3
        result = await self._node.propose(encode_alarm(node_id, now=self._clock(), clear=True))
        if isinstance(result, CommandError):
            raise result.to_exception()
        left: int = result
        return left

    async def _step_down_if_alarmed(self) -> None:
        """An alarmed leader hands leadership to a voter that is not alarmed, if any."""
        node, alarms = self._node, self._machine.alarms
        if node.node_id not in alarms:
            return
        healthy = [n for n in sorted(node.members) if n != node.node_id and n not in alarms]
        transfer = getattr(node, "transfer_leadership", None)
        if healthy and transfer is not None:
            log.warning("leader %s is alarmed: handing leadership to %s", node.node_id, healthy[0])
            await transfer(healthy[0])

    # --- introspection -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The ``divergence`` part of ``/v1/status``."""
        machine = self._machine
        latest = machine.digests.latest()
        return {
            "check_interval_s": self.interval_s,
            "checks": self.checks,
            "digest": None
            if latest is None
            else {"index": latest.index, "digest": digest_hex(latest.digest)},
            "local_faults": list(machine.local_faults),
            "last_check": None if self.last_check is None else self.last_check.to_json(),
        }
