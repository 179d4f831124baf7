"""Executing the commands of one connection: order, pipelining, MULTI queueing, auth gating.

Rule: replies leave in the order commands arrived, and each command sees the effects of every
command before it on the same connection — as in Redis — while a pipeline still runs fast:

- consecutive READ calls share one read barrier (one ``values`` read for all their keys, and
  with other connections' reads: ``raftcache.resp.coalesce``);
- consecutive BATCH calls (plain SET, DEL, MSET...) share one log entry, with other
  connections' too;
- consecutive WRITE calls start together, each making one proposal before its first
  suspension, so they reach the Raft log in pipeline order and share replication rounds;
- anything else (transactions, connection and server commands) runs alone, after every call
  before it has finished.

A run of one kind ends before a run of another kind starts, so a read never misses an
earlier write, nor a write overtakes an earlier one.

Inside MULTI, commands are checked and queued (``+QUEUED``); a command that cannot be part of
an atomic cache batch is refused at queue time, which makes EXEC fail with EXECABORT, as Redis
does for a command refused while queueing. Argument errors surface in EXEC's reply.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Final

from raftcache.cache.errors import CacheError
from raftcache.resp.admin import Discard, Exec, Multi
from raftcache.resp.args import arity_ok
from raftcache.resp.calls import Call, Mode, Reply, View
from raftcache.resp.cluster import CROSSSLOT, joins_group, joins_slot, redirect
from raftcache.resp.commands import NO_AUTH, lookup
from raftcache.resp.errors import (
    NOAUTH,
    no_permission,
    reply_for,
    unknown_command,
    wrong_args,
)
from raftcache.resp.protocol import OK, QUEUED, RespError, encode
from raftcache.resp.pubsub import Publish
from raftcache.resp.state import ClientState
from raftcache.resp.subscriptions import SUBSCRIBED_COMMANDS
from raftcache.resp.txn import run_transaction

MAX_QUEUED: Final = 10_000  # commands in one MULTI: one batch, one log entry
_NOT_QUEUED: Final = frozenset({"EXEC", "DISCARD", "MULTI", "WATCH", "QUIT", "RESET"})
_GROUPED: Final = frozenset({Mode.READ, Mode.BATCH, Mode.WRITE})


class _Failed(Call):
    """A queued command whose arguments were wrong: its error is its reply in EXEC."""

    in_multi = True

    def __init__(self, error: RespError) -> None:
        self.error = error

    def simulate(self, view: View) -> Reply:
        raise self.error


class Executor:
    """Runs one connection's commands (see the module docstring).

    Args:
        client: the connection's state (and through it, the server's).
    """

    def __init__(self, client: ClientState) -> None:
        self.client = client
        self._run: list[Call] = []  # consecutive calls of one grouped mode, not yet run
        self._mode = Mode.READ

    async def execute(self, commands: list[list[bytes]], out: list[bytes]) -> None:
        """Run ``commands`` in order, appending each encoded reply to ``out``."""
        client, run = self.client, self._run
        try:
            for argv in commands:
                if client.closing:
                    break  # nothing runs after QUIT
                item = self._prepare(argv)
                if isinstance(item, Call) and item.mode in _GROUPED:
                    if run and item.mode is not self._mode:
                        await self._flush(out)
                    self._mode = item.mode
                    run.append(item)
                    continue
                if run:
                    await self._flush(out)
                reply = await self._run_alone(item) if isinstance(item, Call) else item
                out.append(encode(reply, client.proto))
            if run:
                await self._flush(out)
        finally:
            run.clear()

    async def _flush(self, out: list[bytes]) -> None:
        run = list(self._run)
        self._run.clear()
        if self._mode is Mode.READ:
            await self._run_reads(run, out)
        elif self._mode is Mode.BATCH:
            await self._run_batches(run, out)
        else:
            await self._run_writes(run, out)

    def _prepare(self, argv: list[bytes]) -> Call | Reply:
        """The call for ``argv``, or the reply when it must not run (unknown, wrong arity,
        not authenticated, bad arguments, queued in MULTI)."""
        client, server = self.client, self.client.server
        client.commands_total += 1
        server.commands_total += 1
        spec = lookup(argv[0])
        if client.in_multi:
            return self._queue(argv)
        if spec is None:
            return unknown_command(argv[0], argv[1:])
        if not client.authenticated and spec.name not in NO_AUTH:
            return NOAUTH
        if not arity_ok(spec, len(argv)):
            return wrong_args(spec.name)
        if client.read_only and "write" in spec.flags:
            return no_permission(spec.name)
        if client.proto == 2 and client.subscribed and spec.name not in SUBSCRIBED_COMMANDS:
            return RespError(
                f"ERR Can't execute '{spec.name.lower()}': only (P|S)SUBSCRIBE / "
                "(P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
            )
        try:
            call = self._adapt(spec.parse(argv[1:], server.limits))
        except RespError as exc:
            return exc
        if call.always_touches and client.no_touch:
            call.mode = Mode.SERVER  # TOUCH: a read of its own that refreshes recency
        if isinstance(call, Publish):
            call.hub = server.pubsub  # its reply counts this server's subscribers
        return redirect(client, call) or call

    def _adapt(self, call: Call) -> Call:
        """Run ``call`` in its fallback mode while the cluster has not enabled the command
        version its mode needs (a rolling upgrade in progress: ``raftcache.cache.formats``)."""
        machine = self.client.server.service.machine
        if call.fallback_mode is not None and machine.command_version < call.needs_command_version:
            call.mode = call.fallback_mode
        return call

    def _queue(self, argv: list[bytes]) -> Call | Reply:
        client = self.client
        spec = lookup(argv[0])
        if spec is None:
            client.multi_failed = True
            return unknown_command(argv[0], argv[1:])
        if not arity_ok(spec, len(argv)):
            client.multi_failed = True
            return wrong_args(spec.name)
        if client.read_only and "write" in spec.flags:
            client.multi_failed = True
            return no_permission(spec.name)
        try:
            call = self._adapt(spec.parse(argv[1:], client.server.limits))
        except RespError as exc:
            call = _Failed(exc)
        moved = redirect(client, call)
        if moved is None and client.server.cluster_mode and not joins_slot(client.queue, call):
            moved = CROSSSLOT  # a transaction is one slot's, as in Redis Cluster
        if moved is None and not joins_group(client, client.queue, call):
            moved = CROSSSLOT  # on a sharded store, a transaction is one group's: atomic
        if moved is not None:
            client.multi_failed = True
            return moved
        if spec.name in _NOT_QUEUED:
            return call
        if not call.in_multi:
            client.multi_failed = True
            return RespError(
                f"ERR {spec.name} cannot run inside MULTI on raftcache: a transaction runs as "
                "one atomic cache batch"
            )
        if len(client.queue) >= MAX_QUEUED:
            client.multi_failed = True
            return RespError(f"ERR at most {MAX_QUEUED} commands per transaction")
        client.queue.append(call)
        return QUEUED

    async def _run_alone(self, call: Call) -> Reply:
        client = self.client
        try:
            if isinstance(call, Multi):
                if client.in_multi:
                    return RespError("ERR MULTI calls can not be nested")
                client.in_multi = True
                return OK
            if isinstance(call, Exec):
                return await self._exec()
            if isinstance(call, Discard):
                if not client.in_multi:
                    return RespError("ERR DISCARD without MULTI")
                client.reset_multi()
                return OK
            if call.mode is Mode.TXN:
                return (await self._transaction([call]))[0]
            reply = call.run_server(client)
            return await reply if inspect.isawaitable(reply) else reply
        except Exception as exc:
            return reply_for(exc, is_write=call.writes)

    async def _exec(self) -> Reply:
        client = self.client
        if not client.in_multi:
            return RespError("ERR EXEC without MULTI")
        calls, failed = client.queue, client.multi_failed
        client.reset_multi()
        if failed:
            return RespError("EXECABORT Transaction discarded because of previous errors.")
        if not calls:
            return []
        try:
            return await self._transaction(calls)
        except Exception as exc:
            return reply_for(exc, is_write=any(call.writes for call in calls))

    async def _transaction(self, calls: list[Call]) -> list[Reply]:
        client = self.client
        server = client.server
        if len(calls) > 1 or calls[0].mode is not Mode.TXN:
            replies = await self._as_one_batch(calls)
            if replies is not None:
                return replies
        return await run_transaction(
            server.router,
            calls,
            clock=server.clock,
            consistency=client.consistency,
            gate=client.gate,
            touch=not client.no_touch,
        )

    async def _as_one_batch(self, calls: list[Call]) -> list[Reply] | None:
        """A MULTI that writes and whose calls are all plain batch ops (reads, unconditional
        writes, INCR, EXPIRE…) runs as one batch, with no read first and no retry: one log
        entry. None when it cannot (a call needs the engine, the cluster has not enabled command
        format 2, or a call fails — the engine then gives each call its own reply, as Redis
        does) or need not (it only reads: the engine reads after one barrier, no log entry)."""
        server = self.client.server
        if not any(call.writes for call in calls):
            return None  # reads only: one read barrier, no log entry (the engine's read path)
        if server.service.machine.command_version < 2:  # incr/ttl batch ops: version 2
            return None
        plans = [call.multi_ops() for call in calls]
        if any(plan is None for plan in plans):
            return None
        ops = [op for plan in plans for op in plan or ()]
        try:
            results = await server.router.call(lambda b: b.batch(ops), self.client.gate)
        except CacheError:
            return None  # nothing was applied: let the engine find each call's own error
        replies: list[Reply] = []
        position = 0
        for call, plan in zip(calls, plans, strict=True):
            count = len(plan or ())
            try:
                replies.append(call.multi_reply(results[position : position + count]))
            except RespError as exc:
                replies.append(exc)
            position += count
        return replies

    async def _run_reads(self, reads: list[Call], out: list[bytes]) -> None:
        client = self.client
        proto = client.proto
        keys = [key for call in reads for key in call.keys]
        try:
            values = await client.server.reads.submit(
                keys, client.consistency, touch=not client.no_touch
            )
        except Exception as exc:
            error = encode(reply_for(exc, is_write=False), proto)
            out.extend(error for _ in reads)
            return
        position = 0
        for call in reads:
            count = len(call.keys)
            try:
                reply = call.reply_values(values[position : position + count])
            except RespError as exc:
                reply = exc
            position += count
            out.append(encode(reply, proto))

    async def _run_batches(self, calls: list[Call], out: list[bytes]) -> None:
        client = self.client
        groups = client.server.writes
        futures = [groups.submit(call.batch_ops()) for call in calls]
        for call, future in zip(calls, futures, strict=True):
            try:
                reply = call.reply_batch(await future)
            except Exception as exc:
                reply = reply_for(exc, is_write=True)
            out.append(encode(reply, client.proto))

    async def _run_writes(self, writes: list[Call], out: list[bytes]) -> None:
        client = self.client
        router, gate, proto = client.server.router, client.gate, client.proto
        if len(writes) == 1:  # the common unpipelined case: no task needed
            try:
                reply = await router.call(writes[0].run, gate)
            except Exception as exc:
                reply = reply_for(exc, is_write=True)
            out.append(encode(reply, proto))
            return
        # Tasks start in creation order, each proposing before it first suspends.
        tasks = [asyncio.ensure_future(router.call(call.run, gate)) for call in writes]
        try:
            for task in tasks:
                try:
                    reply = await task
                except Exception as exc:
                    reply = reply_for(exc, is_write=True)
                out.append(encode(reply, proto))
        finally:
            for task in tasks:
                task.cancel()  # no-op when done; stops orphans if we were cancelled
