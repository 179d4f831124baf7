"""CacheService: the async facade the HTTP server calls, over a Raft node and the machine.

Rule: writes go through the log (``node.propose``) stamped with this node's ``clock()``;
reads are served from the local machine after the barrier their consistency asks for:
``"linearizable"`` → ``node.read_index()``, ``"lease"`` → ``node.lease_read()``, ``"stale"`` →
none (may lag the leader; a follower serves it too). Expiry is judged by this node's clock at
read time. Error results of the machine become the typed exceptions of
``raftcache.cache.errors``; Raft errors (``NotLeaderError``, ``IndeterminateError``,
``ProposalDroppedError``, ``TimeoutError``, ``NodeStoppedError``) pass through unchanged.

Reads count hits and misses on this node and, on the leader, feed the LRU access batches
(``raftcache.cache.background``), which ``start()``/``stop()`` run with expiry proposals. A read
with ``touch=False`` (Redis 7.2's ``CLIENT NO-TOUCH``) is counted but leaves recency alone: it
proposes nothing, so the applied index does not move because of it.

A replica named by a divergence alarm, or with a local fault (``raftcache.cache.alarms``,
docs/divergence.md), refuses every read — whatever its consistency, before any barrier — with
``ReplicaDivergedError``; writes still go through the log (a follower still forwards them).
``start()``/``stop()`` also run the divergence monitor (``raftcache.cache.divergence``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from raftcache.cache.alarms import ReplicaDivergedError
from raftcache.cache.background import Housekeeping
from raftcache.cache.backup_service import Backups
from raftcache.cache.commands import (
    BatchCommand,
    BatchOp,
    DeleteOp,
    GetOp,
    Session,
    SetOp,
    encode,
    encode_delete,
    encode_flush,
    encode_incr,
    encode_publish,
    encode_set,
    encode_ttl,
    required_command_version,
)
from raftcache.cache.commands_pubsub import PUBSUB_VERSION
from raftcache.cache.commands_v2 import IncrOp, TtlOp
from raftcache.cache.commands_v4 import (
    SCRIPTING_VERSION,
    EvalCommand,
    ScriptFlushCommand,
    ScriptLoadCommand,
    ScriptResult,
)
from raftcache.cache.divergence import DEFAULT_INTERVAL_S, DigestProbe, DivergenceMonitor
from raftcache.cache.entries import Item
from raftcache.cache.errors import InvalidCommandError, NoScriptError
from raftcache.cache.formats import CommandVersion
from raftcache.cache.hashes import HashOp
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import BatchItem, CommandError, IncrResult, TtlResult
from raftcache.cache.scripting import Reply
from raftcache.cache.upgrade import CommandVersionGate, CommandVersionProbe
from raftcache.raft.errors import NotLeaderError
from raftcache.vocabulary import CONSISTENCY_LEVELS

#: RANDOMKEY's draws: node-local, never replicated (``random_key``).
_RANDOM = random.SystemRandom()

__all__ = ["CONSISTENCY_LEVELS", "CacheService", "RaftPort", "Session", "batch_op"]

log = logging.getLogger(__name__)


class RaftPort(Protocol):
    """What the service needs from ``RaftNode`` (docs/design.md)."""

    @property
    def role(self) -> Any: ...

    async def propose(self, command: bytes, timeout: float | None = None) -> Any: ...

    async def read_index(self, timeout: float | None = None) -> int: ...

    async def lease_read(self, timeout: float | None = None) -> int: ...


class CacheService:
    """Cache operations over a Raft node (see the module docstring).

    Args:
        node: the local Raft node (its state machine is ``machine``).
        machine: the cache state machine the node applies to.
        clock: wall-clock seconds since the epoch (stamped into writes, used to judge expiry).
        propose_timeout: per-write timeout passed to ``node.propose`` (None: the node's).
        read_timeout: timeout passed to the read barriers (None: the node's).
        expiry_interval_s, touch_interval_s, expiry_batch_size, touch_batch_size: see
            ``raftcache.cache.background``.
        command_version_probe: asks the other nodes for their command versions (``upgrade``);
            ``format_probe``, its earlier name, is accepted too.
        digest_check_interval_s: seconds between the leader's digest comparisons (0: only
            after a snapshot install or when asked); ``raftcache.cache.divergence``.
        digest_probe: asks the other replicas for their digests (``raftcache serve`` passes one
            that asks over HTTP, ``server.routes_divergence.HttpDigestProbe``).
    """

    def __init__(
        self,
        node: RaftPort,
        machine: CacheStateMachine,
        *,
        clock: Callable[[], float],
        propose_timeout: float | None = None,
        read_timeout: float | None = None,
        expiry_interval_s: float = 1.0,
        touch_interval_s: float = 1.0,
        expiry_batch_size: int = 1000,
        touch_batch_size: int = 10_000,
        command_version_probe: CommandVersionProbe | None = None,
        digest_check_interval_s: float = DEFAULT_INTERVAL_S,
        digest_probe: DigestProbe | None = None,
        format_probe: CommandVersionProbe | None = None,
    ) -> None:
        if format_probe is not None:
            command_version_probe = format_probe
        self._node = node
        self._machine = machine
        self._clock = clock
        self._propose_timeout = propose_timeout
        self._read_timeout = read_timeout
        self.housekeeping = Housekeeping(
            node,
            machine,
            clock,
            expiry_interval_s=expiry_interval_s,
            touch_interval_s=touch_interval_s,
            expiry_batch_size=expiry_batch_size,
            touch_batch_size=touch_batch_size,
        )
        #: Raises the cluster's command version (``raftcache.cache.upgrade``), asking the other
        #: nodes through ``command_version_probe`` (``raftcache serve`` passes one that asks
        #: over HTTP).
        self.command_versions = CommandVersionGate(
            node,  # type: ignore[arg-type]
            machine,
            clock,
            probe=command_version_probe,
        )
        #: Backups of the cluster and restores into it (``raftcache.cache.backup_service``).
        self.backups = Backups(
            node, machine, clock, ensure_command_version=self.ensure_command_version
        )
        self._node_id: str = getattr(node, "node_id", "") or ""
        machine.node_id = self._node_id or None
        #: Compares the replicas' digests (``raftcache.cache.divergence``); the server sets
        #: its ``probe``.
        self.divergence = DivergenceMonitor(
            node,  # type: ignore[arg-type]
            machine,
            clock,
            probe=digest_probe,
            ensure_command_version=self.ensure_command_version,
            interval_s=digest_check_interval_s,
        )

    @property
    def machine(self) -> CacheStateMachine:
        """The local state machine."""
        return self._machine

    @property
    def formats(self) -> CommandVersionGate:
        """``command_versions`` under its earlier name."""
        return self.command_versions

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the leader-only background work (idempotent)."""
        self.housekeeping.start()
        self.command_versions.start()
        self.divergence.start()

    async def stop(self) -> None:
        """Stop the background work and wait for it."""
        await self.divergence.stop()
        await self.command_versions.stop()
        await self.housekeeping.stop()

    # --- reads ------------------------------------------------------------------------------

    async def get(
        self, key: str, consistency: str = "linearizable", *, touch: bool = True
    ) -> Item | None:
        """The live entry of ``key`` (value, version, expires_at), or None. ``touch=False``:
        the read does not refresh the key's recency (see the module docstring)."""
        await self._barrier(consistency)
        item = self._machine.get(key, self._clock())
        self._count_reads([key] if item is not None else [], 0 if item is not None else 1, touch)
        return item

    async def mget(
        self, keys: Sequence[str], consistency: str = "linearizable", *, touch: bool = True
    ) -> list[Item | None]:
        """The live entries of ``keys`` in order (None where missing), after one barrier;
        ``touch`` as for ``get``."""
        await self._barrier(consistency)
        now, machine = self._clock(), self._machine
        items = [machine.get(key, now) for key in keys]
        hits = [key for key, item in zip(keys, items, strict=True) if item is not None]
        self._count_reads(hits, len(keys) - len(hits), touch)
        return items

    async def list_keys(
        self,
        prefix: str | None = "",
        after: str | None = None,
        limit: int = 100,
        consistency: str = "linearizable",
    ) -> tuple[list[str], str | None]:
        """Live keys starting with ``prefix``, strictly after ``after``, at most ``limit``, in
        key order; plus the cursor of the next page (pass it as ``after``) or None."""
        if type(limit) is not int or limit < 1:
            raise InvalidCommandError("limit must be a positive integer")
        await self._barrier(consistency)
        return self._machine.list_keys(prefix or "", after, limit, self._clock())

    async def random_key(self, consistency: str = "linearizable") -> str | None:
        """A live key drawn uniformly at random after the barrier (RANDOMKEY), or None when
        there is none. The draw uses this node's own random source: a read changes no
        replicated state, so nothing needs it to be deterministic."""
        await self._barrier(consistency)
        return self._machine.random_key(self._clock(), _RANDOM.randrange)

    async def _barrier(self, consistency: str) -> None:
        reason = self._machine.distrust(self._node_id)
        if reason is not None:
            raise ReplicaDivergedError(self._node_id, reason)
        if consistency == "linearizable":
            await self._node.read_index(self._read_timeout)
        elif consistency == "lease":
            await self._node.lease_read(self._read_timeout)
        elif consistency == "stale":
            self._check_votes()
        else:
            raise InvalidCommandError(
                f"consistency must be one of {', '.join(CONSISTENCY_LEVELS)}, not {consistency!r}"
            )

    def _check_votes(self) -> None:
        """A stale read is served by a voter only: a learner (a replica still being filled,
        as etcd's learners) may be arbitrarily far behind — ``NotLeaderError`` sends the read
        to the leader instead."""
        configuration = getattr(self._node, "configuration", None)
        if configuration is None or configuration.is_voter(self._node_id):
            return
        raise NotLeaderError(getattr(self._node, "leader_id", None))

    def _count_reads(self, hit_keys: list[str], misses: int, touch: bool) -> None:
        self._machine.record_reads(len(hit_keys), misses)
        if hit_keys and touch:
            self.housekeeping.record_access(hit_keys)

    # --- writes -----------------------------------------------------------------------------

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
        session: Session | None = None,
        keep_ttl: bool = False,
    ) -> int:
        """Store ``value``; returns its version. Raises ``PreconditionFailedError`` (with the
        current version) if ``if_version``/``if_absent`` does not hold, ``ValueTooLargeError``.
        ``keep_ttl`` keeps the live key's expiry (command version 2)."""
        command = encode_set(
            key,
            _as_bytes(value),
            now=self._clock(),
            ttl=ttl,
            if_version=if_version,
            if_absent=if_absent,
            session=_session(session),
            keep_ttl=keep_ttl,
        )
        version: int = await self._propose(command, 2 if keep_ttl else 1)
        return version

    async def delete(
        self, key: str, if_version: int | None = None, session: Session | None = None
    ) -> bool:
        """Delete ``key``; True if a live key was deleted. Honours ``if_version``."""
        command = encode_delete(
            key, now=self._clock(), if_version=if_version, session=_session(session)
        )
        deleted: bool = await self._propose(command)
        return deleted

    async def incr(self, key: str, by: int = 1, session: Session | None = None) -> IncrResult:
        """Add ``by`` to the counter at ``key`` (missing = 0); returns (value, version).
        Raises ``NotACounterError`` or ``CounterOverflowError``."""
        command = encode_incr(key, by, now=self._clock(), session=_session(session))
        result: IncrResult = await self._propose(command)
        return result

    async def decr(self, key: str, by: int = 1, session: Session | None = None) -> IncrResult:
        """``incr(key, -by)``."""
        return await self.incr(key, -by, session)

    async def expire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        at: float | None = None,
        condition: str | None = None,
        if_version: int | None = None,
        session: Session | None = None,
    ) -> TtlResult:
        """Change ``key``'s expiry without rewriting its value (command version 2): ``ttl``
        seconds from now, or the epoch instant ``at``, or neither to remove it (``persist``).
        ``condition`` is ``nx``/``xx``/``gt``/``lt`` (Redis's EXPIRE options). A change gives
        the key a new version; an expiry in the past deletes it. Returns (changed, version)."""
        command = encode_ttl(
            key,
            now=self._clock(),
            ttl=ttl,
            at=at,
            condition=condition,
            if_version=if_version,
            session=_session(session),
        )
        result: TtlResult = await self._propose(command, 2)
        return result

    async def persist(
        self, key: str, if_version: int | None = None, session: Session | None = None
    ) -> TtlResult:
        """Remove ``key``'s expiry (``expire`` with neither ``ttl`` nor ``at``)."""
        return await self.expire(key, if_version=if_version, session=session)

    async def flush(self, prefix: str = "", session: Session | None = None) -> int:
        """Delete every key starting with ``prefix`` ("" = all) as one log entry (command
        format 2); returns how many live keys were deleted."""
        command = encode_flush(prefix, now=self._clock(), session=_session(session))
        deleted: int = await self._propose(command, 2)
        return deleted

    async def publish(self, channel: bytes, message: bytes) -> int:
        """Send ``message`` on ``channel`` through the log (command version 6): every replica
        hands it to its publish listeners as it applies the entry (nothing is stored).
        Returns the entry's index."""
        command = encode_publish(channel, message, now=self._clock())
        index: int = await self._propose(command, PUBSUB_VERSION)
        return index

    async def ensure_command_version(self, needed: CommandVersion) -> None:
        """Return once the cluster applies command version ``needed`` (raising it if every
        member supports it); ``CommandVersionNotEnabledError`` otherwise
        (``raftcache.cache.upgrade``)."""
        await self.command_versions.ensure(needed)

    def command_version_info(self) -> dict[str, CommandVersion]:
        """The newest command version this node applies and the cluster's (replicated), under
        the keys ``/v1/status`` has always shown them: ``command_format`` and
        ``cluster_command_format``."""
        machine = self._machine
        return {
            "command_format": machine.max_command_version,
            "cluster_command_format": machine.command_version,
        }

    # Earlier names, kept working.
    ensure_format = ensure_command_version
    format_info = command_version_info

    def divergence_info(self) -> dict[str, Any]:
        """``alarms`` (replicated, every node shows the same) and ``divergence`` (this node's
        digest, local faults and — on the leader — the last comparison), for ``/v1/status``."""
        return {
            "alarms": [alarm.to_json() for alarm in self._machine.alarms.values()],
            "divergence": self.divergence.info(),
        }

    async def clear_alarm(self, node_id: str) -> int:
        """Lower ``node_id``'s divergence alarm ("*": every alarm) after the operator rebuilt
        it; returns how many alarms remain. ``NotLeaderError`` on a follower."""
        return await self.divergence.clear(node_id)

    async def batch(self, ops: Sequence[Any], session: Session | None = None) -> list[BatchItem]:
        """Apply ``ops`` atomically as one log entry; results in order: get → ``bytes |
        None``, set → version, delete → bool. All or nothing: if one op's condition fails,
        ``PreconditionFailedError`` (with ``op_index``) and nothing changed."""
        parsed = tuple(map(batch_op, ops))
        command = BatchCommand(self._clock(), parsed, _session(session))
        results: tuple[BatchItem, ...] = await self._propose(
            encode(command), required_command_version(command)
        )
        gets = [
            (op.key, result)
            for op, result in zip(parsed, results, strict=True)
            if isinstance(op, GetOp)
        ]
        # Batch gets went through the log (which already refreshed their recency): count only.
        hits = sum(result is not None for _, result in gets)
        self._machine.record_reads(hits, len(gets) - hits)
        return list(results)

    # --- scripts (command version 4) ---------------------------------------------------------

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str] = (),
        args: Sequence[bytes] = (),
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> Reply:
        """Run a Lua script as one log entry (``raftcache.cache.scripting``); its reply —
        an ``ErrorReply`` when the script failed (its writes before the failure stay). ``slot``
        binds it to one slot of a sharded store; ``read_only`` refuses its writes (EVAL_RO)."""
        command = EvalCommand(
            self._clock(), bytes(script), tuple(keys), tuple(args), slot=slot, read_only=read_only
        )
        result: ScriptResult = await self._propose(encode(command), SCRIPTING_VERSION)
        return result.reply

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str] = (),
        args: Sequence[bytes] = (),
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> Reply:
        """``eval`` of the loaded script ``sha``: looked up here after a read barrier (so a
        script whose load was acknowledged is found), then proposed with its body;
        ``NoScriptError`` when the table does not hold it."""
        await self._barrier("linearizable")
        script = self._machine.script(sha)
        if script is None:
            raise NoScriptError()
        return await self.eval(script, keys, args, slot=slot, read_only=read_only)

    async def script_load(self, script: bytes) -> str:
        """Add ``script`` to the replicated script table; its SHA-1 (hex)."""
        command = ScriptLoadCommand(self._clock(), bytes(script))
        sha: str = await self._propose(encode(command), SCRIPTING_VERSION)
        return sha

    async def script_exists(
        self, shas: Sequence[str], consistency: str = "linearizable"
    ) -> list[bool]:
        """Whether each SHA-1 is in the script table, as of one read."""
        await self._barrier(consistency)
        return [self._machine.script(sha) is not None for sha in shas]

    async def script_flush(self) -> int:
        """Empty the replicated script table; how many scripts it held."""
        dropped: int = await self._propose(
            encode(ScriptFlushCommand(self._clock())), SCRIPTING_VERSION
        )
        return dropped

    async def _propose(self, command: bytes, needed: CommandVersion = 1) -> Any:
        if needed > self._machine.command_version:
            await self.command_versions.ensure(needed)
        result = await self._node.propose(command, self._propose_timeout)
        if isinstance(result, CommandError):
            raise result.to_exception()
        return result

    # --- introspection ------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        """The ``"cache"`` part of ``/v1/stats`` (hits/misses are this node's reads)."""
        return self._machine.stats()

    async def propose_expiry(self) -> int:
        """Run one expiry round now (normally done by the background loop)."""
        return await self.housekeeping.propose_expiry()

    async def flush_touches(self) -> int:
        """Propose the pending access batch now (normally done by the background loop)."""
        return await self.housekeeping.flush_touches()


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidCommandError("value must be bytes")


