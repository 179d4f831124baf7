"""In-memory transport: networks sharing an ``InMemoryHub`` call each other's handlers directly.

Rule: an RPC behaves as if it crossed a wire, deterministically for a given seed and schedule.

- *Isolation*: the request and the response are copied structurally (``codec.clone``: lists and
  ``LogEntry`` objects too), so a receiver mutating what it got cannot affect the sender.
- *Delay and loss*: the request and the reply are each a message governed by the **sender's**
  settings — delay ``base_delay * (1 + uniform(-jitter, jitter))`` and loss ``drop_rate``, drawn
  from the sender's own ``random.Random(seed)``. Each RPC draws exactly four numbers when it is
  sent (request loss, request delay, reply loss, reply delay), whatever happens next, so the
  sequence of draws depends only on the order of sends. Delays use ``asyncio.sleep``: under a
  virtual clock (``looptime``) a seeded run is replayable. Messages may therefore reorder.
- *Lost messages surface at once* as a transient ``NetworkError``, never as a hang: a lost request
  never reaches the handler; a lost reply means the handler ran.
- *Once sent, a request arrives*: the delivery runs in its own task, so cancelling the caller
  (a ``ReliableNetwork`` timeout) does not cancel the remote handler, as on a real network.
- *Checks*, both when a request is sent and when it is delivered, and for the reply when it
  arrives: a failed sender or target is permanent ("Node X is failed"); an id no network has
  registered is permanent ("Target node X not available"); a partition is transient; a target
  without handlers is permanent. An exception raised by the handler is a permanent error, but
  for a ``NetworkError`` (``GroupNotHostedError``), which keeps its message, kind and permanence.
- *Batches* (``send_append_batch`` of two or more items, ``raftcache.network.batching``) are
  one message: lost, delayed or partitioned whole; the receiver answers each item.
- *Stopped networks look crashed*: ``stop()`` keeps the registration, so a stopped target is a
  transient "unreachable" error (like connection refused to a known peer), and handlers running
  on it are cancelled (their callers get a transient error). ``start()`` brings it back. A
  stopped network cannot send (permanent: its node is shutting down). A network delivers from
  construction on; ``start()`` is needed only after ``stop()`` or ``reset()``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from raftcache.network.batching import outcome_of, serve_append_batch
from raftcache.network.codec import clone
from raftcache.network.errors import (
    NetworkError,
    no_handlers,
    node_failed,
    not_available,
    partitioned,
    remote_handler_error,
)
from raftcache.network.hub import InMemoryHub
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.protocol.messages import (
    DEFAULT_BATCH_HOLD,
    AppendEntriesBatch,
    AppendEntriesBatchResponse,
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = ["InMemoryHub", "InMemoryNetwork", "InMemoryStats"]

P = ParamSpec("P")
R = TypeVar("R")
Resp = TypeVar("Resp")


class _HubOperation(Generic[P, R]):
    """An ``InMemoryHub`` method exposed on ``InMemoryNetwork``.

    Called on the class it acts on the default hub (the seed's static methods:
    ``InMemoryNetwork.fail_node("n1")``); called on an instance it acts on that network's own hub,
    so a test using a private hub cannot reach the default one by mistake.
    """

    def __init__(self, op: Callable[Concatenate[InMemoryHub, P], R]) -> None:
        self._op = op
        self.__doc__ = op.__doc__

    def __get__(self, obj: InMemoryNetwork | None, owner: type | None = None) -> Callable[P, R]:
        hub = obj.hub if obj is not None else InMemoryHub.default()
        op = self._op

        def bound(*args: P.args, **kwargs: P.kwargs) -> R:
            return op(hub, *args, **kwargs)

        return bound


@dataclass(slots=True)
class InMemoryStats:
    """Counters of one network, as a sender (messages = requests and replies)."""

    rpcs_sent: int = 0
    requests_dropped: int = 0
    replies_dropped: int = 0


@dataclass(slots=True)
class _Draw:
    """The four random numbers of one RPC, drawn when it is sent."""

    drop_request: bool
    request_delay: float
    drop_reply: bool
    reply_delay: float


class InMemoryNetwork(NetworkInterface):
    """A transport between networks of the same ``InMemoryHub``, with no sockets.

    Args:
        node_id: this node's id (registered in the hub at once).
        base_delay: mean one-way delay of each message, in seconds.
        jitter: relative spread of the delay: ``0.5`` means ±50 %.
        drop_rate: probability that a message (request or reply) is lost, in ``[0, 1]``.
        hub: the hub to join; default the process-wide ``InMemoryHub.default()``.
        seed: seed of this network's ``random.Random`` (None: unpredictable).

    Example:
        >>> hub = InMemoryHub()
        >>> a = InMemoryNetwork("a", hub=hub, base_delay=0.01, jitter=0.5, seed=1)
        >>> b = InMemoryNetwork("b", hub=hub)
        >>> a.partition("a", "b")  # on a's hub; InMemoryNetwork.partition(...) is the default hub
    """

    fail_node = _HubOperation(InMemoryHub.fail_node)
    recover_node = _HubOperation(InMemoryHub.recover_node)
    reset = _HubOperation(InMemoryHub.reset)
    partition = _HubOperation(InMemoryHub.partition)
    heal_partition = _HubOperation(InMemoryHub.heal_partition)
    heal_all = _HubOperation(InMemoryHub.heal_all)
    isolate = _HubOperation(InMemoryHub.isolate)
    rejoin = _HubOperation(InMemoryHub.rejoin)

    def __init__(
        self,
        node_id: str,
        *,
        base_delay: float = 0.0,
        jitter: float = 0.0,
        drop_rate: float = 0.0,
        hub: InMemoryHub | None = None,
        seed: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.hub = hub if hub is not None else InMemoryHub.default()
        self.stats = InMemoryStats()
        self._rng = random.Random(seed)
        self._handlers: RpcHandlers | None = None
        self._stopped = False
        self._delivering: set[asyncio.Task[Any]] = set()  # requests in flight from this node
        self._serving: set[asyncio.Task[Any]] = set()  # of those, any node's, handled here
        self.base_delay = 0.0
        self.jitter = 0.0
        self.drop_rate = 0.0
        self.set_delay(base_delay, jitter)
        self.set_drop_rate(drop_rate)
        self.hub.register(self)

    # -- settings -------------------------------------------------------------------------------

    def set_delay(self, base_delay: float, jitter: float | None = None) -> None:
        """Change the delay of messages this node sends (``jitter`` None: keep it)."""
        if base_delay < 0 or (jitter is not None and jitter < 0):
            raise ValueError("base_delay and jitter must be >= 0")
        self.base_delay = float(base_delay)
        if jitter is not None:
            self.jitter = float(jitter)

    def set_drop_rate(self, drop_rate: float) -> None:
        """Change the probability that a message this node sends (or its reply) is lost."""
        if not 0.0 <= drop_rate <= 1.0:
            raise ValueError(f"drop_rate must be within [0, 1], got {drop_rate}")
        self.drop_rate = float(drop_rate)

    @property
    def stopped(self) -> bool:
        return self._stopped

    # -- NetworkInterface -----------------------------------------------------------------------

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self._handlers = handlers

    async def start(self) -> None:
        """(Re)join the hub: needed only after ``stop()`` or a hub ``reset()``."""
        self._stopped = False
        self.hub.register(self)

    async def stop(self) -> None:
        """Crash-stop: stay registered but unreachable, and cancel the handlers running here."""
        self._stopped = True
        serving = list(self._serving)
        for task in serving:
            task.cancel()
        # Wait so that no handler of this node runs after stop() returns; their errors are
        # reported to their senders, not here.
        await asyncio.gather(*serving, return_exceptions=True)

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        return await self._call(target, req, "handle_request_vote", RequestVoteResponse)

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        return await self._call(target, req, "handle_append_entries", AppendEntriesResponse)

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        return await self._call(target, req, "handle_install_snapshot", InstallSnapshotResponse)

    async def send_append_batch(
        self, target: str, reqs: Sequence[AppendEntriesRequest], *, hold: float = DEFAULT_BATCH_HOLD
    ) -> list[AppendEntriesResponse | Exception]:
        """One message carrying every item (lost, delayed or partitioned as one)."""
        if len(reqs) < 2:
            return await super().send_append_batch(target, reqs)
        batch = AppendEntriesBatch(list(reqs), hold)
        answer = await self._call(target, batch, "", AppendEntriesBatchResponse)
        return [outcome_of(item) for item in answer.items]

    # -- the wire -------------------------------------------------------------------------------

    def _draw(self) -> _Draw:
        rng, jitter, base = self._rng, self.jitter, self.base_delay
        # Always four draws, in this order, even when a value goes unused: see the module rule.
        drop_request = rng.random() < self.drop_rate
        request_delay = max(0.0, base * (1.0 + rng.uniform(-jitter, jitter)))
        drop_reply = rng.random() < self.drop_rate
        reply_delay = max(0.0, base * (1.0 + rng.uniform(-jitter, jitter)))
        return _Draw(drop_request, request_delay, drop_reply, reply_delay)

    def _route(self, target: str) -> InMemoryNetwork:
        """The network to deliver to, or the error that stops the message (see module rule)."""
        hub, me = self.hub, self.node_id
        if hub.is_failed(me):
            raise node_failed(me)
        if self._stopped:
            raise NetworkError(f"Node {me} is stopped", permanent=True, kind="stopped")
        receiver = hub.network(target)
        if not isinstance(receiver, InMemoryNetwork):  # None: no network registered ``target``
            raise not_available(target)
        if hub.is_failed(target):
            raise node_failed(target)
        if hub.is_partitioned(me, target):
            raise partitioned(me, target)
        if receiver._stopped:
            raise NetworkError(f"Target node {target} is unreachable (stopped)", kind="connection")
        if receiver._handlers is None:
            raise no_handlers(target)
        return receiver

    async def _call(self, target: str, req: Any, method: str, response_cls: type[Resp]) -> Resp:
        self._route(target)
        draw = self._draw()
        self.stats.rpcs_sent += 1
        if draw.drop_request:
            self.stats.requests_dropped += 1
            raise NetworkError(f"Request from {self.node_id} to {target} was dropped", kind="drop")
        task = asyncio.get_running_loop().create_task(
            self._deliver(target, clone(req), method, response_cls, draw.request_delay)
        )
        self._delivering.add(task)
        task.add_done_callback(self._delivered)
        try:
            # shield(): cancelling the caller must not cancel the remote handler.
            response: Resp = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and current.cancelling() == 0:
                # Not our cancellation: the target stopped while handling the request.
                raise NetworkError(
                    f"Connection to node {target} reset: it stopped while handling the request",
                    kind="connection",
                ) from None
            raise
        if draw.drop_reply:
            self.stats.replies_dropped += 1
            raise NetworkError(f"Reply from {target} to {self.node_id} was dropped", kind="drop")
        if draw.reply_delay > 0:
            await asyncio.sleep(draw.reply_delay)
        self._check_reply(target)
        return response

    def _check_reply(self, target: str) -> None:
        hub, me = self.hub, self.node_id
        if hub.is_failed(target):
            raise node_failed(target)
        if hub.is_failed(me):
            raise node_failed(me)
        if hub.is_partitioned(me, target):
            raise partitioned(target, me)

    async def _deliver(
        self, target: str, req: Any, method: str, response_cls: type[Any], delay: float
    ) -> Any:
        """Runs in its own task: the request's flight, then the handler on the receiver."""
        if delay > 0:
            await asyncio.sleep(delay)
        receiver = self._route(target)
        handlers = receiver._handlers
        assert handlers is not None
        task = asyncio.current_task()
        assert task is not None
        receiver._serving.add(task)
        try:
            if method:
                response = await getattr(handlers, method)(req)
            else:  # a batch: each item its group's own
                response = await serve_append_batch(target, handlers, req)
            if type(response) is not response_cls:
                raise TypeError(f"{method} returned {type(response).__name__}")
            return clone(response)
        except asyncio.CancelledError:
            raise
        except NetworkError as exc:  # the handler's own verdict (a group not hosted): relayed
            raise NetworkError(str(exc), permanent=exc.permanent, kind=exc.kind) from exc
        except Exception as exc:
            raise remote_handler_error(target, repr(exc)) from exc
        finally:
            receiver._serving.discard(task)

    def _delivered(self, task: asyncio.Task[Any]) -> None:
        self._delivering.discard(task)
        # Retrieve the outcome: a caller that was cancelled never will, and asyncio would log
        # "exception was never retrieved".
        if not task.cancelled():
            task.exception()
