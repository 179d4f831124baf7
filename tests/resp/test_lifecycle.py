"""Server lifecycle against a real cluster: stop closes clients, the client limit, and a
leadership change under a connected client (its commands follow the new leader)."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import trustme
from redis.exceptions import ResponseError, TryAgainError

from raftcache.resp import start_resp_server

from .cluster import start_resp_cluster


async def test_stop_closes_connections_and_the_listener(tmp_path: Path) -> None:
    cluster = await start_resp_cluster(tmp_path)
    try:
        leader = await cluster.cluster.leader()
        extra = await start_resp_server(
            leader.service, leader.node, "127.0.0.1", 0, clock=time.time, max_clients=1
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", extra.port)
        writer.write(b"PING\r\n")
        assert await reader.readline() == b"+PONG\r\n"
        # A second client is over the limit: told so, and closed.
        reader2, writer2 = await asyncio.open_connection("127.0.0.1", extra.port)
        assert await reader2.read() == b"-ERR max number of clients reached\r\n"
        writer2.close()
        await extra.stop()
        await extra.stop()  # idempotent
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", extra.port)
    finally:
        await cluster.stop()


async def test_a_client_follows_a_leadership_change(tmp_path: Path) -> None:
    cluster = await start_resp_cluster(tmp_path)
    try:
        old = await cluster.cluster.leader()
        client = aioredis.Redis(port=cluster.port_of(old), socket_timeout=20)
        try:
            assert await client.set("lc:k", "1") is True
            target = next(s for s in cluster.cluster.servers if s is not old)
            await old.node.transfer_leadership(target.node.node_id)
            assert (await cluster.cluster.leader()) is target
            # Same connection, now to a follower: writes are forwarded, reads stay correct.
            assert await client.incr("lc:k") == 2
            assert await client.set("lc:k2", "x", ex=60) is True
            assert await client.mget("lc:k", "lc:k2") == [b"2", b"x"]
            assert 59 <= await client.ttl("lc:k2") <= 60
            pipe = client.pipeline(transaction=True)
            pipe.incr("lc:k")
            pipe.get("lc:k")
            assert await pipe.execute() == [3, b"3"]
        finally:
            await client.aclose()
    finally:
        await cluster.stop()


async def test_commands_fail_cleanly_without_a_quorum(tmp_path: Path) -> None:
    cluster = await start_resp_cluster(tmp_path, leader_wait_s=0.5, forward_timeout_s=2.0)
    survivor = (await cluster.cluster.followers())[0]
    client = aioredis.Redis(port=cluster.port_of(survivor), socket_timeout=30)
    try:
        assert await client.set("q:k", "v") is True
        for server in cluster.cluster.servers:
            if server is not survivor:
                await server.stop()
        # Whatever the survivor believes, nothing can commit: an error reply, not a hang.
        with pytest.raises(ResponseError) as failure:
            await client.set("q:k", "w")
        error = failure.value
        assert isinstance(error, TryAgainError) or "INDETERMINATE" in str(error), repr(error)
        assert await client.ping() is True  # the connection is still good
    finally:
        await client.aclose()
        await cluster.stop()


async def test_tls_listener(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cluster = await start_resp_cluster(tmp_path, ssl_context=server_context)
    port = await cluster.follower_port()
    client = aioredis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca_file))
    try:
        assert await client.set("tls:k", "v") is True
        assert await client.get("tls:k") == b"v"
        reader, writer = await asyncio.open_connection("127.0.0.1", cluster.resp[0].port)
        writer.write(b"PING\r\n")  # plain text to a TLS port: no PONG
        async with asyncio.timeout(10):
            assert not (await reader.read()).startswith(b"+PONG")
        writer.close()
    finally:
        await client.aclose()
        await cluster.stop()
