"""``GET /v1/watch?prefix=P&from_version=N``: the changes under a prefix, as Server-Sent Events.

Rule: a watch is served by the node it reaches, leader or follower, from that node's watch
history (``raftcache.cache.watch``): the changes of the entries it has *applied*, in log order.
It never forwards. Each SSE event is one log entry — ``id:`` its version, ``event: change``,
``data:`` ``{"version": N, "changes": [...]}`` with the entry's changes under the prefix — so a
stream resumed from the last id seen (``from_version``, or ``Last-Event-ID`` which wins) has no
gap and no duplicate.

- Start: ``Last-Event-ID``, else ``from_version``, else this node's last applied version. A
  start below the history's floor answers **410** ``{"error", "version": <current>,
  "oldest_version"}``: re-read, then watch from ``version``. A start above what this node has
  applied waits for it (a follower may lag the node the client saw the version on).
- Memory: a watcher holds only a cursor into the shared history — no queue of its own. One that
  falls behind the history's bounds (or whose node installs a snapshot) has its stream ended;
  its reconnect gets 410. A write blocked longer than ``write_timeout_s`` (a client that stopped
  reading) ends the stream too, and at most ``max_watchers`` streams run at once (503 beyond).
- Liveness: every ``heartbeat_s`` an SSE comment (``: keep-alive``), so proxies keep the stream
  open and clients detect a dead one; preceded by an ``event: progress`` with ``id:`` the
  version read up to when it moved without a matching change (so a quiet prefix's resume point
  advances and does not fall out of the history).
- Shutdown: the drain (``server.drain``) ends every stream at once, so a graceful stop does not
  wait for its timeout; clients reconnect to another node.
- Admission: a watch is refused like any request when the node is overloaded, but gives its
  request slot back once the stream starts (it would hold it for hours).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Any, Final

import orjson
from aiohttp import web

from raftcache.cache.entries import HASH, HEADER_SIZE, NEVER, record_header, record_is_hash
from raftcache.cache.watch import SET, Change, HistoryCompactedError, WatchHistory
from raftcache.server.admission import TICKET
from raftcache.server.context import CONTEXT, request_context
from raftcache.server.drain import DRAIN
from raftcache.server.errors import ApiError, bad_request, unavailable
from raftcache.server.routes_keys import single_query
from raftcache.server.validation import parse_prefix_or_after
from raftcache.server.watch_metrics import WatchCollector
from raftcache.vocabulary import INT64_MAX

log = logging.getLogger("raftcache.server.watch")

#: What a client waits before reconnecting after the stream ends (SSE ``retry:``, ms).
RETRY_MS: Final = 500
#: Events are written in pieces of about this size (bounds what one stream holds at once).
FLUSH_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Operator-tunable behaviour of watch streams.

    Attributes:
        heartbeat_s: seconds between keep-alive comments on an idle stream.
        max_watchers: streams served at once by this node (503 beyond).
        write_timeout_s: a write to a stream blocked longer than this ends it (slow client).
        batch_entries: history entries read per step (bounds one write and one event-loop turn).
        relay_timeout_s: on a store, a watch of every group opens each group held elsewhere
            on one of its stores: connecting and its first event within this, else the next
            store is tried (``routes_watch_groups``).
    """

    heartbeat_s: float = 5.0
    max_watchers: int = 256
    write_timeout_s: float = 10.0
    batch_entries: int = 256
    relay_timeout_s: float = 3.0


