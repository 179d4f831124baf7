"""An in-memory twin of the RESP ``Backend`` (versions, expiry, conditions) for unit tests.

Rule: it follows ``CacheService``'s contract — versions are a counter bumped per write (all
sets of one batch share one), a condition that fails raises ``PreconditionFailed`` and changes
nothing, a batch is all or nothing — and lets a test inject a write by "another client" right
before the next commit (``before_commit``), to exercise the transaction retry loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from raftcache.cache.commands import BatchOp, DeleteOp, GetOp, SetOp
from raftcache.cache.entries import Item
from raftcache.cache.errors import NotACounter, PreconditionFailed
from raftcache.cache.results import BatchItem
from raftcache.resp.backend import Router


class FakeBackend:
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.data: dict[str, tuple[bytes, int, float | None]] = {}
        self.index = 0
        self.commits = 0
        self.before_commit: list[Callable[[FakeBackend], None]] = []
        self.published: list[tuple[bytes, bytes]] = []

    def _live(self, key: str) -> tuple[bytes, int, float | None] | None:
        entry = self.data.get(key)
        if entry is None or (entry[2] is not None and entry[2] <= self.clock()):
            return None
        return entry

    def put(self, key: str, value: bytes, ttl: float | None = None) -> int:
        """A write by another client (bumps the version)."""
        self.index += 1
        self.data[key] = (value, self.index, None if ttl is None else self.clock() + ttl)
        return self.index

    async def values(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[bytes | None]:
        return [None if (e := self._live(k)) is None else e[0] for k in keys]

    async def items(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[Item | None]:
        return [None if (e := self._live(k)) is None else Item(e[0], e[1], e[2]) for k in keys]

    def _version(self, key: str) -> int:
        entry = self._live(key)
        return 0 if entry is None else entry[1]

    def _hook(self) -> None:
        self.commits += 1
        hooks, self.before_commit = self.before_commit, []
        for hook in hooks:
            hook(self)

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        self._hook()
        current = self._version(key)
        if (if_version is not None and current != if_version) or (if_absent and current):
            raise PreconditionFailed(current)
        return self.put(key, value, ttl)

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        self._hook()
        current = self._version(key)
        if if_version is not None and current != if_version:
            raise PreconditionFailed(current)
        self.index += 1
        return self.data.pop(key, None) is not None and current != 0

    async def incr(self, key: str, by: int) -> int:
        self._hook()
        entry = self._live(key)
        try:
            value = (0 if entry is None else int(entry[0])) + by
        except ValueError:
            raise NotACounter(key) from None
        self.put(key, b"%d" % value, None if entry is None or entry[2] is None else 1.0)
        return value

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchItem]:
        self._hook()
        versions: dict[str, int] = {}
        for i, op in enumerate(ops):  # validate first: all or nothing
            if isinstance(op, SetOp | DeleteOp) and op.if_version is not None:
                current = versions.get(op.key, self._version(op.key))
                if current != op.if_version:
                    raise PreconditionFailed(current, i)
            if not isinstance(op, GetOp):
                versions[op.key] = self.index + 1 if isinstance(op, SetOp) else 0
        self.index += 1
        results: list[BatchItem] = []
        for op in ops:
            if isinstance(op, GetOp):
                results.append(None if (e := self._live(op.key)) is None else e[0])
            elif isinstance(op, SetOp):
                expires = None if op.ttl is None else self.clock() + op.ttl
                self.data[op.key] = (op.value, self.index, expires)
                results.append(self.index)
            else:
                results.append(self._live(op.key) is not None)
                self.data.pop(op.key, None)
        return results

    async def list_keys(
        self, prefix: str, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        keys = sorted(k for k in self.data if k.startswith(prefix) and self._live(k))
        if after is not None:
            keys = [k for k in keys if k > after]
        page = keys[:limit]
        return page, (page[-1] if len(keys) > limit else None)

    async def dbsize(self, consistency: str) -> int:
        return len(self.data)

    async def random_key(self, consistency: str) -> str | None:
        live = sorted(k for k in self.data if self._live(k))
        return live[0] if live else None

    async def flush(self, prefix: str) -> int:
        gone = [k for k in self.data if k.startswith(prefix)]
        for key in gone:
            del self.data[key]
        self._hook()
        return len(gone)

    async def publish(self, channel: bytes, message: bytes) -> int:
        self.published.append((channel, message))
        self._hook()
        return len(self.published)


class FakeNode:
    node_id = "n1"
    leader_id: str | None = "n1"
    last_applied = 0
    last_log_index = 0

    def leader_address(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        return {"id": "n1", "role": "leader"}

    def raft_stats(self) -> dict[str, Any]:
        return {}


def router_over(backend: FakeBackend) -> Router:
    """A router that always runs on ``backend`` (the node is the leader)."""
    return Router(FakeNode(), backend, lambda url: backend)
