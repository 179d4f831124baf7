"""A real in-process cluster (HttpNetwork on loopback) run by an event loop in its own thread.

Synchronous tools — Hypothesis' ``@given`` without an event loop per example, schemathesis'
``case.call`` — then drive it over real sockets from the test's thread, and one cluster serves a
whole module (starting one per example would dominate the run time).
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from tests.server.cluster import Cluster, start_cluster

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class ThreadedCluster:
    """``start()`` a cluster of ``size`` nodes in a background loop; ``stop()`` it."""

    def __init__(self, data_dir: Path, size: int = 3, **overrides: Any) -> None:
        self._data_dir = data_dir
        self._size = size
        self._overrides = overrides
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        assert self._cluster is not None, "not started"
        return self._cluster

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the cluster's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ThreadedCluster:
        self._thread.start()
        self._cluster = self.run(start_cluster(self._data_dir, self._size, **self._overrides))
        self.run(self.cluster.leader())
        return self

    def stop(self) -> None:
        if self._cluster is not None:
            self.run(self._cluster.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()

    def urls(self) -> list[str]:
        return [server.url for server in self.cluster.servers]

    def request(
        self,
        method: str,
        url: str | URL,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        """One HTTP request through the cluster's own client session."""

        # aiohttp warns about raw bodies over 1 MiB (warnings are errors here): stream those.
        data: bytes | io.BytesIO | None = body
        if body is not None and len(body) > 1024 * 1024:
            data = io.BytesIO(body)

        async def go() -> Answer:
            async with self.cluster.session.request(
                method,
                url,
                data=data,
                headers=dict(headers or {}),
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                return Answer(resp.status, resp.headers, await resp.read())

        return self.run(go(), timeout + 5)

    def assert_serves(self) -> None:
        """One leader; a write through every node is read back through every node."""
        leader = self.run(self.cluster.leader(timeout=20))
        assert leader.node.role.value == "leader"
        for i, url in enumerate(self.urls()):
            key = f"alive-{i}"
            put = self.request("PUT", f"{url}/v1/keys/{key}", body=url.encode())
            assert put.status == 200, (put.status, put.body)
            for other in self.urls():
                got = self.request("GET", f"{other}/v1/keys/{key}")
                assert (got.status, got.body) == (200, url.encode())


def check_answer(method: str, answer: Answer) -> None:
    """A 4xx or 2xx; a 503 only with Retry-After; every error a JSON object with ``error``."""
    assert answer.status < 500 or answer.status == 503, (answer.status, answer.body[:300])
    if answer.status == 503:
        assert answer.headers["Retry-After"].isdigit()
    if answer.status >= 400 and method != "HEAD":
        assert answer.headers["Content-Type"].startswith("application/json"), answer.headers
        assert isinstance(orjson.loads(answer.body)["error"], str)
