"""The project's own Python client against the real server (a cross-layer contract check)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftcache import AsyncClient
from raftcache.client import LockNotAcquiredError

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


async def test_async_client_lock_hands_out_increasing_fencing_tokens(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path)
    try:
        endpoints = [server.url for server in cluster.servers]
        async with AsyncClient(endpoints, timeout=10.0) as client:
            tokens = []
            for _ in range(3):
                async with client.lock("locks/a", ttl=30) as held:
                    assert held.token is not None
                    tokens.append(held.token)
                    assert await client.lock("locks/a", ttl=30).acquire(blocking=False) is None
                    with pytest.raises(LockNotAcquiredError):
                        await client.lock("locks/a", ttl=30, retry_interval_s=0.02).acquire(
                            timeout=0.1
                        )
                    assert await held.extend(60)
                    assert held.token == tokens[-1]  # extending keeps the token
                    assert await held.held()
            assert tokens == sorted(set(tokens))  # strictly increasing
            stale = client.lock("locks/b", ttl=30)
            old = await stale.acquire()
            await client.delete("locks/b")  # its lease ran out (simulated)
            fresh = client.lock("locks/b", ttl=30)
            new = await fresh.acquire()
            assert old is not None
            assert new is not None
            assert new > old
            assert not await stale.extend()  # its version is not the key's: refused
            assert not await stale.release()
            assert await fresh.held()
            assert await fresh.release()
            assert not await fresh.release()  # once
    finally:
        await cluster.stop()
