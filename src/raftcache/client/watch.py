"""Watches in the clients: ``AsyncWatch`` (async iterator) and ``Watch`` (iterator) of changes.

Rule: a watch yields every change under its prefix once, in log order, for as long as it is
iterated — across dropped connections and node failures. It remembers ``version``, the last
version whose changes it has *received whole* (the server sends one SSE event per log entry, and
a ``progress`` event moves it on quiet streams), and reconnects with it (``from_version``), so
nothing is missed and nothing repeats; an event at or below ``version`` (which a correct server
never sends) is dropped, not yielded twice.

On a sharded cluster (a store of many groups) the stream merges every group: each event names
its group and that group's version, and its SSE id is a resume token ``g0:N,g1:M,…`` (every
group's version). The watch keeps the last token received whole (``token``; ``version`` stays
None) and reconnects with it, so every group resumes from its own version; an event at or below
its group's version in the token is dropped. Events of one group come in that group's log order;
events of different groups in no particular order. ``token`` is the resume point in either case
(``str(version)`` on one group): ``from_version`` takes it back.

Reconnecting: on a connection error, a stream that ends, a 503/5xx or a stream silent for
``idle_timeout`` (the server sends a heartbeat every few seconds), the next endpoint is tried at
once; after a full round of failures it backs off (the client's ``RetryPolicy``) and gives up
with the last error once ``give_up_after`` seconds passed without a working stream. A 410 from
every node that answered means the history after ``version`` is gone: ``WatchCompactedError``,
carrying the cluster's current version — re-read what you cache, then watch from it. 400/401/
403/404 are raised at once (retrying the same request cannot help).
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from raftcache.client.endpoints import encode_query
from raftcache.client.errors import (
    ConnectionFailedError,
    ProtocolError,
    RaftcacheError,
    UnavailableError,
    error_from_response,
)
from raftcache.client.watch_sse import SseMessage, SseParser

if TYPE_CHECKING:
    from raftcache.client.transport import Transport


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one key.

    Attributes:
        type: ``"set"``, ``"delete"``, ``"expire"`` or ``"evict"``.
        key: the key.
        version: the log index of the change (all changes of one entry share it).
        value: the new value of a ``set``; None otherwise.
        expires_at: a ``set``'s expiry (seconds since the epoch), None for never / not a set.
        group: the key's data group on a sharded cluster (``version`` is that group's log
            index), None on a cluster of one group.
        value_type: a ``set``'s kind of value: ``"string"``, or ``"hash"`` when ``value`` is
            the whole hash after the change (its fields as a msgpack map); None otherwise.
    """

    type: str
    key: str
    version: int
    value: bytes | None = None
    expires_at: float | None = None
    group: str | None = None
    value_type: str | None = None


class WatchCompactedError(RaftcacheError):
    """410: the changes after the version asked for are gone from every node's history.

    Attributes:
        current_version: the version to re-read at and watch from (0 on a sharded cluster:
            see ``token``).
        oldest_version: the oldest version a watch can start from now (as far as known; on a
            sharded cluster, that of the group ``group``).
        token: what to watch from after re-reading, as ``from_version`` takes it: the resume
            token of every group on a sharded cluster, ``str(current_version)`` otherwise.
        group: on a sharded cluster, the group whose history no longer holds the start.
    """

    def __init__(
        self,
        message: str,
        *,
        current_version: int,
        oldest_version: int | None = None,
        token: str | None = None,
        group: str | None = None,
    ) -> None:
        super().__init__(message, status=410)
        self.current_version = current_version
        self.oldest_version = oldest_version
        self.token = token if token is not None else str(current_version)
        self.group = group


#: A resume token is at most this long (a store's has about 30 characters per group).
MAX_TOKEN_CHARS = 1 << 16


def token_versions(token: str) -> dict[str, int]:
    """The versions a resume token ``g0:N,g1:M,…`` names, by group ({} when it names none)."""
    versions: dict[str, int] = {}
    for part in token.split(","):
        group, colon, version = part.partition(":")
        if colon and group and version.isascii() and version.isdigit():
            versions[group] = int(version)
    return versions


def check_from_version(from_version: int | str | None) -> int | str | None:
    """``from_version`` as a watch takes it: None, a version (an int, or a string of digits),
    or a resume token (a non-empty string of printable ASCII); ValueError otherwise."""
    if from_version is None:
        return None
    if type(from_version) is int:
        if from_version < 0:
            raise ValueError("from_version must be a non-negative integer, a token or None")
        return from_version
    if isinstance(from_version, str):
        if from_version.isascii() and from_version.isdigit():
            return int(from_version)
        printable = from_version.isascii() and from_version.isprintable()
        if printable and " " not in from_version and 0 < len(from_version) <= MAX_TOKEN_CHARS:
            return from_version
    raise ValueError(
        f"from_version must be a non-negative integer, a resume token or None, "
        f"not {from_version!r:.80}"
    )


