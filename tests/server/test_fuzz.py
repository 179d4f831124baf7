"""Property: no input makes the server answer 5xx or a non-JSON error (over the fake service)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from tests.hostile.strategies import HEADERS, QUERY, client_paths, jsonish

from .conftest import SMALL_LIMITS
from .fakes import FakeNode, FakeService

PATHS = client_paths("/v1/members/n2", "/v1/leader/transfer")
# orjson encodes integers in int64 or uint64 only: the range it can send.
BODIES = st.one_of(
    st.binary(max_size=64),
    jsonish(st.integers(-(2**63), 2**64 - 1)).map(lambda v: orjson.dumps(v)),
)


# On aiohttp alone and on the lean front (conftest).
pytestmark = pytest.mark.usefixtures("front")

Client = TestClient[web.Request, web.Application]


async def exercise(
    client: Client,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> None:
    url = URL(path, encoded=True).with_query(query)
    resp = await client.request(method, url, headers=headers, data=body)
    data = await resp.read()
    assert resp.status < 500, (resp.status, data)
    if resp.status >= 400 and method != "HEAD":  # a HEAD answer has no body to check
        assert resp.content_type == "application/json"
        assert isinstance(orjson.loads(data)["error"], str)


async def start_client() -> Client:
    node = FakeNode()
    app = create_app(node, FakeService(node), ServerSettings(limits=SMALL_LIMITS))
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_no_input_gives_a_5xx() -> None:
    # One server for all examples: starting one per example would dominate the run time.
    loop = asyncio.new_event_loop()
    client = loop.run_until_complete(start_client())

    @settings(max_examples=200)
    @given(
        st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]),
        PATHS,
        QUERY,
        HEADERS,
        BODIES,
    )
    def check(
        method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> None:
        loop.run_until_complete(exercise(client, method, path, query, headers, body))

    try:
        check()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
