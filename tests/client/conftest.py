"""Fixtures for client tests: a fake cluster on loopback and a virtual clock for waits."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Generator
from typing import Any

import pytest

from tests.client.client_fakes import FakeCluster, FakeTime


@pytest.fixture
async def cluster() -> AsyncIterator[FakeCluster]:
    fake = FakeCluster()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Keep looptime from creating (and leaking) an event loop for a synchronous test.

    looptime 0.9 asks pytest-asyncio's ``event_loop_policy`` for a loop in every test; in a sync
    test that creates a loop nobody closes, whose ResourceWarning then fails a later test. The
    same hook lives in tests/network/conftest.py; it belongs in tests/conftest.py.
    """
    funcargs = pyfuncitem.funcargs
    if inspect.iscoroutinefunction(pyfuncitem.obj) or "event_loop_policy" not in funcargs:
        return (yield)
    policy = funcargs.pop("event_loop_policy")
    try:
        return (yield)
    finally:
        funcargs["event_loop_policy"] = policy
