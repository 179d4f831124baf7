"""Client tokens: the read-write token may do anything, the read-only one only reads (403 for
a write), anything else is 401; health and the OpenAPI document stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from tests.server.fakes import FakeNode, FakeService

Client = TestClient[web.Request, web.Application]
RW, RO = "rw-token", "ro-token"
WRITES = [
    ("PUT", "/v1/keys/k", b"v"),
    ("DELETE", "/v1/keys/k", b""),
    ("POST", "/v1/keys/c/incr", b""),
    ("POST", "/v1/batch", b'{"ops": []}'),
    ("POST", "/v1/members", b'{"id": "n4", "url": "http://127.0.0.1:9"}'),
    ("DELETE", "/v1/members/n4", b""),
    ("POST", "/v1/leader/transfer", b""),
    ("POST", "/v1/snapshot", b""),
]
READS = [
    ("GET", "/v1/keys/k", b""),
    ("GET", "/v1/keys", b""),
    ("POST", "/v1/mget", b'{"keys": ["k"]}'),
    ("GET", "/v1/status", b""),
    ("GET", "/v1/stats", b""),
    ("GET", "/metrics", b""),
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make(rw: str | None, ro: str | None) -> Client:
    node = FakeNode()
    settings = ServerSettings(client_token=rw, client_token_ro=ro)
    client: Client = TestClient(TestServer(create_app(node, FakeService(node), settings)))
    await client.start_server()
    return client


@pytest.fixture
async def both() -> AsyncIterator[Client]:
    client = await make(RW, RO)
    yield client
    await client.close()


async def status_of(client: Client, method: str, path: str, body: bytes, token: str | None) -> int:
    headers = bearer(token) if token else {}
    resp = await client.request(method, path, data=body, headers=headers)
    if resp.status >= 400:
        assert isinstance(orjson.loads(await resp.read())["error"], str)
    return resp.status


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_writes_need_the_read_write_token(
    both: Client, method: str, path: str, body: bytes
) -> None:
    assert await status_of(both, method, path, body, None) == 401
    assert await status_of(both, method, path, body, "nope") == 401
    assert await status_of(both, method, path, body, RO) == 403
    assert await status_of(both, method, path, body, RW) < 400


@pytest.mark.parametrize(("method", "path", "body"), READS)
async def test_reads_take_either_token(both: Client, method: str, path: str, body: bytes) -> None:
    assert await status_of(both, method, path, body, None) == 401
    assert await status_of(both, method, path, body, RW + "x") == 401
    assert await status_of(both, method, path, body, RO) in (200, 404)
    assert await status_of(both, method, path, body, RW) in (200, 404)


async def test_open_paths_and_the_401_challenge(both: Client) -> None:
    assert (await both.get("/v1/health")).status == 200
    assert (await both.get("/openapi.json")).status == 200
    resp = await both.get("/v1/keys/k", headers={"Authorization": f"Basic {RW}"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_read_only_token_alone_makes_the_api_read_only() -> None:
    client = await make(None, RO)
    try:
        assert await status_of(client, "GET", "/v1/keys/k", b"", RO) == 404
        assert await status_of(client, "PUT", "/v1/keys/k", b"v", RO) == 403
        assert await status_of(client, "PUT", "/v1/keys/k", b"v", None) == 401
    finally:
        await client.close()
