"""In-test twins of ``RaftNode`` and ``CacheService`` for HTTP-level tests of the server.

They follow docs/design.md's contracts closely enough for the handlers (the real classes are
exercised by the cluster tests); errors to raise can be scripted per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.cache.commands import GetOp, SetOp
from raftcache.cache.commands_v2 import IncrOp, TtlOp
from raftcache.cache.entries import Item
from raftcache.cache.errors import NotACounter
from raftcache.cache.results import IncrResult, TtlResult
from raftcache.raft.errors import NotLeaderError


@dataclass
class FakeNode:
    """A node whose role and leader the test sets directly."""

    node_id: str = "n1"
    leader_id: str | None = "n1"
    current_term: int = 3
    commit_index: int = 10
    last_applied: int = 10
    members: list[str] = field(default_factory=lambda: ["n1", "n2", "n3"])
    addresses: dict[str, str] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def role(self) -> str:
        return "leader" if self.leader_id == self.node_id else "follower"

    def leader_address(self) -> str | None:
        return None if self.leader_id is None else self.addresses.get(self.leader_id)

    def status(self) -> dict[str, Any]:
        return {"extra_field": 1}

    def raft_stats(self) -> dict[str, Any]:
        return {
            "elections": 2,
            "state_transitions": 3,
            "rpcs_sent": {"AppendEntries": 5},
            "rpcs_failed": {"AppendEntries": 1},
            "rpcs_received": {"RequestVote": 1},
            "replication_latency_ms": {"n2": 1.5},
            "follower_lag": {"n2": 0},
            "voters_reachable": 2,
            "disk_full": False,
            "fsync_seconds": {"count": 2, "sum": 0.003, "buckets": {"0.001": 1, "+Inf": 2}},
        }

    def _require_leader(self) -> None:
        if self.leader_id != self.node_id:
            raise NotLeaderError(self.leader_id)

    async def add_member(self, node_id: str, address: str | None = None) -> None:
        self._require_leader()
        self.calls.append(("add_member", (node_id, address)))
        self.members.append(node_id)

    async def remove_member(self, node_id: str) -> None:
        self._require_leader()
        self.calls.append(("remove_member", node_id))
        if node_id in self.members:  # idempotent, like RaftNode.remove_member
            self.members.remove(node_id)

    async def transfer_leadership(self, to: str | None = None) -> None:
        self._require_leader()
        self.calls.append(("transfer_leadership", to))

    async def take_snapshot(self) -> int:
        self.calls.append(("take_snapshot", None))
        return self.last_applied


def Entry(value: bytes, version: int) -> Item:
    """A stored entry without expiry."""
    return Item(value, version, None)


@dataclass
class FakeService:
    """A dict-backed cache; ``fail_next`` makes the next call raise the given error."""

    node: FakeNode
    data: dict[str, Item] = field(default_factory=dict)
    index: int = 100
    calls: list[tuple[str, Any]] = field(default_factory=list)
    fail_next: BaseException | None = None

    def _enter(self, name: str, args: Any, *, needs_leader: bool = True) -> None:
        self.calls.append((name, args))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        if needs_leader and self.node.leader_id != self.node.node_id:
            raise NotLeaderError(self.node.leader_id)

    def _write(self, key: str, value: bytes) -> int:
        self.index += 1
        self.data[key] = Entry(value, self.index)
        return self.index

    async def get(
        self, key: str, consistency: str = "linearizable", *, touch: bool = True
    ) -> Item | None:
        self._enter("get", (key, consistency, touch), needs_leader=consistency != "stale")
        return self.data.get(key)

    async def mget(
        self, keys: Sequence[str], consistency: str = "linearizable", *, touch: bool = True
    ) -> list[Any]:
        args = (list(keys), consistency, touch)
        self._enter("mget", args, needs_leader=consistency != "stale")
        return [self.data.get(k) for k in keys]

    async def list_keys(
        self, prefix: str | None, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        self._enter("list_keys", (prefix, after, limit, consistency))
        keys = sorted(k for k in self.data if k.startswith(prefix or "") and k > (after or ""))
        page = keys[:limit]
        return page, page[-1] if len(keys) > limit else None

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
        session: Any = None,
    ) -> int:
        self._enter("set", (key, value, ttl, if_version, if_absent, session))
        return self._write(key, value)

    async def delete(self, key: str, if_version: int | None = None, session: Any = None) -> bool:
        self._enter("delete", (key, if_version, session))
        return self.data.pop(key, None) is not None

    async def incr(self, key: str, by: int = 1, session: Any = None) -> IncrResult:
        self._enter("incr", (key, by, session))
        entry = self.data.get(key)
        if entry is not None and not entry.value.lstrip(b"-").isdigit():
            raise NotACounter(f"{key} is not a counter")
        value = int(entry.value) + by if entry else by
        return IncrResult(value, self._write(key, str(value).encode()))

    async def batch(self, ops: Sequence[Any], session: Any = None) -> list[Any]:
        self._enter("batch", (list(ops), session))
        results: list[Any] = []
        for op in ops:
            if isinstance(op, GetOp):
                entry = self.data.get(op.key)
                results.append(None if entry is None else entry.value)
            elif isinstance(op, SetOp):
                results.append(self._write(op.key, op.value))
            elif isinstance(op, IncrOp):
                entry = self.data.get(op.key)
                value = (int(entry.value) if entry else 0) + op.by
                self._write(op.key, str(value).encode())
                results.append(value)
            elif isinstance(op, TtlOp):
                results.append(op.key in self.data)
            else:
                results.append(self.data.pop(op.key, None) is not None)
        return results

    async def expire(self, key: str, ttl: float | None = None, **options: Any) -> TtlResult:
        self._enter("expire", (key, ttl, options))
        entry = self.data.get(key)
        return TtlResult(entry is not None, 0 if entry is None else entry.version)

    async def publish(self, channel: bytes, message: bytes) -> int:
        self._enter("publish", (channel, message))
        self.index += 1
        return self.index

    async def flush(self, prefix: str = "", session: Any = None) -> int:
        self._enter("flush", (prefix, session))
        doomed = [k for k in self.data if k.startswith(prefix)]
        for key in doomed:
            del self.data[key]
        return len(doomed)

    async def stats(self) -> dict[str, Any]:
        return {"keys": len(self.data), "bytes": 0, "hits": 4, "misses": 1, "hit_rate": 0.8}
