"""Transactions: MULTI/EXEC, and single commands that read before they write, as one atomic
cache batch, by optimistic concurrency on key versions.

Rule: a transaction is a list of calls whose effects and replies depend only on their own keys
(``raftcache.resp.calls``). It runs in rounds:

1. Read, in one linearizable read, every key it touches; note the version of each *pinned* key
   (the keys it may write, and those whose expiry it reads).
2. Simulate the calls in order on those states (``View``): this gives every reply and the final
   state of every pinned key.
3. If no pinned key changes, the read was the transaction's linearization point: reply.
4. Otherwise commit one batch — one log entry, applied atomically — that writes each pinned
   key's final state *conditioned on the version read* (``if_version``; 0 means "still
   missing"), and re-reads every other key (``get`` ops, whose values replace the ones read in
   step 1 for the replies). A pinned key the transaction leaves unchanged is rewritten with its
   own value and remaining TTL, so that it too is checked; this bumps its version.
5. If a condition failed, another client wrote one of those keys in between and nothing was
   applied: start again from 1 (at most ``max_attempts`` rounds, then an error).

A single-op commit goes through ``set``/``delete`` with ``if_version`` rather than ``batch``, so
that it can be forwarded through the HTTP API, which has no conditions on batch ops.

A transaction that writes nothing is step 1 alone, at the connection's consistency; unless a
call reads an expiry (TTL, PTTL) it reads values only — the keys live at that read, with no
expiry to fetch (which a store holding no replica of the keys' group may not be able to).

Caveat: a TTL is sent as "seconds from the proposer's now", so rewriting a key keeps its expiry
up to the time between the read and the proposal (microseconds on the leader; plus clock skew
when forwarded from a follower).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from raftcache.cache.commands import BatchOp, DeleteOp, GetOp, SetOp
from raftcache.cache.commands_v2 import TtlOp
from raftcache.cache.entries import Item
from raftcache.cache.errors import PreconditionFailedError, WrongTypeError
from raftcache.cache.hashes import HashOp, encode_fields
from raftcache.cache.results import BatchItem
from raftcache.resp.backend import Backend, CallRouter
from raftcache.resp.calls import Call, Entry, Reply, View
from raftcache.resp.protocol import RespError
from raftcache.resp.values import HashValue, as_value

MAX_ATTEMPTS: Final = 32


async def run_transaction(
    router: CallRouter,
    calls: Sequence[Call],
    *,
    clock: Callable[[], float],
    consistency: str = "linearizable",
    gate: asyncio.Lock | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    touch: bool = True,
) -> list[Reply]:
    """Run ``calls`` atomically (see the module docstring); one reply per call, in order.

    Args:
        router: where to run (locally, or on the leader).
        calls: the calls, each with ``in_multi`` set.
        clock: wall-clock seconds (the instant the simulation judges expiry at).
        consistency: of a transaction that writes nothing (a write always reads
            linearizably: its replies must hold at its commit).
        gate: the connection's ordering gate (``Router.call``).
        max_attempts: rounds before giving up under contention.
        touch: False (``CLIENT NO-TOUCH``): the reads of step 1 leave recency alone. A commit
            that re-reads keys (``get`` ops) still refreshes them: a replicated get is an access.
    """
    if not any(call.writes for call in calls):
        return await router.call(lambda b: _read_only(b, calls, clock, consistency, touch), gate)
    return await router.call(lambda b: _read_write(b, calls, clock, max_attempts, touch), gate)


def _unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _entry(item: Item | None) -> Entry | None:
    return None if item is None else Entry(as_value(item), item.expires_at)


def simulate(calls: Sequence[Call], view: View) -> list[Reply]:
    """Replies of ``calls`` run in order on ``view``; a call's own error is its reply (the
    others still run, as in Redis)."""
    replies: list[Reply] = []
    for call in calls:
        try:
            replies.append(call.simulate(view))
        except RespError as exc:
            replies.append(exc)
    return replies


async def _read_only(
    backend: Backend,
    calls: Sequence[Call],
    clock: Callable[[], float],
    consistency: str,
    touch: bool,
) -> list[Reply]:
    keys = _unique(k for call in calls for k in call.keys)
    base: dict[str, Entry | None] = {}
    if keys and any(call.pinned for call in calls):  # TTL, PTTL: the expiries too
        items = await backend.items(keys, consistency, touch=touch)
        base = {key: _entry(item) for key, item in zip(keys, items, strict=True)}
    elif keys:  # the values alone, live at the read: one read, no expiry to fetch
        values = await backend.values(keys, consistency, touch=touch)
        base = {k: None if v is None else Entry(v) for k, v in zip(keys, values, strict=True)}
    return simulate(calls, View(clock(), base))


async def _read_write(
    backend: Backend,
    calls: Sequence[Call],
    clock: Callable[[], float],
    max_attempts: int,
    touch: bool,
) -> list[Reply]:
    pinned = _unique(k for call in calls for k in call.pinned)
    pinned_set = set(pinned)
    loose = [k for k in _unique(k for call in calls for k in call.keys) if k not in pinned_set]
    for _ in range(max_attempts):
        items = await backend.items(pinned + loose, "linearizable", touch=touch)
        now = clock()
        base = {key: _entry(item) for key, item in zip(pinned + loose, items, strict=True)}
        versions = {
            key: 0 if item is None else item.version
            for key, item in zip(pinned, items, strict=False)
        }
        view = View(now, base)
        replies = simulate(calls, view)
        if all(view.get(key) == view.initial(key) for key in pinned):
            return replies
        ops: list[BatchOp] = [_reread_op(key, base[key]) for key in loose]
        for key in pinned:
            ops += _final_ops(key, view, versions[key])
        try:
            results = await _commit(backend, ops)
        except (PreconditionFailedError, WrongTypeError):
            continue  # a key changed (a loose one even its type) since the read: again
        if not loose:
            return replies
        for key, value in zip(loose, results, strict=False):
            base[key] = _reread_entry(value)
        return simulate(calls, View(now, base))
    raise RespError(
        f"ERR transaction aborted: its keys kept changing ({max_attempts} attempts); try again"
    )


def _reread_op(key: str, entry: Entry | None) -> BatchOp:
    """The op that reads a loose key again at commit: a hash's read for a hash."""
    return HashOp(key, "read") if entry is not None and entry.is_hash else GetOp(key)


