"""``HttpFormatProbe``: what a node's ``/v1/status`` says about its command format, and that
anything unclear counts as "unknown" (None), never as a format it might not have."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raftcache.server.format_probe import HttpFormatProbe

from .cluster import free_ports


class _Configuration:
    def __init__(self, addresses: dict[str, str]) -> None:
        self._addresses = addresses

    def address_of(self, node_id: str) -> str | None:
        return self._addresses.get(node_id)


class _Node:
    def __init__(self, addresses: dict[str, str]) -> None:
        self.configuration = _Configuration(addresses)


def _status_app(answers: dict[str, tuple[int, Any]], seen: list[str | None]) -> web.Application:
    async def status(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        code, body = answers[request.match_info["node"]]
        if isinstance(body, bytes):
            return web.Response(status=code, body=body)
        return web.json_response(body, status=code)

    app = web.Application()
    app.router.add_get("/{node}/v1/status", status)
    return app


@pytest.fixture
async def peers() -> AsyncIterator[tuple[str, list[str | None]]]:
    answers = {
        "new": (200, {"id": "new", "command_format": 2}),
        "old": (200, {"id": "old"}),  # a release from before command formats
        "odd": (200, {"command_format": "2"}),
        "bool": (200, {"command_format": True}),
        "down": (503, {"error": "stopping"}),
        "junk": (200, b"<html>"),
    }
    seen: list[str | None] = []
    server = TestServer(_status_app(answers, seen))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()


async def test_formats_read_from_status(peers: tuple[str, list[str | None]]) -> None:
    base, seen = peers
    names = ["new", "old", "odd", "bool", "down", "junk"]
    addresses = {name: f"{base}/{name}" for name in names}
    (closed,) = free_ports(1)
    addresses["gone"] = f"http://127.0.0.1:{closed}"
    probe = HttpFormatProbe(_Node(addresses), token="secret", timeout_s=2.0)
    found = {name: await probe(name) for name in [*names, "gone"]}
    assert found == {
        "new": 2,
        "old": 1,
        "odd": None,
        "bool": None,
        "down": None,
        "junk": None,
        "gone": None,
    }
    assert await probe("nobody") is None  # no address at all
    assert set(seen) == {"Bearer secret"}


async def test_peer_urls_are_the_fallback(peers: tuple[str, list[str | None]]) -> None:
    base, _ = peers
    probe = HttpFormatProbe(_Node({}), peer_urls={"new": f"{base}/new/"})
    assert await probe("new") == 2
