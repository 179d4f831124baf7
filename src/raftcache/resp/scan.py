"""Whole-keyspace commands: KEYS, SCAN (MATCH, COUNT, TYPE), DBSIZE, FLUSHDB/FLUSHALL,
RANDOMKEY.

Rule: these page through the cache's sorted key listing (``list_keys``), each page a
linearizable read of its own, so — unlike Redis's KEYS — a listing is not one atomic snapshot
of a keyspace that changes meanwhile. On a sharded store they go through every data group
(``ServerState.shards``; on a cluster-mode port, those it hosts): SCAN one group after the
other, its cursor naming the group; KEYS
merges the groups' listings in key order; DBSIZE adds their counts; FLUSHDB flushes each. A
pattern whose literal prefix holds a whole hash tag (``{user42}:*``) visits only its group.
FLUSHDB is one FLUSH entry (command version 2): atomic (per group, on a sharded store).
Until a rolling upgrade has enabled format 2 it falls back to deleting the keys it finds in one
pass, a batch per page, so a key written behind its cursor during that pass survives. A glob
pattern's literal prefix narrows the listing to that prefix; the rest of the pattern is matched
with Redis's glob rules (``raftcache.resp.globs``).
"""

from __future__ import annotations

import asyncio
import heapq
import re
from collections.abc import Awaitable, Sequence
from typing import Final

from raftcache.cache.commands import DeleteOp
from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.backend import Backend, CallRouter
from raftcache.resp.calls import Call, Reply
from raftcache.resp.errors import SYNTAX, wrong_args
from raftcache.resp.globs import compile_glob
from raftcache.resp.protocol import OK, RespError
from raftcache.resp.state import ClientState
from raftcache.resp.values import HashValue

PAGE: Final = 1000  # keys per listing request (the HTTP API's largest page)


def _matcher(pattern: str | None) -> tuple[str, re.Pattern[str] | None]:
    if pattern is None or pattern == "*":
        return "", None
    prefix, regex = compile_glob(pattern)
    return prefix, regex


def _shards(ctx: ClientState, prefix: str) -> list[tuple[int, CallRouter]]:
    """The groups whose keys a listing of ``prefix`` must visit (``ServerState.shards``), with
    their positions: all, but only one when ``prefix`` fixes the hash tag of every key it
    starts (``{tag}`` whole in it: a sharded store's keys of one tag share a group)."""
    server = ctx.server
    shards, store = server.shards, server.store
    if store is not None and len(shards) > 1:
        start = prefix.find("{")
        if start >= 0 and prefix.find("}", start + 1) > start + 1:
            gid = store.group_of(prefix)
            return [(i, r) for i, r in enumerate(shards) if server.shard_ids[i] == gid]
    return list(enumerate(shards))


class Keys(Call):
    """KEYS pattern: every key matching, in key order (on a sharded store, every group's
    listing merged)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    async def run_server(self, ctx: ClientState) -> Reply:
        prefix, regex = _matcher(self.pattern)
        consistency = ctx.consistency

        async def listing(backend: Backend) -> list[bytes]:
            found: list[bytes] = []
            after: str | None = None
            while True:
                keys, after = await backend.list_keys(prefix, after, PAGE, consistency)
                found += [k.encode() for k in keys if regex is None or regex.fullmatch(k)]
                if after is None:
                    return found

        shards = _shards(ctx, prefix)
        if len(shards) == 1:
            return await shards[0][1].call(listing, ctx.gate)
        listings = await asyncio.gather(*(router.call(listing, ctx.gate) for _, router in shards))
        return list(heapq.merge(*listings))


class Scan(Call):
    """SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]: a page of one group's keys (with one
    group, of all keys); a cursor names the group and the key to go on after."""

    def __init__(self, cursor: int, pattern: str | None, count: int, kind: str | None) -> None:
        self.cursor, self.pattern, self.count, self.kind = cursor, pattern, count, kind

    async def run_server(self, ctx: ClientState) -> Reply:
        server = ctx.server
        shard, after = server.cursors.resolve_shard(self.cursor)
        prefix, regex = _matcher(self.pattern)
        limit, consistency = min(self.count, PAGE), ctx.consistency
        if self.cursor and shard >= len(server.shards):
            raise RespError("ERR invalid cursor")
        shards = [(i, router) for i, router in _shards(ctx, prefix) if i >= shard]
        keys: list[str] = []
        cursor = 0
        for position, (index, router) in enumerate(shards):
            start = after if index == shard else None

            def page(
                backend: Backend, start: str | None = start
            ) -> Awaitable[tuple[list[str], str | None]]:
                return backend.list_keys(prefix, start, limit, consistency)

            keys, nxt = await router.call(page, ctx.gate)
            if nxt is not None:
                cursor = server.cursors.issue(nxt, index)
                break
            if position + 1 < len(shards) and keys:  # this group done: the next from its start
                cursor = server.cursors.issue(None, shards[position + 1][0])
                break
        found = [k for k in keys if regex is None or regex.fullmatch(k)]
        if self.kind is not None and found:  # TYPE: one read of the page's values
            chosen = found

            def types(backend: Backend) -> Awaitable[list[bytes | None]]:
                return backend.values(chosen, consistency, touch=False)

            values = await router.call(types, ctx.gate)
            found = [k for k, v in zip(chosen, values, strict=True) if _type_of(v) == self.kind]
        return [str(cursor).encode(), [k.encode() for k in found]]


def _type_of(value: bytes | None) -> str | None:
    """TYPE's name for a value (None: missing)."""
    if value is None:
        return None
    return "hash" if isinstance(value, HashValue) else "string"


