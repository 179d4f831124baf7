"""Operational routes, token auth, metrics and the cache-error mapping, over fakes."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.cache.errors import (
    CounterOverflow,
    InvalidCommand,
    NotACounter,
    PreconditionFailed,
    StaleSequence,
    ValueTooLarge,
)
from raftcache.raft.errors import MembershipChangeError
from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings

from .fakes import FakeNode, FakeService

Client = TestClient[web.Request, web.Application]


async def test_status_reports_spec_fields(client: Client, node: FakeNode) -> None:
    body = await (await client.get("/v1/status")).json()
    assert body["id"] == "n1"
    assert body["role"] == "leader"
    assert body["term"] == node.current_term
    assert body["leader"] == "n1"
    assert body["commit_index"] == node.commit_index
    assert body["last_applied"] == node.last_applied
    assert body["members"] == ["n1", "n2", "n3"]
    assert body["extra_field"] == 1
    node.leader_id = None
    body = await (await client.get("/v1/status")).json()
    assert (body["role"], body["leader"]) == ("follower", None)


async def test_stats_has_cache_and_raft(client: Client) -> None:
    body = await (await client.get("/v1/stats")).json()
    assert body["cache"]["hits"] == 4
    assert body["raft"]["rpcs_sent"] == {"AppendEntries": 5}


async def test_health_follows_leader_knowledge(client: Client, node: FakeNode) -> None:
    resp = await client.get("/v1/health")
    assert resp.status == 200
    assert (await resp.json())["leader"] == "n1"
    node.leader_id = None
    resp = await client.get("/v1/health")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "error" in await resp.json()


async def test_membership_transfer_and_snapshot(client: Client, node: FakeNode) -> None:
    resp = await client.post("/v1/members", json={"id": "n4", "url": "http://127.0.0.1:9004/"})
    assert await resp.json() == {"added": "n4", "members": ["n1", "n2", "n3", "n4"]}
    resp = await client.delete("/v1/members/n4")
    assert (await resp.json())["removed"] == "n4"
    resp = await client.post("/v1/leader/transfer", json={"to": "n2"})
    assert resp.status == 200
    resp = await client.post("/v1/leader/transfer")
    assert resp.status == 200
    resp = await client.post("/v1/snapshot")
    assert (await resp.json())["snapshot_index"] == node.last_applied
    assert node.calls == [
        ("add_member", ("n4", "http://127.0.0.1:9004")),
        ("remove_member", "n4"),
        ("transfer_leadership", "n2"),
        ("transfer_leadership", None),
        ("take_snapshot", None),
    ]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/members", b""),
        ("/v1/members", b'{"id": "n4"}'),
        ("/v1/members", b'{"id": "n4", "url": "ftp://x"}'),
        ("/v1/members", b'{"id": "", "url": "http://x:1"}'),
        ("/v1/members", b'{"id": "a/b", "url": "http://x:1"}'),
        ("/v1/members", b'{"id": "n4", "url": "http://x:1", "voter": false}'),
        ("/v1/leader/transfer", b'{"to": 5}'),
        ("/v1/leader/transfer", b"not json"),
    ],
)
async def test_admin_bad_bodies_are_400(
    client: Client, node: FakeNode, path: str, body: bytes
) -> None:
    resp = await client.post(path, data=body)
    assert resp.status == 400
    assert "error" in orjson.loads(await resp.read())
    assert node.calls == []


async def test_membership_refusal_is_409(client: Client, node: FakeNode) -> None:
    async def refuse(node_id: str) -> None:
        raise MembershipChangeError("another change in progress")

    node.remove_member = refuse  # type: ignore[method-assign]
    resp = await client.delete("/v1/members/n3")
    assert resp.status == 409
    assert "another change" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (PreconditionFailed(12), 412),
        (NotACounter("not a counter"), 409),
        (CounterOverflow("overflow"), 409),
        (StaleSequence("old seq"), 409),
        (ValueTooLarge("too big"), 413),
        (InvalidCommand("bad"), 400),
    ],
)
async def test_cache_errors_map_to_statuses(
    client: Client, service: FakeService, error: Exception, status: int
) -> None:
    service.fail_next = error
    resp = await client.post("/v1/keys/k/incr", json={"by": 1})
    assert resp.status == status
    body = await resp.json()
    assert body["error"]
    if status == 412:
        assert body["version"] == 12


async def test_client_token(node: FakeNode, service: FakeService) -> None:
    app = create_app(node, service, ServerSettings(client_token="s3cret"))
    async with TestClient(TestServer(app)) as client:
        for headers in [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret"},
            {"Authorization": "Basic s3cret"},
        ]:
            resp = await client.get("/v1/status", headers=headers)
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert "error" in await resp.json()
        resp = await client.put("/v1/keys/k", data=b"v")
        assert resp.status == 401
        assert service.calls == []
        assert (await client.get("/v1/health")).status == 200
        ok = {"Authorization": "Bearer s3cret"}
        assert (await client.put("/v1/keys/k", data=b"v", headers=ok)).status == 200
        assert (await client.get("/metrics", headers=ok)).status == 200
        assert (await client.get("/nope")).status == 401


async def test_metrics_count_requests_and_export_state(client: Client) -> None:
    await client.put("/v1/keys/a", data=b"1")
    await client.put("/v1/keys/b", data=b"2")
    await client.get("/v1/keys/zzz")
    await client.get("/nope")
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert (
        'raftcache_http_requests_total{code="200",method="PUT",route="/v1/keys/{key}"} 2.0' in text
    )
    assert (
        'raftcache_http_requests_total{code="404",method="GET",route="/v1/keys/{key}"} 1.0' in text
    )
    assert 'raftcache_http_requests_total{code="404",method="GET",route="unmatched"} 1.0' in text
    assert "raftcache_http_request_duration_seconds_bucket" in text
    assert "raftcache_raft_term 3.0" in text
    assert 'raftcache_raft_role{role="leader"} 1.0' in text
    assert "raftcache_cache_hits_total 4.0" in text
    assert 'raftcache_raft_rpcs_sent_total{rpc="AppendEntries"} 5.0' in text
    assert 'raftcache_raft_rpcs_failed_total{rpc="AppendEntries"} 1.0' in text
    assert 'raftcache_raft_replication_latency_seconds{peer="n2"} 0.0015' in text
    assert 'raftcache_raft_follower_lag{peer="n2"} 0.0' in text
    assert "raftcache_raft_voters_reachable 2.0" in text
    assert 'raftcache_raft_fsync_duration_seconds_bucket{le="0.001"} 1.0' in text
    assert "raftcache_raft_fsync_duration_seconds_sum 0.003" in text
    assert "hit_rate" not in text
    assert "_ms" not in text


async def test_two_apps_have_separate_registries(node: FakeNode, service: FakeService) -> None:
    first = create_app(node, service)
    second = create_app(node, service)
    async with TestClient(TestServer(first)) as a, TestClient(TestServer(second)) as b:
        await a.get("/v1/status")
        text = await (await b.get("/metrics")).text()
        assert 'route="/v1/status"' not in text
