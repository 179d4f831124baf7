"""``POST /v1/scripts`` on real in-process nodes: each operation, on the leader and through a
follower (forwarded), the tagged replies, and a 400 naming each malformed field."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from raftcache.cache.scripting import sha1_hex

from .cluster import Cluster, start_cluster


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def post(cluster: Cluster, url: str, body: Any) -> tuple[int, Any]:
    async with cluster.session.post(f"{url}/v1/scripts", json=body) as resp:
        return resp.status, await resp.json()


async def test_scripts_route_on_leader_and_follower(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path)
    try:
        leader = await cluster.leader()
        follower = (await cluster.followers())[0]
        script = b"redis.call('SET', KEYS[1], ARGV[1]) return {redis.call('GET', KEYS[1]), 7}"
        for node in (leader, follower):
            status, body = await post(
                cluster,
                node.url,
                {"op": "eval", "script": b64(script), "keys": ["h:k"], "args": [b64(b"\x00v")]},
            )
            assert status == 200, body
            assert body == {"reply": {"array": [{"bulk": b64(b"\x00v")}, {"int": 7}]}}
            status, body = await post(cluster, node.url, {"op": "load", "script": b64(b"return 1")})
            assert (status, body) == (200, {"sha": sha1_hex(b"return 1")})
            status, body = await post(
                cluster, node.url, {"op": "evalsha", "sha": sha1_hex(b"return 1")}
            )
            assert (status, body) == (200, {"reply": {"int": 1}})
            status, body = await post(
                cluster, node.url, {"op": "exists", "shas": [sha1_hex(b"return 1"), "0" * 40]}
            )
            assert (status, body) == (200, {"exists": [True, False]})
            status, body = await post(cluster, node.url, {"op": "evalsha", "sha": "0" * 40})
            assert (status, body) == (
                200,
                {"reply": {"error": "NOSCRIPT No matching script. Please use EVAL."}},
            )
            status, body = await post(cluster, node.url, {"op": "eval", "script": b64(b"x(")})
            assert status == 200
            assert body["reply"]["error"].startswith("ERR Error compiling script")
            # Replies no JSON or RESP can carry answer an error reply, not a 500 nor a node
            # stopped (every replica raised out of apply_entry on a cyclic reply).
            for hostile, shown in (
                (b"return 2^70", "64-bit integer"),
                (b"local t = {} t[1] = t return t", "nests more than"),
            ):
                status, body = await post(cluster, node.url, {"op": "eval", "script": b64(hostile)})
                assert status == 200, body
                assert shown in body["reply"]["error"]
        status, body = await post(cluster, follower.url, {"op": "flush"})
        assert status == 200
        assert body["flushed"] >= 2
        for request, named in [
            ([], "JSON object"),
            ({"op": "load", "script": b64(b"1"), "keys": []}, "unknown field(s) in a load"),
            ({"op": "run"}, "op must be one of"),
            ({"op": "eval", "script": "not base64!"}, "script is not valid base64"),
            ({"op": "eval", "script": b64(b"return 1"), "keys": [""]}, "key must not be empty"),
            ({"op": "eval", "script": b64(b"return 1"), "keys": "k"}, "keys must be a list"),
            ({"op": "eval", "script": b64(b"return 1"), "args": [1]}, "args must be"),
            ({"op": "eval", "script": b64(b"return 1"), "slot": 16384}, "slot must be"),
            ({"op": "evalsha", "sha": 5}, "sha must be a string"),
            ({"op": "load", "script": b64(b"1"), "extra": 1}, "unknown field(s) in a load"),
            ({"op": "exists", "shas": "abc"}, "shas must be"),
        ]:
            status, body = await post(cluster, leader.url, request)
            assert status == 400, (request, body)
            assert named in body["error"], (request, body)
    finally:
        await cluster.stop()
