"""Locks with fencing tokens: ``AsyncLock`` (``AsyncClient.lock``) and ``Lock`` (``Client.lock``).

Rule: a lock is one key whose every change is a compare-and-set on its version, and a version is
the log index of the write that made it — so the lock needs nothing but the cache's own
conditional writes (no script), and it hands out a **fencing token** for free:

- ``acquire`` is a create-only write (``If-None-Match: *``) with the lock's TTL; the version it
  returns is the token. Two acquisitions are two writes, the later one at a higher log index,
  so tokens grow strictly from one holder to the next — across leader changes too (the log is
  one sequence).
- ``extend`` rewrites the key with a new TTL only if its version is still the one this holder
  wrote (``If-Match``); ``release`` deletes it on the same condition. Either answers False —
  and changes nothing — once the lock expired or passed to someone else. ``extend`` gives the
  key a new version (kept for the next condition) but not a new token: the token names the
  acquisition.
- A resource the lock protects keeps the highest token it has accepted and refuses a request
  carrying a lower one (docs/clients.md, "Locks and fencing tokens"): a holder paused past its
  TTL then cannot overwrite the work of the next holder, which Redis's lock cannot prevent.

The value stored is the holder's identity (``owner``, for operators); the conditions use the
version alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol

from raftcache.client.errors import PreconditionFailedError


class LockClient(Protocol):
    """The conditional writes a lock is made of (``AsyncClient`` has them)."""

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        *,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int: ...

    async def delete(self, key: str, *, if_version: int | None = None) -> bool: ...

    async def get_with_version(
        self, key: str, *, consistency: str | None = None, touch: bool = True
    ) -> tuple[bytes, int] | None: ...


class LockNotAcquiredError(Exception):
    """A blocking ``acquire`` gave up after its ``timeout``."""


class AsyncLock:
    """A lock on ``key`` held for ``ttl`` seconds at a time (see the module docstring).

    Args:
        client: the client whose cluster holds the lock.
        key: the lock's key.
        ttl: seconds the lock is held without an ``extend``.
        owner: what the key holds while the lock is held (a random id by default).
        retry_interval_s: how often a blocking ``acquire`` tries again.
    """

    def __init__(
        self,
        client: LockClient,
        key: str,
        ttl: float,
        *,
        owner: str | None = None,
        retry_interval_s: float = 0.1,
    ) -> None:
        if not ttl > 0:
            raise ValueError("a lock needs a positive ttl")
        self._client = client
        self.key = key
        self.ttl = ttl
        self.owner = owner or uuid.uuid4().hex
        self.retry_interval_s = retry_interval_s
        #: The fencing token of the current acquisition (None: not held by this object).
        self.token: int | None = None
        self._version: int | None = None

    async def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> int | None:
        """Take the lock; its fencing token. Non-blocking: None when someone holds it.
        Blocking: tries again every ``retry_interval_s`` until ``timeout`` (None: forever),
        then raises ``LockNotAcquiredError``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                version = await self._client.set(
                    self.key, self.owner.encode(), self.ttl, if_absent=True
                )
            except PreconditionFailedError:
                if not blocking:
                    return None
                if deadline is not None and loop.time() >= deadline:
                    raise LockNotAcquiredError(f"lock {self.key!r} still held") from None
                await asyncio.sleep(self.retry_interval_s)
                continue
            self.token = self._version = version
            return version

    async def extend(self, ttl: float | None = None) -> bool:
        """Hold the lock ``ttl`` (default: the lock's) seconds from now, if this holder still
        holds it; False (nothing changed) once it expired or passed to another holder."""
        if self._version is None:
            return False
        try:
            self._version = await self._client.set(
                self.key, self.owner.encode(), ttl or self.ttl, if_version=self._version
            )
        except PreconditionFailedError:
            self._forget()
            return False
        return True

    async def release(self) -> bool:
        """Let the lock go, if this holder still holds it; False when it had already expired
        or passed to another holder (then nothing is deleted)."""
        if self._version is None:
            return False
        version = self._version
        self._forget()
        try:
            return await self._client.delete(self.key, if_version=version)
        except PreconditionFailedError:
            return False

    async def held(self) -> bool:
        """Whether the key still holds this acquisition (a linearizable read)."""
        if self._version is None:
            return False
        found = await self._client.get_with_version(self.key)
        return found is not None and found[1] == self._version

    def _forget(self) -> None:
        self.token = self._version = None

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.release()


class Lock:
    """``AsyncLock`` for the blocking ``Client``: the same methods, run on its loop thread."""

    def __init__(self, lock: AsyncLock, run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
        self._lock = lock
        self._run = run

    @property
    def key(self) -> str:
        return self._lock.key

    @property
    def token(self) -> int | None:
        """The fencing token of the current acquisition (None: not held)."""
        return self._lock.token

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> int | None:
        """See ``AsyncLock.acquire``."""
        token: int | None = self._run(self._lock.acquire(blocking=blocking, timeout=timeout))
        return token

    def extend(self, ttl: float | None = None) -> bool:
        """See ``AsyncLock.extend``."""
        return bool(self._run(self._lock.extend(ttl)))

    def release(self) -> bool:
        """See ``AsyncLock.release``."""
        return bool(self._run(self._lock.release()))

    def held(self) -> bool:
        """See ``AsyncLock.held``."""
        return bool(self._run(self._lock.held()))

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