class WatchHub:
    """The node's watch streams: their count, their wake-ups, and their end at shutdown."""

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self.active = 0
        self.stopping = False
        # Totals for /metrics (server.watch_metrics): plain ints, read at scrape time.
        self.opened = 0
        self.refused = 0
        self.compacted = 0
        self.events_sent = 0
        self.slow_consumers = 0
        self._changed: asyncio.Future[None] | None = None
        self._subscribed: WatchHistory | None = None

    def attach(self, history: WatchHistory) -> None:
        """Be woken by ``history`` (once; a node has one history)."""
        if self._subscribed is not history:
            if self._subscribed is not None:
                self._subscribed.unsubscribe(self.wake)
            history.subscribe(self.wake)
            self._subscribed = history

    def wake(self) -> None:
        """Something changed (an entry applied, a reset, the shutdown): wake every stream."""
        changed, self._changed = self._changed, None
        if changed is not None and not changed.done():
            changed.set_result(None)

    def stop(self) -> None:
        """End every stream (called when the node starts draining)."""
        self.stopping = True
        self.wake()

    async def wait(self, timeout_s: float) -> None:
        """Until the next wake-up or ``timeout_s``, whichever comes first."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._changed,), timeout=timeout_s)


WATCH: Final = web.AppKey("raftcache.server.watch", WatchHub)
#: On a store: the hub of the group a watch was routed to (``server.groups``).
ROUTED_HUB: Final = web.RequestKey("raftcache.server.watch.hub", WatchHub)


def history_of(request: web.Request) -> WatchHistory:
    """The node's watch history; 404 when this node keeps none (an embedding without one)."""
    machine = getattr(request_context(request).service, "machine", None)
    history = getattr(machine, "watch_history", None)
    if not isinstance(history, WatchHistory):
        raise ApiError(404, "watches are not enabled on this node")
    return history


def parse_version(value: str | None, name: str) -> int | None:
    """A version: decimal digits, 0..2**63-1; None when absent (or an empty header)."""
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > INT64_MAX:
        raise bad_request(f"{name} must be a non-negative integer (a version), not {value[:40]!r}")
    return int(value)


def compacted(exc: HistoryCompactedError) -> ApiError:
    """The 410 of a watch that starts before the history."""
    return ApiError(410, str(exc), extra={"version": exc.current, "oldest_version": exc.floor})


# --- SSE framing ------------------------------------------------------------------------------


def change_json(change: Change) -> dict[str, Any]:
    """One change as JSON: ``type``, ``key``; a ``set`` adds ``value`` (base64) and
    ``expires_at`` (seconds since the epoch, or null). A change of a hash is a ``set`` whose
    ``value`` is the whole hash after it (its fields as a msgpack map) and whose
    ``value_type`` is ``hash`` (absent for strings)."""
    kind, key, record = change
    if kind != SET or record is None:
        return {"type": kind, "key": key}
    expires_at = record_header(record)[1]
    event = {
        "type": kind,
        "key": key,
        "value": base64.b64encode(record[HEADER_SIZE:]).decode("ascii"),
        "expires_at": None if expires_at == NEVER else expires_at,
    }
    if record_is_hash(record):  # the whole hash after the change, as a msgpack map
        event["value_type"] = HASH
    return event


def change_event(version: int, changes: tuple[Change, ...]) -> bytes:
    """The SSE event of one log entry's changes."""
    data = orjson.dumps({"version": version, "changes": [change_json(c) for c in changes]})
    return b"id: %d\nevent: change\ndata: %s\n\n" % (version, data)


def progress_event(version: int, extra: dict[str, Any] | None = None) -> bytes:
    """An SSE event that only moves the resume point: every change <= ``version`` was sent."""
    data = orjson.dumps({"version": version, **(extra or {})})
    return b"id: %d\nevent: progress\ndata: %s\n\n" % (version, data)


HEARTBEAT: Final = b": keep-alive\n\n"


# --- the handler ------------------------------------------------------------------------------


