"""The shape of a parsed RESP command (``Call``) and the key-state ``View`` commands compute on.

Rule: every key command is written once, as ``simulate(view)``: a pure function from the state
of its keys to its reply and its effects on them. That one definition serves a transaction
(MULTI/EXEC and commands such as EXPIRE that read before they write: ``raftcache.resp.txn``)
and a read group (``reply_values``). A command with a cheaper direct route through the cache
service — one proposal or one read — also says so with its ``mode``:

- ``READ``: its reply depends only on the values of ``keys``; reads share one read barrier
  (``reply_values``; ``raftcache.resp.coalesce``).
- ``BATCH``: it is a list of unconditional batch ops (``batch_ops``) and its reply follows from
  their results (``reply_batch``); such writes share one log entry.
- ``WRITE``: ``run(backend)`` makes exactly one proposal, issued before its first suspension,
  so consecutive writes of a pipeline run concurrently and still reach the log in order.
- ``TXN``: runs alone through the transaction engine.
- ``SERVER``: connection and server commands (``run_server``), no key state.

Key commands depend only on their own keys' state (no command reads one key to write another),
which is what lets the engine split a transaction per key.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from raftcache.cache.commands import BatchOp, GetOp
from raftcache.cache.results import BatchItem
from raftcache.resp.errors import WRONGTYPE
from raftcache.resp.values import HashValue

if TYPE_CHECKING:
    from raftcache.resp.backend import Backend

Reply = Any  # a value ``raftcache.resp.protocol.encode`` accepts


class Mode(enum.Enum):
    """How a call is executed (see the module docstring)."""

    READ = "read"
    BATCH = "batch"
    WRITE = "write"
    TXN = "txn"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's state as a command sees it: value and expiry (epoch seconds, None for never).
    A hash's ``value`` is a ``HashValue``."""

    value: bytes
    expires_at: float | None = None

    @property
    def is_hash(self) -> bool:
        return type(self.value) is HashValue


class View:
    """Key states at one instant ``now``, with the changes commands make on top of them.

    Args:
        now: wall-clock seconds; entries whose ``expires_at <= now`` are missing.
        base: the state each key starts from (absent keys are missing).
    """

    __slots__ = ("_base", "changes", "now")

    def __init__(self, now: float, base: Mapping[str, Entry | None]) -> None:
        self.now = now
        self._base = base
        self.changes: dict[str, Entry | None] = {}

    def get(self, key: str) -> Entry | None:
        """The live entry of ``key``, or None."""
        entry = self.changes[key] if key in self.changes else self._base.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self.now:
            return None
        return entry

    def initial(self, key: str) -> Entry | None:
        """The live entry of ``key`` before any change."""
        entry = self._base.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self.now:
            return None
        return entry

    def value(self, key: str) -> bytes | None:
        """The live value of ``key``, or None."""
        entry = self.get(key)
        return None if entry is None else entry.value

    def string(self, key: str) -> Entry | None:
        """The live entry of ``key`` if it holds a string, None if missing; ``WRONGTYPE`` if
        it holds a hash (a string command reading or changing its value)."""
        entry = self.get(key)
        if entry is not None and entry.is_hash:
            raise WRONGTYPE
        return entry

    def hash(self, key: str) -> dict[bytes, bytes] | None:
        """The fields of the hash at ``key`` (a fresh dict), None if missing; ``WRONGTYPE``
        if it holds a string."""
        entry = self.get(key)
        if entry is None:
            return None
        if not isinstance(entry.value, HashValue):
            raise WRONGTYPE
        return entry.value.fields()

    def put(self, key: str, value: bytes, expires_at: float | None = None) -> None:
        """Set ``key`` (an ``expires_at`` in the past deletes it)."""
        if expires_at is not None and expires_at <= self.now:
            self.changes[key] = None
        else:
            self.changes[key] = Entry(value, expires_at)

    def remove(self, key: str) -> bool:
        """Delete ``key``; whether it existed."""
        existed = self.get(key) is not None
        self.changes[key] = None
        return existed

    def pttl(self, key: str) -> int:
        """Milliseconds left: -2 if missing, -1 if it never expires (Redis's PTTL)."""
        entry = self.get(key)
        if entry is None:
            return -2
        if entry.expires_at is None:
            return -1
        return max(0, round((entry.expires_at - self.now) * 1000))


