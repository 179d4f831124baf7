"""Closing a listener without leaking a connection it has just accepted.

Rule: a listening asyncio server is closed by ``close_listener``, never by ``Server.close()``
alone, and an aiohttp listener is a ``TCPSite`` or ``SockSite`` of this module (or a subclass),
whose ``stop`` does the same — the runner's cleanup stops its sites that way.

Why: on asyncio's selector loop the listener accepts a connection in one loop iteration and
builds its transport in a task that runs in the next (CPython gh-109564, open in 3.11-3.14). A
``close()`` in between makes that construction fail on the closed server (``Server._attach``
asserts; the error is swallowed): the socket stays open inside a half-built transport that no
protocol was ever told of, so nothing closes it — neither the server's shutdown nor the peer,
whose bytes no one reads — until the garbage collector finds it (``ResourceWarning: unclosed
transport <_SelectorSocketTransport … read=idle …>``), and the server counts the connection
active for ever (its ``wait_closed`` never returns on Python 3.12 and later). A node's listener
closes while peers keep connecting to it (Raft RPCs, forwarded and meta requests), so this is
hit by a store stopped mid-move.

``close_listener`` takes the listening sockets out of the selector first (no accept after
that), lets one iteration run, in which every connection already accepted gets its transport,
closes the server, and lets one more run, in which each of those transports tells its protocol
``connection_made``: every connection accepted is then known to its protocol's owner (aiohttp's
server, the lean front), which closes it with the others. uvloop builds the transport in the
accept callback itself and needs neither wait.
"""

from __future__ import annotations

import asyncio
from asyncio.selector_events import BaseSelectorEventLoop

from aiohttp import web

__all__ = ["SockSite", "TCPSite", "close_listener"]


async def close_listener(server: asyncio.AbstractServer) -> None:
    """Stop accepting, let the connections already accepted reach their protocol, then close
    ``server`` (see the module docstring). Idempotent."""
    loop = asyncio.get_running_loop()
    if (
        isinstance(server, asyncio.Server)
        and isinstance(loop, BaseSelectorEventLoop)
        and server.is_serving()
    ):
        for sock in server.sockets:
            loop.remove_reader(sock.fileno())  # also cancels an accept already queued
        await asyncio.sleep(0)  # each accepted connection's transport is built (and attached)
        server.close()
        await asyncio.sleep(0)  # each told its protocol: its owner closes it from now on
    server.close()


class TCPSite(web.TCPSite):
    """aiohttp's ``TCPSite``, stopped by ``close_listener``."""

    async def stop(self) -> None:
        if self._server is not None:
            await close_listener(self._server)
        await super().stop()


class SockSite(web.SockSite):
    """aiohttp's ``SockSite``, stopped by ``close_listener``."""

    async def stop(self) -> None:
        if self._server is not None:
            await close_listener(self._server)
        await super().stop()
