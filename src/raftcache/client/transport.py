"""HTTP transport of the async client: leader discovery, retries and the overall deadline.

Rule: every request gets one deadline (the client's ``timeout``). Within it the transport tries
the remembered leader first, then the other endpoints, and retries what may succeed later:

- a connection that could not be opened — next endpoint at once; after every endpoint failed,
  exponential back-off with jitter;
- 503 — wait at least ``Retry-After`` (the server's word) and at least the back-off, and start
  the next attempt only if the deadline leaves it as long as that 503 took to come (a node
  waits for a leader before it answers one): else the 503 is the answer, not a timed-out attempt;
- 504, a timed-out attempt, a connection lost mid-request — back off and retry. For a write this is
  safe only because the caller resends the SAME session headers (see ``session.py``): the server
  answers a duplicate from its session table instead of applying it twice.

Any other status is final and raised as a typed error (``errors.py``), unless the caller listed it
in ``expect`` (a GET answering 404 is a miss, not an error). When the deadline leaves no room for
the next wait, the last error is raised: ``ConnectionFailedError``, ``UnavailableError`` or, for a
write whose outcome is unknown, ``IndeterminateError``.

Leader discovery asks every endpoint's ``/v1/status`` at once and remembers the endpoint that says
it leads. It is an optimisation only — any node forwards to the leader — so it runs once at the
start and again only after a failure, never on the success path.

**A sharded cluster** (a ``/v1/status`` with ``sharding.groups`` > 1; docs/sharding.md) is
told apart at that first discovery, which then also reads the cluster map (``GET /v1/shards``
of every endpoint, merged: ``shards.py``). A request about one key (``key=``) then goes
straight to the store leading the key's group, marked ``X-Raftcache-Forwarded: 1`` so that a
store that does not lead the group answers 503 ``X-Raftcache-Not-Leader: <hint>`` (certainly
not applied) instead of forwarding it: the transport follows the hint at once (at most
``_MAX_HOPS`` times), and with no usable hint, or when the store cannot be reached, sends the
request as it would to a one-group cluster — to any endpoint, which forwards it. Each of those
events (and a keyed request that went that way) marks the map stale; a background task then
reads it again, at most once per ``refresh_interval_s``, so a burst of misrouted requests
costs one refresh. A hint heard while a refresh was under way outlives that refresh's answer
(which may predate it). On a one-group cluster none of this runs: no map, no header, and the
request path is the one described above.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from raftcache.client.endpoints import RetryPolicy, encode_query
from raftcache.client.errors import (
    ConnectionFailedError,
    IndeterminateError,
    ProtocolError,
    RaftcacheError,
    UnavailableError,
    error_from_response,
    parse_retry_after,
)
from raftcache.client.shards import ShardMap, parse_shards

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Failures that happen before the request could have reached the server.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
#: Failures after which the server may have received (and applied) the request.
_MAYBE_SENT = (aiohttp.ClientError, TimeoutError)

#: Sent on a request routed by the map: a store that does not lead the key's group answers 503
#: with ``NOT_LEADER_HEADER`` (its hint) instead of forwarding (docs/api.md, "The cluster map").
FORWARDED_HEADER = "X-Raftcache-Forwarded"
NOT_LEADER_HEADER = "X-Raftcache-Not-Leader"
#: Hints one request follows before it falls back to any endpoint (which forwards it).
_MAX_HOPS = 3
#: The shortest time between two reads of the cluster map.
REFRESH_INTERVAL_S = 0.5

log = logging.getLogger("raftcache.client")


@dataclass(slots=True)
class RoutingStats:
    """How a client's requests about one key were routed on a sharded cluster."""

    #: Answered by the store the map named (a 503 "not the leader" is not counted).
    direct: int = 0
    #: 503 "not the leader" answers (the map was stale); the hint was then followed.
    redirected: int = 0
    #: Attempts sent to any endpoint because the map named no reachable leader.
    fallbacks: int = 0
    #: Leaders named by the map that could not be reached.
    unreachable: int = 0
    #: Reads of the cluster map (``GET /v1/shards`` of every endpoint).
    refreshes: int = 0


@dataclass(frozen=True, slots=True)
class Response:
    """A fully read HTTP response."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    url: str

    def json(self) -> Any:
        """Decode the body as JSON, raising ``ProtocolError`` when it is not."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(
                f"{self.url}: undecodable JSON in HTTP {self.status}", status=self.status
            ) from exc

    def json_object(self) -> dict[str, Any]:
        """Decode the body as a JSON object, raising ``ProtocolError`` otherwise."""
        obj = self.json()
        if not isinstance(obj, dict):
            raise ProtocolError(f"{self.url}: expected a JSON object", status=self.status)
        return obj