async def watch(request: web.Request) -> web.StreamResponse:
    """``GET /v1/watch``: validate, then stream (see the module docstring)."""
    history = history_of(request)
    prefix = parse_prefix_or_after(single_query(request, "prefix"), "prefix") or ""
    from_version = parse_version(single_query(request, "from_version"), "from_version")
    last_event_id = parse_version(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    start = last_event_id if last_event_id is not None else from_version
    if start is None:
        start = history.last_index
    hub = request.get(ROUTED_HUB) or request.config_dict[WATCH]
    try:
        # Judge the start now: a 410 is an answer, not a stream.
        epoch = history.read(start, prefix, 0).epoch
    except HistoryCompactedError as exc:
        hub.compacted += 1
        raise compacted(exc) from None
    if hub.stopping:
        raise unavailable("node is stopping")
    if hub.active >= hub.settings.max_watchers:
        hub.refused += 1
        raise unavailable(f"too many watches on this node (at most {hub.settings.max_watchers})")
    hub.attach(history)
    ticket = request.get(TICKET)
    if ticket is not None:
        ticket.release()  # a stream may last hours: it must not hold a request slot
    hub.active += 1
    hub.opened += 1
    try:
        return await _stream(request, hub, history, prefix, start, epoch)
    finally:
        hub.active -= 1


async def _stream(
    request: web.Request,
    hub: WatchHub,
    history: WatchHistory,
    prefix: str,
    cursor: int,
    epoch: int,
) -> web.StreamResponse:
    settings = hub.settings
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass events on as they come
        }
    )
    await response.prepare(request)
    hello = b"retry: %d\n" % RETRY_MS + progress_event(
        cursor, {"heartbeat_s": settings.heartbeat_s}
    )
    clock = asyncio.get_running_loop().time
    sent = cursor  # the last id sent
    reason = "stopping"
    try:
        await _write(response, hello, settings)
        last_write = clock()
        while not hub.stopping:
            try:
                read = history.read(cursor, prefix, settings.batch_entries)
            except HistoryCompactedError:
                reason = "compacted"
                hub.compacted += 1
                break
            if read.epoch != epoch:
                reason = "reset"  # a snapshot or restore replaced the state meanwhile
                break
            if read.entries:
                sent = await _send_entries(response, read.entries, settings)
                hub.events_sent += len(read.entries)
                last_write = clock()
            cursor = read.cursor
            if cursor < history.last_index:
                await asyncio.sleep(0)  # more to read: let the rest of the node run first
                continue
            quiet = clock() - last_write
            if quiet < settings.heartbeat_s:
                await hub.wait(settings.heartbeat_s - quiet)
                continue
            # Nothing written for a heartbeat period (changes elsewhere do not count): move the
            # resume point if it lags, and keep the connection alive.
            beat = progress_event(cursor) + HEARTBEAT if cursor > sent else HEARTBEAT
            await _write(response, beat, settings)
            sent, last_write = cursor, clock()
    except TimeoutError:
        log.debug("watch stream ended: the client stopped reading (version %d)", sent)
        hub.slow_consumers += 1
        _abort(request)
        return response
    except ConnectionError as exc:  # the client went away mid-write
        log.debug("watch stream closed by the client: %r", exc)
        return response
    log.debug("watch stream ended: %s at version %d", reason, cursor)
    return response


async def _send_entries(
    response: web.StreamResponse,
    entries: list[tuple[int, tuple[Change, ...]]],
    settings: WatchSettings,
) -> int:
    """Write one event per entry, in writes of about ``FLUSH_BYTES`` (a watcher never holds
    more than that plus one entry's event); returns the last version sent. The entries were
    read together, so the history dropping some meanwhile cannot open a gap."""
    parts: list[bytes] = []
    size = 0
    for version, changes in entries:
        event = change_event(version, changes)
        parts.append(event)
        size += len(event)
        if size >= FLUSH_BYTES:
            await _write(response, b"".join(parts), settings)
            parts, size = [], 0
    if parts:
        await _write(response, b"".join(parts), settings)
    return entries[-1][0]


async def _write(response: web.StreamResponse, data: bytes, settings: WatchSettings) -> None:
    async with asyncio.timeout(settings.write_timeout_s):
        await response.write(data)


def _abort(request: web.Request) -> None:
    """Drop a connection whose client stopped reading (its unsent bytes with it)."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def add_watch_routes(app: web.Application, settings: WatchSettings | None = None) -> None:
    """Register ``/v1/watch`` and end its streams when the node drains."""
    hub = WatchHub(settings or WatchSettings())
    app[WATCH] = hub
    context = app.get(CONTEXT)
    if context is not None:  # the node's /metrics reads the hub and the history at scrape time
        machine = getattr(context.service, "machine", None)

        def history() -> WatchHistory | None:
            found = getattr(machine, "watch_history", None)
            return found if isinstance(found, WatchHistory) else None

        context.metrics.registry.register(WatchCollector(hub, history))
    app[DRAIN].on_drain.append(hub.stop)
    # No HEAD: a stream has no end for a HEAD to wait for (405 with Allow: GET).
    app.router.add_get("/v1/watch", watch, allow_head=False)
