"""Fixtures of the server tests: an app over fakes, served by aiohttp's test server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
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


@pytest.fixture
async def client(
    node: FakeNode, service: FakeService, settings: ServerSettings
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = create_app(node, service, settings)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