@dataclass(slots=True)
class _Attempts:
    """Book-keeping for one request's retry loop."""

    deadline: float
    write: bool
    waits: int = 0
    tried: set[str] = field(default_factory=set)
    #: Hints followed so far (a sharded cluster's routing).
    hops: int = 0
    #: Routing by the map gave up for this request: any endpoint from now on.
    by_map: bool = True
    last_error: RaftcacheError | None = None
    #: Some attempt of this write may have been applied: the final error must say so.
    maybe_applied: bool = False
    #: Endpoints that could not be connected to, with the reason (``ConnectionFailedError``).
    failures: dict[str, str] = field(default_factory=dict)
    #: How long the next attempt should be given: as long as the last 503 took to come back
    #: (a node waits ``--leader-wait`` for a leader before answering it), else 0.
    expect_s: float = 0.0

    def fail(self, error: RaftcacheError) -> None:
        self.last_error = error
        self.expect_s = 0.0
        if self.write and isinstance(error, IndeterminateError):
            self.maybe_applied = True
        if isinstance(error, ConnectionFailedError) and error.failures:
            self.failures.update(error.failures)
            error.failures = dict(self.failures)

    def final_error(self) -> RaftcacheError:
        assert self.last_error is not None
        if self.maybe_applied and not isinstance(self.last_error, IndeterminateError):
            error = IndeterminateError(
                f"outcome unknown: an earlier attempt may have been applied; "
                f"last error: {self.last_error}",
                status=self.last_error.status,
                body=self.last_error.body,
            )
            error.__cause__ = self.last_error
            return error
        return self.last_error


