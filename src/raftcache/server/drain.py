"""Draining at shutdown: requests already on a connection are served to the end.

Rule: a node that stops first closes its listener, then *drains* — it keeps reading and serving
the connections it already has until no request is in progress (bounded by the shutdown
timeout), and only then lets aiohttp close them. Every answer given while draining carries
``Connection: close`` so keep-alive clients move to another node after it.

Why not leave it to ``AppRunner.cleanup``: aiohttp marks every connection closing as it starts
its own shutdown and from then on ignores bytes that arrive on it, so a request whose body was
still on the way (a large value, a slow client) would wait for data that is thrown away and be
cut off when the timeout ends — a dropped request, which a graceful stop must not have.

Requests that never end on their own (watch streams) register an ``on_drain`` callback that ends
them when draining starts: the client reconnects elsewhere from its last version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from aiohttp import web

from raftcache.server.forwarding import Handler


class Drain:
    """Counts the requests in progress; ``wait_idle`` returns when none is left."""

    def __init__(self) -> None:
        self.active = 0
        self.draining = False
        #: Called when draining starts: requests that would never end on their own (watch
        #: streams) end themselves, so the stop does not wait for its timeout.
        self.on_drain: list[Callable[[], None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Start draining and wait until no request is in progress; False on timeout."""
        self.draining = True
        for callback in self.on_drain:
            callback()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


DRAIN: Final = web.AppKey("raftcache.server.drain", Drain)


@web.middleware
async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: count the request in progress; close the connection after it when draining."""
    # The app's own mapping first (see ``context.context_of``: config_dict costs a ChainMap).
    drain = request.app.get(DRAIN) or request.config_dict[DRAIN]
    drain.enter()
    try:
        response = await handler(request)
    finally:
        drain.leave()
    if drain.draining:
        response.force_close()
    return response
