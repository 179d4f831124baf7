"""``AsyncClient``: the asyncio client of the cache HTTP API (docs/api.md).

Rule: each public method is one API call — validate, encode, send through the transport (which
owns discovery, retries and the deadline), decode. Every write carries session headers from a
lane of the session pool, held for all its retries (see ``session.py``): a retried write is never
applied twice. Reads carry none.

On a sharded cluster (``transport.py``) a call about one key names it to the transport, which
sends it to the key's group leader; ``mget`` is one call per group, concurrently, its values put
back in the order asked; a ``batch`` whose keys span groups is refused before anything is sent,
as the stores would refuse it (400 ``CROSSSLOT``). Sessions need nothing more: each group keeps
its own session table, a write's retries all go to its key's group, and each lane's sequence
numbers still grow within every group (with gaps, which a session table allows).
"""

from __future__ import annotations

import asyncio
import random
import ssl
import uuid
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from raftcache.client.codec import (
    BatchOpSpec,
    KeyPage,
    Value,
    b64decode,
    consistency_param,
    decode_batch,
    encode_batch,
    field,
    if_match,
    parse_etag,
    to_bytes,
    touch_param,
    ttl_param,
)
from raftcache.client.endpoints import RetryPolicy, encode_key, parse_endpoints
from raftcache.client.errors import PreconditionFailedError, ProtocolError, RaftcacheError
from raftcache.client.lock import AsyncLock
from raftcache.client.session import SessionPool
from raftcache.client.shards import crossslot_error
from raftcache.client.transport import Clock, Response, RoutingStats, Sleep, Transport
from raftcache.client.watch import AsyncWatch

_MISS = frozenset({404})


