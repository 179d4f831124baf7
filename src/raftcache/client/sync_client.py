"""``Client``: the blocking client, an ``AsyncClient`` driven on a private event-loop thread.

Rule: all I/O happens on one daemon thread that runs its own event loop; each blocking method
submits the matching coroutine there and waits for its result. So the two clients cannot drift
apart in behaviour (retries, sessions, errors are the async client's), and calls from several
threads run concurrently on that loop, each write on its own session lane.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import threading
import weakref
from collections.abc import Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

from raftcache.client.async_client import AsyncClient
from raftcache.client.codec import BatchOpSpec, KeyPage, Value
from raftcache.client.endpoints import RetryPolicy
from raftcache.client.errors import RaftcacheError
from raftcache.client.lock import Lock
from raftcache.client.transport import RoutingStats
from raftcache.client.watch import Watch

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever on a daemon thread until ``stop``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a Client method was called from its own loop thread")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C in the caller must not leave the request running behind its back.
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def _shutdown(loop_thread: _LoopThread, client: AsyncClient) -> None:
    """Close the async client on its loop, then stop the loop (close() and the finalizer)."""
    if loop_thread.loop.is_closed():
        return
    try:
        loop_thread.run(client.close())
    finally:
        loop_thread.stop()


class Client:
    """Blocking client for a raftcache cluster; the same methods as ``AsyncClient``.

    Use it as ``with Client("http://127.0.0.1:8001,...") as c: c.set("k", b"v")``. Safe to share
    between threads.
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
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Create a client and its loop thread; see ``AsyncClient`` for the arguments."""
        self._async = AsyncClient(
            endpoints,
            timeout=timeout,
            client_token=client_token,
            client_id=client_id,
            first_seq=first_seq,
            consistency=consistency,
            attempt_timeout=attempt_timeout,
            retry=retry,
            rng=rng,
            max_connections=max_connections,
            ssl_context=ssl_context,
        )
        self._loop = _LoopThread(f"raftcache-client-{self._async.client_id[:8]}")
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._async)

    @property
    def endpoints(self) -> list[str]:
        return self._async.endpoints

    @property
    def client_id(self) -> str:
        return self._async.client_id

    @property
    def leader(self) -> str | None:
        return self._async.leader

    @property
    def shards(self) -> dict[str, Any] | None:
        """The cluster map this client routes by on a sharded cluster (``AsyncClient.shards``)."""
        return self._async.shards

    @property
    def routing(self) -> RoutingStats:
        """How calls about one key were routed on a sharded cluster (``AsyncClient.routing``)."""
        return self._async.routing

    @property
    def async_client(self) -> AsyncClient:
        """The underlying client; only usable from coroutines run on this client's loop."""
        return self._async

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close connections and stop the loop thread. Idempotent."""
        self._finalizer()

    def lock(
        self, key: str, ttl: float, *, owner: str | None = None, retry_interval_s: float = 0.1
    ) -> Lock:
        """A lock with fencing tokens; see ``AsyncClient.lock`` (``raftcache.client.lock``)."""
        inner = self._async.lock(key, ttl, owner=owner, retry_interval_s=retry_interval_s)
        return Lock(inner, self._loop.run)

    def watch(
        self,
        prefix: str = "",
        *,
        from_version: int | str | None = None,
        idle_timeout: float = 30.0,
        give_up_after: float = 60.0,
    ) -> Watch:
        """``AsyncClient.watch`` as a blocking iterator of ``WatchEvent``; ``close()`` it."""
        inner = self._async.watch(
            prefix,
            from_version=from_version,
            idle_timeout=idle_timeout,
            give_up_after=give_up_after,
        )
        return Watch(inner, self._loop.run)

    def get(self, key: str, *, consistency: str | None = None, touch: bool = True) -> bytes | None:
        """The value of ``key``, or None when missing or expired; ``touch=False`` leaves its
        recency alone."""
        return self._loop.run(self._async.get(key, consistency=consistency, touch=touch))

    def get_with_version(
        self, key: str, *, consistency: str | None = None, touch: bool = True
    ) -> tuple[bytes, int] | None:
        """``(value, version)`` of ``key``, or None when missing."""
        return self._loop.run(
            self._async.get_with_version(key, consistency=consistency, touch=touch)
        )

    def mget(
        self, keys: Sequence[str], *, consistency: str | None = None, touch: bool = True
    ) -> list[bytes | None]:
        """Values of several keys under one read barrier (the client's consistency unless
        ``consistency`` says otherwise); ``touch`` as for ``get``."""
        return self._loop.run(self._async.mget(keys, consistency=consistency, touch=touch))

    def list_keys(
        self,
        prefix: str = "",
        *,
        limit: int | None = None,
        after: str | None = None,
        consistency: str | None = None,
    ) -> KeyPage:
        """One page of keys in key order."""
        return self._loop.run(
            self._async.list_keys(prefix, limit=limit, after=after, consistency=consistency)
        )

    def iter_keys(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[str]:
        """Every key starting with ``prefix``, page by page."""
        after: str | None = None
        while True:
            page = self.list_keys(prefix, limit=page_size, after=after)
            yield from page.keys
            if page.next is None or not page.keys:
                return
            after = page.next

    def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """``/v1/status`` of ``endpoint`` or of the first node to answer."""
        return self._loop.run(self._async.status(endpoint))

    def stats(self, endpoint: str | None = None) -> dict[str, Any]:
        """``/v1/stats`` of ``endpoint`` or of the first node to answer."""
        return self._loop.run(self._async.stats(endpoint))

    def poll(
        self, path: str = "/v1/status", *, timeout_s: float | None = None
    ) -> list[tuple[str, dict[str, Any] | RaftcacheError]]:
        """GET ``path`` from every endpoint once."""
        return self._loop.run(self._async.poll(path, timeout_s=timeout_s))

    def set(
        self,
        key: str,
        value: Value,
        ttl: float | None = None,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        """Store ``value``; returns the new version. See ``AsyncClient.set``."""
        return self._loop.run(
            self._async.set(key, value, ttl, if_version=if_version, if_absent=if_absent)
        )

    def cas(self, key: str, value: Value, version: int, *, ttl: float | None = None) -> int | None:
        """Compare-and-set; the new version, or None when ``version`` did not match."""
        return self._loop.run(self._async.cas(key, value, version, ttl=ttl))

    def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Delete ``key``; True when it existed."""
        return self._loop.run(self._async.delete(key, if_version=if_version))

    def incr(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the counter at ``key``; returns the new value."""
        return self._loop.run(self._async.incr(key, by))

    def expire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        at: float | None = None,
        condition: str | None = None,
        if_version: int | None = None,
    ) -> bool:
        """Change ``key``'s expiry alone; see ``AsyncClient.expire``."""
        return self._loop.run(
            self._async.expire(key, ttl, at=at, condition=condition, if_version=if_version)
        )

    def persist(self, key: str) -> bool:
        """Remove ``key``'s expiry; True if it had one."""
        return self._loop.run(self._async.persist(key))

    def flush(self, prefix: str = "") -> int:
        """Delete every key starting with ``prefix`` atomically; see ``AsyncClient.flush``."""
        return self._loop.run(self._async.flush(prefix))

    def batch(self, ops: Sequence[BatchOpSpec]) -> list[Any]:
        """Apply get/set/delete/incr/ttl ops atomically; see ``AsyncClient.batch``."""
        return self._loop.run(self._async.batch(ops))

    def add_member(self, node_id: str, url: str) -> dict[str, Any]:
        """Add a voting member."""
        return self._loop.run(self._async.add_member(node_id, url))

    def remove_member(self, node_id: str) -> dict[str, Any]:
        """Remove a member."""
        return self._loop.run(self._async.remove_member(node_id))

    def transfer_leadership(
        self, to: str | None = None, *, group: str | None = None
    ) -> dict[str, Any]:
        """Ask the leader (of ``group``, on a sharded cluster) to hand over leadership."""
        return self._loop.run(self._async.transfer_leadership(to, group=group))

    def snapshot(self) -> dict[str, Any]:
        """Ask a node to take a snapshot now."""
        return self._loop.run(self._async.snapshot())