def _session(session: Any) -> Session | None:
    if session is None or isinstance(session, Session):
        return session
    return Session(getattr(session, "client_id", None), getattr(session, "seq", None))  # type: ignore[arg-type]


_OP_FIELDS = (
    "op",
    "key",
    "value",
    "ttl",
    "if_version",
    "if_absent",
    "keep_ttl",
    "by",
    "at",
    "condition",
    "action",
    "fields",
    "values",
    "nx",
)


def batch_op(op: object) -> BatchOp:
    """Coerce ``op`` to a ``BatchOp``: one already, a mapping, or any object with attributes
    ``op`` (``"get"``/``"set"``/``"delete"``/``"incr"``/``"ttl"``), ``key`` and optionally
    ``value``, ``ttl``, ``if_version``, ``if_absent``, ``keep_ttl``, ``by``, ``at``,
    ``condition``, and for ``"hash"`` ``action``, ``fields``, ``values``, ``nx`` (the HTTP
    layer's parsed ops). Raises ``InvalidCommandError``."""
    if isinstance(op, GetOp | SetOp | DeleteOp | IncrOp | TtlOp | HashOp):
        return op
    fields: Mapping[str, Any]
    if isinstance(op, Mapping):
        fields = op
    else:
        fields = {name: getattr(op, name) for name in _OP_FIELDS if hasattr(op, name)}
    kind = fields.get("op")
    if kind == "get":
        return GetOp(fields.get("key"))  # type: ignore[arg-type]
    if kind == "set":
        return SetOp(
            fields.get("key"),  # type: ignore[arg-type]
            fields.get("value"),  # type: ignore[arg-type]
            fields.get("ttl"),
            fields.get("if_version"),
            bool(fields.get("if_absent", False)),
            bool(fields.get("keep_ttl", False)),
        )
    if kind in ("delete", "del"):
        return DeleteOp(fields.get("key"), fields.get("if_version"))  # type: ignore[arg-type]
    if kind == "incr":
        by = fields.get("by", 1)
        return IncrOp(fields.get("key"), 1 if by is None else by)  # type: ignore[arg-type]
    if kind == "ttl":
        return TtlOp(
            fields.get("key"),  # type: ignore[arg-type]
            fields.get("ttl"),
            fields.get("at"),
            fields.get("condition"),
            fields.get("if_version"),
        )
    if kind == "hash":
        return HashOp(
            fields.get("key"),  # type: ignore[arg-type]
            fields.get("action"),  # type: ignore[arg-type]
            tuple(fields.get("fields") or ()),
            tuple(fields.get("values") or ()),
            0 if fields.get("by") is None else fields["by"],
            bool(fields.get("nx", False)),
        )
    raise InvalidCommandError(
        f'batch op must be "get", "set", "delete", "incr", "ttl" or "hash", not {kind!r}'
    )