class AsyncClient:
    """Asyncio client for a raftcache cluster.

    Use it as ``async with AsyncClient(["http://127.0.0.1:8001", ...]) as c: await c.get("k")``.
    One instance is safe to share between tasks of one event loop; create it inside that loop's
    program, and ``close()`` it (or use ``async with``) to release its connections.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        timeout: float = 5.0,
        client_token: str | None = None,
        client_id: str | None = None,
        first_seq: int = 1,
        consistency: str | None = None,
        attempt_timeout: float | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Create a client; no connection is opened until the first request.

        Args:
            endpoints: Base URLs of some or all nodes, as a list or a comma-separated string.
            timeout: Overall deadline in seconds of each call, retries included.
            client_token: Sent as ``Authorization: Bearer <token>`` when set.
            client_id: The session id of this client's writes; random by default. Never give
                two live clients the same id: their writes would be taken for each other's retries.
            first_seq: First sequence number (to continue a session saved with ``client_id``).
            consistency: Default read consistency: "linearizable" (server default), "lease"
                or "stale".
            attempt_timeout: Time limit of one attempt (default ``timeout / 2``).
            retry: Back-off between attempts.
            rng: Randomness for the back-off jitter.
            clock: Monotonic clock in seconds (default: the event loop's).
            sleep: Coroutine used to wait between attempts (default ``asyncio.sleep``).
            max_connections: Size of the keep-alive connection pool.
            ssl_context: TLS settings for https endpoints (a private CA, a client certificate
                for mutual TLS); see ``tls_context``. Default: verify against the system CAs.
        """
        consistency_param(consistency)  # validate early: a typo should fail here, not per call
        self.endpoints = parse_endpoints(endpoints)
        # The client is a composition root: an unpredictable id needs real entropy here.
        self.client_id = client_id if client_id is not None else uuid.uuid4().hex
        self.consistency = consistency
        self._sessions = SessionPool(self.client_id, first_seq=first_seq)
        self._transport = Transport(
            self.endpoints,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            client_token=client_token,
            retry=retry,
            rng=rng,
            clock=clock,
            sleep=sleep,
            max_connections=max_connections,
            ssl_context=ssl_context,
        )

    @property
    def leader(self) -> str | None:
        """The endpoint currently believed to lead (None until discovered)."""
        return self._transport.leader

    @property
    def transport(self) -> Transport:
        return self._transport

    @property
    def shards(self) -> dict[str, Any] | None:
        """The cluster map this client routes by — ``{"groups", "leaders": {group: store id},
        "stores": {store id: URL}}`` — or None (a one-group cluster, or not discovered yet)."""
        shards = self._transport.shards
        return shards.as_dict() if shards is not None else None

    @property
    def routing(self) -> RoutingStats:
        """Counters of how requests about one key were routed on a sharded cluster."""
        return self._transport.routing

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release connections. Idempotent."""
        await self._transport.close()

    # ----------------------------------------------------------------- locks

    def lock(
        self, key: str, ttl: float, *, owner: str | None = None, retry_interval_s: float = 0.1
    ) -> AsyncLock:
        """A lock on ``key`` held ``ttl`` seconds at a time, whose ``acquire`` returns a
        fencing token (the log index of the acquiring write): ``raftcache.client.lock``."""
        return AsyncLock(self, key, ttl, owner=owner, retry_interval_s=retry_interval_s)

    # ----------------------------------------------------------------- watches

    def watch(
        self,
        prefix: str = "",
        *,
        from_version: int | str | None = None,
        idle_timeout: float = 30.0,
        give_up_after: float = 60.0,
    ) -> AsyncWatch:
        """The changes under ``prefix`` with a version > ``from_version`` (None: from now; a
        resume token, ``AsyncWatch.token``, on a sharded cluster), as
        an async iterator of ``WatchEvent``; it reconnects across failures with no gap and no
        duplicate, and raises ``WatchCompactedError`` when the history is gone (see
        ``raftcache.client.watch``). Close it with ``aclose()`` or ``async with``."""
        return AsyncWatch(
            self._transport,
            prefix,
            from_version,
            idle_timeout=idle_timeout,
            give_up_after=give_up_after,
        )

    # ----------------------------------------------------------------- reads

    async def get(
        self, key: str, *, consistency: str | None = None, touch: bool = True
    ) -> bytes | None:
        """The value of ``key``, or None when it is missing or expired. ``touch=False``: the
        read leaves the key's recency (LRU order) alone, as Redis's ``CLIENT NO-TOUCH``."""
        found = await self.get_with_version(key, consistency=consistency, touch=touch)
        return None if found is None else found[0]

    async def get_with_version(
        self, key: str, *, consistency: str | None = None, touch: bool = True
    ) -> tuple[bytes, int] | None:
        """``(value, version)`` of ``key``, or None when missing; the version feeds ``cas``."""
        resp = await self._transport.request(
            "GET",
            f"/v1/keys/{encode_key(key)}",
            params=self._consistency(consistency) + touch_param(touch),
            expect=_MISS,
            key=key,
        )
        if resp.status == 404:
            return None
        return resp.body, parse_etag(resp.headers.get("ETag"))

    async def mget(
        self, keys: Sequence[str], *, consistency: str | None = None, touch: bool = True
    ) -> list[bytes | None]:
        """Values of several keys under one read barrier (the client's consistency unless
        ``consistency`` says otherwise), None for missing ones; ``touch`` as for ``get``."""
        keys = _check_keys(keys)
        params = self._consistency(consistency) + touch_param(touch)
        shards = await self._transport.shard_map()
        if shards is None or not keys:
            return await self._mget_part(keys, params, None)
        split: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            split.setdefault(shards.group_of(key), []).append(position)
        parts = [[keys[p] for p in positions] for positions in split.values()]
        found = await asyncio.gather(*(self._mget_part(ks, params, ks[0]) for ks in parts))
        values: list[bytes | None] = [None] * len(keys)
        for positions, part in zip(split.values(), found, strict=True):
            for position, value in zip(positions, part, strict=True):
                values[position] = value
        return values

    async def _mget_part(
        self, keys: list[str], params: list[tuple[str, str]], key: str | None
    ) -> list[bytes | None]:
        """``POST /v1/mget`` of ``keys`` (all of ``key``'s group when ``key`` is given)."""
        resp = await self._transport.request(
            "POST", "/v1/mget", params=params, json={"keys": keys}, key=key
        )
        values = resp.json_object().get("values")
        if not isinstance(values, list) or len(values) != len(keys):
            raise ProtocolError(f"mget: expected {len(keys)} values, got {values!r:.80}")
        return [b64decode(v) for v in values]

    async def list_keys(
        self,
        prefix: str = "",
        *,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> KeyPage:
        """One page of keys starting with ``prefix``, in key order, after the key ``after``."""
        params: list[tuple[str, str]] = [("prefix", prefix)] if prefix else []
        if limit is not None:
            params.append(("limit", str(limit)))
        if after is not None:
            params.append(("after", after))
        params += self._consistency(consistency)
        body = (await self._transport.request("GET", "/v1/keys", params=params)).json_object()
        keys = field(body, "keys", list)
        if not all(isinstance(k, str) for k in keys):
            raise ProtocolError("list_keys: keys must be strings")
        cursor = body.get("next")
        return KeyPage(keys, cursor if isinstance(cursor, str) else None)

    async def iter_keys(self, prefix: str = "", *, page_size: int = 1000) -> AsyncIterator[str]:
        """Every key starting with ``prefix``, fetched page by page."""
        after: str | None = None
        while True:
            page = await self.list_keys(prefix, limit=page_size, after=after)
            for key in page.keys:
                yield key
            if page.next is None or not page.keys:
                return
            after = page.next

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """``/v1/status`` of ``endpoint``, or of whichever node answers first (leader first)."""
        return await self._node_json("/v1/status", endpoint)

    async def stats(self, endpoint: str | None = None) -> dict[str, Any]:
        """``/v1/stats`` (cache and Raft counters) of ``endpoint`` or of the first to answer."""
        return await self._node_json("/v1/stats", endpoint)

    async def poll(
        self, path: str = "/v1/status", *, timeout_s: float | None = None
    ) -> list[tuple[str, dict[str, Any] | RaftcacheError]]:
        """GET ``path`` from every endpoint once, concurrently: ``(url, body or error)`` each."""
        budget = timeout_s if timeout_s is not None else self._transport.attempt_timeout
        return await self._transport.poll(self.endpoints, path, timeout_s=budget)

    # ---------------------------------------------------------------- writes

    async def set(
        self,
        key: str,
        value: Value,
        ttl: float | None = None,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        """Store ``value`` under ``key`` and return its new version, once committed.

        Args:
            key: Non-empty UTF-8 key (at most 1 KiB).
            value: The value; a str is stored as UTF-8.
            ttl: Seconds until the key expires (finite, > 0), or None for no expiry.
            if_version: Only if the key's current version is this (compare-and-set).
            if_absent: Only if the key does not exist.

        Raises:
            PreconditionFailedError: ``if_version`` or ``if_absent`` did not hold.
        """
        headers: dict[str, str] = {}
        if if_version is not None:
            headers.update(if_match(if_version))
        if if_absent:
            headers["If-None-Match"] = "*"
        resp = await self._write(
            "PUT",
            f"/v1/keys/{encode_key(key)}",
            params=ttl_param(ttl),
            body=to_bytes(value),
            headers=headers,
            key=key,
        )
        return int(field(resp.json_object(), "version", int))

    async def cas(
        self, key: str, value: Value, version: int, *, ttl: float | None = None
    ) -> int | None:
        """Compare-and-set: store ``value`` only if ``key`` is at ``version``.

        Returns:
            The new version, or None when the current version was not ``version``.
        """
        try:
            return await self.set(key, value, ttl, if_version=version)
        except PreconditionFailedError:
            return None

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete ``key``; True when it existed."""
        headers = if_match(if_version) if if_version is not None else {}
        resp = await self._write("DELETE", f"/v1/keys/{encode_key(key)}", headers=headers, key=key)
        return bool(field(resp.json_object(), "deleted", bool))

    async def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the counter at ``key`` (missing counts as 0); returns the new value."""
        if isinstance(by, bool) or not isinstance(by, int):
            raise TypeError(f"by must be an int, got {type(by).__name__}")
        resp = await self._write(
            "POST", f"/v1/keys/{encode_key(key)}/incr", json={"by": by}, key=key
        )
        return int(field(resp.json_object(), "value", int))

    async def expire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        at: float | None = None,
        condition: str | None = None,
        if_version: int | None = None,
    ) -> bool:
        """Change ``key``'s expiry without rewriting its value: ``ttl`` seconds from now (at
        or below 0 deletes the key) or the epoch instant ``at``; neither removes the expiry.
        ``condition``: ``"nx"``, ``"xx"``, ``"gt"`` or ``"lt"`` (Redis's EXPIRE options).
        Returns whether the expiry changed (False for a missing key). The key gets a new
        version. Needs every node to run command version 2 (else
        ``CommandVersionNotEnabledError``, 409)."""
        body: dict[str, Any] = {"ttl": ttl} if at is None else {"at": at}
        if condition is not None:
            body["condition"] = condition
        headers = if_match(if_version) if if_version is not None else {}
        resp = await self._write(
            "POST", f"/v1/keys/{encode_key(key)}/ttl", json=body, headers=headers, key=key
        )
        return bool(field(resp.json_object(), "changed", bool))

    async def persist(self, key: str) -> bool:
        """Remove ``key``'s expiry; True if it had one."""
        return await self.expire(key, None)

    async def flush(self, prefix: str = "") -> int:
        """Delete every key starting with ``prefix`` (``""``: every key) atomically, as one
        log entry; returns how many live keys were deleted."""
        resp = await self._write("DELETE", "/v1/keys", params=[("prefix", prefix)])
        return int(field(resp.json_object(), "deleted", int))

    async def batch(self, ops: Sequence[BatchOpSpec]) -> list[Any]:
        """Apply several ops atomically, as one log entry (all or nothing).

        Args:
            ops: Mappings ``{"op", "key", ...}`` or tuples ``("get", key)``,
                ``("set", key, value[, ttl])``, ``("delete", key)``, ``("incr", key[, by])``.
                Mappings may carry ``if_version``/``if_absent``/``keep_ttl`` (set),
                ``if_version`` (delete, ttl), ``by`` (incr), ``ttl``/``at``/``condition``
                (ttl: a TTL-only change).

        Returns:
            One result per op, in order: get → bytes | None, set → version, delete → bool,
            incr → the new value, ttl → whether the expiry changed. A failed condition raises
            ``PreconditionFailedError`` and applies nothing. On a sharded cluster every key
            must be of one group (a ``{hash tag}``), else ``BadRequestError`` (``CROSSSLOT``)
            before anything is sent.
        """
        wire, kinds = encode_batch(ops)
        key: str | None = None
        shards = await self._transport.shard_map() if wire else None
        if shards is not None:
            keys = [op["key"] for op in wire]
            refused = crossslot_error(keys, shards.groups)
            if refused is not None:
                raise refused
            key = keys[0]
        resp = await self._write("POST", "/v1/batch", json={"ops": wire}, key=key)
        return decode_batch(resp.json_object().get("results"), kinds)

    # ----------------------------------------------------------- membership

    async def add_member(self, node_id: str, url: str) -> dict[str, Any]:
        """Add a voting member (returns once it votes)."""
        resp = await self._transport.request(
            "POST", "/v1/members", json={"id": node_id, "url": url}, write=True
        )
        return _json_or_empty(resp)

    async def remove_member(self, node_id: str) -> dict[str, Any]:
        """Remove a member from the cluster."""
        resp = await self._transport.request(
            "DELETE", f"/v1/members/{encode_key(node_id)}", write=True
        )
        return _json_or_empty(resp)

    async def transfer_leadership(
        self, to: str | None = None, *, group: str | None = None
    ) -> dict[str, Any]:
        """Ask the leader to hand over to ``to`` (or to the most up-to-date follower); on a
        sharded cluster, the leader of ``group`` (``"g0"``, ...; a store requires it)."""
        params = [("group", group)] if group is not None else []
        resp = await self._transport.request(
            "POST", "/v1/leader/transfer", params=params, json={"to": to}, write=True
        )
        return _json_or_empty(resp)

    async def snapshot(self) -> dict[str, Any]:
        """Ask the node that answers to take a snapshot now."""
        return _json_or_empty(await self._transport.request("POST", "/v1/snapshot", write=True))

    # --------------------------------------------------------------- helpers

    def _consistency(self, consistency: str | None) -> list[tuple[str, str]]:
        return consistency_param(consistency if consistency is not None else self.consistency)

    async def _write(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
    ) -> Response:
        """Send a write under a session ticket that every retry of it reuses (``key``: the
        one key it is about, for routing on a sharded cluster)."""
        lane, ticket = self._sessions.acquire()
        try:
            return await self._transport.request(
                method,
                path,
                params=params,
                body=body,
                json=json,
                headers={**(headers or {}), **ticket.headers()},
                write=True,
                key=key,
            )
        finally:
            self._sessions.release(lane)

    async def _node_json(self, path: str, endpoint: str | None) -> dict[str, Any]:
        if endpoint is None:
            return (await self._transport.request("GET", path)).json_object()
        url = parse_endpoints([endpoint])[0]
        ((_, result),) = await self._transport.poll([url], path, timeout_s=self._transport.timeout)
        if isinstance(result, RaftcacheError):
            raise result
        return result


def _check_keys(keys: Sequence[str]) -> list[str]:
    if isinstance(keys, str):
        raise TypeError("mget takes a sequence of keys, not one str")
    result = list(keys)
    for key in result:
        encode_key(key)  # same validation as single-key calls
    return result


def _json_or_empty(resp: Response) -> dict[str, Any]:
    return resp.json_object() if resp.body.strip() else {}
