"""Server lifecycle against a real cluster: stop closes clients, the client limit, and a
leadership change under a connected client (its commands follow the new leader)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import trustme
from redis.exceptions import ResponseError, TryAgainError

from raftcache.resp import start_resp_server
from tests.server.cluster import fast_raft

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
    # A SET proposed on the survivor while it still leads (a handover may have made it leader)
    # waits out the proposal timeout before its INDETERMINATE: 2 s, not 10 s, of this test.
    cluster = await start_resp_cluster(
        tmp_path,
        raft_config=replace(fast_raft(), propose_timeout=2.0),
        leader_wait_s=0.5,
        forward_timeout_s=2.0,
    )
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


async def test_a_client_that_reads_late_gets_every_reply(tmp_path: Path) -> None:
    """Megabytes pipelined before reading anything: the server holds little for the client
    at any time (its limits are tiny here) and every reply arrives, in order. (Which of its
    brakes engages — pausing reads, waiting for the transport to drain — depends on the
    kernel's socket buffers, so the test checks the outcome, not the mechanism.)"""
    cluster = await start_resp_cluster(tmp_path)
    leader = await cluster.cluster.leader()
    small = await start_resp_server(
        leader.service,
        leader.node,
        "127.0.0.1",
        0,
        clock=time.time,
        max_bulk_bytes=2048,
        max_buffer_bytes=16 * 1024,
    )
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep the kernel's share
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # small on our side
        sock.connect(("127.0.0.1", small.port))
        sock.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=sock)
        payload = b"x" * 1000
        request = b"*2\r\n$4\r\nECHO\r\n$1000\r\n" + payload + b"\r\n"
        # ~24 MB each way: more than the server's socket buffers and its own limits hold.
        count = 24_000

        async def send_all() -> None:
            for _ in range(count):
                writer.write(request)
                await writer.drain()  # blocks while the server has stopped reading us

        sender = asyncio.create_task(send_all())
        held = 0
        for _ in range(20):  # what the server holds for us while we do not read
            await asyncio.sleep(0.05)
            for connection in list(small.connections):
                held = max(held, connection.held_bytes())
        assert not sender.done()  # the server stopped reading: we are pushed back
        assert held < 1024 * 1024, held
        expected = b"$1000\r\n" + payload + b"\r\n"
        async with asyncio.timeout(60):
            for _ in range(count):
                assert await reader.readexactly(len(expected)) == expected
            await sender
        writer.close()
    finally:
        await small.stop()
        await cluster.stop()
