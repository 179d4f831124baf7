"""HTTP-level tests of every client route over an in-test fake node and service."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from raftcache.cache.entries import HashItem
from raftcache.cache.hashes import decode_fields, encode_fields
from raftcache.raft.errors import (
    IndeterminateError,
    NodeStoppedError,
    ProposalDroppedError,
    StoppedAfterAppendError,
)

from .fakes import Entry, FakeNode, FakeService

Client = TestClient[web.Request, web.Application]


async def error_of(resp: object, status: int) -> dict[str, object]:
    """Assert a JSON error response with ``status`` and return its body."""
    assert resp.status == status, await resp.text()  # type: ignore[attr-defined]
    assert resp.content_type == "application/json"  # type: ignore[attr-defined]
    body = orjson.loads(await resp.read())  # type: ignore[attr-defined]
    assert isinstance(body, dict)
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


async def test_put_then_get_with_etag(client: Client, service: FakeService) -> None:
    resp = await client.put("/v1/keys/greeting", data=b"hello")
    assert resp.status == 200
    version = (await resp.json())["version"]
    assert version == service.data["greeting"].version
    resp = await client.get("/v1/keys/greeting")
    assert resp.status == 200
    assert await resp.read() == b"hello"
    assert resp.headers["ETag"] == f'"{version}"'


async def test_put_passes_ttl_and_preconditions(client: Client, service: FakeService) -> None:
    await client.put("/v1/keys/k?ttl=2.5", data=b"v", headers={"If-Match": '"7"'})
    first = service.calls[-1]
    await client.put("/v1/keys/k", data=b"", headers={"If-None-Match": "*"})
    second = service.calls[-1]
    assert first == ("set", ("k", b"v", 2.5, 7, False, None))
    assert second == ("set", ("k", b"", None, None, True, None))


async def test_encoded_slash_and_unicode_keys(client: Client, service: FakeService) -> None:
    resp = await client.put(URL("/v1/keys/a%2Fb%20c%C3%A9", encoded=True), data=b"x")
    assert resp.status == 200
    assert "a/b cé" in service.data


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("PUT", "/v1/keys/k?ttl=0", {}),
        ("PUT", "/v1/keys/k?ttl=-3", {}),
        ("PUT", "/v1/keys/k?ttl=nan", {}),
        ("PUT", "/v1/keys/k?ttl=inf", {}),
        ("PUT", "/v1/keys/k?ttl=1&ttl=2", {}),
        ("PUT", "/v1/keys/k", {"If-Match": "3"}),
        ("PUT", "/v1/keys/k", {"If-Match": '"-1"'}),
        ("PUT", "/v1/keys/k", {"If-None-Match": '"3"'}),
        ("PUT", "/v1/keys/k", {"If-Match": '"3"', "If-None-Match": "*"}),
        ("PUT", "/v1/keys/k", {"X-Raftcache-Client-Id": "c"}),
        ("PUT", "/v1/keys/k", {"X-Raftcache-Client-Id": "c", "X-Raftcache-Seq": "x"}),
        ("PUT", "/v1/keys/%FF", {}),
        ("PUT", "/v1/keys/a/b", {}),
        ("PUT", "/v1/keys/", {}),
        ("PUT", "/v1/keys/" + "k" * 1025, {}),
        ("GET", "/v1/keys/k?consistency=strong", {}),
        ("GET", "/v1/keys/k?touch=no", {}),
        ("GET", "/v1/keys/k?touch=False", {}),
        ("GET", "/v1/keys/k?touch=", {}),
        ("GET", "/v1/keys/k?touch=true&touch=false", {}),
        ("GET", "/v1/keys?limit=0", {}),
        ("GET", "/v1/keys?limit=abc", {}),
        ("GET", "/v1/keys?limit=100000", {}),
        ("DELETE", "/v1/keys/k", {"If-Match": "*"}),
        ("DELETE", "/v1/keys/k", {"If-None-Match": "*"}),
    ],
)
async def test_bad_input_is_json_400(
    client: Client, service: FakeService, method: str, path: str, headers: dict[str, str]
) -> None:
    resp = await client.request(method, URL(path, encoded=True), data=b"v", headers=headers)
    await error_of(resp, 400)
    assert [c for c in service.calls if c[0] != "get"] == []


async def test_get_missing_is_json_404(client: Client) -> None:
    await error_of(await client.get("/v1/keys/nope"), 404)


async def test_value_over_limit_is_413(client: Client, service: FakeService) -> None:
    await error_of(await client.put("/v1/keys/k", data=b"x" * 1025), 413)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 512

    # Without Content-Length (chunked) the limit is enforced on the bytes read.
    await error_of(await client.put("/v1/keys/k", data=chunks()), 413)
    assert service.calls == []
    resp = await client.put("/v1/keys/k", data=b"x" * 1024)
    assert resp.status == 200


async def test_delete(client: Client, service: FakeService) -> None:
    service.data["k"] = Entry(b"v", 1)
    resp = await client.delete("/v1/keys/k", headers={"If-Match": '"1"'})
    assert await resp.json() == {"deleted": True}
    assert service.calls[-1] == ("delete", ("k", 1, None))
    resp = await client.delete("/v1/keys/k")
    assert await resp.json() == {"deleted": False}


async def test_consistency_levels_reach_the_service(client: Client, service: FakeService) -> None:
    service.data["k"] = Entry(b"v", 1)
    for level in ("linearizable", "lease", "stale"):
        resp = await client.get(f"/v1/keys/k?consistency={level}")
        assert resp.status == 200
        assert service.calls[-1] == ("get", ("k", level, True))
    await client.get("/v1/keys/k")
    assert service.calls[-1] == ("get", ("k", "linearizable", True))


async def test_touch_false_reaches_the_service(client: Client, service: FakeService) -> None:
    service.data["k"] = Entry(b"v", 1)
    for query, touch in [("", True), ("?touch=true", True), ("?touch=false", False)]:
        resp = await client.get(f"/v1/keys/k{query}")
        assert (resp.status, await resp.read()) == (200, b"v")
        assert service.calls.pop() == ("get", ("k", "linearizable", touch))
    resp = await client.head("/v1/keys/k?consistency=stale&touch=false")
    assert resp.status == 200
    assert service.calls.pop() == ("get", ("k", "stale", False))
    assert (await client.head("/v1/keys/k?touch=0")).status == 400
    resp = await client.post("/v1/mget?touch=false&consistency=lease", json={"keys": ["k"]})
    assert await resp.json() == {"values": [b64(b"v")]}
    assert service.calls.pop() == ("mget", (["k"], "lease", False))
    await client.post("/v1/mget", json={"keys": ["k"]})
    assert service.calls.pop() == ("mget", (["k"], "linearizable", True))


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/keys/k?touch=maybe"), ("POST", "/v1/mget?touch=maybe")],
)
async def test_a_bad_touch_is_a_400_naming_the_parameter_and_the_value(
    client: Client, service: FakeService, method: str, path: str
) -> None:
    resp = await client.request(method, path, json={"keys": ["k"]})
    body = await error_of(resp, 400)
    assert body["error"] == "touch must be true or false, got 'maybe'"
    assert service.calls == []


async def test_stale_read_on_a_follower_is_served_locally(
    client: Client, node: FakeNode, service: FakeService
) -> None:
    node.leader_id = None
    service.data["k"] = Entry(b"local", 4)
    resp = await client.get("/v1/keys/k?consistency=stale")
    assert resp.status == 200
    assert await resp.read() == b"local"


async def test_list_keys_pages(client: Client, service: FakeService) -> None:
    for k in ["a1", "a2", "a3", "b1"]:
        service.data[k] = Entry(b"v", 1)
    resp = await client.get("/v1/keys?prefix=a&limit=2")
    assert await resp.json() == {"keys": ["a1", "a2"], "next": "a2"}
    resp = await client.get("/v1/keys?prefix=a&limit=2&after=a2")
    assert await resp.json() == {"keys": ["a3"], "next": None}
    assert service.calls[-1] == ("list_keys", ("a", "a2", 2, "linearizable"))


async def test_incr(client: Client, service: FakeService) -> None:
    resp = await client.post("/v1/keys/c/incr")
    assert await resp.json() == {"value": 1, "version": service.data["c"].version}
    resp = await client.post("/v1/keys/c/incr", json={"by": 41})
    assert (await resp.json())["value"] == 42
    for bad in [b'{"by": true}', b'{"by": "2"}', b'{"by": 2.0}', b"[]", b"garbage"]:
        await error_of(await client.post("/v1/keys/c/incr", data=bad), 400)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_batch_and_mget(client: Client, service: FakeService) -> None:
    service.data["old"] = Entry(b"o", 1)
    ops = [
        {"op": "set", "key": "n", "value": b64(b"\x00\xff"), "ttl": 5},
        {"op": "get", "key": "old"},
        {"op": "get", "key": "missing"},
        {"op": "delete", "key": "old"},
    ]
    resp = await client.post("/v1/batch", json={"ops": ops})
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert results == [
        {"version": service.data["n"].version},
        {"value": b64(b"o")},
        {"value": None},
        {"deleted": True},
    ]
    resp = await client.post("/v1/mget", json={"keys": ["n", "old"]})
    assert await resp.json() == {"values": [b64(b"\x00\xff"), None]}
    resp = await client.post("/v1/batch", json={"ops": []})
    assert await resp.json() == {"results": []}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/batch", b"", 400),
        ("/v1/batch", b"\xff\x00garbage", 400),
        ("/v1/batch", b'{"ops": [{"op": "set", "key": "k", "value": "%%%"}]}', 400),
        ("/v1/batch", orjson.dumps({"ops": [{"op": "get", "key": "k"}] * 11}), 400),
        (
            "/v1/batch",
            orjson.dumps({"ops": [{"op": "set", "key": "k", "value": b64(b"x" * 1025)}]}),
            413,
        ),
        ("/v1/mget", b'{"keys": "k"}', 400),
        ("/v1/mget", b"[1, 2]", 400),
    ],
)
async def test_batch_and_mget_bad_bodies(
    client: Client, service: FakeService, path: str, body: bytes, status: int
) -> None:
    await error_of(await client.post(path, data=body), status)
    assert service.calls == []


async def test_unknown_route_and_wrong_method_are_json(client: Client) -> None:
    await error_of(await client.get("/nope"), 404)
    await error_of(await client.get("/v1/keysx"), 404)
    body = await error_of(await client.patch("/v1/keys/k"), 405)
    assert "method" in str(body["error"])
    resp = await client.get("/v1/keys/k/incr")
    await error_of(resp, 405)
    assert resp.headers["Allow"] == "POST"
    await error_of(await client.post("/v1/status"), 405)
    await error_of(await client.put("/v1/batch"), 405)


@pytest.mark.parametrize(
    ("error", "method", "status"),
    [
        (ProposalDroppedError("busy"), "PUT", 503),
        (NodeStoppedError(), "PUT", 503),
        (StoppedAfterAppendError("node stopped"), "PUT", 504),
        (StoppedAfterAppendError("node stopped"), "GET", 503),
        (IndeterminateError("lost"), "PUT", 504),
        (TimeoutError(), "PUT", 504),
        (TimeoutError(), "GET", 503),
    ],
)
async def test_raft_errors_map_to_503_and_504(
    client: Client, service: FakeService, error: BaseException, method: str, status: int
) -> None:
    service.data["k"] = Entry(b"v", 1)
    service.fail_next = error
    body = await error_of(await client.request(method, "/v1/keys/k", data=b"v"), status)
    if status == 504:
        assert body["indeterminate"] is True


async def test_503_has_retry_after(client: Client, service: FakeService) -> None:
    service.fail_next = ProposalDroppedError()
    resp = await client.put("/v1/keys/k", data=b"v")
    await error_of(resp, 503)
    assert resp.headers["Retry-After"] == "1"


async def test_handler_bug_is_json_500_and_node_keeps_serving(
    client: Client, service: FakeService
) -> None:
    service.fail_next = ZeroDivisionError("bug")
    body = await error_of(await client.put("/v1/keys/k", data=b"v"), 500)
    assert "ZeroDivisionError" in str(body["error"])
    assert (await client.put("/v1/keys/k", data=b"v")).status == 200


async def test_publish_proposes_one_message_and_refuses_bad_bodies(
    client: Client, service: FakeService
) -> None:
    body = {"channel": base64.b64encode(b"\xffch").decode(), "message": "aGk="}
    resp = await client.post("/v1/publish", json=body)
    assert resp.status == 200
    assert await resp.json() == {"index": service.index}
    assert service.calls[-1] == ("publish", (b"\xffch", b"hi"))
    for bad, status, says in [
        ({"channel": "aGk="}, 400, "channel and message"),
        ({"channel": "aGk=", "message": "not base64!"}, 400, "message"),
        ({**body, "ttl": 1}, 400, "ttl"),
        ({**body, "message": base64.b64encode(b"x" * 1025).decode()}, 413, "1024"),
    ]:
        error = await error_of(await client.post("/v1/publish", json=bad), status)
        assert says in str(error["error"])


async def test_a_hash_key_reads_as_its_msgpack_map_on_either_front(
    client: Client, service: FakeService
) -> None:
    fields = {b"name": b"alice", b"\xff": b"\x00"}  # binary-safe
    service.data["h"] = HashItem(encode_fields(fields), 7, None)
    service.data["s"] = Entry(b"v", 8)
    resp = await client.get("/v1/keys/h")
    assert resp.status == 200
    assert resp.headers["X-Raftcache-Type"] == "hash"
    assert resp.headers["Content-Type"] == "application/vnd.msgpack"
    assert resp.headers["ETag"] == '"7"'
    assert decode_fields(await resp.read()) == fields
    resp = await client.get("/v1/keys/s")
    assert "X-Raftcache-Type" not in resp.headers
    resp = await client.post("/v1/mget", json={"keys": ["s", "h", "nope"]})
    body = await resp.json()
    assert body["hashes"] == [1]
    assert decode_fields(base64.b64decode(body["values"][1])) == fields
    resp = await client.post("/v1/mget", json={"keys": ["s"]})
    assert await resp.json() == {"values": [base64.b64encode(b"v").decode()]}  # as before
