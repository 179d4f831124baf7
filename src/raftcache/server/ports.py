"""What the HTTP server needs from the layers below it, as structural protocols.

Rule: the server depends on these two small protocols, not on the concrete ``RaftNode`` and
``CacheService`` (docs/design.md fixes both), so that handlers can be tested against a fake and
the real classes satisfy them without inheriting anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from raftcache.cache.commands import BatchOp, Session
from raftcache.cache.entries import Item
from raftcache.cache.results import BatchItem, IncrResult, TtlResult


class NodePort(Protocol):
    """The parts of ``RaftNode`` the server reads or calls (docs/design.md)."""

    @property
    def node_id(self) -> str: ...

    @property
    def leader_id(self) -> str | None: ...

    @property
    def current_term(self) -> int: ...

    @property
    def commit_index(self) -> int: ...

    @property
    def last_applied(self) -> int: ...

    @property
    def members(self) -> Sequence[str] | frozenset[str] | set[str]: ...

    def leader_address(self) -> str | None: ...

    def status(self) -> dict[str, Any]: ...

    def raft_stats(self) -> dict[str, Any]: ...

    async def add_member(self, node_id: str, address: str | None = None) -> Any: ...

    async def remove_member(self, node_id: str) -> Any: ...

    async def transfer_leadership(self, to: str | None = None) -> Any: ...

    async def take_snapshot(self) -> Any: ...


class ServicePort(Protocol):
    """The parts of ``CacheService`` the server calls (docs/design.md)."""

    async def get(
        self, key: str, consistency: str = "linearizable", *, touch: bool = True
    ) -> Item | None: ...

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
        session: Session | None = None,
    ) -> int: ...

    async def delete(
        self, key: str, if_version: int | None = None, session: Session | None = None
    ) -> bool: ...

    async def incr(self, key: str, by: int = 1, session: Session | None = None) -> IncrResult: ...

    async def batch(
        self, ops: Sequence[BatchOp], session: Session | None = None
    ) -> list[BatchItem]: ...

    async def expire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        at: float | None = None,
        condition: str | None = None,
        if_version: int | None = None,
        session: Session | None = None,
    ) -> TtlResult: ...

    async def flush(self, prefix: str = "", session: Session | None = None) -> int: ...

    async def stats(self) -> Mapping[str, Any]: ...
