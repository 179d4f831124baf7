"""Helpers for HTTP tests: started networks, raw posts, and an old-style (identity-only) peer.

Rule: everything started here is stopped by the fixture or context that started it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from raftcache.network import HttpNetwork, codec
from raftcache.network.httpwire import HANDLER_OF, PATHS
from raftcache.protocol.messages import AppendEntriesBatch

from .fakes import RecordingHandlers

Factory = Callable[..., Awaitable[HttpNetwork]]


def url_of(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def connect(*nets: HttpNetwork) -> None:
    for a in nets:
        for b in nets:
            a.set_peer_address(b.node_id, url_of(b.port))


@asynccontextmanager
async def started_nodes() -> AsyncIterator[Factory]:
    """A factory of started HttpNetworks on free ports with RecordingHandlers."""
    nets: list[HttpNetwork] = []

    async def make(node_id: str, *, handlers: Any = "default", **opts: Any) -> HttpNetwork:
        opts.setdefault("node_addresses", {})
        net = HttpNetwork(node_id, port=0, **opts)
        net.register_handlers(RecordingHandlers(node_id) if handlers == "default" else handlers)
        await net.start()
        nets.append(net)
        return net

    try:
        yield make
    finally:
        for net in nets:
            await net.stop()


@dataclass
class RawAnswer:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]


async def raw_post(port: int, path: str, body: bytes, headers: dict[str, str]) -> RawAnswer:
    """POST exactly ``body`` with exactly ``headers`` (no automatic Accept-Encoding)."""
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s,
        s.post(url_of(port) + path, data=body, headers=headers) as resp,
    ):
        return RawAnswer(resp.status, await resp.read(), resp.headers)


@dataclass
class OldPeer:
    """A peer as the first HttpNetwork was: JSON only, no content codings, advertises nothing.

    Its server does not decompress (like a node whose stack knows no codings): a compressed body
    would reach its JSON parser as is and be refused. ``requests`` records every request's
    headers and size; ``advertise`` (a header dict) and ``refuse_encoded`` turn it into a peer
    that said it reads a coding and then no longer does (a node replaced by an older build).
    """

    handlers: RecordingHandlers = field(default_factory=lambda: RecordingHandlers("old"))
    requests: list[tuple[dict[str, str], int]] = field(default_factory=list)
    advertise: dict[str, str] = field(default_factory=dict)
    refuse_encoded: bool = False
    port: int = 0

    async def serve(self, request: web.Request, cls: type[Any]) -> web.Response:
        body = await request.read()
        self.requests.append((dict(request.headers), len(body)))
        if self.refuse_encoded and "Content-Encoding" in request.headers:
            return web.Response(status=415, body=b'{"error": "no"}', content_type="text/plain")
        try:
            req = codec.decode(cls, body)
        except codec.CodecError as exc:
            return web.json_response({"error": str(exc), "code": "bad_request"}, status=400)
        resp = await getattr(self.handlers, HANDLER_OF[cls])(req)
        return web.Response(
            body=codec.encode(resp), content_type="application/json", headers=self.advertise
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[OldPeer]:
        app = web.Application()
        for cls, path in PATHS.items():
            if cls is not AppendEntriesBatch:  # the first nodes had no batch route
                app.router.add_post(path, self._route(cls))
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()

    def _route(self, cls: type[Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            return await self.serve(request, cls)

        return route
