"""Fixtures of the server tests: an app over fakes, served by aiohttp's test server.

Every test that uses ``client`` (or the ``front`` fixture) runs twice: once on aiohttp alone
and once on the lean front (``server.lean.front``: httptools answers the hot key routes and hands
the rest to aiohttp), which aiohttp's test server then listens with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import test_utils, web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from raftcache.server.lean.front import LeanSockSite, lean_available
from raftcache.server.validation import Limits

from .fakes import FakeNode, FakeService

SMALL_LIMITS = Limits(max_value_bytes=1024, max_batch_ops=10, max_batch_bytes=4096)


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def service(node: FakeNode) -> FakeService:
    return FakeService(node)


@pytest.fixture
def settings() -> ServerSettings:
    return ServerSettings(limits=SMALL_LIMITS, leader_wait_s=0.3)


@pytest.fixture(params=["aiohttp", "lean"])
def front(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The HTTP front the test servers of this test listen with."""
    if request.param == "lean":
        # The dev extra installs httptools: a missing one is a broken environment, not a skip.
        assert lean_available(), "httptools is not installed (pip install -e '.[dev]')"
        monkeypatch.setattr(test_utils, "SockSite", LeanSockSite)
    return str(request.param)


@pytest.fixture
async def client(
    front: str, node: FakeNode, service: FakeService, settings: ServerSettings
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(node, service, settings)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
