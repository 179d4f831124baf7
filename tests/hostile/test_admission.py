"""Admission control over fakes: past the in-flight, pending-write and byte bounds a request is
refused at once with 503 + Retry-After (``overloaded``), the operational reads still answer, and
every slot and byte comes back when requests finish — whether they succeed or fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.cache.entries import Item
from raftcache.server.admission import Admission, AdmissionLimits
from raftcache.server.app import create_app
from raftcache.server.context import CONTEXT, ServerSettings
from raftcache.server.validation import Limits
from tests.server.fakes import FakeNode, FakeService

Client = TestClient[web.Request, web.Application]


class GatedService(FakeService):
    """Reads and/or writes wait at a gate until the test opens it."""

    def __init__(self, node: FakeNode, *, gate_reads: bool, gate_writes: bool) -> None:
        super().__init__(node)
        self.gate = asyncio.Event()
        self.waiting = 0
        self._reads, self._writes = gate_reads, gate_writes

    async def _wait(self, gated: bool) -> None:
        if gated:
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1

    async def get(
        self, key: str, consistency: str = "linearizable", *, touch: bool = True
    ) -> Item | None:
        await self._wait(self._reads)
        return await super().get(key, consistency, touch=touch)

    async def set(self, key: str, value: bytes, *args: Any, **kwargs: Any) -> int:
        await self._wait(self._writes)
        return await super().set(key, value, *args, **kwargs)

    async def mget(
        self, keys: Sequence[str], consistency: str = "linearizable", *, touch: bool = True
    ) -> list[Any]:
        return await super().mget(keys, consistency, touch=touch)


async def start(service: GatedService, node: FakeNode, admission: AdmissionLimits) -> Client:
    settings = ServerSettings(limits=Limits(max_value_bytes=4096), admission=admission)
    client: Client = TestClient(TestServer(create_app(node, service, settings)))
    await client.start_server()
    return client


def admission_of(client: Client) -> Admission:
    assert client.app is not None
    return client.app[CONTEXT].admission


async def until(predicate: Any) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.005)


async def assert_overloaded(resp: Any, reason: str) -> None:
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    body = orjson.loads(await resp.read())
    assert body["overloaded"] is True
    assert reason in body["error"]


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
async def reads_gated(node: FakeNode) -> AsyncIterator[tuple[Client, GatedService]]:
    service = GatedService(node, gate_reads=True, gate_writes=False)
    client = await start(service, node, AdmissionLimits(max_inflight_requests=3))
    yield client, service
    service.gate.set()
    await client.close()


async def test_in_flight_cap_refuses_then_recovers(
    reads_gated: tuple[Client, GatedService],
) -> None:
    client, service = reads_gated
    blocked = [asyncio.create_task(client.get(f"/v1/keys/k{i}")) for i in range(3)]
    await until(lambda: service.waiting == 3)
    await assert_overloaded(await client.get("/v1/keys/other"), "requests in flight")
    await assert_overloaded(await client.put("/v1/keys/w", data=b"v"), "requests in flight")
    # The operator can still look at an overloaded node.
    for path in ("/v1/health", "/v1/status", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200, path
    metrics = await (await client.get("/metrics")).text()
    assert 'raftcache_admission_rejected_total{reason="requests"} 2.0' in metrics
    assert "raftcache_admission_inflight_requests 3.0" in metrics
    service.gate.set()
    assert [(await t).status for t in blocked] == [404, 404, 404]
    assert admission_of(client).inflight == 0
    assert (await client.put("/v1/keys/w", data=b"v")).status == 200


async def test_pending_writes_cap_leaves_reads_alone(node: FakeNode) -> None:
    service = GatedService(node, gate_reads=False, gate_writes=True)
    client = await start(service, node, AdmissionLimits(max_pending_writes=2))
    try:
        writes = [asyncio.create_task(client.put(f"/v1/keys/k{i}", data=b"v")) for i in range(2)]
        await until(lambda: service.waiting == 2)
        await assert_overloaded(await client.put("/v1/keys/k9", data=b"v"), "writes pending")
        await assert_overloaded(await client.post("/v1/keys/c/incr"), "writes pending")
        # A read is no proposal: admitted. mget is a read despite being a POST.
        assert (await client.get("/v1/keys/k0")).status == 404
        assert (await client.post("/v1/mget", data=b'{"keys": ["k0"]}')).status == 200
        service.gate.set()
        assert [(await t).status for t in writes] == [200, 200]
        assert admission_of(client).pending_writes == 0
        assert admission_of(client).rejected == {"requests": 0, "writes": 2, "bytes": 0}
    finally:
        service.gate.set()
        await client.close()


async def test_body_bytes_budget(node: FakeNode) -> None:
    service = GatedService(node, gate_reads=False, gate_writes=True)
    client = await start(service, node, AdmissionLimits(max_inflight_bytes=1000))
    try:
        first = asyncio.create_task(client.put("/v1/keys/a", data=b"x" * 600))
        await until(lambda: service.waiting == 1)
        assert admission_of(client).inflight_bytes == 600
        await assert_overloaded(await client.put("/v1/keys/b", data=b"y" * 600), "bytes")
        # A small body still fits in what is left.
        small = asyncio.create_task(client.put("/v1/keys/c", data=b"z" * 300))
        await until(lambda: service.waiting == 2)
        service.gate.set()
        assert (await first).status == 200
        assert (await small).status == 200
        assert admission_of(client).inflight_bytes == 0
    finally:
        service.gate.set()
        await client.close()


async def test_chunked_body_over_the_limit_is_refused_while_streaming(node: FakeNode) -> None:
    service = GatedService(node, gate_reads=False, gate_writes=False)
    client = await start(service, node, AdmissionLimits(max_inflight_bytes=1 << 20))
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(4096):  # up to 64 MiB without Content-Length
            sent += 16384
            yield b"x" * 16384

    try:
        resp = await client.put("/v1/keys/big", data=chunks())
        assert resp.status == 413
        assert "value larger than 4096 bytes" in orjson.loads(await resp.read())["error"]
        assert sent < 64 * 1024 * 1024  # refused long before the whole body was sent
        assert admission_of(client).inflight_bytes == 0
        assert admission_of(client).inflight == 0
        assert "big" not in service.data
    finally:
        await client.close()
