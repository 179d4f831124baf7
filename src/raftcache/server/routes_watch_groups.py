"""``GET /v1/watch?prefix=P`` on a store of many groups: every group's changes, merged into one
Server-Sent Events stream whose ids are resume tokens covering every group.

Rule: each group's part is read as the single-group watch reads it (``routes_watch``), so each
keeps that watch's consistency: a group this store hosts is read from its replica's own watch
history (entries *applied* here, in log order, never forwarded); a group held elsewhere is
relayed from one of its stores (``GET /v1/watch?group=gN`` there, ``X-Raftcache-Forwarded`` and
the client's bearer token, else the cluster's client token), re-opened on another of its
stores from the last version received when that one fails. The parts are merged as they come:
the events of one group keep that group's log order; events of different groups are not ordered
against each other.

Resume tokens: ``g0:N0,g1:N1,…`` — for every group of the cluster, in group order, the version
(that group's log index) its changes were all sent up to. Every ``change`` event's ``id:`` is
the token after it, and so is the ``id:`` of the ``progress`` events that move the resume point
of quiet groups. A stream resumed from a token (``from_version``, or ``Last-Event-ID`` which
wins) restarts every group from its own version: no gap and no duplicate per key. A plain
version N is accepted too: every group from N (``0``: all that every history holds).

- ``change``: ``id:`` the token, ``data:`` ``{"group", "version", "changes"}`` (one entry of
  one group, as the single-group event, with its group).
- ``progress``: ``id:`` the token, ``data:`` ``{"token"}`` (the first one also
  ``"heartbeat_s"``), then ``: keep-alive`` every heartbeat period of silence.
- Refusals: a malformed token, one naming another number of groups (a token of another
  cluster) or a group twice: 400 naming it. A group's version older than its retained history:
  410 ``{"error", "version", "oldest_version", "group"}`` — ``version`` a token to re-read and
  watch from, ``oldest_version`` the named group's floor. No store of a group held elsewhere
  answering: 503. Admission, ``--max-watchers``, the drain and slow clients as for one group.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import aiohttp
import orjson
from aiohttp import web
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from yarl import URL

from raftcache.cache.watch import Change, HistoryCompactedError, WatchHistory
from raftcache.server.admission import TICKET
from raftcache.server.errors import ApiError, bad_request, unavailable
from raftcache.server.forwarding import FORWARDED_HEADER
from raftcache.server.groups import StoreFront
from raftcache.server.routes_keys import single_query
from raftcache.server.routes_watch import (
    FLUSH_BYTES,
    HEARTBEAT,
    RETRY_MS,
    WatchHub,
    WatchSettings,
    change_json,
    parse_version,
)
from raftcache.server.validation import parse_prefix_or_after
from raftcache.server.watch_metrics import WatchPart, watch_families
from raftcache.vocabulary import INT64_MAX

log = logging.getLogger("raftcache.server.watch")

#: One group's part of a token: ``g<group>:<version>``.
_PART: Final = re.compile(r"g(0|[1-9][0-9]{0,8}):([0-9]{1,19})")
#: The ``group`` label of the merged watches' metrics.
MERGED_LABEL: Final = "all"
#: Remote events buffered per stream before the relay stops reading (back-pressure).
QUEUE_ITEMS: Final = 256
#: Waits between rounds of failed reconnects to a remote group's stores: doubled up to this.
MAX_BACKOFF_S: Final = 1.0


# --- resume tokens ------------------------------------------------------------------------------


def format_token(versions: Sequence[int]) -> str:
    """The token of per-group versions (``versions[g]`` is group ``g``'s)."""
    return ",".join(f"g{g}:{v}" for g, v in enumerate(versions))


def parse_token(value: str | None, name: str, groups: int) -> list[int] | int | None:
    """``from_version`` or ``Last-Event-ID`` on a store of ``groups`` groups: None when absent,
    an int for a plain version (every group from it), else each group's version; 400 naming
    the problem for anything else."""
    if value is None or value == "":
        return None
    if value.isascii() and value.isdigit():
        return parse_version(value, name)
    shown = repr(value[:60])
    if len(value) > 32 * groups + 64:
        raise bad_request(
            f"{name} is too long for a resume token of {groups} groups ({len(value)} characters)"
        )
    versions: dict[int, int] = {}
    for part in value.split(","):
        found = _PART.fullmatch(part)
        if found is None or int(found[2]) > INT64_MAX:
            raise bad_request(
                f"{name} must be a resume token (g0:N,g1:N,… one version per group, as the "
                f"stream's ids give it) or a version, not {shown}"
            )
        group, version = int(found[1]), int(found[2])
        if group in versions:
            raise bad_request(f"{name} names group g{group} twice: {shown}")
        versions[group] = version
    if len(versions) != groups or max(versions) >= groups:
        named = ", ".join(f"g{g}" for g in sorted(versions)[:8])
        more = " …" if len(versions) > 8 else ""
        raise bad_request(
            f"{name} is a resume token of another cluster: it names {len(versions)} groups "
            f"({named}{more}), this cluster has {groups} (g0 … g{groups - 1})"
        )
    return [versions[g] for g in range(groups)]


# --- SSE framing --------------------------------------------------------------------------------


def _change(token: bytes, gid: str, version: int, changes: tuple[Change, ...]) -> bytes:
    data = orjson.dumps(
        {"group": gid, "version": version, "changes": [change_json(c) for c in changes]}
    )
    return b"id: %s\nevent: change\ndata: %s\n\n" % (token, data)


def _relayed(token: bytes, gid: bytes, data: bytes) -> bytes:
    """A change event relayed from a group's store: its JSON object, with the group added."""
    return b'id: %s\nevent: change\ndata: {"group":"%s",%s\n\n' % (token, gid, data[1:])


def _progress(token: bytes, extra: dict[str, Any] | None = None) -> bytes:
    data = orjson.dumps({"token": token.decode("ascii"), **(extra or {})})
    return b"id: %s\nevent: progress\ndata: %s\n\n" % (token, data)


@dataclass(frozen=True, slots=True)
class _Message:
    event: bytes
    id: bytes
    data: bytes


def _messages(buffer: bytearray) -> list[_Message]:
    """The complete messages at the head of ``buffer`` (removed from it). The stream is a
    store's own (``routes_watch``): LF line ends, one ``data`` line, comments for heartbeats."""
    found: list[_Message] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return found
        block = bytes(buffer[:end])
        del buffer[: end + 2]
        event = ident = data = b""
        for line in block.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name == b"event":
                event = value
            elif name == b"id":
                ident = value
            elif name == b"data":
                data = value
        if event:
            found.append(_Message(event, ident, data))


# --- the parts ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Local:
    """A hosted group: a cursor into its replica's history."""

    index: int
    gid: str
    history: WatchHistory
    cursor: int
    epoch: int


class _CompactedError(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(str(body.get("error")))
        self.body = body


class _RefusedError(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class _FailedError(Exception):
    """This store of the group could not serve the stream now: try another."""


#: A relayed item: (group index, version, the change's JSON or None for progress, why the
#: relay ended or None).
_Item = tuple[int, int, bytes | None, str | None]


class _Waker:
    """Wakes one stream's loop (its own relays' events, the hosted histories, the drain)."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, timeout_s: float) -> None:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.wait((self._future,), timeout=timeout_s)


class _Remote:
    """A group held elsewhere: a stream from one of its stores, re-opened on the next one."""

    def __init__(
        self, watch: StoreWatch, index: int, gid: str, version: int | None, request: web.Request
    ) -> None:
        self.watch = watch
        self.index = index
        self.gid = gid
        #: Every change up to it was received (None: "from now", until the first event).
        self.version = version
        self.members: list[str] = []
        self._next = 0
        self._members()
        self.response: aiohttp.ClientResponse | None = None
        self.buffer = bytearray()
        self.pending: list[_Message] = []
        self.backlog: list[_Item] = []
        self.idle_s = max(3 * watch.settings.heartbeat_s, 1.0)
        self.headers = {"Accept": "text/event-stream", FORWARDED_HEADER: "1"}
        auth = request.headers.get("Authorization")
        token = watch.front.settings.client_token
        if auth:
            self.headers["Authorization"] = auth
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.prefix = single_query(request, "prefix") or ""

    def _members(self) -> None:
        """The group's stores as this store knows them now (they change when replicas move),
        starting from a per-store offset so that stores spread the load."""
        store = self.watch.front.store
        remote = store.remote.get(self.gid)
        members = [
            m
            for m in (remote.members if remote else store.placement[self.gid])
            if m != store.store_id
        ]
        if set(members) != set(self.members):
            guess = remote.leader_id if remote is not None else None
            first = members.index(guess) if guess in members else 0
            self.members = members[first:] + members[:first]
            self._next = 0

    def close(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None
        self.buffer.clear()
        self.pending = []

    async def open(self) -> None:
        """Open the stream on one of the group's stores, each tried once; raises ``_FailedError``
        (naming every store tried), ``_CompactedError`` or ``_RefusedError``."""
        self._members()
        if not self.members:
            raise _FailedError(f"group {self.gid}: no other store holds it")
        failures: list[str] = []
        for _ in range(len(self.members)):
            store = self.members[self._next % len(self.members)]
            try:
                await self._open_at(store)
                return
            except _FailedError as exc:
                failures.append(f"{store}: {exc}")
                self._next += 1
        raise _FailedError(
            f"group {self.gid}: no store holding it answered ({'; '.join(failures)})"
        )

    async def _open_at(self, store: str) -> None:
        self.close()
        base = self.watch.front.settings.peer_urls.get(store)
        if base is None:
            raise _FailedError("no address known")
        query = [("group", self.gid)]
        if self.prefix:
            query.append(("prefix", self.prefix))
        if self.version is not None:
            query.append(("from_version", str(self.version)))
        url = URL(base.rstrip("/")).with_path("/v1/watch").with_query(query)
        try:
            async with asyncio.timeout(self.watch.settings.relay_timeout_s):
                response = await self.watch.session().get(url, headers=self.headers)
                try:
                    if response.status != 200:
                        await self._refusal(response)
                    while not self.pending:  # until the first event: the stream's start
                        chunk = await response.content.readany()
                        if not chunk:
                            raise _FailedError("stream ended before its first event")
                        self.buffer += chunk
                        self.pending = _messages(self.buffer)
                except BaseException:
                    response.close()
                    raise
        except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError) as exc:
            raise _FailedError(f"{type(exc).__name__} {exc}".strip()) from None
        self.response = response
        hello = self.pending[0]
        if hello.event == b"progress":
            try:
                beat = orjson.loads(hello.data).get("heartbeat_s")
            except (ValueError, AttributeError):
                beat = None
            if isinstance(beat, int | float) and beat > 0:
                self.idle_s = max(3 * float(beat), 1.0)

    async def _refusal(self, response: aiohttp.ClientResponse) -> None:
        try:
            body = orjson.loads(await response.read())
        except (ValueError, aiohttp.ClientError):
            body = None
        body = body if isinstance(body, dict) else {"error": f"HTTP {response.status}"}
        if response.status == 410:
            raise _CompactedError(body)
        if response.status == 404 or response.status >= 500:
            raise _FailedError(f"HTTP {response.status}: {body.get('error')}")
        raise _RefusedError(response.status, str(body.get("error")))

    def _take(self, message: _Message, out: list[_Item]) -> None:
        """One message of the stream, as a relayed item (if it moves this group on)."""
        try:
            version = int(message.id)
        except ValueError:
            raise _FailedError(f"event id {message.id[:40]!r} is not a version") from None
        if message.event == b"change":
            if not message.data.startswith(b"{"):
                raise _FailedError("malformed change event")
            if self.version is None or version > self.version:
                out.append((self.index, version, message.data, None))
                self.version = version
        elif message.event == b"progress" and (self.version is None or version > self.version):
            out.append((self.index, version, None, None))
            self.version = version

    def started(self) -> int:
        """The version the opened stream starts after: its first event's id (a progress event
        naming the start). The events that came with it wait in ``backlog``: they are not
        sent yet, so the start is not past them."""
        hello, rest = self.pending[0], self.pending[1:]
        self.pending = []
        try:
            start = int(hello.id)
        except ValueError:
            raise _FailedError(f"first event id {hello.id[:40]!r} is not a version") from None
        if hello.event != b"progress" or (self.version is not None and start != self.version):
            raise _FailedError(f"the stream started at {start}, not at {self.version}")
        self.version = start
        for message in rest:
            self._take(message, self.backlog)
        return start

    async def relay(self, queue: asyncio.Queue[_Item], waker: _Waker) -> None:
        """Pass the group's events on until the stream ends; re-open on failure (backing off
        after a round of failures); a 410 or a refusal ends it (an item saying why)."""
        rounds = 0
        while True:
            try:
                if self.response is None:
                    try:
                        await self.open()
                    except _FailedError as exc:
                        # Every store of the group failed this round: wait a little before the
                        # next, longer after each failed round.
                        log.debug("watch relay of group %s: %s", self.gid, exc)
                        await asyncio.sleep(min(MAX_BACKOFF_S, 0.05 * 2**rounds))
                        rounds = min(rounds + 1, 10)
                        continue
                    rounds = 0
                    self.started()
                backlog, self.backlog = self.backlog, []
                for item in backlog:
                    await queue.put(item)
                waker.wake()
                await self._pump(queue, waker)
            except _FailedError as exc:  # the stream broke: the next store, from the version
                log.debug("watch relay of group %s: %s", self.gid, exc)
                self.close()
                self._next += 1
            except _CompactedError as exc:
                await queue.put((self.index, 0, None, f"compacted: {exc}"))
                waker.wake()
                return
            except _RefusedError as exc:
                await queue.put((self.index, 0, None, f"refused: HTTP {exc.status} {exc}"))
                waker.wake()
                return

    async def _pump(self, queue: asyncio.Queue[_Item], waker: _Waker) -> None:
        response = self.response
        assert response is not None
        while True:
            try:
                async with asyncio.timeout(self.idle_s):
                    chunk = await response.content.readany()
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                self.close()
                raise _FailedError(f"stream broke: {type(exc).__name__}") from None
            if not chunk:
                self.close()
                raise _FailedError("stream ended")
            self.buffer += chunk
            items: list[_Item] = []
            for message in _messages(self.buffer):
                self._take(message, items)
            for item in items:
                await queue.put(item)
            if items:
                waker.wake()


# --- the merged stream --------------------------------------------------------------------------


class MergedHub(WatchHub):
    """The merged watches of a store: counted and ended as one group's hub counts and ends
    its own, each woken by the hosted histories, its relays and the drain."""

    def __init__(self, settings: WatchSettings) -> None:
        super().__init__(settings)
        self.wakers: set[_Waker] = set()
        self._histories: list[WatchHistory] = []
        #: Raised each time the store's replicas or placement change (``changed``).
        self.generation = 0

    def wake(self) -> None:
        for waker in self.wakers:
            waker.wake()

    def changed(self, gid: str) -> None:
        """The store gained or lost its replica of ``gid``, or ``gid`` moved between other
        stores: every stream checks that the hosted histories it reads are still hosted."""
        self.generation += 1
        self.wake()

    def attach_all(self, histories: Sequence[WatchHistory]) -> None:
        """Be woken by each of ``histories`` (once each)."""
        for history in histories:
            if not any(history is h for h in self._histories):
                history.subscribe(self.wake)
                self._histories.append(history)


class StoreWatch:
    """``/v1/watch`` without ``group`` on a store (see the module docstring).

    Args:
        front: the store's per-group contexts and settings.
        settings: the watch settings (heartbeat, bounds, relay timeout).
    """

    def __init__(self, front: StoreFront, settings: WatchSettings) -> None:
        self.front = front
        self.settings = settings
        self.hub = MergedHub(settings)
        #: The one-group watches' hubs, by hosted group (``hub_of``).
        self.hubs = {gid: WatchHub(settings) for gid in front.hosted()}
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    # --- the hubs of one-group watches, as replicas come and go -------------------------------

    def first_hub(self) -> WatchHub:
        """The first hosted group's hub (the application's ``WATCH``, as on a node)."""
        return next(iter(self.hubs.values()), None) or WatchHub(self.settings)

    def hub_of(self, gid: str) -> WatchHub:
        """The hub of hosted group ``gid``'s one-group watches (made for a replica gained
        since the store started)."""
        hub = self.hubs.get(gid)
        if hub is None:
            hub = self.hubs[gid] = WatchHub(self.settings)
            if self._stopping:
                hub.stop()
        return hub

    def stop(self) -> None:
        """End every watch stream (the store drains)."""
        self._stopping = True
        for hub in (*self.hubs.values(), self.hub):
            hub.stop()

    def changed(self, gid: str) -> None:
        """``Store.on_change``: when this store's replica of ``gid`` went, its one-group
        streams end (their clients resume elsewhere); merged streams check what they read."""
        if gid not in self.front.store.replicas:
            gone = self.hubs.pop(gid, None)
            if gone is not None:
                gone.stop()
        self.hub.changed(gid)

    def _history_of(self, gid: str) -> WatchHistory | None:
        replica = self.front.store.replicas.get(gid)
        found = getattr(replica.machine, "watch_history", None) if replica else None
        return found if isinstance(found, WatchHistory) else None

    def collector(self) -> Collector:
        """The watch metrics, labelled ``group`` (``all``: the merged streams), read from the
        hubs as they are at scrape time."""
        watch = self

        class Watches(Collector):
            def collect(self) -> Iterator[Metric]:
                parts: list[WatchPart] = [
                    ((gid,), hub, partial(watch._history_of, gid))
                    for gid, hub in watch.hubs.items()
                ]
                if watch.front.store.groups > 1:
                    parts.append(((MERGED_LABEL,), watch.hub, lambda: None))
                return watch_families(parts, ("group",))

        return Watches()

    def session(self) -> aiohttp.ClientSession:
        """The client session relays travel on: its own, unbounded, so long-lived streams
        never hold the forwarders' connections."""
        if self._session is None:
            ssl = self.front.settings.client_ssl_context
            connector = aiohttp.TCPConnector(limit=0, ssl=ssl or True)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def close(self) -> None:
        """Close the relays' session (idempotent)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _history(self, gid: str) -> WatchHistory:
        found = getattr(self.front.store.replicas[gid].machine, "watch_history", None)
        if not isinstance(found, WatchHistory):
            raise ApiError(404, f"watches are not enabled on this store (group {gid})")
        return found

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/watch[?prefix=P][&from_version=T]`` without ``group``."""
        front = self.front
        groups = front.store.groups
        prefix = parse_prefix_or_after(single_query(request, "prefix"), "prefix") or ""
        from_version = parse_token(single_query(request, "from_version"), "from_version", groups)
        last_id = parse_token(request.headers.get("Last-Event-ID"), "Last-Event-ID", groups)
        start = last_id if last_id is not None else from_version
        wanted: list[int | None] = (
            [None] * groups
            if start is None
            else [start] * groups
            if isinstance(start, int)
            else list(start)
        )
        hub = self.hub
        locals_: list[_Local] = []
        #: Group index → (floor, current, why) of each group whose start left its history.
        compacted: dict[int, tuple[int, int, str]] = {}
        for gid in front.hosted():
            g = int(gid[1:])
            history = self._history(gid)
            cursor = wanted[g]
            if cursor is None:
                cursor = history.last_index
            try:
                epoch = history.read(cursor, prefix, 0).epoch  # a 410 is an answer, not a stream
            except HistoryCompactedError as exc:
                compacted[g] = (exc.floor, exc.current, str(exc))
                continue
            locals_.append(_Local(g, gid, history, cursor, epoch))
        if hub.stopping:
            raise unavailable("store is stopping")
        if hub.active >= hub.settings.max_watchers:
            hub.refused += 1
            raise unavailable(
                f"too many watches on this store (at most {hub.settings.max_watchers})"
            )
        hub.active += 1
        remotes = [
            _Remote(self, int(gid[1:]), gid, wanted[int(gid[1:])], request)
            for gid in front.store.remote
        ]
        try:
            versions = await self._open_remotes(remotes, wanted, compacted)
            for part in locals_:
                versions[part.index] = part.cursor
            hub.attach_all([part.history for part in locals_])
            ticket = request.get(TICKET)
            if ticket is not None:
                ticket.release()  # a stream may last hours: it must not hold a request slot
            hub.opened += 1
            return await self._stream(request, prefix, locals_, remotes, versions)
        finally:
            hub.active -= 1
            for remote in remotes:
                remote.close()

    async def _open_remotes(
        self,
        remotes: list[_Remote],
        wanted: Sequence[int | None],
        compacted: dict[int, tuple[int, int, str]],
    ) -> list[int]:
        """Open every remote group's stream at once: the version each starts from. Any group
        (hosted: ``compacted``) whose start left its history makes the answer a 410; else a
        store refusing makes it that refusal, and a group no store of answered a 503."""
        results = await asyncio.gather(*(r.open() for r in remotes), return_exceptions=True)
        versions = [0] * self.front.store.groups
        refused: ApiError | None = None
        for remote, result in zip(remotes, results, strict=True):
            if isinstance(result, _CompactedError):
                body = result.body
                floor, current = body.get("oldest_version"), body.get("version")
                compacted[remote.index] = (
                    floor if type(floor) is int else 0,
                    current if type(current) is int else wanted[remote.index] or 0,
                    str(result),
                )
            elif isinstance(result, _RefusedError):
                refused = refused or ApiError(result.status, f"group {remote.gid}: {result}")
            elif isinstance(result, _FailedError):
                refused = refused or unavailable(str(result))
            elif isinstance(result, BaseException):
                raise result
            else:
                versions[remote.index] = remote.started()
        if compacted:
            self.hub.compacted += 1
            raise self._compacted(wanted, compacted)
        if refused is not None:
            raise refused
        return versions

    def _compacted(
        self, wanted: Sequence[int | None], compacted: dict[int, tuple[int, int, str]]
    ) -> ApiError:
        """The 410 of a start older than some group's history: ``version`` is a token to
        re-read and watch from — each compacted group's current version, each other hosted
        group's last applied one, each other remote group's start (its history holds it)."""
        versions: list[int] = []
        for g, asked in enumerate(wanted):
            replica = self.front.store.replicas.get(f"g{g}")
            if g in compacted:
                versions.append(compacted[g][1])
            elif replica is not None:
                history = getattr(replica.machine, "watch_history", None)
                last = history.last_index if isinstance(history, WatchHistory) else 0
                versions.append(max(last, asked or 0))
            else:
                versions.append(asked or 0)
        token = format_token(versions)
        first = min(compacted)
        floor, _, why = compacted[first]
        why = why.split("; re-read")[0]  # the one-group advice: this answer gives its own
        also = [f"g{g}" for g in sorted(compacted) if g != first]
        more = f" (and of group{'s' if len(also) > 1 else ''} {', '.join(also)})" if also else ""
        return ApiError(
            410,
            f"group g{first}: {why}{more}; re-read and watch from token {token}",
            extra={"version": token, "oldest_version": floor, "group": f"g{first}"},
        )

    def _moved(self, locals_: Sequence[_Local]) -> str | None:
        """Why the stream must end (its client resumes on a stream of the store as it is now):
        a group it reads here whose replica this store no longer holds, or holds anew."""
        for part in locals_:
            replica = self.front.store.replicas.get(part.gid)
            history = None if replica is None else getattr(replica.machine, "watch_history", None)
            if history is not part.history:
                return f"this store's replica of group {part.gid} moved"
        return None

    async def _stream(
        self,
        request: web.Request,
        prefix: str,
        locals_: list[_Local],
        remotes: list[_Remote],
        versions: list[int],
    ) -> web.StreamResponse:
        hub, settings = self.hub, self.settings
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass events on as they come
            }
        )
        await response.prepare(request)
        out = _Out(response, settings, versions)
        queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_ITEMS)
        waker = _Waker()
        hub.wakers.add(waker)
        relays = [asyncio.create_task(r.relay(queue, waker)) for r in remotes]
        clock = asyncio.get_running_loop().time
        reason = "stopping"
        try:
            hello = out.token()
            await out.write(
                b"retry: %d\n" % RETRY_MS + _progress(hello, {"heartbeat_s": settings.heartbeat_s})
            )
            out.sent = hello
            last_write = clock()
            generation = hub.generation
            while not hub.stopping:
                busy = False
                ended: str | None = None
                if hub.generation != generation:
                    generation = hub.generation
                    ended = self._moved(locals_)
                for part in locals_ if ended is None else ():
                    try:
                        read = part.history.read(part.cursor, prefix, settings.batch_entries)
                    except HistoryCompactedError:
                        ended = f"compacted (group {part.gid})"
                        hub.compacted += 1
                        break
                    if read.epoch != part.epoch:
                        ended = f"reset (group {part.gid})"  # a snapshot or restore replaced it
                        break
                    for version, changes in read.entries:
                        await out.local(part.index, part.gid, version, changes)
                    part.cursor = read.cursor
                    out.move(part.index, read.cursor)
                    busy = busy or read.cursor < part.history.last_index
                for _ in range(settings.batch_entries if ended is None else 0):
                    try:
                        g, version, data, why = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    if why is not None:
                        ended = f"the relay of group g{g} ended: {why}"
                        if why.startswith("compacted"):
                            hub.compacted += 1
                        break
                    if data is None:
                        out.move(g, version)
                    else:
                        await out.relayed(g, version, data)
                if await out.flush():
                    hub.events_sent += out.take_events()
                    last_write = clock()
                if ended is not None:
                    reason = ended
                    break
                if busy or not queue.empty():
                    await asyncio.sleep(0)  # more to read: let the rest of the store run first
                    continue
                quiet = clock() - last_write
                if quiet < settings.heartbeat_s:
                    await waker.wait(settings.heartbeat_s - quiet)
                    continue
                # Nothing written for a heartbeat period: move the resume point if it lags, and
                # keep the connection alive.
                token = out.token()
                await out.write(_progress(token) + HEARTBEAT if token != out.sent else HEARTBEAT)
                out.sent, last_write = token, clock()
        except TimeoutError:
            log.debug("merged watch ended: the client stopped reading (%s)", out.sent.decode())
            hub.slow_consumers += 1
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        except ConnectionError as exc:  # the client went away mid-write
            log.debug("merged watch closed by the client: %r", exc)
            return response
        finally:
            hub.wakers.discard(waker)
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
        log.debug("merged watch ended: %s at %s", reason, out.sent.decode())
        return response