def decode_change_event(data: str) -> tuple[int, list[WatchEvent]]:
    """The version and events of a ``change`` message; ``ProtocolError`` if malformed. On a
    sharded cluster's stream each event carries the message's ``group``."""
    version, _, events = _decode_change(data)
    return version, events


def _decode_change(data: str) -> tuple[int, str | None, list[WatchEvent]]:
    try:
        obj = orjson.loads(data)
        version = obj["version"]
        if type(version) is not int:
            raise TypeError("version is not an integer")
        group = obj.get("group")
        if group is not None and not isinstance(group, str):
            raise TypeError("group is not a string")
        events = [
            WatchEvent(
                c["type"],
                c["key"],
                version,
                base64.b64decode(c["value"], validate=True) if "value" in c else None,
                c.get("expires_at"),
                group,
                c.get("value_type", "string") if "value" in c else None,
            )
            for c in obj["changes"]
        ]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ProtocolError(f"malformed watch event: {exc!r}") from None
    return version, group, events


class AsyncWatch:
    """The async iterator ``AsyncClient.watch`` returns (see the module docstring).

    Use ``async for event in watch`` and ``await watch.aclose()`` (or ``async with``).
    """

    def __init__(
        self,
        transport: Transport,
        prefix: str = "",
        from_version: int | str | None = None,
        *,
        idle_timeout: float = 30.0,
        give_up_after: float = 60.0,
    ) -> None:
        start = check_from_version(from_version)
        if idle_timeout <= 0 or give_up_after <= 0:
            raise ValueError("idle_timeout and give_up_after must be > 0")
        self._transport = transport
        self.prefix = prefix
        #: The last version received whole: where a reconnect resumes (one group; None on a
        #: sharded cluster's stream, whose resume point is ``token``).
        self.version: int | None = start if isinstance(start, int) else None
        #: A sharded stream's last id received whole (None until one is seen or given).
        self._token: str | None = start if isinstance(start, str) else None
        #: A sharded stream's version of each group, as ``_token`` names them.
        self._groups: dict[str, int] = token_versions(self._token) if self._token else {}
        self.idle_timeout = idle_timeout
        self.give_up_after = give_up_after
        self._pending: deque[WatchEvent] = deque()
        self._response: aiohttp.ClientResponse | None = None
        self._parser = SseParser()
        self._next = 0  # index of the endpoint to try next
        #: The endpoint currently streaming (None while not connected).
        self.endpoint: str | None = None
        #: Connections opened so far (the first one included).
        self.connections = 0
        self._closed = False

    @property
    def token(self) -> str | None:
        """Where a reconnect resumes, as ``from_version`` takes it back: the last SSE id
        received whole — the resume token of every group on a sharded cluster, else
        ``str(version)`` — or None before the stream named its start."""
        if self._token is not None:
            return self._token
        return None if self.version is None else str(self.version)

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            await self._receive()
        return self._pending.popleft()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the stream; iteration ends. Idempotent."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        self.endpoint = None
        self._parser = SseParser()  # a half-received message must not join the next stream's

    async def _receive(self) -> None:
        """Read more of the stream (connecting first when needed)."""
        if self._response is None:
            await self._connect()
        response = self._response
        assert response is not None
        try:
            chunk = await response.content.readany()
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            chunk = b""  # dropped, or silent beyond idle_timeout: reconnect elsewhere
        if not chunk:
            self._drop()
            self._next += 1
            return
        for message in self._parser.feed(chunk):
            self._handle(message)

    def _handle(self, message: SseMessage) -> None:
        if message.event == "change":
            version, group, events = _decode_change(message.data)
            if group is not None:
                self._sharded_change(message, group, version, events)
                return
            if self.version is not None and version <= self.version:
                return  # already delivered (never sent by a correct server)
            self._pending.extend(events)
            self.version = version
        elif message.event == "progress":
            try:
                obj = orjson.loads(message.data)
                token = obj.get("token")
                moved = None if token is not None else obj["version"]
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise ProtocolError(f"malformed watch progress: {exc!r}") from None
            if token is not None:
                self._sharded_progress(message, token)
            elif type(moved) is int and (self.version is None or moved > self.version):
                self.version = moved

    def _sharded_change(
        self, message: SseMessage, group: str, version: int, events: list[WatchEvent]
    ) -> None:
        """A change event of a sharded stream: its id is the token after it."""
        if not message.id:
            raise ProtocolError("a watch event of a sharded cluster came without its id")
        if version <= self._groups.get(group, -1):
            return  # already delivered (never sent by a correct server)
        self._pending.extend(events)
        self._groups[group] = version
        self._token, self.version = message.id, None

    def _sharded_progress(self, message: SseMessage, token: object) -> None:
        """A progress event of a sharded stream: every group moves to the token's version."""
        if not isinstance(token, str) or (message.id or token) != token:
            raise ProtocolError(f"malformed watch progress: token {token!r:.80}")
        versions = token_versions(token)
        if any(v < self._groups.get(g, -1) for g, v in versions.items()):
            return  # behind what was received (never sent by a correct server)
        self._groups.update(versions)
        self._token, self.version = token, None

    async def _connect(self) -> None:
        """Open a stream from ``version`` on some endpoint (see the module docstring)."""
        transport = self._transport
        endpoints = transport.endpoints
        give_up_at = transport.now() + self.give_up_after
        waits = 0
        while True:
            compacted: list[WatchCompactedError] = []
            last_error: RaftcacheError | None = None
            for _ in range(len(endpoints)):
                url = endpoints[self._next % len(endpoints)]
                try:
                    if await self._open(url):
                        return
                except WatchCompactedError as exc:
                    compacted.append(exc)
                except (ConnectionFailedError, UnavailableError) as exc:
                    last_error = exc
                self._next += 1
            if compacted:
                raise max(compacted, key=lambda e: e.current_version)
            assert last_error is not None
            if not await transport.back_off(waits, give_up_at):
                raise last_error
            waits += 1

    async def _open(self, url: str) -> bool:
        """Try one endpoint: True once streaming; raises what ends the attempt."""
        params = [("prefix", self.prefix)] if self.prefix else []
        start = self.token
        if start is not None:
            params.append(("from_version", start))
        target = "/v1/watch" + encode_query(params)
        where = f"GET {url}/v1/watch"
        try:
            response = await self._transport.open_stream(
                url,
                target,
                headers={"Accept": "text/event-stream"},
                connect_timeout_s=self._transport.attempt_timeout,
                read_timeout_s=self.idle_timeout,
            )
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            raise ConnectionFailedError(f"{where}: {exc or type(exc).__name__}") from None
        if response.status == 200:
            self._response, self.endpoint = response, url
            self.connections += 1
            return True
        try:
            body = await _error_body(response)
        finally:
            response.release()
        if response.status == 410:
            version = body.get("version")
            group = body.get("group")
            raise WatchCompactedError(
                f"{where}: {body.get('error', 'history compacted')}",
                current_version=_int(version, 0),
                oldest_version=_int(body.get("oldest_version"), None),
                token=version if isinstance(version, str) else None,
                group=group if isinstance(group, str) else None,
            )
        error = error_from_response(response.status, body, where=where)
        if response.status >= 500:
            raise UnavailableError(str(error), status=response.status, body=body)
        raise error


