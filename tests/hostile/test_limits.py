"""Receiving-side limits on a real cluster, at and just past each bound (small limits: values
1 KiB, 10 ops per batch or mget): the bound itself is accepted, one more is refused with the
documented status, and every refusal is a JSON error. Plus the bound on an mget's answer."""

from __future__ import annotations

import base64
from urllib.parse import quote

import orjson
from aiohttp.test_utils import TestClient, TestServer

from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from raftcache.server.validation import MAX_KEY_BYTES, Limits
from tests.server.fakes import FakeNode, FakeService

from .threaded import ThreadedCluster, check_answer


def status(cluster: ThreadedCluster, method: str, path: str, body: bytes = b"") -> int:
    answer = cluster.request(method, cluster.urls()[0] + path, body=body)
    check_answer(method, answer)
    return answer.status


def test_key_size(cluster: ThreadedCluster) -> None:
    at_limit = "é" * (MAX_KEY_BYTES // 2)  # 1024 bytes of UTF-8 in 512 characters
    over = at_limit + "x"
    assert status(cluster, "PUT", "/v1/keys/" + quote(at_limit), b"v") == 200
    assert status(cluster, "PUT", "/v1/keys/" + quote(over), b"v") == 400
    assert status(cluster, "GET", "/v1/keys/" + quote(over)) == 400
    ops = [{"op": "get", "key": over}]
    assert status(cluster, "POST", "/v1/batch", orjson.dumps({"ops": ops})) == 400
    assert status(cluster, "POST", "/v1/mget", orjson.dumps({"keys": [over]})) == 400
    assert status(cluster, "GET", "/v1/keys?prefix=" + quote(over)) == 400


def test_value_size(cluster: ThreadedCluster) -> None:
    assert status(cluster, "PUT", "/v1/keys/v", b"x" * 1024) == 200
    assert status(cluster, "PUT", "/v1/keys/v", b"x" * 1025) == 413
    too_big = base64.b64encode(b"x" * 1025).decode()
    ops = [{"op": "set", "key": "v", "value": too_big}]
    assert status(cluster, "POST", "/v1/batch", orjson.dumps({"ops": ops})) == 413


def test_batch_and_mget_length(cluster: ThreadedCluster) -> None:
    def ops(n: int) -> bytes:
        return orjson.dumps({"ops": [{"op": "get", "key": f"k{i}"} for i in range(n)]})

    def keys(n: int) -> bytes:
        return orjson.dumps({"keys": [f"k{i}" for i in range(n)]})

    assert status(cluster, "POST", "/v1/batch", ops(10)) == 200
    assert status(cluster, "POST", "/v1/batch", ops(11)) == 400
    assert status(cluster, "POST", "/v1/mget", keys(10)) == 200
    assert status(cluster, "POST", "/v1/mget", keys(11)) == 400
    # A body far over the batch limit is refused by its size before it is parsed.
    assert status(cluster, "POST", "/v1/batch", b" " * (20 << 20)) == 413


def test_small_bodies_and_listing_limit(cluster: ThreadedCluster) -> None:
    assert status(cluster, "POST", "/v1/keys/c/incr", b" " * (64 * 1024 + 1)) == 413
    assert status(cluster, "POST", "/v1/members", b" " * (64 * 1024 + 1)) == 413
    assert status(cluster, "GET", "/v1/keys?limit=1000") == 200
    assert status(cluster, "GET", "/v1/keys?limit=1001") == 400
    assert status(cluster, "GET", "/v1/keys?limit=0") == 400


async def test_mget_answer_is_bounded() -> None:
    node = FakeNode()
    service = FakeService(node)
    limits = Limits(max_value_bytes=1024, max_batch_ops=10, max_batch_bytes=2048)
    app = create_app(node, service, ServerSettings(limits=limits))
    async with TestClient(TestServer(app)) as client:
        for key in ("a", "b", "c"):
            assert (await client.put(f"/v1/keys/{key}", data=b"x" * 1024)).status == 200
        ok = await client.post("/v1/mget", json={"keys": ["a", "b"]})  # 2048 bytes: at the bound
        assert ok.status == 200
        refused = await client.post("/v1/mget", json={"keys": ["a", "b", "c"]})
        assert refused.status == 413
        assert "ask for fewer keys" in (await refused.json())["error"]
