"""Many groups' AppendEntries to one peer store in one message: the sending and serving halves.

Rule: a batch changes how messages travel, never what they say. Each item is exactly the
request its group would have sent alone, stepped into exactly the handler it would have
reached, and answered with exactly the response (or the ``NetworkError``) the single RPC would
have returned; nothing in a batch vouches for anything of another group (docs/sharding.md,
"Busy groups stepped together").

Sending (``AppendBatcher``, one per store, in front of the store's transport): the AppendEntries
that the store's groups send to one peer store during one event-loop turn leave together at the
end of the turn — those carrying entries in one message, the others (heartbeats, answered at
once, which must not wait for another group's fsync) in another; each alone when there is one,
else as one ``send_append_batch`` of the transport, which uses the batch route when the peer
advertises it and sends them one by one otherwise (an older peer). A batch that fails fails
every item with the error the batch got, each group's Raft treating it as the failed RPC it
would have been (it resends at its next heartbeat). Votes and snapshots never wait: they are
rare, and urgent or large; nor does an append of more than ``max_bytes`` of entries, and a
batch never carries more (a peer's body limit is sized for one full AppendEntries).

Serving (``serve_append_batch``): every item is handed to its group's handler at once; the
answer leaves when all are done, but one slow group (a stalled replica) holds the others only
for ``patience`` — once the first item carrying entries is accepted (a heartbeat or a refusal,
done at once, says nothing of how long an fsync takes), the rest get as long again as it took,
at least ``patience`` (or the batch's ``hold``, if shorter); an item still running then is
answered as a timeout (the handler goes on: like a lost answer, the sender learns the outcome
from the next request). No item with entries accepted within the batch's ``hold`` (the
sender's word: a fraction of its RPC timeout): the items done are answered, the rest as
timeouts. Items of one batch share the store's persist batch, so in the common case they
finish together, and a slow disk delays them all alike without failing any.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Final

from raftcache.network.errors import NetworkError, relayed, remote_handler_error
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.wrapper import NetworkWrapper
from raftcache.protocol.messages import (
    DEFAULT_BATCH_HOLD,
    MAX_BATCH_HOLD,
    AppendEntriesBatch,
    AppendEntriesBatchResponse,
    AppendEntriesRequest,
    AppendEntriesResponse,
    BatchAnswer,
)

__all__ = [
    "DEFAULT_PATIENCE",
    "MAX_SENT_ITEMS",
    "AppendBatcher",
    "BatchOutcome",
    "outcome_of",
    "serve_append_batch",
]

logger = logging.getLogger(__name__)

#: What an item of a batch comes back as: its response, or the error its single RPC raised.
BatchOutcome = AppendEntriesResponse | NetworkError

#: The most items one batch carries (more leave in the next one, at once).
MAX_SENT_ITEMS: Final = 64
#: The most entry bytes one batch carries: a batch stays far below any peer's body limit
#: (``process.parts.raft_body_limit``: twice a full single AppendEntries, base64-encoded); an
#: append larger than this travels alone, as it always did.
MAX_SENT_BYTES: Final = 256 * 1024
#: The least a batch's slower items are waited for once its first is done, in seconds.
DEFAULT_PATIENCE: Final = 0.1


def answer_of(node_id: str, task: asyncio.Future[AppendEntriesResponse]) -> BatchAnswer:
    """The wire answer of one finished item (its handler's response or error)."""
    exc = task.exception()
    if exc is None:
        return BatchAnswer(response=task.result())
    if isinstance(exc, NetworkError):  # the handler's own verdict (a group not hosted)
        return BatchAnswer(error=str(exc), kind=exc.kind, permanent=exc.permanent)
    logger.warning("%s: AppendEntries handler raised", node_id, exc_info=exc)
    error = remote_handler_error(node_id, repr(exc))
    return BatchAnswer(error=str(error), kind=error.kind, permanent=True)


def outcome_of(answer: BatchAnswer) -> BatchOutcome:
    """What the sender's group gets for one item's answer."""
    if answer.response is not None:
        return answer.response
    return relayed(answer.error, answer.kind, answer.permanent)


def _accepted(task: asyncio.Future[AppendEntriesResponse]) -> bool:
    """Whether a finished item's handler accepted it (its entries, if any, are durable)."""
    return not task.cancelled() and task.exception() is None and task.result().success


def _forget(task: asyncio.Future[AppendEntriesResponse]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an item answered as a timeout may still fail later


async def serve_append_batch(
    node_id: str,
    handlers: RpcHandlers,
    batch: AppendEntriesBatch,
    *,
    patience: float = DEFAULT_PATIENCE,
) -> AppendEntriesBatchResponse:
    """Step every item of ``batch`` into ``handlers``; answer them in order (module rule)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks = [asyncio.ensure_future(handlers.handle_append_entries(i)) for i in batch.items]
    # The clock starts when an item that carries entries is accepted: those wait for their
    # fsync (one persist batch for all); a heartbeat or a refusal is done at once and says
    # nothing of how long an fsync takes. Waiting for one is bounded too (all may be stuck): by
    # the sender's ``hold``, a fraction of its RPC timeout, so the answer (at most twice the
    # hold) comes back in time.
    heavy = {t for i, t in zip(batch.items, tasks, strict=True) if i.entries} or set(tasks)
    deadline = started + batch.hold
    timed = False
    try:
        while heavy and not timed:
            done, heavy = await asyncio.wait(
                heavy, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break  # the hold is over: answer what is done
            timed = not heavy or any(_accepted(t) for t in done)
        pending = [t for t in tasks if not t.done()]
        if timed and pending:
            await asyncio.wait(
                pending, timeout=max(loop.time() - started, min(patience, batch.hold))
            )
    except asyncio.CancelledError:
        for task in tasks:
            task.add_done_callback(_forget)
        raise
    answers: list[BatchAnswer] = []
    for item, task in zip(batch.items, tasks, strict=True):
        if task.done():
            answers.append(answer_of(node_id, task))
            continue
        task.add_done_callback(_forget)
        answers.append(
            BatchAnswer(
                error=f"node {node_id}: group {item.group} still handling the AppendEntries",
                kind="timeout",
            )
        )
    return AppendEntriesBatchResponse(answers)


_Waiting = tuple[AppendEntriesRequest, "asyncio.Future[AppendEntriesResponse]"]
#: A queue's peer store, and whether its appends carry entries.
_Key = tuple[str, bool]


class AppendBatcher(NetworkWrapper):
    """Coalesces the AppendEntries sent to one peer in one event-loop turn (module rule).

    Args:
        underlying: the store's transport (its ``send_append_batch`` carries a batch).
        max_items: the most items of one batch.
        max_bytes: the most entry bytes of one batch; a larger append travels alone.
        hold: what each batch asks of the receiver (``AppendEntriesBatch.hold``): the Raft
            nodes' RPC timeout over four.
    """

    def __init__(
        self,
        underlying: NetworkInterface,
        *,
        max_items: int = MAX_SENT_ITEMS,
        max_bytes: int = MAX_SENT_BYTES,
        hold: float = DEFAULT_BATCH_HOLD,
    ) -> None:
        super().__init__(underlying)
        if max_items < 1 or max_bytes < 0:
            raise ValueError(f"max_items must be >= 1 and max_bytes >= 0: {max_items}, {max_bytes}")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.hold = min(hold, MAX_BATCH_HOLD)
        #: What waits for the end of the turn, by peer and whether it carries entries.
        self._queues: dict[_Key, list[_Waiting]] = {}
        #: The entry bytes of each queue.
        self._bytes: dict[_Key, int] = {}
        self._sending: set[asyncio.Task[None]] = set()
        #: Batches sent (two or more items) and the items they carried, for metrics and tests.
        self.batches = 0
        self.batched_items = 0

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        size = sum(len(entry.command) for entry in req.entries)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[AppendEntriesResponse] = loop.create_future()
        if size > self.max_bytes:
            # Alone, but after what this turn queued for the peer: a group's appends leave in
            # the order it made them (the smaller ones would otherwise wait for the turn's end).
            self._flush((target, True))
            self._start(target, [(req, waiter)])
            return await waiter
        # Appends with entries wait for their fsync on the peer, the others (heartbeats) do
        # not: in one message, the heartbeats' answers would wait for the others' fsyncs.
        key = (target, bool(req.entries))
        queue = self._queues.get(key)
        if queue is not None and self._bytes[key] + size > self.max_bytes:
            self._flush(key)
            queue = None
        if queue is None:
            queue = self._queues[key] = []
            self._bytes[key] = 0
            loop.call_soon(self._flush, key)
        queue.append((req, waiter))
        self._bytes[key] += size
        if len(queue) >= self.max_items:
            self._flush(key)
        return await waiter

    async def stop(self) -> None:
        """Fail what waits, cancel what is being sent, then stop the transport."""
        self.close()
        await self.underlying.stop()

    def close(self) -> None:
        """Fail every queued send and cancel every batch being sent (the store is stopping)."""
        queues, self._queues = self._queues, {}
        self._bytes.clear()
        for queue in queues.values():
            for _, waiter in queue:
                if not waiter.done():
                    waiter.set_exception(_stopped(self.node_id))
        for task in list(self._sending):
            task.cancel()

    def _flush(self, key: _Key) -> None:
        queue = self._queues.pop(key, None)
        self._bytes.pop(key, None)
        if not queue:
            return
        live = [(req, waiter) for req, waiter in queue if not waiter.done()]
        if live:
            self._start(key[0], live)

    def _start(self, target: str, items: list[_Waiting]) -> None:
        """Send ``items`` to ``target`` in a task of their own (started in call order)."""
        task = asyncio.get_running_loop().create_task(self._send(target, items))
        self._sending.add(task)
        task.add_done_callback(functools.partial(self._sent, items))

    def _sent(self, items: list[_Waiting], task: asyncio.Task[None]) -> None:
        """However the send ended — cancelled (even before it ran), a bug below — nobody is
        left waiting."""
        self._sending.discard(task)
        exc: BaseException | None = _stopped(self.node_id) if task.cancelled() else task.exception()
        for _, waiter in items:
            if not waiter.done():
                waiter.set_exception(exc or _stopped(self.node_id))

    async def _send(self, target: str, items: list[_Waiting]) -> None:
        try:
            outcomes = await self._outcomes(target, [req for req, _ in items])
        except NetworkError as exc:
            outcomes = [_copy(exc) for _ in items]
        for (_, waiter), outcome in zip(items, outcomes, strict=True):
            if waiter.done():  # its sender gave up (cancelled)
                continue
            if isinstance(outcome, Exception):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)

    async def _outcomes(
        self, target: str, reqs: list[AppendEntriesRequest]
    ) -> Sequence[AppendEntriesResponse | Exception]:
        if len(reqs) == 1:
            return [await self.underlying.send_append_entries(target, reqs[0])]
        self.batches += 1
        self.batched_items += len(reqs)
        outcomes = await self.underlying.send_append_batch(target, reqs, hold=self.hold)
        if len(outcomes) != len(reqs):  # a transport's bug: no group gets another's answer
            raise NetworkError(
                f"node {self.node_id}: {len(outcomes)} outcomes to a batch of {len(reqs)} "
                f"AppendEntries to {target}",
                permanent=True,
            )
        return outcomes


def _copy(exc: NetworkError) -> NetworkError:
    """One error per waiting group: an exception object is raised in one place at a time."""
    return NetworkError(str(exc), permanent=exc.permanent, kind=exc.kind)


def _stopped(node_id: str) -> NetworkError:
    return NetworkError(f"node {node_id}: the transport is stopping", kind="stopped")
