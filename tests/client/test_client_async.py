"""AsyncClient against the fake API: every method, the wire forms, and the typed errors."""

from __future__ import annotations

import random

import pytest

from raftcache import AsyncClient, RaftcacheError
from raftcache.client import (
    AuthError,
    BadRequestError,
    Indeterminate,
    NotACounterError,
    PreconditionFailedError,
    ServerError,
    Unavailable,
    ValueTooLargeError,
)
from tests.client.client_fakes import FakeCluster, FakeTime, Fault


def make_client(cluster: FakeCluster, fake_time: FakeTime, **kwargs: object) -> AsyncClient:
    return AsyncClient(
        cluster.endpoints(),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        rng=random.Random(7),
        **kwargs,
    )


async def test_roundtrip_of_every_data_method(cluster: FakeCluster, fake_time: FakeTime) -> None:
    async with make_client(cluster, fake_time) as client:
        v1 = await client.set("a", b"one")
        assert await client.get("a") == b"one"
        assert await client.get_with_version("a") == (b"one", v1)
        assert await client.get("missing") is None
        assert await client.get_with_version("missing") is None
        v2 = await client.cas("a", "two", v1)
        assert v2 is not None
        assert v2 > v1
        assert await client.cas("a", b"three", v1) is None
        assert await client.get("a") == b"two"
        assert await client.incr("n") == 1
        assert await client.incr("n", by=41) == 42
        assert await client.mget(["a", "n", "zz"]) == [b"two", b"42", None]
        results = await client.batch(
            [("set", "b", b"x"), {"op": "get", "key": "a"}, ("delete", "zz")]
        )
        assert isinstance(results[0], int)
        assert results[1:] == [b"two", False]
        assert await client.delete("a") is True
        assert await client.delete("a") is False
        page = await client.list_keys(limit=1)
        assert page.keys == ["b"]
        assert page.next == "b"
        assert [k async for k in client.iter_keys(page_size=1)] == ["b", "n"]


async def test_keys_are_percent_encoded_as_one_segment(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster, fake_time) as client:
        await client.set("a/b c?é", b"v")
        assert await client.get("a/b c?é") == b"v"
        await client.incr("x/y")
    paths = [r.raw_path for r in cluster.key_requests()]
    assert "/v1/keys/a%2Fb%20c%3F%C3%A9" in paths
    assert "/v1/keys/x%2Fy/incr" in paths
    assert set(cluster.store) == {"a/b c?é", "x/y"}


async def test_query_parameters_and_headers(cluster: FakeCluster, fake_time: FakeTime) -> None:
    async with make_client(cluster, fake_time, client_token="s3cret") as client:
        await client.set("k", b"v", ttl=1.5)
        await client.get("k", consistency="stale")
        version = await client.set("k", b"w", if_absent=False)
        await client.set("k", b"z", if_version=version)
    requests = cluster.key_requests()
    assert requests[0].raw_path == "/v1/keys/k?ttl=1.5"
    assert requests[1].raw_path == "/v1/keys/k?consistency=stale"
    assert requests[3].headers["If-Match"] == f'"{version}"'
    assert all(r.headers["Authorization"] == "Bearer s3cret" for r in cluster.requests)


async def test_reads_that_leave_recency_alone_send_touch_false(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster, fake_time) as client:
        await client.set("k", b"v")
        assert await client.get("k", touch=False) == b"v"
        assert await client.get_with_version("k", consistency="stale", touch=False) is not None
        assert await client.mget(["k", "zz"], touch=False) == [b"v", None]
        await client.get("k", touch=True)
        await client.mget(["k"])
        with pytest.raises(BadRequestError, match="touch"):
            await client.get("k", touch="no")
    paths = [r.raw_path for r in cluster.key_requests()][1:]
    assert paths == [
        "/v1/keys/k?touch=false",
        "/v1/keys/k?consistency=stale&touch=false",
        "/v1/mget?touch=false",
        "/v1/keys/k",  # the default is the server's: nothing sent
        "/v1/mget",
    ]


async def test_mget_reads_at_the_clients_consistency(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster, fake_time, consistency="stale") as client:
        await client.set("k", b"v")
        assert await client.mget(["k"]) == [b"v"]
        assert await client.mget(["k"], consistency="lease") == [b"v"]
    paths = [r.raw_path for r in cluster.key_requests()][1:]
    assert paths == ["/v1/mget?consistency=stale", "/v1/mget?consistency=lease"]


async def test_writes_carry_session_headers_and_reads_do_not(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster, fake_time, client_id="client-a") as client:
        await client.set("k", b"v")
        await client.get("k")
        await client.delete("k")
    put, get, delete = cluster.key_requests()
    assert (put.headers["X-Raftcache-Client-Id"], put.headers["X-Raftcache-Seq"]) == (
        "client-a",
        "1",
    )
    assert "X-Raftcache-Seq" not in get.headers
    assert delete.headers["X-Raftcache-Seq"] == "2"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, BadRequestError),
        (401, AuthError),
        (403, AuthError),
        (409, NotACounterError),
        (413, ValueTooLargeError),
        (500, ServerError),
    ],
)
async def test_error_statuses_raise_typed_errors_without_retry(
    cluster: FakeCluster, fake_time: FakeTime, status: int, error: type[RaftcacheError]
) -> None:
    cluster.faults.append(Fault(status=status, body={"error": "refused by test"}))
    async with make_client(cluster, fake_time) as client:
        with pytest.raises(error, match="refused by test") as info:
            await client.incr("k")
    assert isinstance(info.value, RaftcacheError)
    assert info.value.status == status
    assert len(cluster.key_requests()) == 1
    assert cluster.applied == 0


async def test_precondition_failure_reports_current_version(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster, fake_time) as client:
        version = await client.set("k", b"v")
        with pytest.raises(PreconditionFailedError) as info:
            await client.set("k", b"w", if_absent=True)
        assert info.value.current_version == version
        await client.set("counter", b"abc")
        with pytest.raises(NotACounterError):
            await client.incr("counter")


async def test_invalid_arguments_fail_before_any_request(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    async with make_client(cluster, fake_time) as client:
        with pytest.raises(BadRequestError):
            await client.get("")
        with pytest.raises(BadRequestError):
            await client.set("k", b"v", ttl=0)
        with pytest.raises(BadRequestError):
            await client.set("k", b"v", ttl=float("inf"))
        with pytest.raises(BadRequestError):
            await client.get("k", consistency="eventual")
        with pytest.raises(BadRequestError):
            await client.batch([("put", "k", b"v")])
        with pytest.raises(TypeError):
            await client.mget("abc")
    assert cluster.key_requests() == []


async def test_read_504_is_unavailable_not_indeterminate(
    cluster: FakeCluster, fake_time: FakeTime
) -> None:
    cluster.faults.extend(Fault(status=504) for _ in range(100))
    async with make_client(cluster, fake_time, timeout=2.0) as client:
        with pytest.raises(Unavailable) as info:
            await client.get("k")
    assert not isinstance(info.value, Indeterminate)
    assert len(cluster.key_requests()) > 3  # it did retry until the deadline
    assert fake_time.now <= 1000.0 + 2.0
