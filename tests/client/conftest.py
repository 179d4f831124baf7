"""Fixtures for client tests: a fake cluster on loopback and a virtual clock for waits."""

from __future__ import annotations

from collections.abc import AsyncIterator

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