class _Out:
    """The merged stream's writer: each group's version, the events not yet written (in
    pieces of about ``FLUSH_BYTES``), and the last id sent."""

    def __init__(
        self, response: web.StreamResponse, settings: WatchSettings, versions: list[int]
    ) -> None:
        self.response = response
        self.settings = settings
        self.labels = [f"g{g}:{v}" for g, v in enumerate(versions)]
        self.gids = [f"g{g}".encode() for g in range(len(versions))]
        self.parts: list[bytes] = []
        self.size = 0
        self.events = 0
        #: The id of the last event written (or about to be: it is in ``parts``).
        self.sent = b""

    def token(self) -> bytes:
        return ",".join(self.labels).encode()

    def move(self, g: int, version: int) -> None:
        """Every change of group ``g`` up to ``version`` is sent (or in ``parts``)."""
        self.labels[g] = f"g{g}:{version}"

    async def local(self, g: int, gid: str, version: int, changes: tuple[Change, ...]) -> None:
        self.labels[g] = f"g{g}:{version}"
        token = self.token()
        await self._add(_change(token, gid, version, changes), token)

    async def relayed(self, g: int, version: int, data: bytes) -> None:
        self.labels[g] = f"g{g}:{version}"
        token = self.token()
        await self._add(_relayed(token, self.gids[g], data), token)

    async def _add(self, event: bytes, token: bytes) -> None:
        self.parts.append(event)
        self.size += len(event)
        self.events += 1
        self.sent = token
        if self.size >= FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> bool:
        """Write what is pending; whether events were written since the last ``take_events``."""
        if self.parts:
            data = b"".join(self.parts)
            self.parts, self.size = [], 0
            await self.write(data)
        return self.events > 0

    def take_events(self) -> int:
        events, self.events = self.events, 0
        return events

    async def write(self, data: bytes) -> None:
        async with asyncio.timeout(self.settings.write_timeout_s):
            await self.response.write(data)