class Watch:
    """The iterator ``Client.watch`` returns: an ``AsyncWatch`` driven on the client's loop.

    Use ``for event in watch`` and ``watch.close()`` (or ``with``).
    """

    def __init__(self, inner: AsyncWatch, run: Any) -> None:
        self._inner = inner
        self._run = run

    @property
    def version(self) -> int | None:
        """The last version received whole (see ``AsyncWatch.version``)."""
        return self._inner.version

    @property
    def token(self) -> str | None:
        """Where a reconnect resumes, for ``from_version`` (see ``AsyncWatch.token``)."""
        return self._inner.token

    @property
    def endpoint(self) -> str | None:
        return self._inner.endpoint

    @property
    def connections(self) -> int:
        return self._inner.connections

    def __iter__(self) -> Iterator[WatchEvent]:
        return self

    def __next__(self) -> WatchEvent:
        try:
            event: WatchEvent = self._run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None
        return event

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream. Idempotent."""
        self._run(self._inner.aclose())


def _int(value: object, default: Any) -> Any:
    return value if type(value) is int else default


async def _error_body(response: aiohttp.ClientResponse) -> Mapping[str, Any]:
    try:
        obj = orjson.loads(await response.read())
    except (orjson.JSONDecodeError, aiohttp.ClientError, TimeoutError):
        obj = None
    return obj if isinstance(obj, dict) else {"error": f"HTTP {response.status}"}
