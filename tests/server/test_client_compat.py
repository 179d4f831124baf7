"""The project's own Python client against the real server (a cross-layer contract check)."""

from __future__ import annotations

from pathlib import Path

from raftcache import AsyncClient

from .cluster import start_cluster


async def test_async_client_against_real_nodes(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, client_token="tok")
    try:
        endpoints = [server.url for server in cluster.servers]
        async with AsyncClient(endpoints, client_token="tok", timeout=10.0) as client:
            version = await client.set("user/1", b"ann")
            assert await client.get("user/1") == b"ann"
            assert await client.cas("user/1", b"bob", version + 100) is None
            assert await client.cas("user/1", b"bob", version) is not None
            assert await client.incr("hits", 3) == 3
            assert await client.incr("hits") == 4
            assert await client.mget(["user/1", "hits", "none"]) == [b"bob", b"4", None]
            results = await client.batch([("set", "b", b"x"), ("get", "hits"), ("delete", "b")])
            assert results[1:] == [b"4", True]
            assert isinstance(results[0], int)
            assert await client.delete("user/1") is True
            assert await client.get("user/1") is None
            status = await client.status()
            assert status["members"] == ["n1", "n2", "n3"]
    finally:
        await cluster.stop()
