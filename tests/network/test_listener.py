"""``close_listener`` and its aiohttp sites over real loopback sockets: a connection the
listener accepted just before it closes — its transport not built yet (CPython gh-109564) —
reaches its protocol and is closed by its owner, instead of being left open in a half-built
transport for the garbage collector (the socket a store stopped mid-move leaked)."""

from __future__ import annotations

import asyncio
import select
import socket
from asyncio.selector_events import BaseSelectorEventLoop

from aiohttp import web

from raftcache.network.listener import TCPSite, close_listener


async def _accepted_not_built(server: asyncio.AbstractServer) -> socket.socket:
    """A client connection ``server`` has accepted whose transport the loop builds in the next
    iteration, after this coroutine resumes: the moment a plain ``close()`` leaks it."""
    assert isinstance(server, asyncio.Server)
    assert isinstance(asyncio.get_running_loop(), BaseSelectorEventLoop)
    listening = server.sockets[0]
    client = socket.create_connection(listening.getsockname()[:2])
    client.setblocking(False)
    # Readable: the connection waits in the backlog, so the loop's next select sees it.
    assert select.select([listening.fileno()], [], [], 10)[0]
    await asyncio.sleep(0)  # in this iteration the accept runs after we resume …
    await asyncio.sleep(0)  # … and queues, after this resumption, the task building its transport
    pending = [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__name__", "") == "_accept_connection2"
    ]
    assert len(pending) == 1, "the accepted connection's transport is not pending"
    return client


async def _closed_by_server(client: socket.socket) -> bool:
    """Whether the server closed ``client``'s connection (EOF or reset); waits for it, bounded
    so that a connection left open fails the test (False) instead of hanging it."""
    try:
        async with asyncio.timeout(10):
            return await asyncio.get_running_loop().sock_recv(client, 1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def test_a_connection_accepted_as_the_listener_closes_reaches_its_protocol() -> None:
    made: list[asyncio.Transport] = []

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            made.append(transport)

    server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0)
    client = await _accepted_not_built(server)
    try:
        await close_listener(server)
        # Told its protocol (whose owner closes it with the others): without the wait, the
        # transport's construction fails on the closed server and no protocol ever hears of it.
        assert len(made) == 1
        assert not server.is_serving()
        await close_listener(server)  # idempotent
        made[0].close()
        assert await _closed_by_server(client)
    finally:
        client.close()


async def test_a_site_stopped_as_a_connection_arrives_closes_it() -> None:
    """The runner's cleanup stops the site with ``close_listener``: the connection it accepted
    last is closed by aiohttp's shutdown like every other, not left open."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    client = await _accepted_not_built(site._server)
    try:
        await runner.cleanup()
        assert await _closed_by_server(client)
    finally:
        client.close()