class Call:
    """A parsed command. Subclasses set ``mode`` and implement what that mode needs."""

    mode: Mode = Mode.SERVER
    #: May be queued inside MULTI (it then runs through ``simulate``).
    in_multi: ClassVar[bool] = False
    #: Whether it may change state (decides TRYAGAIN vs INDETERMINATE on a timeout).
    writes: bool = False
    #: Whether its writes may be split by key, on a sharded store, into one part per group,
    #: none atomic with another (DEL, UNLINK); a call that writes keys of several groups
    #: without it is refused (``CROSSSLOT``): it has to be atomic.
    splits: ClassVar[bool] = False
    #: Every key the call reads or writes, in argument order.
    keys: Sequence[str] = ()
    #: Keys whose full state (version, expiry) it depends on: the ones it may write, and the
    #: ones whose expiry it reads. A transaction reads them first and conditions its writes
    #: on their versions.
    pinned: Sequence[str] = ()
    #: The command version its ``mode`` needs (``raftcache.cache.formats``), and the mode it
    #: runs in until the cluster has enabled that version (a rolling upgrade in progress).
    needs_command_version: int = 1
    fallback_mode: Mode | None = None
    #: A READ that refreshes recency even on a ``CLIENT NO-TOUCH`` connection (TOUCH), where
    #: it runs alone (``run_server``) rather than in the connection's shared untouching read.
    always_touches: ClassVar[bool] = False

    @property
    def needs_format(self) -> int:
        """``needs_command_version`` under its earlier name."""
        return self.needs_command_version

    def multi_ops(self) -> list[BatchOp] | None:
        """Inside MULTI: the batch ops that perform the call with no read first (a READ's
        gets, a BATCH's ops), or None when it needs the transaction engine."""
        if self.mode is Mode.READ:
            return [GetOp(key) for key in self.keys]
        if self.mode is Mode.BATCH:
            return self.batch_ops()
        return None

    def multi_reply(self, results: Sequence[BatchItem]) -> Reply:
        """The reply given the results of ``multi_ops``."""
        if self.mode is Mode.READ:
            return self.reply_values([r if isinstance(r, bytes) else None for r in results])
        return self.reply_batch(results)

    def simulate(self, view: View) -> Reply:
        """The reply, applying the call's effects to ``view``."""
        raise NotImplementedError(type(self).__name__)

    def reply_values(self, values: Sequence[bytes | None]) -> Reply:
        """``READ`` calls: the reply given the values of ``keys`` (in order)."""
        base = {k: None if v is None else Entry(v) for k, v in zip(self.keys, values, strict=True)}
        return self.simulate(View(0.0, base))

    def batch_ops(self) -> list[BatchOp]:
        """``BATCH`` calls: the unconditional ops that perform the call."""
        raise NotImplementedError(type(self).__name__)

    def reply_batch(self, results: Sequence[BatchItem]) -> Reply:
        """``BATCH`` calls: the reply, given the results of ``batch_ops`` (in order)."""
        raise NotImplementedError(type(self).__name__)

    async def run(self, backend: Backend) -> Reply:
        """``WRITE`` calls: perform the call with one proposal (or one read) on ``backend``."""
        raise NotImplementedError(type(self).__name__)

    def run_server(self, ctx: Any) -> Reply | Awaitable[Reply]:
        """``SERVER`` calls: the reply, given the connection context."""
        raise NotImplementedError(type(self).__name__)
