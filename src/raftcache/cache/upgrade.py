"""The leader's side of command versions: raise the cluster's version once every node supports it.

Rule: the leader proposes a command of command version V only when the cluster's replicated
version (``CacheStateMachine.command_version``) is at least V, and proposes the FORMAT entry that
raises it only after asking every voter and learner which versions it applies — through
``probe(node_id)``
(the server asks ``/v1/status``; an in-process cluster may answer from its machines). A node
that does not answer counts as not supporting V: an unreachable node blocks the upgrade rather
than being surprised by it. See ``raftcache.cache.formats`` for why this is safe. A refusal is
remembered for ``refusal_ttl_s`` (1 s), so a burst of requests costs one probe round, not one
each.

``CommandVersionGate.run`` does this in the background on the leader, every ``interval_s`` while
the cluster's version is below this node's ceiling, so a rolling upgrade finishes by itself once
the last node is upgraded; ``ensure`` does it at once for a request that needs a newer version.

Without a probe (an embedded cluster whose nodes all run this build) the members are taken to
support what this node supports.

``admit`` guards the other way in: a node being added must apply the command version the cluster
already runs, or it would stop at the first entry it cannot apply (``raftcache.cache.formats``:
fail-stop) — so ``POST /v1/members`` answers 409 before the membership change instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from raftcache.cache.commands import encode_format
from raftcache.cache.formats import CommandVersion, CommandVersionNotEnabledError
from raftcache.cache.results import CommandError
from raftcache.raft.errors import NotLeaderError, RaftError

log = logging.getLogger(__name__)

#: Asks one node for the newest command version it applies (None: no answer).
CommandVersionProbe = Callable[[str], Awaitable[CommandVersion | None]]


class GateNode(Protocol):
    """What the gate needs from ``RaftNode``."""

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


class GateMachine(Protocol):
    @property
    def command_version(self) -> CommandVersion: ...

    @property
    def max_command_version(self) -> CommandVersion: ...


class CommandVersionGate:
    """Raises the cluster's command version when every member supports it (module docstring)."""

    def __init__(
        self,
        node: GateNode,
        machine: GateMachine,
        clock: Callable[[], float],
        *,
        probe: CommandVersionProbe | None = None,
        interval_s: float = 5.0,
        refusal_ttl_s: float = 1.0,
    ) -> None:
        self._node = node
        self._machine = machine
        self._clock = clock
        self.probe = probe
        self.interval_s = interval_s
        self.refusal_ttl_s = refusal_ttl_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        # The last refusal and when (loop time): requests arriving within ``refusal_ttl_s``
        # get it again without a probe round each (a node that is down makes a round take
        # the probe's whole timeout, and requests would queue behind the lock for it). Loop
        # time, not ``clock``: that is the wall clock stamped into entries, and it may step.
        self._refused: tuple[float, CommandVersionNotEnabledError] | None = None

    async def member_versions(self) -> dict[str, CommandVersion | None]:
        """Every voter's and learner's newest command version (None: did not answer)."""
        node, probe = self._node, self.probe
        ids = sorted(set(node.members) | set(node.learners) | {node.node_id})
        own = self._machine.max_command_version

        async def ask(node_id: str) -> CommandVersion | None:
            if node_id == node.node_id:
                return own
            if probe is None:
                return own
            try:
                return await probe(node_id)
            except Exception as exc:  # an unreachable node blocks the upgrade; it is no error
                log.debug("command version probe of %s failed: %r", node_id, exc)
                return None

        answers = await asyncio.gather(*(ask(i) for i in ids))
        return dict(zip(ids, answers, strict=True))

    async def ensure(self, needed: CommandVersion) -> None:
        """Return once the cluster runs command version ``needed`` or newer; raise
        ``CommandVersionNotEnabledError`` (naming the nodes behind) when it cannot yet,
        ``NotLeaderError`` on a follower whose cluster is behind (the leader decides)."""
        machine = self._machine
        if machine.command_version >= needed:
            return
        if needed > machine.max_command_version:
            raise CommandVersionNotEnabledError(
                needed,
                machine.command_version,
                {self._node.node_id: machine.max_command_version},
                reason=f"{self._node.node_id}, the node asked, applies formats up to "
                f"{machine.max_command_version}",
            )
        async with self._lock:
            if machine.command_version >= needed:
                return
            if str(getattr(self._node.role, "value", self._node.role)) != "leader":
                raise NotLeaderError(self._node.leader_id)
            now = asyncio.get_running_loop().time()
            if self._refused is not None and now - self._refused[0] < self.refusal_ttl_s:
                last = self._refused[1]
                if last.needed <= needed:
                    raise CommandVersionNotEnabledError(needed, machine.command_version, last.nodes)
            versions = await self.member_versions()
            if any(v is None or v < needed for v in versions.values()):
                refused = CommandVersionNotEnabledError(needed, machine.command_version, versions)
                self._refused = (asyncio.get_running_loop().time(), refused)
                raise refused
            self._refused = None
            result = await self._node.propose(encode_format(needed, now=self._clock()))
            if isinstance(result, CommandError):
                raise result.to_exception()
            log.info("cluster command version raised to %s (members: %s)", needed, versions)

    def admit(self, node_id: str, reported: CommandVersion | None) -> None:
        """Refuse to add ``node_id`` when it ``reported`` a command version below the cluster's.

        ``reported`` None (the node did not answer yet: it may be started after it is added)
        admits it: should it be too old, it stops at the first entry it cannot apply, saying
        so, and nothing is lost — the check only turns that late, loud failure into an early
        409.
        """
        cluster = self._machine.command_version
        if reported is not None and reported < cluster:
            raise CommandVersionNotEnabledError(
                cluster,
                cluster,
                {node_id: reported},
                reason=f"{node_id} applies command formats up to {reported} and the cluster "
                f"runs format {cluster}: upgrade {node_id} before adding it",
            )

    async def run(self) -> None:
        """Background: on the leader, try to raise the version to this node's ceiling."""
        while True:
            await asyncio.sleep(self.interval_s)
            machine = self._machine
            if machine.command_version >= machine.max_command_version:
                continue
            if str(getattr(self._node.role, "value", self._node.role)) != "leader":
                continue
            try:
                await self.ensure(machine.max_command_version)
            except (CommandVersionNotEnabledError, RaftError, TimeoutError) as exc:
                log.debug("command version stays at %s: %s", machine.command_version, exc)
            except Exception as exc:
                log.warning("command version check failed: %r", exc)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="cache-version-gate")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


# Earlier names, kept working (the same objects).
FormatGate = CommandVersionGate
FormatProbe = CommandVersionProbe
