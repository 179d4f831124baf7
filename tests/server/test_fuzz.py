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
from tests.hostile.strategies import client_paths

from .conftest import SMALL_LIMITS
from .fakes import FakeNode, FakeService

PATHS = client_paths("/v1/members/n2", "/v1/leader/transfer")
QUERY = st.dictionaries(
    st.sampled_from(["ttl", "consistency", "limit", "prefix", "after", "x"]),
    st.sampled_from(["1", "0", "-1", "nan", "1e999", "stale", "lease", "weird", "", "5000"]),
    max_size=3,
)
HEADERS = st.dictionaries(
    st.sampled_from(["If-Match", "If-None-Match", "X-Raftcache-Client-Id", "X-Raftcache-Seq"]),
    st.sampled_from(['"1"', "*", "1", '"-1"', "abc", "", '"99999999999999999999"']),
    max_size=3,
)
JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["ops", "keys", "op", "key", "value", "ttl", "by", "id", "url", "to"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
BODIES = st.one_of(st.binary(max_size=64), JSONISH.map(lambda v: orjson.dumps(v)))


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
