"""Where RESP commands read and write: this node's ``CacheService``, or the leader over HTTP.

Rule: a command is written once, against the ``Backend`` protocol, and run by ``Router.call``:
first on the local service; if that raises ``NotLeaderError`` — which guarantees nothing was
applied here — the whole command runs again against the leader's HTTP client API
(``LeaderBackend``), after waiting a bounded time for a leader to be known. If this node becomes
the leader meanwhile, it runs locally again. So a command's steps all run against one backend.

Ordering: commands of one connection that fall back to the leader pass through that connection's
``gate`` (a FIFO lock) in the order they failed locally — which is the order they were issued,
because a local attempt fails synchronously, before its first suspension — so pipelined writes
forwarded from a follower reach the leader in pipeline order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from raftcache.cache.commands import BatchOp
from raftcache.cache.entries import Item
from raftcache.cache.results import BatchItem
from raftcache.cache.scripting import Reply as ScriptReply
from raftcache.network.groups import shared_urls
from raftcache.raft.errors import NotLeaderError
from raftcache.resp.errors import UnavailableError
from raftcache.resp.values import as_value

T = TypeVar("T")


class Backend(Protocol):
    """The cache operations RESP commands are built from (errors as ``CacheService``'s)."""

    async def values(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[bytes | None]:
        """Values of ``keys`` (None where missing; a ``HashValue`` for a hash), as of one read;
        ``touch=False`` leaves their recency alone (``CLIENT NO-TOUCH``)."""
        ...

    async def items(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[Item | None]:
        """Entries of ``keys`` with version and expiry (None where missing); ``touch`` as for
        ``values``."""
        ...

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        """Store ``value``; the new version. ``PreconditionFailedError`` if a condition fails."""
        ...

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete ``key``; whether a live key was deleted."""
        ...

    async def incr(self, key: str, by: int) -> int:
        """Add ``by`` to the counter at ``key``; the new value."""
        ...

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchItem]:
        """Apply ``ops`` atomically; results in order."""
        ...

    async def list_keys(
        self, prefix: str, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        """A page of live keys in key order and the cursor of the next page (or None)."""
        ...

    async def dbsize(self, consistency: str) -> int:
        """Number of keys held (expired ones not yet removed included, as Redis counts)."""
        ...

    async def random_key(self, consistency: str) -> str | None:
        """A live key drawn at random (RANDOMKEY), or None when there is none."""
        ...

    async def flush(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` in one log entry (command version 2)."""
        ...

    async def publish(self, channel: bytes, message: bytes) -> int:
        """Send a pub/sub message through the log (command version 6); its entry's index."""
        ...


class ScriptBackend(Backend, Protocol):
    """The script operations (command version 4) of a ``Backend``: a separate protocol so that
    backends written before scripts (test fakes) remain ``Backend``s; every backend of the
    server (``LocalBackend``, ``LeaderBackend``, ``ShardedBackend``) has them."""

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        """Run a Lua script as one log entry (command version 4); its reply."""
        ...

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        """``eval`` of a loaded script; ``NoScriptError`` when the leader does not hold it."""
        ...

    async def script_load(self, script: bytes) -> str:
        """Add a script to the replicated script table; its SHA-1."""
        ...

    async def script_exists(self, shas: Sequence[str], consistency: str) -> list[bool]:
        """Whether each SHA-1 is in the script table."""
        ...

    async def script_flush(self) -> int:
        """Empty the script table."""
        ...


class ReplicaPort(Protocol):
    """Local reads of this node's replica (``CacheStateMachine.get``)."""

    def get(self, key: str, now: float) -> Item | None: ...

    @property
    def command_version(self) -> int:
        """The cluster's command version as this replica knows it (never ahead of the
        leader's: it only grows, and the leader applied it first)."""
        ...


class FormatPort(Protocol):
    """What the commands read of the cluster's command format (``ReplicaPort`` has it)."""

    @property
    def command_version(self) -> int: ...


class ServiceView(Protocol):
    """What the connections read of the cache besides running commands: the command format
    (``machine``) and the counters INFO reports — a node's ``CacheService``, or on a sharded
    store a view over the groups it hosts (``raftcache.resp.shards.StoreView``)."""

    @property
    def machine(self) -> FormatPort: ...

    async def stats(self) -> Mapping[str, Any]: ...


class ServicePort(Protocol):
    """The parts of ``CacheService`` the RESP server uses."""

    @property
    def machine(self) -> ReplicaPort: ...

    async def mget(
        self, keys: Sequence[str], consistency: str = "linearizable", *, touch: bool = True
    ) -> list[Item | None]: ...

    async def list_keys(
        self, prefix: str | None, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]: ...

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int: ...

    async def delete(self, key: str, if_version: int | None = None) -> bool: ...

    async def incr(self, key: str, by: int = 1) -> Any: ...

    async def batch(self, ops: Sequence[Any]) -> list[BatchItem]: ...

    async def flush(self, prefix: str = "") -> int: ...

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str] = (),
        args: Sequence[bytes] = (),
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply: ...

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str] = (),
        args: Sequence[bytes] = (),
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply: ...

    async def script_load(self, script: bytes) -> str: ...

    async def script_exists(
        self, shas: Sequence[str], consistency: str = "linearizable"
    ) -> list[bool]: ...

    async def script_flush(self) -> int: ...
    async def publish(self, channel: bytes, message: bytes) -> int: ...
    async def random_key(self, consistency: str = "linearizable") -> str | None: ...

    async def stats(self) -> Mapping[str, Any]: ...


class NodePort(Protocol):
    """The parts of ``RaftNode`` the RESP server reads."""

    @property
    def node_id(self) -> str: ...

    @property
    def leader_id(self) -> str | None: ...

    @property
    def last_applied(self) -> int: ...

    @property
    def last_log_index(self) -> int: ...

    def leader_address(self) -> str | None: ...

    def status(self) -> dict[str, Any]: ...

    def raft_stats(self) -> dict[str, Any]: ...


class LocalBackend:
    """``Backend`` over this node's ``CacheService``."""

    def __init__(self, service: ServicePort) -> None:
        self._service = service

    async def values(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[bytes | None]:
        items = await self._service.mget(keys, consistency, touch=touch)
        return [None if item is None else as_value(item) for item in items]

    async def items(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[Item | None]:
        return await self._service.mget(keys, consistency, touch=touch)

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        return await self._service.set(key, value, ttl, if_version, if_absent)

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        return await self._service.delete(key, if_version)

    async def incr(self, key: str, by: int) -> int:
        result = await self._service.incr(key, by)
        value: int = result.value
        return value

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchItem]:
        return await self._service.batch(ops)

    async def list_keys(
        self, prefix: str, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        return await self._service.list_keys(prefix, after, limit, consistency)

    async def flush(self, prefix: str) -> int:
        return await self._service.flush(prefix)

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        return await self._service.eval(script, keys, args, slot=slot, read_only=read_only)

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        return await self._service.evalsha(sha, keys, args, slot=slot, read_only=read_only)

    async def script_load(self, script: bytes) -> str:
        return await self._service.script_load(script)

    async def script_exists(self, shas: Sequence[str], consistency: str) -> list[bool]:
        return await self._service.script_exists(shas, consistency)

    async def script_flush(self) -> int:
        return await self._service.script_flush()

    async def publish(self, channel: bytes, message: bytes) -> int:
        return await self._service.publish(channel, message)

    async def random_key(self, consistency: str) -> str | None:
        return await self._service.random_key(consistency)

    async def dbsize(self, consistency: str) -> int:
        await self._service.mget([], consistency)  # the read barrier alone
        stats = await self._service.stats()
        return int(stats["keys"])


class CallRouter(Protocol):
    """Runs a command's ``Backend`` operations somewhere (``Router``; on a sharded store, one
    per group and one over them all: ``raftcache.resp.shards``)."""

    @property
    def forwarded_total(self) -> int:
        """Operations sent to another node so far (INFO's ``forwarded_to_leader``)."""
        ...

    async def call(
        self, fn: Callable[[Backend], Awaitable[T]], gate: asyncio.Lock | None = None
    ) -> T:
        """``fn`` run against a backend; ``gate`` orders one connection's forwarded writes."""
        ...


class Router:
    """Runs commands locally, or on the leader when this node is not it (module docstring).

    Args:
        node: the local Raft node.
        local: the backend over the local service.
        remote: makes the backend for a leader's base URL.
        peer_urls: fallback base URLs by node id, for leaders whose configuration entry has none.
        leader_wait_s: how long to wait for a leader to be known before ``UnavailableError``.
        poll_interval_s: how often the leader is looked up again while waiting.
    """

    def __init__(
        self,
        node: NodePort,
        local: Backend,
        remote: Callable[[str], Backend],
        *,
        peer_urls: Mapping[str, str] | None = None,
        leader_wait_s: float = 2.0,
        poll_interval_s: float = 0.02,
    ) -> None:
        self.node = node
        self.local = local
        self._remote = remote
        self._peer_urls = shared_urls(peer_urls)
        self._leader_wait_s = leader_wait_s
        self._poll_interval_s = poll_interval_s
        self.forwarded_total = 0

    async def call(
        self, fn: Callable[[Backend], Awaitable[T]], gate: asyncio.Lock | None = None
    ) -> T:
        """``fn(local)``, or ``fn(leader)`` if this node is not the leader (see the module
        docstring); ``gate`` orders the fallbacks of one connection."""
        try:
            return await fn(self.local)
        except NotLeaderError as exc:
            hint = exc.leader_id
        if gate is None:
            return await self._elsewhere(fn, hint)
        async with gate:
            return await self._elsewhere(fn, hint)

    async def _elsewhere(self, fn: Callable[[Backend], Awaitable[T]], hint: str | None) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._leader_wait_s
        while True:
            leader = self.node.leader_id or hint
            hint = None  # a hint is only good once: it may be stale
            if leader == self.node.node_id:
                try:
                    return await fn(self.local)
                except NotLeaderError as again:
                    hint = again.leader_id
            elif leader is not None:
                url = self._leader_url(leader)
                if url is not None:
                    self.forwarded_total += 1
                    return await fn(self._remote(url))
            if loop.time() >= deadline:
                raise UnavailableError("no leader known; the cluster may be electing one")
            await asyncio.sleep(self._poll_interval_s)

    def _leader_url(self, leader: str) -> str | None:
        url: str | None = None
        if self.node.leader_id == leader:
            url = self.node.leader_address()
        return url or self._peer_urls.get(leader)
