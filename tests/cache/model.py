"""A deliberately naive model of the cache state machine, for property tests.

Rule: written from the rules in docs/cache.md, sharing no code with ``raftcache.cache`` beyond
the result types, and as plain as possible (lists and dicts, full scans): if it and the machine
agree over random command sequences, both follow the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftcache.cache.commands import BatchOp, DeleteOp, GetOp, SetOp
from raftcache.cache.commands_v2 import IncrOp, TtlOp
from raftcache.cache.results import CommandError, ErrorCode, IncrResult, Result, TtlResult

INT64 = (-(2**63), 2**63 - 1)


@dataclass
class Entry:
    value: bytes
    version: int
    expires_at: float | None


def err(code: ErrorCode, version: int = 0, op_index: int | None = None) -> CommandError:
    return CommandError(code, "", version, op_index)


@dataclass
class ModelCache:
    max_keys: int | None = None
    max_bytes: int | None = None
    data: dict[str, Entry] = field(default_factory=dict)
    lru: list[str] = field(default_factory=list)  # oldest first
    evictions: int = 0
    expirations: int = 0
    bytes_peak: int = 0
    sessions: dict[tuple[str, int], Result] = field(default_factory=dict)

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def size(key: str, value: bytes) -> int:
        return len(key.encode("utf-8")) + len(value)

    def total_bytes(self) -> int:
        return sum(self.size(k, e.value) for k, e in self.data.items())

    def expired(self, key: str, now: float) -> bool:
        e = self.data[key]
        return e.expires_at is not None and e.expires_at <= now

    def live(self, key: str, now: float) -> Entry | None:
        if key in self.data and not self.expired(key, now):
            return self.data[key]
        return None

    def version(self, key: str, now: float) -> int:
        e = self.live(key, now)
        return 0 if e is None else e.version

    def drop(self, key: str, now: float) -> bool:
        """Remove key; True if it was live."""
        if key not in self.data:
            return False
        was_expired = self.expired(key, now)
        if was_expired:
            self.expirations += 1
        del self.data[key]
        self.lru.remove(key)
        return not was_expired

    def write(
        self, key: str, value: bytes, version: int, expires_at: float | None, now: float
    ) -> None:
        self.drop(key, now)
        self.data[key] = Entry(value, version, expires_at)
        self.lru.append(key)

    def over(self) -> bool:
        return (self.max_keys is not None and len(self.data) > self.max_keys) or (
            self.max_bytes is not None and self.total_bytes() > self.max_bytes
        )

    def settle(self, now: float) -> None:
        while self.over():
            expired = sorted(
                (e.expires_at, k)
                for k, e in self.data.items()
                if e.expires_at is not None and e.expires_at <= now
            )
            if expired:
                key = expired[0][1]
                self.expirations += 1
            else:
                key = self.lru[0]
                self.evictions += 1
            del self.data[key]
            self.lru.remove(key)
        self.bytes_peak = max(self.bytes_peak, self.total_bytes())

    def fits(self, key: str, value: bytes) -> bool:
        return self.max_bytes is None or self.size(key, value) <= self.max_bytes

    # --- commands -----------------------------------------------------------------------------

    def set(
        self,
        index: int,
        now: float,
        key: str,
        value: bytes,
        ttl: float | None,
        if_version: int | None,
        if_absent: bool,
        keep_ttl: bool = False,
    ) -> Result:
        if not self.fits(key, value):
            return err(ErrorCode.VALUE_TOO_LARGE)
        current = self.version(key, now)
        if (if_version is not None and current != if_version) or (if_absent and current):
            return err(ErrorCode.PRECONDITION_FAILED, current)
        expires_at = None if ttl is None else now + ttl
        if keep_ttl:
            e = self.live(key, now)
            expires_at = None if e is None else e.expires_at
        self.write(key, value, index, expires_at, now)
        self.settle(now)
        return index

    def delete(self, now: float, key: str, if_version: int | None) -> Result:
        current = self.version(key, now)
        if if_version is not None and current != if_version:
            return err(ErrorCode.PRECONDITION_FAILED, current)
        return self.drop(key, now)

    def ttl(self, index: int, now: float, op: TtlOp) -> Result:
        """A TTL-only change: the expiry alone, a new version, most recently used."""
        current = self.version(op.key, now)
        if op.if_version is not None and current != op.if_version:
            return err(ErrorCode.PRECONDITION_FAILED, current)
        e = self.live(op.key, now)
        if e is None:
            return TtlResult(False, 0)
        old = e.expires_at
        if op.ttl is None and op.at is None:
            if old is None:
                return TtlResult(False, e.version)
            when: float | None = None
        else:
            when = op.at if op.at is not None else now + op.ttl  # type: ignore[operator]
            inf = float("inf")
            skip = {
                "nx": old is not None,
                "xx": old is None,
                "gt": when <= (inf if old is None else old),
                "lt": when >= (inf if old is None else old),
            }
            if op.condition is not None and skip[op.condition]:
                return TtlResult(False, e.version)
            if when <= now:
                self.drop(op.key, now)
                return TtlResult(True, 0)
        self.write(op.key, e.value, index, when, now)
        return TtlResult(True, index)

    def flush(self, now: float, prefix: str) -> Result:
        return sum(self.drop(k, now) for k in sorted(self.data) if k.startswith(prefix))

    def incr(self, index: int, now: float, key: str, by: int) -> Result:
        e = self.live(key, now)
        base, expires_at = 0, None
        if e is not None:
            text = e.value.decode("latin-1")
            digits = text[1:] if text.startswith("-") else text
            if not digits or not digits.isdigit() or not digits.isascii() or len(digits) > 32:
                return err(ErrorCode.NOT_A_COUNTER)
            base, expires_at = int(text), e.expires_at
            if not INT64[0] <= base <= INT64[1]:
                return err(ErrorCode.NOT_A_COUNTER)
        value = base + by
        if not INT64[0] <= value <= INT64[1]:
            return err(ErrorCode.COUNTER_OVERFLOW)
        if not self.fits(key, str(value).encode()):
            return err(ErrorCode.VALUE_TOO_LARGE)
        self.write(key, str(value).encode(), index, expires_at, now)
        self.settle(now)
        return IncrResult(value, index)

    def batch(self, index: int, now: float, ops: Sequence[BatchOp]) -> Result:
        # Dry run on an unbounded copy (eviction happens once, after the batch); entry sizes
        # are checked against this model's own bound. All or nothing.
        trial = ModelCache()
        trial.data = {k: Entry(e.value, e.version, e.expires_at) for k, e in self.data.items()}
        trial.lru = list(self.lru)
        for position, op in enumerate(ops):
            if isinstance(op, SetOp):
                if not self.fits(op.key, op.value):
                    return err(ErrorCode.VALUE_TOO_LARGE, 0, position)
                result = trial.set(
                    index, now, op.key, op.value, op.ttl, op.if_version, op.if_absent, op.keep_ttl
                )
            elif isinstance(op, DeleteOp):
                result = trial.delete(now, op.key, op.if_version)
            elif isinstance(op, IncrOp):
                result = trial.incr(index, now, op.key, op.by)
                if isinstance(result, IncrResult) and not self.fits(op.key, b"%d" % result.value):
                    return err(ErrorCode.VALUE_TOO_LARGE, 0, position)
            elif isinstance(op, TtlOp):
                result = trial.ttl(index, now, op)
            else:
                continue
            if isinstance(result, CommandError):
                return CommandError(result.code, "", result.version, position)
        results: list[bytes | int | bool | None] = []
        for op in ops:
            if isinstance(op, GetOp):
                e = self.live(op.key, now)
                if e is not None:  # a replicated read refreshes recency
                    self.lru.remove(op.key)
                    self.lru.append(op.key)
                results.append(None if e is None else e.value)
            elif isinstance(op, SetOp):
                expires_at = None if op.ttl is None else now + op.ttl
                if op.keep_ttl:
                    e = self.live(op.key, now)
                    expires_at = None if e is None else e.expires_at
                self.write(op.key, op.value, index, expires_at, now)
                results.append(index)
            elif isinstance(op, IncrOp):
                e = self.live(op.key, now)
                value = (0 if e is None else int(e.value)) + op.by
                self.write(op.key, b"%d" % value, index, None if e is None else e.expires_at, now)
                results.append(value)
            elif isinstance(op, TtlOp):
                ttl_result = self.ttl(index, now, op)
                assert isinstance(ttl_result, TtlResult)
                results.append(ttl_result.changed)
            else:
                results.append(self.drop(op.key, now))
        self.settle(now)
        return tuple(results)

    def expire(self, now: float, keys: list[str]) -> Result:
        removed = 0
        for key in keys:
            if key in self.data and self.expired(key, now):
                self.drop(key, now)
                removed += 1
        return removed

    def touch(self, now: float, keys: list[str]) -> Result:
        touched = 0
        for key in keys:
            if self.live(key, now) is not None:
                self.lru.remove(key)
                self.lru.append(key)
                touched += 1
        return touched