def _reread_entry(result: BatchItem) -> Entry | None:
    if isinstance(result, tuple):  # a hash's read: field, value, field, value...
        pairs = dict(zip(result[::2], result[1::2], strict=True))
        return Entry(HashValue(encode_fields(pairs)))
    return Entry(result) if isinstance(result, bytes) else None


def _final_ops(key: str, view: View, version: int) -> list[BatchOp]:
    """The ops that leave ``key`` in its final state, if it still has ``version``. A hash
    (RENAME or COPY of one) is written anew: deleted on that condition, its fields set, its
    expiry set (command version 5, as any hash)."""
    final = view.get(key)
    if final is None:
        return [DeleteOp(key, if_version=version)]
    if isinstance(final.value, HashValue):
        fields = final.value.fields()
        ops: list[BatchOp] = [
            DeleteOp(key, if_version=version),
            HashOp(key, "set", tuple(fields), tuple(fields.values())),
        ]
        if final.expires_at is not None:
            ops.append(TtlOp(key, at=final.expires_at))
        return ops
    # ``get`` judged it live at ``now``, so the remaining TTL is > 0.
    ttl = None if final.expires_at is None else final.expires_at - view.now
    return [SetOp(key, final.value, ttl=ttl, if_version=version)]


async def _commit(backend: Backend, ops: Sequence[BatchOp]) -> list[BatchItem]:
    if len(ops) == 1:
        op = ops[0]
        if isinstance(op, SetOp):
            return [await backend.set(op.key, op.value, ttl=op.ttl, if_version=op.if_version)]
        if isinstance(op, DeleteOp):
            return [await backend.delete(op.key, if_version=op.if_version)]
    return await backend.batch(ops)
