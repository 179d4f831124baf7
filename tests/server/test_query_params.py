"""Unknown query parameters (``server.query``): a misspelt ``?tll=30`` is a 400 naming it, on
every route, on both fronts — never a 200 that silently dropped the TTL.

The fronts run over real sockets in front of the fake node and service (``fakes``); one test
runs a real one-node cluster. The lean front's counters say it answered the refusals itself.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from raftcache.network.httpwire import PATHS
from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from raftcache.server.lean.front import LeanSite
from raftcache.server.openapi import openapi_document
from raftcache.server.query import ACCEPTED, accepted

from .cluster import start_cluster
from .conftest import SMALL_LIMITS
from .fakes import FakeNode, FakeService


class Front:
    """A node app served on one front, lean or aiohttp."""

    def __init__(self, lean: bool) -> None:
        self.lean = lean
        node = FakeNode()
        self.service = FakeService(node)
        settings = ServerSettings(limits=SMALL_LIMITS, leader_wait_s=0.3)
        self.app = create_app(node, self.service, settings)
        self.runner = web.AppRunner(self.app, access_log=None)
        self.site: web.TCPSite | None = None

    async def start(self) -> str:
        await self.runner.setup()
        cls = LeanSite if self.lean else web.TCPSite
        self.site = cls(self.runner, "127.0.0.1", 0)
        await self.site.start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    @property
    def served_lean(self) -> int:
        front = self.site.front if isinstance(self.site, LeanSite) else None
        return front.served if front is not None else 0

    async def stop(self) -> None:
        front = self.site.front if isinstance(self.site, LeanSite) else None
        if front is not None:
            front.close_connections()
        await self.runner.cleanup()


@pytest.fixture(params=[True, False], ids=["lean", "aiohttp"])
async def front(request: pytest.FixtureRequest) -> Any:
    served = Front(lean=request.param)
    url = await served.start()
    async with aiohttp.ClientSession() as http:
        yield served, url, http
    await served.stop()


async def test_a_misspelt_ttl_is_refused_and_nothing_is_written(front: Any) -> None:
    served, url, http = front
    async with http.put(f"{url}/v1/keys/session?tll=30", data=b"tok") as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert "'tll'" in error
    assert "accepted: ttl" in error
    async with http.get(f"{url}/v1/keys/session") as resp:
        assert resp.status == 404  # the refused PUT stored nothing
    async with http.put(f"{url}/v1/keys/session?ttl=30", data=b"tok") as resp:
        assert resp.status == 200  # the right spelling works
    async with http.get(f"{url}/v1/keys/session?consistancy=stale") as resp:
        assert resp.status == 400
        assert "'consistancy'" in (await resp.json())["error"]
    async with http.delete(f"{url}/v1/keys/session?ttl=1") as resp:
        assert resp.status == 400  # DELETE reads no parameter at all
        assert "accepted: none" in (await resp.json())["error"]
    async with http.get(f"{url}/v1/keys/session?consistency=stale&touch=false") as resp:
        assert (resp.status, await resp.read()) == (200, b"tok")
    if served.lean:
        assert served.served_lean == 6  # the lean front answered every one itself


def _concrete(canonical: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", canonical)


async def test_every_route_of_a_node_refuses_an_unknown_parameter(front: Any) -> None:
    served, url, http = front
    routes = sorted(
        {
            (r.method, r.resource.canonical)
            for r in served.app.router.routes()
            if r.resource is not None and r.method != "*"
        }
    )
    assert len(routes) > 30
    for method, canonical in routes:
        async with http.request(method, f"{url}{_concrete(canonical)}?bogus=1") as resp:
            body = await resp.read()
            assert resp.status == 400, (method, canonical, resp.status, body)
            if method != "HEAD":
                assert b"'bogus'" in body, (method, canonical, body)


def test_the_table_names_every_route_of_a_node() -> None:
    node = FakeNode()
    app = create_app(node, FakeService(node))
    routes = {
        ("GET" if r.method == "HEAD" else r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "*"
    }
    routes |= {("POST", path) for path in PATHS.values()}
    assert routes - set(ACCEPTED) == set()


def test_the_openapi_document_states_no_parameter_the_table_lacks() -> None:
    document = openapi_document()
    checked = 0
    for path, operations in document["paths"].items():
        shared = operations.get("parameters", [])  # path-level ones apply to every method
        for method, operation in operations.items():
            if method not in ("get", "put", "post", "delete", "head"):
                continue
            parameters = [*shared, *operation.get("parameters", [])]
            names = {p["name"] for p in parameters if p["in"] == "query"}
            assert names <= accepted(method.upper(), path), (method, path)
            checked += bool(names)
    assert checked >= 6


def test_a_store_takes_group_on_every_route() -> None:
    assert accepted("POST", "/v1/leader/transfer", store=True) == {"group"}
    assert accepted("GET", "/v1/keys", store=True) >= {"group", "prefix"}
    assert "group" not in accepted("POST", "/v1/leader/transfer")


async def test_a_real_node_refuses_a_misspelt_parameter(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, size=1)
    try:
        server = await cluster.leader()
        async with cluster.session.put(f"{server.url}/v1/keys/s?tll=30", data=b"t") as resp:
            assert resp.status == 400
            assert "'tll'" in (await resp.json())["error"]
        async with cluster.session.get(f"{server.url}/v1/keys/s") as resp:
            assert resp.status == 404  # nothing was written
    finally:
        await cluster.stop()
