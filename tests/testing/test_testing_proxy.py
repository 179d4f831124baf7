"""FaultProxy against a tiny echo server: every mode, switching at run time, clean stop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from raftcache.testing import FaultProxy, ProxyMode
from tests.testing.echo import EchoServer, close, leftover_tasks, reachable, roundtrip


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    p = FaultProxy(0, "127.0.0.1", echo.port, rng=random.Random(1))
    await p.start()
    yield p
    await p.stop()
    assert p.connections == 0


async def test_pass_forwards_both_ways(proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 1000  # several chunks
    assert await roundtrip(proxy.port, payload) == payload
    assert await roundtrip(proxy.port, b"again") == b"again"
    assert proxy.stats.accepted == 2
    assert proxy.stats.bytes_forwarded == 2 * (len(payload) + 5)
    assert proxy.stats.bytes_dropped == 0


async def test_half_close_is_forwarded(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"last words")
        writer.write_eof()
        async with asyncio.timeout(10):
            # The echo answers and then closes its side once it sees our end-of-stream.
            assert await reader.read() == b"last words"
    finally:
        await close(writer)


async def test_delay_adds_latency_and_keeps_order(proxy: FaultProxy) -> None:
    proxy.set_mode(ProxyMode.DELAY, delay_s=0.05, jitter_s=0.04)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        started = loop.time()
        expected = b""
        for i in range(40):
            chunk = f"<{i}>".encode()
            expected += chunk
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.001)  # separate chunks, each with its own jitter
        async with asyncio.timeout(20):
            echoed = await reader.readexactly(len(expected))
        # Jitter never reorders a stream.
        assert echoed == expected
        # The first byte crossed the proxy twice, each time no sooner than delay - jitter.
        assert loop.time() - started >= 2 * (0.05 - 0.04)
    finally:
        await close(writer)


async def test_delay_jitter_is_seeded(echo: EchoServer) -> None:
    def releases(seed: int) -> list[float]:
        p = FaultProxy(0, "127.0.0.1", echo.port, rng=random.Random(seed))
        p.set_mode(ProxyMode.DELAY, delay_s=1.0, jitter_s=0.5)
        now = asyncio.get_running_loop().time()
        return [p._release_time(0.0) - now for _ in range(5)]

    first, again, other = releases(7), releases(7), releases(8)
    assert [round(x, 2) for x in first] == [round(x, 2) for x in again]
    assert first != other
    assert all(0.5 <= x <= 1.6 for x in first)


async def test_drop_black_holes_new_connections_and_heal_closes_them(proxy: FaultProxy) -> None:
    proxy.set_mode(ProxyMode.DROP)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # accepted
    try:
        writer.write(b"hello?")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(1)
        assert proxy.connections == 1  # held open, not refused
        assert proxy.stats.bytes_dropped == 6
        proxy.set_mode(ProxyMode.PASS)
        # It never reached the target, so healing closes it rather than resume a broken stream.
        async with asyncio.timeout(10):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
    finally:
        await close(writer)
    assert await roundtrip(proxy.port, b"fresh") == b"fresh"


async def test_drop_silences_existing_connection(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"one")
        async with asyncio.timeout(10):
            assert await reader.readexactly(3) == b"one"
        proxy.set_mode(ProxyMode.DROP)
        writer.write(b"two")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await reader.read(1)
        assert proxy.stats.bytes_dropped == 3
        proxy.set_mode(ProxyMode.PASS)
        async with asyncio.timeout(10):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
    finally:
        await close(writer)


async def test_idle_connection_survives_a_black_hole(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"a")
        async with asyncio.timeout(10):
            assert await reader.readexactly(1) == b"a"
        proxy.set_mode(ProxyMode.DROP)
        proxy.set_mode(ProxyMode.PASS)
        # Nothing was lost, so the stream is intact and stays usable.
        writer.write(b"b")
        async with asyncio.timeout(10):
            assert await reader.readexactly(1) == b"b"
    finally:
        await close(writer)


async def test_reject_closes_existing_and_new_connections(proxy: FaultProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"x")
        async with asyncio.timeout(10):
            assert await reader.readexactly(1) == b"x"
        proxy.set_mode(ProxyMode.REJECT)
        async with asyncio.timeout(10):
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
    finally:
        await close(writer)
    assert not await reachable(proxy.port, wait_s=10)  # closed at once: no need to wait
    assert proxy.stats.rejected >= 1
    proxy.set_mode(ProxyMode.PASS)
    assert await roundtrip(proxy.port, b"back") == b"back"


async def test_unreachable_target_closes_the_client(echo: EchoServer) -> None:
    # A port nobody listens on: bind one, note it, close it.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with FaultProxy(0, "127.0.0.1", dead_port) as p:
        assert not await reachable(p.port, wait_s=10)
        assert p.connections == 0


async def test_stop_is_clean_with_connections_in_every_state(echo: EchoServer) -> None:
    p = FaultProxy(0, "127.0.0.1", echo.port)
    await p.start()
    port = p.port
    writers = []
    for mode in (ProxyMode.PASS, ProxyMode.DELAY, ProxyMode.DROP):
        p.set_mode(mode, delay_s=5.0)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"pending bytes")
        await writer.drain()
        writers.append(writer)
    await asyncio.sleep(0.05)  # let the proxy accept and start pumping
    await p.stop()
    assert p.connections == 0
    assert not leftover_tasks() - echo_tasks()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    for writer in writers:
        await close(writer)
    # Restartable on the same port after a clean stop.
    p2 = FaultProxy(port, "127.0.0.1", echo.port)
    async with p2:
        assert await roundtrip(port, b"reborn") == b"reborn"
    assert not leftover_tasks() - echo_tasks()


def echo_tasks() -> set[asyncio.Task[object]]:
    """The echo server's own handler tasks end on their own schedule; they are not the proxy's."""
    return {t for t in leftover_tasks() if "EchoServer" in repr(t.get_coro())}


async def test_start_twice_is_an_error(proxy: FaultProxy) -> None:
    with pytest.raises(RuntimeError, match="already started"):
        await proxy.start()


async def test_http_keep_alive_client_through_partition_and_heal() -> None:
    """What the cluster's HTTP transport will see: timeouts in a black hole, then recovery."""
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server_port = runner.addresses[0][1]
    try:
        async with (
            FaultProxy(0, "127.0.0.1", server_port) as p,
            aiohttp.ClientSession() as session,
        ):
            url = f"http://127.0.0.1:{p.port}/"
            async with session.get(url) as resp:
                assert await resp.text() == "hi"
            p.set_mode(ProxyMode.DROP)
            with pytest.raises(TimeoutError):
                await session.get(url, timeout=aiohttp.ClientTimeout(total=0.3))
            p.set_mode(ProxyMode.PASS)
            # The pooled connection lost a request in the black hole, so the proxy closed it;
            # the client's next request opens a fresh one (a retry may meet the closed one).
            for attempt in range(3):
                try:
                    async with session.get(url) as resp:
                        assert await resp.text() == "hi"
                    break
                except aiohttp.ClientConnectionError:
                    assert attempt < 2
    finally:
        await runner.cleanup()