class Transport:
    """Sends requests to a cluster; owns the aiohttp session and the leader hint.

    Create it on the event loop that will use it; it is not thread-safe.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float,
        attempt_timeout: float | None = None,
        client_token: str | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        # Several attempts must fit in one deadline, or one hung node would consume all of it.
        self.attempt_timeout = attempt_timeout if attempt_timeout is not None else timeout / 2
        self.retry = retry or RetryPolicy()
        # A private generator: jitter must not touch (or depend on) the global random state.
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep: Sleep = sleep or asyncio.sleep
        self._headers = {"Authorization": f"Bearer {client_token}"} if client_token else {}
        self._max_connections = max_connections
        # None keeps aiohttp's default verification (system CAs) for https endpoints.
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.leader: str | None = None
        #: Node ids learnt from /v1/status, by endpoint URL.
        self.node_ids: dict[str, str] = {}
        self._need_discovery = True
        self._discovery: asyncio.Task[None] | None = None
        #: The cluster map of a sharded cluster; None on a one-group cluster (or not known yet).
        self.shards: ShardMap | None = None
        self.refresh_interval_s = REFRESH_INTERVAL_S
        self.routing = RoutingStats()
        self._refresh: asyncio.Task[None] | None = None
        self._refresh_wanted = False
        self._last_refresh: float | None = None
        #: Group → when the map was last patched for it (a hint followed, a leader forgotten).
        self._patched: dict[int, float] = {}

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def back_off(self, waits: int, deadline: float) -> bool:
        """Sleep the retry policy's ``waits``-th back-off, with this client's jitter and sleep;
        False, without sleeping, when it would end at or past ``deadline`` (on ``now()``'s
        clock). For retry loops outside ``request`` (a watch reconnecting)."""
        delay = self.retry.backoff(waits, self._rng)
        if self.now() + delay >= deadline:
            return False
        await self._sleep(delay)
        return True

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def close(self) -> None:
        """Close the connection pool; further requests raise RuntimeError."""
        self._closed = True
        if self._discovery is not None:
            self._discovery.cancel()
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
            await asyncio.wait([self._refresh], timeout=1.0)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send_once(
        self,
        url: str,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float,
    ) -> Response:
        """One attempt against one endpoint, no retry; aiohttp and timeout errors propagate."""
        client_timeout = aiohttp.ClientTimeout(total=max(timeout_s, 0.001))
        async with self._http().request(
            method,
            URL(url + target, encoded=True),
            data=body,
            headers=headers,
            timeout=client_timeout,
            allow_redirects=False,
            ssl=self._ssl,
        ) as resp:
            data = await resp.read()
            return Response(resp.status, CIMultiDict(resp.headers), data, str(resp.url))

    async def open_stream(
        self,
        url: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> aiohttp.ClientResponse:
        """Send a GET and return the response with its body unread (a stream: no total
        timeout, but any read waiting longer than ``read_timeout_s`` fails); the caller reads
        it and must ``release()`` it. aiohttp errors propagate."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        return await self._http().get(
            URL(url + target, encoded=True),
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            ssl=self._ssl,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        write: bool = False,
        expect: frozenset[int] = frozenset(),
        deadline_s: float | None = None,
        key: str | None = None,
    ) -> Response:
        """Send a request with leader preference and retries within one deadline.

        Args:
            method: HTTP method.
            path: Already-encoded path, e.g. ``/v1/keys/a%2Fb``.
            params: Query parameters (encoded here).
            body: Raw body; or ``json`` to send a JSON body.
            json: A value to encode as the JSON body.
            headers: Extra headers (session headers for writes).
            write: The request changes state: an unknown outcome is ``IndeterminateError``.
            expect: Non-2xx statuses to return instead of raising (e.g. 404 for a GET).
            deadline_s: Overrides the client's deadline (seconds) for this request.
            key: The one key the request is about (every key of it is of that key's group):
                on a sharded cluster it goes to the group leader's store.

        Raises:
            RaftcacheError: A typed error for a final status or an exhausted deadline.
        """
        if json is not None:
            body = orjson.dumps(json)
            headers = {**(headers or {}), "Content-Type": "application/json"}
        target = path + encode_query(params)
        budget = deadline_s if deadline_s is not None else self.timeout
        state = _Attempts(deadline=self.now() + budget, write=write)
        while True:
            if self._need_discovery and self.leader is None:
                await self._discover(state.deadline)
            group = url = None
            if key is not None and self.shards is not None:
                group, url = self._by_map(key, state)
            sent_headers = headers
            if url is None:
                url = self._choose(state.tried)
            else:
                sent_headers = {**(headers or {}), FORWARDED_HEADER: "1"}
            state.tried.add(url)
            started = self.now()
            remaining = state.deadline - started
            try:
                resp = await self.send_once(
                    url,
                    method,
                    target,
                    body=body,
                    headers=sent_headers,
                    timeout_s=min(remaining, self.attempt_timeout),
                )
            except _NOT_SENT as exc:
                self._lost(url, group, state)
                state.fail(
                    ConnectionFailedError(
                        f"{method} {url}{path}: {exc}", failures={url: connect_failure(exc)}
                    )
                )
                delay = self._backoff(state)
            except _MAYBE_SENT as exc:
                self._lost(url, group, state)
                state.fail(_unknown_outcome(method, url + path, exc, write))
                delay = self._backoff(state)
            else:
                if 200 <= resp.status < 300 or resp.status in expect:
                    if group is not None:
                        self.routing.direct += 1
                    elif key is not None and self.shards is not None:
                        self.map_stale()  # it may have been forwarded: where does it lead?
                    return resp
                if group is not None and resp.status == 503 and NOT_LEADER_HEADER in resp.headers:
                    delay = self._redirected(resp, url, group, state, f"{method} {path}")
                else:
                    delay = self._on_error_status(resp, url, state, f"{method} {path}")
                    if resp.status == 503:
                        state.expect_s = self.now() - started
            await self._wait(delay, state)

    def _on_error_status(self, resp: Response, url: str, state: _Attempts, where: str) -> float:
        """Classify an error response: raise when final, else record it and return the wait."""
        body = _error_body(resp)
        if resp.status == 503:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            state.fail(error_from_response(503, body, retry_after=retry_after, where=where))
            # The node we asked knows no leader (or is stepping down): our hint is stale.
            self._lost(url)
            return max(self._backoff(state), retry_after or 0.0)
        if resp.status == 504:
            if state.write:
                state.fail(error_from_response(504, body, where=where))
            else:
                # A read changes nothing, so "indeterminate" would mislead: it simply failed.
                state.fail(UnavailableError(f"{where}: {body.get('error', 'HTTP 504')}", body=body))
            return self._backoff(state)
        raise error_from_response(resp.status, body, where=where)

    def _backoff(self, state: _Attempts) -> float:
        """No wait while some endpoint is untried in this round; else the policy's back-off."""
        if any(url not in state.tried for url in self.endpoints):
            return 0.0
        return self.retry.backoff(state.waits, self._rng)

    async def _wait(self, delay: float, state: _Attempts) -> None:
        """Sleep before the next attempt, or raise the last error when the deadline forbids it.

        After a 503 the next attempt needs as long as that one took (a node answers 503 "no
        leader" only after waiting for one): an attempt the deadline would cut before then is
        not started, so the request ends with the 503 — nothing happened — rather than with a
        timed-out write whose outcome would be unknown.
        """
        if self.now() + delay + state.expect_s >= state.deadline:
            raise state.final_error()
        if delay > 0:
            await self._sleep(delay)
            state.waits += 1
            state.tried.clear()

    def _choose(self, tried: set[str]) -> str:
        """The leader if known and untried, else the first untried endpoint, else the first."""
        if self.leader is not None and self.leader not in tried:
            return self.leader
        for url in self.endpoints:
            if url not in tried:
                return url
        return self.leader or self.endpoints[0]

    def _lost(
        self, url: str | None, group: int | None = None, state: _Attempts | None = None
    ) -> None:
        """A failure on ``url``: forget it as leader and look again before the next attempt.
        When the map sent the request there (``group``), forget it as the group's leader too
        and send the rest of the request anywhere."""
        if group is not None and state is not None:
            self.routing.unreachable += 1
            state.by_map = False
            self._patch(group, None)
            self.map_stale()
        if url is None or url == self.leader or self.leader is None:
            self.leader = None
            self._need_discovery = True

    # ------------------------------------------------------------ routing by the cluster map

    def _by_map(self, key: str, state: _Attempts) -> tuple[int | None, str | None]:
        """``(group, url)`` of the store the map says leads ``key``'s group, or ``(None,
        None)``: no map, routing given up for this request, or no leader known (then the map
        is stale)."""
        shards = self.shards
        if shards is None:
            return None, None
        if state.by_map:
            group = shards.group_of(key)
            url = shards.leader_url(group)
            if url is not None:
                return group, url
            self.map_stale()
        self.routing.fallbacks += 1
        return None, None

    def _redirected(
        self, resp: Response, url: str, group: int, state: _Attempts, where: str
    ) -> float:
        """A store the map chose does not lead ``group`` (503 ``Not-Leader``: not applied):
        follow its hint at once, else send the request anywhere. The map is stale either way."""
        self.routing.redirected += 1
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        state.fail(
            error_from_response(503, _error_body(resp), retry_after=retry_after, where=where)
        )
        self.map_stale()
        hint = resp.headers.get(NOT_LEADER_HEADER) or None
        state.hops += 1
        if state.hops <= _MAX_HOPS and self._patch(group, hint):
            target = self.shards.leader_url(group) if self.shards is not None else None
            if target is not None and target != url:
                state.tried.discard(target)
                return 0.0
        state.by_map = False  # no leader to follow: let any endpoint forward it (or wait)
        self._patch(group, None)
        return 0.0

    def _patch(self, group: int, leader: str | None) -> bool:
        """Name ``leader`` (None: nobody) as ``group``'s in the map until the next refresh;
        False when the map cannot name it (no map, or a store whose URL it does not know)."""
        shards = self.shards
        if shards is None:
            return False
        if leader is None:
            shards.forget(group)
        elif not shards.follow(group, leader):
            return False
        self._patched[group] = self.now()
        return True

    def map_stale(self) -> None:
        """Read the cluster map again soon, in the background: at once if the last read is
        ``refresh_interval_s`` old, else when it will be. Calls meanwhile cost nothing."""
        self._refresh_wanted = True
        if self._closed or (self._refresh is not None and not self._refresh.done()):
            return
        self._refresh = asyncio.ensure_future(self._refresher())

    async def _refresher(self) -> None:
        try:
            while self._refresh_wanted and not self._closed:
                if self._last_refresh is not None:
                    wait = self._last_refresh + self.refresh_interval_s - self.now()
                    if wait > 0:
                        await self._sleep(wait)
                self._refresh_wanted = False
                await self.refresh_map(min(self.attempt_timeout, 1.0))
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task must not die with a stack trace in the log
            log.warning("raftcache client: reading the cluster map failed", exc_info=True)

    async def refresh_map(self, budget: float) -> None:
        """Read ``/v1/shards`` of every endpoint (and of the stores the map knows that no
        endpoint is) and install the merged map; a hint heard since the read began is kept.
        No answer at all leaves the map as it was."""
        started = self.now()
        self._last_refresh = started
        urls = list(self.endpoints)
        if self.shards is not None:
            urls += [u for u in self.shards.stores.values() if u not in urls]
        answers = await self.poll(urls, "/v1/shards", timeout_s=budget)
        self.routing.refreshes += 1
        parsed = []
        for url, body in answers:
            if isinstance(body, RaftcacheError):
                continue
            try:
                parsed.append((url, parse_shards(body)))
            except ProtocolError:
                continue
        fresh = ShardMap.merge(parsed)
        if fresh is None:
            return
        if fresh.groups <= 1:  # not sharded after all: route as to one group
            self.shards = None
            return
        old = self.shards
        if old is not None:
            fresh.keep_newer(old, [g for g, at in self._patched.items() if at >= started])
        self._patched = {g: at for g, at in self._patched.items() if at >= started}
        self.shards = fresh

    async def _discover(self, deadline: float) -> None:
        """Find the leader's endpoint; concurrent requests share one discovery."""
        if self._discovery is None or self._discovery.done():
            budget = min(deadline - self.now(), self.attempt_timeout, 1.0)
            self._discovery = asyncio.ensure_future(self._run_discovery(budget))
        # Shielded: one caller's cancellation must not abort the discovery others await.
        await asyncio.shield(self._discovery)

    async def _run_discovery(self, budget: float) -> None:
        self._need_discovery = False
        statuses = await self.poll(self.endpoints, "/v1/status", timeout_s=budget)
        self.leader = pick_leader(statuses, self.node_ids)
        if self.shards is not None:
            self.map_stale()
        elif is_sharded(statuses):
            await self.refresh_map(budget)

    async def shard_map(self) -> ShardMap | None:
        """The cluster map (None: a one-group cluster, or none known), after the first
        discovery if it has not run yet (it would before the next request anyway)."""
        if self._need_discovery and self.leader is None:
            await self._discover(self.now() + self.timeout)
        return self.shards

    async def poll(
        self, urls: Sequence[str], path: str, *, timeout_s: float
    ) -> list[tuple[str, dict[str, Any] | RaftcacheError]]:
        """GET ``path`` from every url concurrently, once each, no retry, in the given order."""

        async def one(url: str) -> dict[str, Any] | RaftcacheError:
            try:
                resp = await self.send_once(url, "GET", path, timeout_s=timeout_s)
            except _MAYBE_SENT as exc:
                failures = {url: connect_failure(exc)} if isinstance(exc, _NOT_SENT) else None
                return ConnectionFailedError(
                    f"GET {url}{path}: {exc or type(exc).__name__}", failures=failures
                )
            try:
                if resp.status != 200:
                    return error_from_response(resp.status, _error_body(resp), where=url)
                return resp.json_object()
            except RaftcacheError as exc:
                return exc

        results = await asyncio.gather(*(one(url) for url in urls))
        return list(zip(urls, results, strict=True))