class DbSize(Call):
    """DBSIZE: keys held (as Redis, expired keys not yet removed count); on a sharded store
    the sum of every group's."""

    async def run_server(self, ctx: ClientState) -> Reply:
        consistency = ctx.consistency
        shards = ctx.server.shards
        counts = await asyncio.gather(
            *(router.call(lambda b: b.dbsize(consistency), ctx.gate) for router in shards)
        )
        return sum(counts)


class FlushDb(Call):
    """FLUSHDB / FLUSHALL [ASYNC | SYNC]: delete every key in one log entry (atomic); before
    command version 2 is enabled, a batch per page (not atomic). On a sharded store, every
    group is flushed so, concurrently: atomic per group, not across groups."""

    writes = True

    async def run_server(self, ctx: ClientState) -> Reply:
        if ctx.server.service.machine.command_version >= 2:

            async def flush_all(backend: Backend) -> Reply:
                await backend.flush("")
                return OK

            run = flush_all
        else:

            async def flush(backend: Backend) -> Reply:
                after: str | None = None
                while True:
                    keys, after = await backend.list_keys("", after, PAGE, "linearizable")
                    if keys:
                        await backend.batch([DeleteOp(key) for key in keys])
                    if after is None:
                        return OK

            run = flush
        shards = ctx.server.shards
        if len(shards) == 1:
            return await shards[0].call(run, ctx.gate)
        await asyncio.gather(*(router.call(run, ctx.gate) for router in shards))
        return OK


class RandomKey(Call):
    """RANDOMKEY: a live key drawn at random after a read at the connection's consistency, or
    nil. The draw is this node's own (a read changes no state): uniform over the keys held where
    the read runs here; through the HTTP API (a follower forwarding, a group held elsewhere)
    drawn from the first page of the listing."""

    async def run_server(self, ctx: ClientState) -> Reply:
        consistency = ctx.consistency
        key = await ctx.server.router.call(lambda b: b.random_key(consistency), ctx.gate)
        return None if key is None else key.encode()


def parse_randomkey(argv: Sequence[bytes], limits: Limits) -> Call:
    return RandomKey()


def parse_keys(argv: Sequence[bytes], limits: Limits) -> Call:
    return Keys(args.text(argv[0]))


def parse_scan(argv: Sequence[bytes], limits: Limits) -> Call:
    try:
        cursor = int(argv[0]) if argv[0].isdigit() else -1
    except ValueError:
        cursor = -1
    if cursor < 0:
        raise RespError("ERR invalid cursor")
    pattern: str | None = None
    count = 10
    kind: str | None = None
    i = 1
    while i < len(argv):
        option = args.upper(argv[i])
        if i + 1 >= len(argv):
            raise SYNTAX
        if option == "MATCH":
            pattern = args.text(argv[i + 1])
        elif option == "COUNT":
            count = args.integer(argv[i + 1])
            if count < 1:
                raise SYNTAX
        elif option == "TYPE":
            kind = args.text(argv[i + 1]).lower()
        else:
            raise SYNTAX
        i += 2
    return Scan(cursor, pattern, count, kind)


def parse_dbsize(argv: Sequence[bytes], limits: Limits) -> Call:
    return DbSize()


def parse_flushdb(argv: Sequence[bytes], limits: Limits) -> Call:
    if len(argv) > 1:
        raise wrong_args("flushdb")
    if argv and args.upper(argv[0]) not in ("ASYNC", "SYNC"):
        raise SYNTAX
    return FlushDb()
