"""The real server over a real 3-node cluster in one process: HttpNetwork mounted on each
node's app (one port for Raft and the client API), RaftNode, CacheService, memory storage."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from .cluster import Cluster, fast_raft, start_cluster, touched_since


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    started = await start_cluster(tmp_path)
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def cluster_2s_proposals(tmp_path: Path) -> AsyncIterator[Cluster]:
    """``cluster``, but a proposal gives up after 2 s instead of 10 s (``propose_timeout``)."""
    started = await start_cluster(tmp_path, raft_config=replace(fast_raft(), propose_timeout=2.0))
    try:
        yield started
    finally:
        await started.stop()


async def call(
    cluster: Cluster, method: str, url: str | URL, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    async with cluster.session.request(method, url, **kwargs) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def test_writes_and_reads_through_any_node(cluster: Cluster) -> None:
    leader = await cluster.leader()
    one, two = await cluster.followers()
    status, _, body = await call(cluster, "PUT", one.url + "/v1/keys/a%2Fb", data=b"hello")
    assert status == 200, body
    version = orjson.loads(body)["version"]
    assert leader.node.commit_index >= version
    # Linearizable read on the other follower: forwarded to the leader, value and ETag.
    status, headers, body = await call(
        cluster, "GET", URL(two.url + "/v1/keys/a%2Fb", encoded=True)
    )
    assert (status, body) == (200, b"hello"), (status, headers, body)
    assert headers["etag"] == f'"{version}"'
    status, _, body = await call(cluster, "GET", two.url + "/v1/keys/a%2Fb?consistency=lease")
    assert (status, body) == (200, b"hello")
    # A stale read is served by the follower itself, once it has applied the write.
    async with asyncio.timeout(5):
        while two.node.last_applied < version:
            await asyncio.sleep(0.01)
    status, _, body = await call(cluster, "GET", two.url + "/v1/keys/a%2Fb?consistency=stale")
    assert (status, body) == (200, b"hello")
    status, _, body = await call(cluster, "GET", one.url + "/v1/keys/missing")
    assert status == 404
    assert orjson.loads(body)["error"]


async def test_preconditions_counters_and_sizes(cluster: Cluster) -> None:
    url = (await cluster.followers())[0].url
    _, _, body = await call(cluster, "PUT", url + "/v1/keys/k", data=b"v1")
    version = orjson.loads(body)["version"]
    status, _, body = await call(
        cluster, "PUT", url + "/v1/keys/k", data=b"v2", headers={"If-Match": f'"{version + 5}"'}
    )
    assert status == 412
    assert orjson.loads(body)["version"] == version
    status, _, body = await call(
        cluster, "PUT", url + "/v1/keys/k", data=b"v2", headers={"If-Match": f'"{version}"'}
    )
    assert status == 200
    status, _, body = await call(
        cluster, "PUT", url + "/v1/keys/k", data=b"v3", headers={"If-None-Match": "*"}
    )
    assert status == 412
    status, _, body = await call(cluster, "DELETE", url + "/v1/keys/k", headers={"If-Match": '"1"'})
    assert status == 412
    status, _, body = await call(cluster, "POST", url + "/v1/keys/k/incr")
    assert status == 409  # "v2" is not a counter
    status, _, body = await call(cluster, "POST", url + "/v1/keys/n/incr", json={"by": 2**63 - 1})
    assert status == 200
    assert orjson.loads(body)["value"] == 2**63 - 1
    status, _, body = await call(cluster, "POST", url + "/v1/keys/n/incr")
    assert status == 409  # overflow
    status, _, body = await call(cluster, "GET", url + "/v1/keys/n")
    assert body == str(2**63 - 1).encode()
    status, _, _ = await call(
        cluster, "PUT", url + "/v1/keys/big", data=io.BytesIO(b"x" * (1024 * 1024 + 1))
    )
    assert status == 413
    status, _, body = await call(cluster, "DELETE", url + "/v1/keys/k")
    assert orjson.loads(body) == {"deleted": True}


async def test_batch_mget_listing_and_ttl(cluster: Cluster) -> None:
    url = (await cluster.followers())[0].url
    ops = [
        {"op": "set", "key": "user:1", "value": base64.b64encode(b"ann").decode()},
        # Long enough for the reads below on a busy machine (0.3 s was not), short enough to wait.
        {"op": "set", "key": "user:2", "value": "Ym9i", "ttl": 1.5},
        {"op": "set", "key": "user:3", "value": ""},
        {"op": "get", "key": "user:1"},
        {"op": "delete", "key": "nope"},
    ]
    status, _, body = await call(cluster, "POST", url + "/v1/batch", json={"ops": ops})
    assert status == 200, body
    results = orjson.loads(body)["results"]
    assert [list(r) for r in results] == [["version"]] * 3 + [["value"], ["deleted"]]
    assert results[0]["version"] == results[1]["version"]  # one log entry
    assert results[3] == {"value": base64.b64encode(b"ann").decode()}
    assert results[4] == {"deleted": False}
    status, _, body = await call(
        cluster, "POST", url + "/v1/mget", json={"keys": ["user:2", "user:3", "zzz"]}
    )
    assert orjson.loads(body) == {"values": ["Ym9i", "", None]}
    status, _, body = await call(cluster, "GET", url + "/v1/keys?prefix=user:&limit=2")
    assert orjson.loads(body) == {"keys": ["user:1", "user:2"], "next": "user:2"}
    await asyncio.sleep(1.7)  # user:2's ttl has passed: hidden from reads at once
    status, _, _ = await call(cluster, "GET", url + "/v1/keys/user:2")
    assert status == 404
    status, _, body = await call(cluster, "GET", url + "/v1/keys?prefix=user:")
    assert orjson.loads(body) == {"keys": ["user:1", "user:3"], "next": None}


async def test_session_retry_is_applied_once(cluster: Cluster) -> None:
    url = (await cluster.followers())[0].url
    headers = {"X-Raftcache-Client-Id": "client-a", "X-Raftcache-Seq": "1"}
    first = await call(cluster, "POST", url + "/v1/keys/c/incr", headers=headers)
    retry = await call(cluster, "POST", url + "/v1/keys/c/incr", headers=headers)
    assert first[0] == retry[0] == 200
    assert (
        orjson.loads(first[2])
        == orjson.loads(retry[2])
        == {
            "value": 1,
            "version": orjson.loads(first[2])["version"],
        }
    )
    headers["X-Raftcache-Seq"] = "2"
    third = await call(cluster, "POST", url + "/v1/keys/c/incr", headers=headers)
    assert orjson.loads(third[2])["value"] == 2


async def test_operational_endpoints(cluster: Cluster) -> None:
    leader = await cluster.leader()
    follower = (await cluster.followers())[0]
    await call(cluster, "PUT", follower.url + "/v1/keys/k", data=b"v")
    status, _, body = await call(cluster, "GET", follower.url + "/v1/status")
    info = orjson.loads(body)
    assert info["id"] == follower.node.node_id
    assert info["role"] == "follower"
    assert info["leader"] == leader.node.node_id
    assert info["members"] == ["n1", "n2", "n3"]
    assert {"term", "commit_index", "last_applied"} <= set(info)
    status, _, body = await call(cluster, "GET", leader.url + "/v1/stats")
    stats = orjson.loads(body)
    assert stats["cache"]["keys"] == 1
    assert {
        "elections",
        "state_transitions",
        "rpcs_sent",
        "rpcs_received",
        "replication_latency_ms",
        "follower_lag",
    } <= set(stats["raft"])
    status, _, body = await call(cluster, "GET", follower.url + "/v1/health")
    assert status == 200
    status, _, body = await call(cluster, "GET", leader.url + "/metrics")
    text = body.decode()
    assert 'raftcache_raft_role{role="leader"} 1.0' in text
    assert "raftcache_cache_keys 1.0" in text
    _, _, body = await call(cluster, "GET", follower.url + "/metrics")
    assert 'route="/raft/append-entries"' in body.decode()  # Raft traffic on the same port
    status, _, body = await call(cluster, "POST", follower.url + "/v1/snapshot")
    assert status == 200
    assert orjson.loads(body)["snapshot_index"] >= 1


async def test_leader_transfer_from_a_follower(cluster: Cluster) -> None:
    leader = await cluster.leader()
    target = (await cluster.followers())[1]
    via = (await cluster.followers())[0]
    status, _, body = await call(
        cluster, "POST", via.url + "/v1/leader/transfer", json={"to": target.node.node_id}
    )
    assert status == 200, body
    assert (await cluster.leader()).node.node_id == target.node.node_id
    assert leader.node.role.value != "leader"
    status, _, body = await call(
        cluster, "POST", target.url + "/v1/leader/transfer", json={"to": target.node.node_id}
    )
    assert (status, orjson.loads(body)) == (200, {"leader": target.node.node_id})


async def test_no_quorum_gives_503_and_forwarded_requests_stop(
    cluster_2s_proposals: Cluster,
) -> None:
    # A PUT proposed on the survivor while it still leads (a handover may have made it leader)
    # waits out the proposal timeout before its 504: 2 s, not 10 s, of this test's time.
    cluster = cluster_2s_proposals
    survivor = (await cluster.followers())[0]
    for server in cluster.servers:
        if server is not survivor:
            await server.stop()
    # The survivor cannot reach anyone: no leader within the bounded wait → 503 + Retry-After.
    # Generous: stopping a leader hands leadership over first (maybe to the survivor, which
    # then steps down by check-quorum) — seconds on a loaded 2-core machine.
    async with asyncio.timeout(60):
        while True:
            status, headers, body = await call(
                cluster, "PUT", survivor.url + "/v1/keys/k", data=b"v"
            )
            if status == 503:
                break
            await asyncio.sleep(0.1)
    assert headers["retry-after"] == "1"
    assert orjson.loads(body)["error"]
    status, _, _ = await call(
        cluster,
        "PUT",
        survivor.url + "/v1/keys/k",
        data=b"v",
        headers={"X-Raftcache-Forwarded": "1"},
    )
    assert status == 503
    status, _, _ = await call(cluster, "GET", survivor.url + "/v1/health")
    assert status in (200, 503)  # it may still remember the old leader for a moment
    status, _, body = await call(cluster, "GET", survivor.url + "/v1/keys/k?consistency=stale")
    assert status == 404


async def test_client_and_cluster_tokens(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, client_token="c-tok", cluster_token="r-tok")
    try:
        url = (await cluster.followers())[0].url
        status, _, _ = await call(cluster, "PUT", url + "/v1/keys/k", data=b"v")
        assert status == 401
        auth = {"Authorization": "Bearer c-tok"}
        status, _, body = await call(cluster, "PUT", url + "/v1/keys/k", data=b"v", headers=auth)
        assert status == 200, body  # forwarded with the client's token, replicated with r-tok
        status, _, _ = await call(cluster, "GET", url + "/v1/health")
        assert status == 200
        status, _, _ = await call(
            cluster, "POST", url + "/raft/append-entries", data=b"{}", headers=auth
        )
        assert status == 401  # the Raft endpoints want the cluster token
    finally:
        await cluster.stop()


async def test_stop_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, shutdown_timeout_s=5.0, leader_wait_s=1.0)
    try:
        survivor = (await cluster.followers())[0]
        for server in cluster.servers:
            if server is not survivor:
                await server.stop()
        async with asyncio.timeout(10):
            while survivor.node.leader_id is not None:
                await asyncio.sleep(0.02)
        # This write waits (up to leader_wait_s) for a leader that never comes...
        request = asyncio.create_task(call(cluster, "PUT", survivor.url + "/v1/keys/k", data=b"v"))
        await asyncio.sleep(0.3)
        # ...while the node is asked to stop: it must still get its (JSON 503) answer.
        await survivor.stop()
        status, headers, body = await request
        assert status == 503
        assert headers["retry-after"] == "1"
        assert orjson.loads(body)["error"]
        with pytest.raises(aiohttp.ClientConnectionError):
            await call(cluster, "GET", survivor.url + "/v1/health")
    finally:
        await cluster.stop()


@pytest.mark.parametrize("front", ["lean", "aiohttp"])
async def test_reads_with_touch_false_leave_recency_alone(tmp_path: Path, front: str) -> None:
    cluster = await start_cluster(tmp_path, max_keys=2, http_front=front)
    try:
        leader = await cluster.leader()
        follower = (await cluster.followers())[0]
        assert leader.http_front == follower.http_front == front
        for key in ("a", "b"):
            assert (await call(cluster, "PUT", f"{leader.url}/v1/keys/{key}", data=b"v"))[0] == 200
        start = leader.node.last_applied
        # On the leader, and forwarded to it by a follower: read and counted, never touched.
        for url in (leader.url, follower.url):
            status, _, body = await call(cluster, "GET", f"{url}/v1/keys/a?touch=false")
            assert (status, body) == (200, b"v")
            mget = f"{url}/v1/mget?touch=false"
            status, _, body = await call(cluster, "POST", mget, json={"keys": ["a"]})
            assert (status, orjson.loads(body)) == (
                200,
                {"values": [base64.b64encode(b"v").decode()]},
            )
        assert leader.service.housekeeping.pending_touches == 0
        status, _, body = await call(cluster, "GET", f"{leader.url}/v1/keys/a?touch=yes")
        assert status == 400
        assert orjson.loads(body)["error"] == "touch must be true or false, got 'yes'"
        await asyncio.sleep(1.5)  # more than a touch interval (1 s): nothing was proposed
        assert touched_since(leader, start) == []
        # "a", read but never touched, is still the oldest: the next write evicts it.
        assert (await call(cluster, "PUT", f"{leader.url}/v1/keys/c", data=b"v"))[0] == 200
        _, _, body = await call(cluster, "GET", f"{leader.url}/v1/keys")
        assert orjson.loads(body)["keys"] == ["b", "c"]
        # A plain read does refresh: "b" becomes newer than "c", so "c" goes next.
        start = leader.node.last_applied
        assert (await call(cluster, "GET", f"{follower.url}/v1/keys/b"))[0] == 200
        async with asyncio.timeout(10):
            while touched_since(leader, start) != ["b"]:
                await asyncio.sleep(0.05)
        assert (await call(cluster, "PUT", f"{leader.url}/v1/keys/d", data=b"v"))[0] == 200
        _, _, body = await call(cluster, "GET", f"{leader.url}/v1/keys")
        assert orjson.loads(body)["keys"] == ["b", "d"]
    finally:
        await cluster.stop()