def pick_leader(
    statuses: Sequence[tuple[str, dict[str, Any] | RaftcacheError]], node_ids: dict[str, str]
) -> str | None:
    """Choose the leader's URL from ``/v1/status`` answers; records each endpoint's node id.

    A node claiming leadership wins (the highest term if several do: the other one is stale);
    otherwise an endpoint whose id is the leader that the others name.
    """
    best: tuple[int, str] | None = None
    named: set[str] = set()
    for url, status in statuses:
        if isinstance(status, RaftcacheError):
            continue
        node_id = status.get("id")
        if isinstance(node_id, str):
            node_ids[url] = node_id
        term = status.get("term")
        if status.get("role") == "leader" and isinstance(term, int):
            best = max(best or (term, url), (term, url))
        leader = status.get("leader")
        if isinstance(leader, str):
            named.add(leader)
    if best is not None:
        return best[1]
    for url, node_id in node_ids.items():
        if node_id in named:
            return url
    return None


def is_sharded(statuses: Sequence[tuple[str, dict[str, Any] | RaftcacheError]]) -> bool:
    """Whether some ``/v1/status`` answer is a store's of a cluster of more than one group."""
    for _, status in statuses:
        if isinstance(status, dict):
            sharding = status.get("sharding")
            if isinstance(sharding, dict):
                groups = sharding.get("groups")
                if type(groups) is int and groups > 1:
                    return True
    return False


def connect_failure(exc: BaseException) -> str:
    """Why a connection could not be opened, in a few words: ``connection refused``..."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "TLS certificate not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not resolved"
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "connect timed out"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror[:1].lower() + cause.strerror[1:]
    return str(exc) or type(exc).__name__


def _error_body(resp: Response) -> dict[str, Any]:
    """The JSON error object of a response, or a synthetic one when the body is not JSON."""
    try:
        obj = orjson.loads(resp.body)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        return obj
    text = resp.body[:200].decode("utf-8", "replace").strip()
    return {"error": text or f"HTTP {resp.status}"}


def _unknown_outcome(method: str, where: str, exc: BaseException, write: bool) -> RaftcacheError:
    """The error for an attempt that broke after the request may have been sent."""
    reason = str(exc) or type(exc).__name__
    if write:
        return IndeterminateError(f"{method} {where}: outcome unknown ({reason})")
    return ConnectionFailedError(f"{method} {where}: {reason}")
